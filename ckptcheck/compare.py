"""Element-wise comparison of two tensors, streamed: max abs/rel difference and how many elements differ."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np

from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader, aligned_empty
from ckptcheck.formats.tensorflow.bundle import read_pair_into


@dataclass(frozen=True)
class ValueDiff:
    """How two tensors' values differ, element by element."""

    count: int  # elements compared
    differing: int  # elements outside atol + rtol * |b| (NaN equals NaN; exact compares bits)
    max_abs: float  # largest |a - b| over finite differences (0.0 when none)
    max_rel: float  # largest |a - b| / |b| over finite differences with b != 0
    # (A's, B's) NaN and Inf counts, counted when a differing element was NaN or Inf on a side; else None.
    nan: tuple[int, int] | None = None
    inf: tuple[int, int] | None = None

    @property
    def equal(self) -> bool:
        return self.differing == 0

    @property
    def nonfinite_changed(self) -> bool:
        """Whether NaN or Inf appeared or went: their counts differ between A and B."""
        return any(c is not None and c[0] != c[1] for c in (self.nan, self.inf))


def aligned_chunks(a: Iterator[np.ndarray], b: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pair two chunk streams of the same elements cut at different places."""
    ca = cb = np.empty(0)
    while True:
        if ca.size == 0:
            ca = next(a, None)  # type: ignore[arg-type]
        if cb.size == 0:
            cb = next(b, None)  # type: ignore[arg-type]
        if ca is None or cb is None:
            return
        n = min(ca.size, cb.size)
        if n:
            yield ca[:n], cb[:n]
        ca, cb = ca[n:], cb[n:]


def _widen(x: np.ndarray, like: np.ndarray) -> np.ndarray:
    """The two sides in one arithmetic type: float32 when both are float32 or narrower floats (as numpy's isclose
    would compute), float64 otherwise (integers, mixed widths), complex128 for complex."""
    if x.dtype.kind == "c" or like.dtype.kind == "c":
        return x.astype(np.complex128, copy=False)
    if x.dtype.kind == "b":
        return x.astype(np.int64)
    narrow = all(d.kind in "fV" and d.itemsize <= 4 for d in (x.dtype, like.dtype))
    return x.astype(np.float32 if narrow else np.float64, copy=False)


class Scratch:
    """Work arrays reused from one chunk to the next: a fresh half-megabyte array per tensor cost page faults and
    zeroing (a diff of 2,000 tensors spent more time allocating than comparing)."""

    def __init__(self) -> None:
        self._buffers: dict[int, np.ndarray] = {}  # slot -> cache-line-aligned bytes

    def get(self, dtype: np.dtype, n: int, slot: int) -> np.ndarray:
        """``n`` elements of ``dtype`` in the slot's buffer, grown when too small; valid until the slot is reused."""
        nbytes = n * dtype.itemsize
        buf = self._buffers.get(slot)
        if buf is None or buf.nbytes < nbytes:
            buf = self._buffers[slot] = aligned_empty(nbytes)
        return buf[:nbytes].view(dtype)


def _libc_memcmp() -> Callable[[int, int, int], int] | None:
    try:
        libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
        memcmp = libc.memcmp
    except (OSError, AttributeError):
        return None
    memcmp.restype = ctypes.c_int
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return cast(Callable[[int, int, int], int], memcmp)


_MEMCMP = _libc_memcmp()


def same_bytes(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether two arrays hold the same bytes: C's memcmp where the arrays are contiguous (half the time of numpy's
    comparison and count, and nothing to allocate: a 1 GiB diff compares 2,000 such pairs)."""
    if x.nbytes != y.nbytes:
        return False
    if _MEMCMP is not None and x.flags.c_contiguous and y.flags.c_contiguous:
        return x.nbytes == 0 or _MEMCMP(x.ctypes.data, y.ctypes.data, x.nbytes) == 0
    return bool(np.array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)))


_BOOL = np.dtype(bool)
_BYTES = np.dtype(np.uint8)
# Scratch slots: the bit comparison, |a - b|, |b|, and the bytes read of A and B.
_NEQ, _DELTA, _DENOM, _READ_A, _READ_B = range(5)


def compare_arrays(
    a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0, scratch: Scratch | None = None
) -> tuple[int, float, float]:
    """(differing, max_abs, max_rel) for two equally long flat chunks.

    Exact comparison is bit for bit (-0.0 differs from 0.0; NaN equals NaN). Elements whose bits are equal are
    set aside first, so the arithmetic runs only on the elements that differ.
    """
    differing, max_abs, max_rel, _nonfinite = _compare(a, b, atol, rtol, scratch)
    return differing, max_abs, max_rel


def _compare(
    a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0, scratch: Scratch | None = None
) -> tuple[int, float, float, bool]:
    """compare_arrays, and whether an element that differs is NaN or Inf on either side (their counts may then
    differ; equal elements add the same to both sides' counts)."""
    if a.size == 0:  # nothing to compare (an empty complex tensor has no maximum to take)
        return 0, 0.0, 0.0, False
    if a.dtype == object or b.dtype == object:
        differing = int(sum(1 for x, y in zip(a.tolist(), b.tolist(), strict=True) if x != y))
        return differing, 0.0, 0.0, False
    scratch = scratch or Scratch()
    same_layout = a.dtype == b.dtype and a.dtype.kind != "c" and a.dtype.itemsize in (1, 2, 4, 8)
    bits_differ: int | None = None  # with same_layout: how many elements differ bit for bit
    if same_layout:
        unsigned = f"u{a.dtype.itemsize}"
        neq = np.not_equal(a.view(unsigned), b.view(unsigned), out=scratch.get(_BOOL, a.size, _NEQ))
        bits_differ = int(np.count_nonzero(neq))
        if not bits_differ:
            return 0, 0.0, 0.0, False
        if bits_differ < neq.size // 2:  # set the equal elements aside; when most differ, copying costs more
            a, b = a[neq], b[neq]
    exact = atol == 0.0 and rtol == 0.0
    wa, wb = _widen(a, b), _widen(b, a)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if wa.dtype.kind == "c":
            delta = np.abs(wa - wb)
            denom = np.abs(wb)
        else:
            delta = np.subtract(wa, wb, out=scratch.get(wa.dtype, wa.size, _DELTA))
            np.abs(delta, out=delta)
            denom = np.abs(wb, out=scratch.get(wb.dtype, wb.size, _DENOM))
        finite_max = float(delta.max())
        if np.isfinite(finite_max):
            # No NaN or Inf on either side (they would show in the max): the common case needs no masks.
            max_abs = finite_max
            if exact:
                outside_count = bits_differ if bits_differ is not None else int(np.count_nonzero(delta))
            else:
                outside_count = int(np.count_nonzero(delta > atol + rtol * denom))
            # |a - b| / |b| computed into denom itself; where b is 0 it stays 0 (no relative difference defined).
            if denom.min() > 0:
                max_rel = float(np.divide(delta, denom, out=denom).max())
            else:
                max_rel = float(np.divide(delta, denom, out=denom, where=denom > 0).max())
            return outside_count, max_abs, max_rel, False
        if a.dtype.kind in "iub" and exact and bits_differ is not None:
            outside_count = bits_differ  # integers cannot be NaN; their float64 delta only rounds
        else:
            both_nan = np.isnan(wa) & np.isnan(wb)
            same_inf = (wa == wb) & ~np.isfinite(wa)
            if exact:
                # With the same layout only bit-different elements remain (or all, when most differ).
                close = both_nan | ((wa == wb) & ~neq if same_layout and a.size == neq.size else
                                    np.zeros_like(both_nan) if same_layout else wa == wb)
            else:
                close = (delta <= atol + rtol * denom) | both_nan | same_inf
            outside_count = int(close.size - np.count_nonzero(close))
        finite = np.isfinite(delta)
        max_abs = float(delta[finite].max()) if finite.any() else 0.0
        rel_ok = finite & (denom > 0)
        max_rel = float((delta[rel_ok] / denom[rel_ok]).max()) if rel_ok.any() else 0.0
    # Integers hold no NaN; a float |a - b| past the largest finite value (1e38 - -1e38) is no NaN or Inf either,
    # which the count then finds.
    return outside_count, max_abs, max_rel, a.dtype.kind not in "iub" and outside_count > 0


def compare_tensors(
    ra: CheckpointReader, name_a: str, rb: CheckpointReader, name_b: str, atol: float = 0.0, rtol: float = 0.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES, scratch: Scratch | None = None,
) -> ValueDiff:
    """Compare two tensors of the same shape in bounded memory (pass one ``scratch`` for many tensors).

    Both sides stream in C order of the whole tensor (a partitioned variable through its reader's iter_c_order).
    """
    scratch = scratch or Scratch()
    ia, ib = ra.tensor_info(name_a), rb.tensor_info(name_b)
    if not ia.slices and not ib.slices and max(ia.nbytes, ib.nbytes) <= chunk_bytes:
        # Tensors that fit in one chunk (most of a model's): read whole into reused buffers, where the reader can;
        # two bundles' tensors of the same bytes (the common case) are decided by those bytes.
        pair = read_pair_into(ra, name_a, scratch.get(_BYTES, ia.nbytes, _READ_A),
                              rb, name_b, scratch.get(_BYTES, ib.nbytes, _READ_B), same_bytes)
        if pair is not None:
            whole_a, whole_b, identical = pair
            if identical:
                return ValueDiff(whole_a.size, 0, 0.0, 0.0)
            differing, max_abs, max_rel, nonfinite = _compare(whole_a, whole_b, atol, rtol, scratch)
            counts = (nonfinite_counts(whole_a), nonfinite_counts(whole_b)) if nonfinite else None
            return _value_diff(whole_a.size, differing, max_abs, max_rel, counts)
        read_a = ra.read_into(name_a, scratch.get(_BYTES, ia.nbytes, _READ_A))
        read_b = rb.read_into(name_b, scratch.get(_BYTES, ib.nbytes, _READ_B)) if read_a is not None else None
        if read_a is not None and read_b is not None:
            differing, max_abs, max_rel, nonfinite = _compare(read_a, read_b, atol, rtol, scratch)
            counts = (nonfinite_counts(read_a), nonfinite_counts(read_b)) if nonfinite else None
            return _value_diff(read_a.size, differing, max_abs, max_rel, counts)
    # C order of the whole on both sides: a partitioned variable is streamed from its slices, not assembled.
    pairs = aligned_chunks(ra.iter_c_order(name_a, chunk_bytes), rb.iter_c_order(name_b, chunk_bytes))
    count = differing = 0
    max_abs = max_rel = 0.0
    any_nonfinite = False
    for a, b in pairs:
        d, m_abs, m_rel, nonfinite = _compare(a, b, atol, rtol, scratch)
        count += a.size
        differing += d
        max_abs = max(max_abs, m_abs)
        max_rel = max(max_rel, m_rel)
        any_nonfinite = any_nonfinite or nonfinite
    counts = None
    if any_nonfinite:  # rare: read both again, counting
        counts = (_stream_counts(ra.iter_c_order(name_a, chunk_bytes)),
                  _stream_counts(rb.iter_c_order(name_b, chunk_bytes)))
    return _value_diff(count, differing, max_abs, max_rel, counts)


def _value_diff(count: int, differing: int, max_abs: float, max_rel: float,
                counts: tuple[tuple[int, int], tuple[int, int]] | None) -> ValueDiff:
    if counts is None:
        return ValueDiff(count, differing, max_abs, max_rel)
    (nan_a, inf_a), (nan_b, inf_b) = counts
    return ValueDiff(count, differing, max_abs, max_rel, nan=(nan_a, nan_b), inf=(inf_a, inf_b))


def _stream_counts(chunks: Iterator[np.ndarray]) -> tuple[int, int]:
    nan = inf = 0
    for chunk in chunks:
        n, i = nonfinite_counts(chunk)
        nan += n
        inf += i
    return nan, inf


def nonfinite_counts(values: np.ndarray) -> tuple[int, int]:
    """(NaN, Inf) elements of a flat chunk; a complex element counts once, as NaN when either part is."""
    kind = values.dtype.kind
    if kind in "iubSUO" or values.size == 0:
        return 0, 0
    if kind == "c":
        parts = values.view(np.float32 if values.dtype.itemsize == 8 else np.float64).reshape(-1, 2)
        nan_rows = np.isnan(parts).any(axis=1)
        return int(nan_rows.sum()), int((np.isinf(parts).any(axis=1) & ~nan_rows).sum())
    with np.errstate(invalid="ignore"):
        low, high = values.min(), values.max()  # NaN and Inf show in the extremes: most chunks stop here
        if np.isfinite(low) and np.isfinite(high):
            return 0, 0
        return int(np.isnan(values).sum()), int(np.isinf(values).sum())


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """The same dtype, shape and bytes (strings: the same values): what "restored exactly" means."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return bool(a.tolist() == b.tolist())
    return a.tobytes() == b.tobytes()
