"""`diff A B`: which tensors were added, removed or changed between two checkpoints, and by how much.

Tensors are paired by key within one format, and by ``variable`` (the name the model knows a tensor by, the same
in every format) across formats and wherever keys leave tensors unpaired within one (a checkpoint rooted at the
model against one rooted at ``Checkpoint(model=...)``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from ckptcheck.compare import Scratch, ValueDiff, compare_tensors
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY, VALUE_SUFFIX
from ckptcheck.order import natural_sorted
from ckptcheck.records import KERAS, KERAS_WEIGHTS, CheckpointInfo, TensorInfo


@dataclass(frozen=True)
class TensorChange:
    """A tensor present in both checkpoints whose dtype, shape or values differ."""

    name: str  # name in A
    name_b: str  # name in B (differs from `name` when matched across formats)
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    values: ValueDiff | None  # None when dtype or shape differ (values are not comparable)
    variable: str | None = None  # the variable A's tensor holds (TensorInfo.variable)
    variable_b: str | None = None  # B's (differs when the tensors were paired by key)

    @property
    def kinds(self) -> tuple[str, ...]:
        out = []
        if self.dtype_a != self.dtype_b:
            out.append("dtype")
        if self.shape_a != self.shape_b:
            out.append("shape")
        if self.values is not None and not self.values.equal:
            out.append("values")
        return tuple(out)


@dataclass(frozen=True)
class DiffReport:
    """What `diff A B` found: tensors only in B (added), only in A (removed), and changed."""

    a: str
    b: str
    format_a: str
    format_b: str
    added: tuple[TensorInfo, ...]
    removed: tuple[TensorInfo, ...]
    changed: tuple[TensorChange, ...]
    unchanged: tuple[str, ...]
    matching: str  # how tensors were paired: "names", "variables", "names and variables", "normalized names"
    atol: float
    rtol: float
    note: str | None = None
    # Format bookkeeping (the object graph; a save counter only one side has): set aside, not compared, and no
    # part of the verdict.
    bookkeeping: tuple[TensorInfo, ...] = ()
    warnings: tuple[str, ...] = ()  # damage seen on the way (a .keras member whose CRC fails), not a difference
    # Where both checkpoints are object-based and keyed alike: how the object graphs place the tensors differently
    # (a key reached by other object paths, a slot of another variable, another saved name). Part of the verdict:
    # a restore binds values to objects through the graph.
    graph_differences: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.graph_differences)

_TF_OUTPUT_SUFFIX = re.compile(r":\d+$")
# A Keras 3 tensor whose variable name the file does not determine is named by position: <layer>/vars/<i>.
_POSITIONAL = re.compile(r"(^|/)vars/\d+$")

Pairs = list[tuple[TensorInfo, TensorInfo]]
# Formats whose keys are built alike: a .keras archive's model.weights.h5 is laid out as a .weights.h5.
_KEY_FAMILY = {KERAS: KERAS_WEIGHTS}


def same_keys(format_a: str, format_b: str) -> bool:
    """Whether two formats key tensors alike, so that equal keys mean the same tensor."""
    return _KEY_FAMILY.get(format_a, format_a) == _KEY_FAMILY.get(format_b, format_b)


def normalize_name(name: str) -> str:
    """A name with format-specific decoration removed, to match tensors across formats."""
    if name.endswith(VALUE_SUFFIX):
        name = name[: -len(VALUE_SUFFIX)]
    return _TF_OUTPUT_SUFFIX.sub("", name)


def variable_of(t: TensorInfo) -> str:
    return t.variable if t.variable is not None else normalize_name(t.name)


def is_bookkeeping(t: TensorInfo) -> bool:
    """Format bookkeeping rather than a model's variable: the object graph, a checkpoint's save counter."""
    return t.name == OBJECT_GRAPH_KEY or (t.variable or "").startswith("(")


def _pair_by(key: Callable[[TensorInfo], str], a: Sequence[TensorInfo], b: Sequence[TensorInfo],
             ambiguous: AbstractSet[str] = frozenset()) -> tuple[Pairs, list[TensorInfo], list[TensorInfo]]:
    """Pair tensors with equal ``key``, except keys in ``ambiguous``. Where one side holds a key several times (a
    Keras SavedModel export stores each variable under two keys), each copy pairs with the other side's one."""
    by_b: dict[str, list[TensorInfo]] = {}
    for t in b:
        by_b.setdefault(key(t), []).append(t)
    pairs: Pairs = []
    left_a: list[TensorInfo] = []
    used_b: set[int] = set()
    by_a: dict[str, list[TensorInfo]] = {}
    for t in a:
        by_a.setdefault(key(t), []).append(t)
    for k, xs in by_a.items():
        ys = by_b.get(k)
        if not ys or k in ambiguous:
            left_a += xs
            continue
        pairs += [(x, y) for x in xs for y in ys]  # one side holds one (see ambiguous)
        used_b.update(id(y) for y in ys)
    left_b = [t for t in b if id(t) not in used_b]
    return pairs, left_a, left_b


def _ambiguous(a: Sequence[TensorInfo], b: Sequence[TensorInfo]) -> set[str]:
    """Variables several tensors hold on both sides: no name to pair by (TensorFlow names every unnamed
    tf.Variable "Variable")."""
    def repeated(ts: Sequence[TensorInfo]) -> set[str]:
        seen: set[str] = set()
        twice: set[str] = set()
        for t in ts:
            v = variable_of(t)
            (twice if v in seen else seen).add(v)
        return twice

    return repeated(a) & repeated(b)


def match_names(
    a: Sequence[TensorInfo], b: Sequence[TensorInfo], same_format: bool = True
) -> tuple[Pairs, list[TensorInfo], list[TensorInfo], str]:
    """Pair tensors: by key within one format, then by variable for what is left; across formats by variable.
    Last, what is still unpaired by normalized name where that pairs one to one (tensors without a variable)."""
    how: list[str] = []
    pairs: Pairs = []
    left_a, left_b = list(a), list(b)
    if same_format:
        pairs, left_a, left_b = _pair_by(lambda t: t.name, left_a, left_b)
        if pairs:
            how.append("names")
    if left_a and left_b:
        more, left_a, left_b = _pair_by(variable_of, left_a, left_b, _ambiguous(a, b))
        if more:
            pairs += more
            how.append("variables")
    if left_a and left_b:
        norm_b: dict[str, list[TensorInfo]] = {}
        for t in left_b:
            norm_b.setdefault(normalize_name(t.name), []).append(t)
        still_a = []
        for t in left_a:
            candidates = norm_b.get(normalize_name(t.name), [])
            if len(candidates) == 1:
                pairs.append((t, candidates.pop()))
                if "normalized names" not in how:
                    how.append("normalized names")
            else:
                still_a.append(t)
        left_a = still_a
        left_b = [t for ts in norm_b.values() for t in ts]
        left_b.sort(key=lambda t: t.name)
    return pairs, left_a, left_b, " and ".join(how) or "names"


def _unmatched_note(format_a: str, format_b: str, ta: Sequence[TensorInfo], tb: Sequence[TensorInfo],
                    pairs: Pairs, removed: Sequence[TensorInfo], added: Sequence[TensorInfo]) -> str | None:
    ambiguous = _ambiguous(removed, added)
    """Why some tensors found no partner, when some did (or none did) across formats."""
    if not removed and not added:
        return None
    if not pairs and ta and tb:
        return (f"no tensor could be matched between {format_a} ({variable_of(ta[0])}, ...) and {format_b} "
                f"({variable_of(tb[0])}, ...) by name or variable: every tensor is reported as removed and added")
    parts = [f"{len({id(x) for x, _ in pairs})} of A's {len(ta)} tensors and {len({id(y) for _, y in pairs})} of "
             f"B's {len(tb)} matched"]
    for side, unmatched in (("A", removed), ("B", added)):
        positional = [t for t in unmatched if _POSITIONAL.search(variable_of(t))]
        if positional:
            parts.append(f"{len(positional)} of {side}'s unmatched tensors are named by position "
                         f"({variable_of(positional[0])}, ...): the file does not say which variable they hold "
                         "(optimizer state of a weights file without config.json, or a layer class ckptcheck "
                         "does not know)")
    if ambiguous:
        parts.append(f"{len(ambiguous)} variable name(s) are held by several tensors on both sides, so they name "
                     f"no one tensor ({sorted(ambiguous)[0]}, ...)")
    if len(parts) == 1:
        parts.append("the rest hold variables the other checkpoint does not have")
    return "; ".join(parts)


def diff_checkpoints(
    ra: CheckpointReader,
    rb: CheckpointReader,
    atol: float = 0.0,
    rtol: float = 0.0,
    include: Callable[[str], bool] = lambda name: True,
    on_tensor: Callable[[str], None] | None = None,
    jobs: tuple[int, int] = (1, 1),
) -> DiffReport:
    """``include`` is asked about each tensor's key and its variable; a tensor is compared if either passes.
    ``jobs``: range reads in flight ahead of the comparison, on A's side and on B's (1: one read at a time)."""
    ia, ib = ra.info(), rb.info()
    from ckptcheck.formats.keras.archive import KerasArchiveReader

    for reader in (ra, rb):
        if isinstance(reader, KerasArchiveReader):
            reader.crc_checked_elsewhere()  # diff checks every member's CRC itself and warns (_archive_warnings)

    def wanted(t: TensorInfo) -> bool:
        return include(t.name) or (t.variable is not None and include(t.variable))

    ta = [t for t in ia.tensors if wanted(t)]
    tb = [t for t in ib.tensors if wanted(t)]
    # The object graph is bookkeeping, not a value anyone trains; its bytes change with every save counter. A save
    # counter is compared where both sides keep one, and set aside where only one format has it.
    variables_b = {t.variable for t in tb if is_bookkeeping(t)}
    variables_a = {t.variable for t in ta if is_bookkeeping(t)}
    aside = [t for t in ta if is_bookkeeping(t) and (t.name == OBJECT_GRAPH_KEY or t.variable not in variables_b)]
    aside += [t for t in tb if is_bookkeeping(t) and (t.name == OBJECT_GRAPH_KEY or t.variable not in variables_a)]
    ta = [t for t in ta if not any(t is x for x in aside)]
    tb = [t for t in tb if not any(t is x for x in aside)]
    pairs, removed, added, how = match_names(ta, tb, same_format=same_keys(ia.format, ib.format))
    changed: list[TensorChange] = []
    unchanged: list[str] = []
    scratch = Scratch()
    ordered = sorted(pairs, key=lambda p: (p[0].name, p[1].name))
    compared = [(x.name, y.name) for x, y in ordered if x.dtype == y.dtype and x.shape == y.shape]
    ra.read_ahead([a for a, _ in compared], jobs[0], slices=False)  # the values are read in this order
    rb.read_ahead([b for _, b in compared], jobs[1], slices=False)
    for x, y in ordered:
        if on_tensor is not None:
            on_tensor(x.name)
        values = None
        if x.dtype == y.dtype and x.shape == y.shape:
            values = compare_tensors(ra, x.name, rb, y.name, atol, rtol, scratch=scratch)
        change = TensorChange(x.name, y.name, x.dtype, y.dtype, x.shape, y.shape, values, variable_of(x),
                              variable_of(y))
        if change.kinds:
            changed.append(change)
        else:
            unchanged.append(x.name)
    note = _unmatched_note(ia.format, ib.format, ta, tb, pairs, removed, added)
    # Graphs are compared where every tensor paired by its key (the same layout, rooted alike): a checkpoint rooted
    # at the model and one rooted at Checkpoint(model=...) reach the same variables by other paths, rightly.
    alike = how == "names" and same_keys(ia.format, ib.format) and any(t.name == OBJECT_GRAPH_KEY for t in aside)
    graph = _graph_differences(ra, rb, {x.name for x, _ in pairs}) if alike else ()
    return DiffReport(
        a=ia.path, b=ib.path, format_a=ia.format, format_b=ib.format,
        added=tuple(natural_sorted(added, _name)), removed=tuple(natural_sorted(removed, _name)),
        changed=tuple(natural_sorted(changed, _name)), unchanged=tuple(natural_sorted(unchanged, str)),
        matching=how, atol=atol, rtol=rtol, note=note, bookkeeping=tuple(aside),
        warnings=(*_archive_warnings(ia), *_archive_warnings(ib)), graph_differences=graph,
    )


def _shown(value: object) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def _graph_differences(ra: CheckpointReader, rb: CheckpointReader, keys: set[str]) -> tuple[str, ...]:
    """How two object graphs place the tensors both checkpoints store under one key differently: the object paths
    reaching it, the variable a slot belongs to, the saved name. Reading a graph checks its checksum: a damaged one
    is an error, not a silent "same"."""
    from ckptcheck.formats.tensorflow.bundle import BundleReader

    if isinstance(ra, BundleReader) and isinstance(rb, BundleReader):
        graph_a, graph_b = ra.object_graph_bytes(), rb.object_graph_bytes()  # read with their checksums checked
        if graph_a == graph_b:  # the same graph, byte for byte (the common case: two saves of one model)
            return ()
    refs_a, refs_b = ra.objects(), rb.objects()
    if refs_a is None or refs_b is None:
        return ()
    by_key_b = {r.key: r for r in refs_b}
    out = []
    for a in refs_a:
        b = by_key_b.get(a.key)
        if b is None or a.key not in keys:
            continue
        for what, x, y in (("reached by", a.paths, b.paths), ("slot of", a.slot_of, b.slot_of),
                           ("slot name", a.slot_name, b.slot_name), ("saved name", a.saved_name, b.saved_name)):
            if x != y:
                out.append(f"{a.key}: {what} {_shown(x)} in A, {_shown(y)} in B")
    return tuple(natural_sorted(out, str))


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
