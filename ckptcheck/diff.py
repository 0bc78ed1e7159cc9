"""`diff A B`: which tensors were added, removed or changed between two checkpoints, and by how much."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

from ckptcheck.compare import Scratch, compare_tensors
from ckptcheck.formats.bundle import OBJECT_GRAPH_KEY
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.model import KERAS, CheckpointInfo, DiffReport, TensorChange, TensorInfo
from ckptcheck.order import natural_sorted

_ATTRIBUTE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_TF_OUTPUT_SUFFIX = re.compile(r":\d+$")


def normalize_name(name: str) -> str:
    """A name with format-specific decoration removed, to match tensors across formats."""
    if name.endswith(_ATTRIBUTE_SUFFIX):
        name = name[: -len(_ATTRIBUTE_SUFFIX)]
    return _TF_OUTPUT_SUFFIX.sub("", name)


def match_names(
    a: Sequence[TensorInfo], b: Sequence[TensorInfo]
) -> tuple[list[tuple[TensorInfo, TensorInfo]], list[TensorInfo], list[TensorInfo], str]:
    """Pair tensors by exact name, then (for what is left) by normalized name when that pairs one to one."""
    by_b = {t.name: t for t in b}
    pairs = [(t, by_b[t.name]) for t in a if t.name in by_b]
    left_a = [t for t in a if t.name not in by_b]
    matched_b = {tb.name for _, tb in pairs}
    left_b = [t for t in b if t.name not in matched_b]
    how = "names"
    if left_a and left_b:
        norm_b: dict[str, list[TensorInfo]] = {}
        for t in left_b:
            norm_b.setdefault(normalize_name(t.name), []).append(t)
        still_a = []
        for t in left_a:
            candidates = norm_b.get(normalize_name(t.name), [])
            if len(candidates) == 1:
                pairs.append((t, candidates.pop()))
                how = "normalized names"
            else:
                still_a.append(t)
        left_a = still_a
        left_b = [t for ts in norm_b.values() for t in ts]
        left_b.sort(key=lambda t: t.name)
    return pairs, left_a, left_b, how


def diff_checkpoints(
    ra: CheckpointReader,
    rb: CheckpointReader,
    atol: float = 0.0,
    rtol: float = 0.0,
    include: Callable[[str], bool] = lambda name: True,
    on_tensor: Callable[[str], None] | None = None,
) -> DiffReport:
    ia, ib = ra.info(), rb.info()
    # The object graph is bookkeeping, not a value anyone trains; its bytes change with every save counter.
    ta = [t for t in ia.tensors if t.name != OBJECT_GRAPH_KEY and include(t.name)]
    tb = [t for t in ib.tensors if t.name != OBJECT_GRAPH_KEY and include(t.name)]
    pairs, removed, added, how = match_names(ta, tb)
    changed: list[TensorChange] = []
    unchanged: list[str] = []
    scratch = Scratch()
    for x, y in sorted(pairs, key=lambda p: p[0].name):
        if on_tensor is not None:
            on_tensor(x.name)
        values = None
        if x.dtype == y.dtype and x.shape == y.shape:
            values = compare_tensors(ra, x.name, rb, y.name, atol, rtol, scratch=scratch)
        change = TensorChange(x.name, y.name, x.dtype, y.dtype, x.shape, y.shape, values)
        if change.kinds:
            changed.append(change)
        else:
            unchanged.append(x.name)
    note = None
    if not pairs and ta and tb:
        note = (f"no tensor names could be matched between {ia.format} ({ta[0].name}, ...) and {ib.format} "
                f"({tb[0].name}, ...): every tensor is reported as removed and added")
    return DiffReport(
        a=ia.path, b=ib.path, format_a=ia.format, format_b=ib.format,
        added=tuple(natural_sorted(added, _name)), removed=tuple(natural_sorted(removed, _name)),
        changed=tuple(natural_sorted(changed, _name)), unchanged=tuple(natural_sorted(unchanged, str)),
        matching=how, atol=atol, rtol=rtol, note=note, warnings=(*_archive_warnings(ia), *_archive_warnings(ib)),
    )


def _archive_warnings(info: CheckpointInfo) -> list[str]:
    """A .keras archive is read without its CRCs (a stored member is read where it lies): check them, so that a
    damaged archive is said, not only its values compared."""
    if info.format != KERAS:
        return []
    from ckptcheck.verify import archive_problems

    return [f"{info.location}: {p.message} (values read from it may be damaged; run ckptcheck verify)"
            for p in archive_problems(info.location)]


def _name(item: TensorInfo | TensorChange) -> str:
    return item.name


CHANGE_ORDERS = ("name", "change")


def _size_of_change(change: TensorChange) -> tuple[int, float, float]:
    """Larger first when sorted ascending: dtype or shape changes (values not comparable), then the largest
    absolute difference, then the largest share of elements that differ."""
    v = change.values
    if v is None:
        return (0, 0.0, 0.0)
    share = v.differing / v.count if v.count else 0.0
    biggest = v.max_abs if not math.isnan(v.max_abs) else math.inf
    return (1, -biggest, -share)


def sort_changes(report: DiffReport, by: str = "name") -> DiffReport:
    """The report with its changed tensors in natural name order (``name``, as diff_checkpoints returns them) or
    largest difference first (``change``; equal differences in name order)."""
    if by == "name":
        return dataclasses.replace(report, changed=tuple(natural_sorted(report.changed, _name)))
    if by == "change":
        ordered = natural_sorted(report.changed, _name)
        return dataclasses.replace(report, changed=tuple(sorted(ordered, key=_size_of_change)))
    raise ValueError(f"unknown order {by!r}; one of {', '.join(CHANGE_ORDERS)}")
