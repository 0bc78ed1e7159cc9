"""Streaming statistics of a tensor's values: one pass over bounded chunks, never the whole tensor in memory."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ckptcheck.formats import dtypes
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader
from ckptcheck.model import TensorStats


class _Accumulator:
    """Count, min, max, mean and variance (Chan et al.'s parallel update) plus NaN/Inf counts and constancy."""

    def __init__(self) -> None:
        self.count = 0  # all elements
        self.finite = 0  # elements that entered mean/std/min/max
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.nan = 0
        self.inf = 0
        self.first: float | None = None
        self.constant = True

    def add(self, values: np.ndarray) -> None:
        n = values.size
        if n == 0:
            return
        self.count += n
        # min and max in the stored dtype first: NaN propagates through them, so finite extremes prove the chunk
        # holds no NaN or Inf and the masking pass is skipped (the common case, and most of the time saved).
        cmin, cmax = values.min(), values.max()
        if values.dtype.kind == "f" and not (np.isfinite(cmin) and np.isfinite(cmax)):
            nans = np.isnan(values)
            infs = np.isinf(values)
            n_nan, n_inf = int(nans.sum()), int(infs.sum())
            self.nan += n_nan
            self.inf += n_inf
            self._track_constant(values, n_nan == n, n_nan)
            values = values[~(nans | infs)]
            if values.size == 0:
                return
            cmin, cmax = values.min(), values.max()
        else:
            self._track_constant(values, False, 0, cmin, cmax)
        k = values.size
        self.min = min(self.min, float(cmin))
        self.max = max(self.max, float(cmax))
        # One float64 copy, then everything in place. Not np.dot: BLAS threads made it 100x slower on a busy
        # machine (2.4 ms against 25 us per 134k-element chunk, measured).
        wide = values.astype(np.float64)
        cmean = float(wide.sum()) / k
        wide -= cmean
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(wide, wide, out=wide)
            cm2 = float(wide.sum())
        total = self.finite + k
        delta = cmean - self.mean
        self.mean += delta * k / total
        self.m2 += cm2 + delta * delta * self.finite * k / total
        self.finite = total

    def _track_constant(self, values: np.ndarray, all_nan: bool, n_nan: int, cmin: Any = None,
                        cmax: Any = None) -> None:
        if not self.constant:
            return
        if self.first is None:
            self.first = values.flat[0].item()
        first = self.first
        if isinstance(first, float) and math.isnan(first):
            self.constant = all_nan
        elif n_nan:
            self.constant = False
        elif cmin is not None:
            self.constant = bool(cmin == cmax == first)
        else:
            self.constant = bool((values == first).all())


def _as_number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e16 else repr(float(value))


def stats_of_chunks(name: str, dtype_name: str, chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over flat chunks of one tensor, in one pass."""
    dtype = dtypes.BY_NAME.get(dtype_name)
    kind = dtype.kind if dtype is not None else "other"
    if kind in ("string", "other"):
        count = sum(c.size for c in chunks)
        return TensorStats(name, dtype_name, count, note=f"no numeric statistics for {dtype_name}")
    acc = _Accumulator()
    for chunk in chunks:
        if kind == "complex":
            chunk = np.abs(chunk)
        elif kind == "bool":
            chunk = chunk.view(np.uint8)
        elif chunk.dtype.kind == "V" or chunk.dtype.name not in np.sctypeDict:
            chunk = chunk.astype(np.float32)  # bfloat16, float8, int4: widen the bounded chunk only
        acc.add(chunk)
    note = None
    if acc.count and acc.constant and acc.first is not None:
        first = acc.first
        if isinstance(first, float) and math.isnan(first):
            note = "all NaN"
        elif kind == "bool":
            note = "all True" if first else "all False"
        elif first == 0:
            note = "all zeros"
        else:
            note = f"constant {_as_number(first)}" + (" (|x|)" if kind == "complex" else "")
    elif kind == "complex":
        note = "statistics of |x|"
    if acc.finite == 0:
        return TensorStats(name, dtype_name, acc.count, nan=acc.nan, inf=acc.inf, note=note or
                           ("empty" if acc.count == 0 else None))
    std = math.sqrt(acc.m2 / acc.finite)
    return TensorStats(
        name=name,
        dtype=dtype_name,
        count=acc.count,
        min=acc.min,
        max=acc.max,
        mean=acc.mean,
        std=std,
        nan=acc.nan,
        inf=acc.inf,
        note=note,
    )


def tensor_stats(reader: CheckpointReader, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> TensorStats:
    info = reader.tensor_info(name)
    return stats_of_chunks(name, info.dtype, reader.iter_chunks(name, chunk_bytes))
