"""How ckptcheck writes numbers: in text, and in JSON, which has no NaN or Infinity.

Two policies for values that are not finite, each used by whole schemas:
- measurements (statistics, differences, losses, an experiment's figures): ``null``, with counts of NaN and Inf
  beside them where they matter (``finite_or_null``);
- stored values (``inspect --tensor``, a config that holds a NaN): the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"``, so that no value is lost (``nonfinite_as_strings``).
"""

from __future__ import annotations

import math
from typing import Any

WHOLE_BELOW = 1e15  # integers below this are written in full; larger ones in significant digits


def number_text(value: float, digits: int = 6) -> str:
    """An integer in full, anything else in ``digits`` significant digits (``nan``, ``inf`` as Python writes them)."""
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < WHOLE_BELOW:
        return str(int(value))
    return f"{value:.{digits}g}"


def finite_or_null(value: float | None) -> float | None:
    """A measurement as JSON: itself when finite, else None (``null``)."""
    return value if value is None or math.isfinite(value) else None


def nonfinite_as_strings(data: Any) -> Any:
    """``data`` (nested lists, tuples and dicts) with each non-finite float as "NaN", "Infinity" or "-Infinity"."""
    if isinstance(data, float):
        if math.isnan(data):
            return "NaN"
        if math.isinf(data):
            return "Infinity" if data > 0 else "-Infinity"
        return data
    if isinstance(data, dict):
        return {k: nonfinite_as_strings(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [nonfinite_as_strings(v) for v in data]
    return data
