"""The checkpoint's side: its values read once each, what each is for, and whether a restored value is one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ckptcheck.compare import same_bits
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
from ckptcheck.records import ObjectRef, TensorInfo
from ckptcheck.restore_check.report import COUNTER, OPTIMIZER, WEIGHT
from ckptcheck.restore_check.variables import dtype_name

CACHED_BYTES = 1 << 16  # values up to this size are read once


# --- stored values ------------------------------------------------------------------------------------------------


def stored_kinds(reader: CheckpointReader, tensors: Sequence[TensorInfo],
                 refs: dict[str, ObjectRef] | None) -> dict[str, str]:
    """What each stored value is for, by the rules `inspect` counts parameters with (summary.classify: one place
    decides what is optimizer state): optimizer state, a counter (an integer scalar outside an optimizer), else a
    weight."""
    from ckptcheck import summary

    kinds = {}
    for t, kind in zip(tensors, summary.classify_kinds(reader, tensors, refs), strict=True):
        if kind == summary.OPTIMIZER:
            kinds[t.name] = OPTIMIZER
        elif kind in (summary.COUNTERS, summary.BOOKKEEPING) and t.shape == () and t.dtype.startswith(("int", "uint")):
            kinds[t.name] = COUNTER  # an integer scalar inside a layer (normalization/count) is the layer's weight
        else:
            kinds[t.name] = WEIGHT
    return kinds


class StoredValues:
    """The checkpoint's values, read once each, on demand."""

    def __init__(self, reader: CheckpointReader) -> None:
        self.reader = reader
        self.infos = {t.name: t for t in reader.tensors() if t.name != OBJECT_GRAPH_KEY}
        self._cache: dict[str, np.ndarray] = {}

    def read(self, key: str) -> np.ndarray:
        """Small values are kept once read; large ones are read again when asked (a model's worth of copies held
        at once is what made the check take twice the memory of the restore it measures)."""
        if key in self._cache:
            return self._cache[key]
        value = self.reader.read(key)
        if value.nbytes <= CACHED_BYTES:
            self._cache[key] = value
        return value


def equal_values(after: np.ndarray, stored: np.ndarray) -> tuple[bool, str | None]:
    """Whether a restored value is the stored one: bit for bit, or after the dtype conversion a restore does."""
    if after.shape != stored.shape:
        return False, None
    if same_bits(after, stored):
        return True, None
    if after.dtype == object or stored.dtype == object or after.dtype == stored.dtype:
        return False, None
    try:
        with np.errstate(all="ignore"):
            converted = stored.astype(after.dtype)
    except (TypeError, ValueError):
        return False, None
    if same_bits(after, converted):
        return True, f"converted from {dtype_name(stored)} to {dtype_name(after)}"
    return False, None


def largest_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape or a.dtype == object or b.dtype == object:
        return None
    try:
        with np.errstate(all="ignore"):
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    except (TypeError, ValueError):
        return None
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else 0.0
