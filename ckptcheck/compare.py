"""Element-wise comparison of two tensors, streamed: max abs/rel difference and how many elements differ."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader
from ckptcheck.model import ValueDiff


def _aligned(a: Iterator[np.ndarray], b: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
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


def _widen(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "c":
        return x.astype(np.complex128, copy=False)
    if x.dtype.kind == "b":
        return x.astype(np.int64)
    return x.astype(np.float64, copy=False)


def compare_arrays(a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> tuple[int, float, float]:
    """(differing, max_abs, max_rel) for two equally long flat chunks."""
    if a.dtype == object or b.dtype == object:
        differing = int(sum(1 for x, y in zip(a.tolist(), b.tolist(), strict=True) if x != y))
        return differing, 0.0, 0.0
    exact_ints = atol == 0.0 and rtol == 0.0 and a.dtype == b.dtype and a.dtype.kind in "iub"
    if exact_ints and not (a != b).any():
        return 0, 0.0, 0.0
    wa, wb = _widen(a), _widen(b)
    nan_a, nan_b = np.isnan(wa), np.isnan(wb)
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.abs(wa - wb)
        both_nan = nan_a & nan_b
        same_inf = (wa == wb) & ~np.isfinite(wa)
        if atol == 0.0 and rtol == 0.0:
            if a.dtype == b.dtype and a.dtype.kind == "f":
                # Bit-for-bit: -0.0 differs from 0.0, and NaN payloads count as equal NaNs.
                bits_equal = a.view(f"u{a.dtype.itemsize}") == b.view(f"u{b.dtype.itemsize}")
                outside = ~(bits_equal | both_nan)
            else:
                outside = ~((wa == wb) | both_nan)
        else:
            outside = ~((delta <= atol + rtol * np.abs(wb)) | both_nan | same_inf)
        finite = np.isfinite(delta)
        max_abs = float(delta[finite].max()) if finite.any() else 0.0
        denom = np.abs(wb)
        rel_ok = finite & (denom > 0)
        max_rel = float((delta[rel_ok] / denom[rel_ok]).max()) if rel_ok.any() else 0.0
    differing = int((a != b).sum()) if exact_ints else int(outside.sum())  # float64 would round large int64s
    return differing, max_abs, max_rel


def compare_tensors(
    ra: CheckpointReader, name_a: str, rb: CheckpointReader, name_b: str, atol: float = 0.0, rtol: float = 0.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ValueDiff:
    """Compare two tensors of the same shape in bounded memory.

    Both readers stream in storage order; a partitioned variable's storage order is not C order, so such
    tensors are compared whole.
    """
    ia, ib = ra.tensor_info(name_a), rb.tensor_info(name_b)
    if ia.slices or ib.slices:
        pairs: Iterator[tuple[np.ndarray, np.ndarray]] = iter(
            [(ra.read(name_a).reshape(-1), rb.read(name_b).reshape(-1))]
        )
    else:
        pairs = _aligned(ra.iter_chunks(name_a, chunk_bytes), rb.iter_chunks(name_b, chunk_bytes))
    count = differing = 0
    max_abs = max_rel = 0.0
    for a, b in pairs:
        d, m_abs, m_rel = compare_arrays(a, b, atol, rtol)
        count += a.size
        differing += d
        max_abs = max(max_abs, m_abs)
        max_rel = max(max_rel, m_rel)
    return ValueDiff(count, differing, max_abs, max_rel)
