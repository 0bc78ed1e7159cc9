"""`diff A B`: which tensors were added, removed or changed between two checkpoints, and by how much.

Tensors are paired by the names the model knows them by (pairing.py): a tensor's ``variable`` wherever it is unique
on its side, in every pair of formats, one format included; keys pair only what has no such name. A variable stored
under another key in B is said once (``moved``), never reported as a change.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ckptcheck.compare import Scratch, ValueDiff, compare_tensors
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
from ckptcheck.order import natural_sorted
from ckptcheck.pairing import Pairs, identity, named, normalize_name, optimizer_names, pair_tensors, same_keys
from ckptcheck.records import KERAS, CheckpointInfo, TensorInfo
from ckptcheck.renames import Renamed
from ckptcheck.selection import Selection

T = TypeVar("T")

__all__ = ["CHANGE_ORDERS", "DiffReport", "TensorChange", "diff_readers", "is_bookkeeping", "normalize_name",
           "same_keys", "sort_changes", "variable_of"]


@dataclass(frozen=True)
class TensorChange:
    """A tensor present in both checkpoints whose dtype, shape or values differ."""

    name: str  # key in A
    name_b: str  # key in B (differs where the variable is stored elsewhere, or across formats)
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    values: ValueDiff | None  # None when dtype or shape differ (values are not comparable)
    variable: str | None = None  # the variable A's tensor holds (TensorInfo.variable)
    variable_b: str | None = None  # B's (differs only where keys paired tensors without a name of their own)
    kind: str | None = None  # A's tensor's kind (summary.KINDS)

    @property
    def kinds(self) -> tuple[str, ...]:
        """What changed: ``dtype``, ``shape``, ``non-finite`` (NaN or Inf appeared or went), ``values``."""
        out = []
        if self.dtype_a != self.dtype_b:
            out.append("dtype")
        if self.shape_a != self.shape_b:
            out.append("shape")
        if self.values is not None and not self.values.equal:
            if self.values.nonfinite_changed:
                out.append("non-finite")
            out.append("values")
        return tuple(out)

    @property
    def identity(self) -> str:
        """The name the change is reported under: A's variable, else its key."""
        v = self.variable
        return v if v is not None and not v.startswith("(") else self.name


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
    unchanged: tuple[str, ...]  # A's keys of the unchanged tensors, in the order of unchanged_names
    matching: str  # how tensors were paired: "variables", "keys", "normalized keys", joined by " and "
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
    # Within one key layout: (variable, A's key, B's key) of each variable stored under another key in B. A
    # storage fact, no part of the verdict.
    moved: tuple[tuple[str, str, str], ...] = ()
    unchanged_names: tuple[str, ...] = ()  # the unchanged tensors by variable (their key when they have none)
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)  # kind of each listed tensor, by A's/B's key
    kinds_b: dict[str, str] = dataclasses.field(default_factory=dict)
    optimizers: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # the optimizers A and B hold state of
    selection: Selection = dataclasses.field(default_factory=Selection)
    # (A's tensors selected, A's tensors, B's selected, B's): what --filter, --exclude and --kind left
    selected: tuple[int, int, int, int] = (0, 0, 0, 0)
    renamed: tuple[Renamed, ...] = ()  # pairs made under another name (renames.py): also in changed or unchanged

    @property
    def same(self) -> bool:
        return not (self.added or self.removed or self.changed or self.graph_differences)

    def kind_of(self, t: TensorInfo, side: str = "a") -> str | None:
        return (self.kinds if side == "a" else self.kinds_b).get(t.name)


# A Keras 3 tensor whose variable name the file does not determine is named by position: <layer>/vars/<i>.
_POSITIONAL = re.compile(r"(^|/)vars/\d+$")


def variable_of(t: TensorInfo) -> str:
    return t.variable if t.variable is not None else normalize_name(t.name)


def is_bookkeeping(t: TensorInfo) -> bool:
    """Format bookkeeping rather than a model's variable: the object graph, a checkpoint's save counter."""
    return t.name == OBJECT_GRAPH_KEY or (t.variable or "").startswith("(")


def _unmatched_note(format_a: str, format_b: str, ta: Sequence[TensorInfo], tb: Sequence[TensorInfo],
                    pairs: Pairs, removed: Sequence[TensorInfo], added: Sequence[TensorInfo],
                    ambiguous: frozenset[str]) -> str | None:
    """Why some tensors found no partner, when some did (or none did) across formats."""
    if not removed and not added:
        return None
    if not pairs and ta and tb:
        return (f"no tensor could be matched between {format_a} ({identity(ta[0])}, ...) and {format_b} "
                f"({identity(tb[0])}, ...) by variable or key: every tensor is reported as removed and added")
    parts = [f"{len({id(x) for x, _ in pairs})} of A's {len(ta)} tensors and {len({id(y) for _, y in pairs})} of "
             f"B's {len(tb)} matched"]
    for side, unmatched in (("A", removed), ("B", added)):
        positional = [t for t in unmatched if _POSITIONAL.search(variable_of(t))]
        if positional:
            parts.append(f"{len(positional)} of {side}'s unmatched tensors are named by position "
                         f"({variable_of(positional[0])}, ...): the file does not say which variable they hold "
                         "(optimizer state of a weights file without config.json, or a layer class ckptcheck "
                         "does not know)")
    unmatched_ambiguous = {v for t in (*removed, *added) if (v := named(t)) in ambiguous}
    if unmatched_ambiguous:
        parts.append(f"{len(unmatched_ambiguous)} variable name(s) are held by several tensors on both sides, so "
                     f"they name no one tensor ({sorted(unmatched_ambiguous)[0]}, ...)")
    if len(parts) == 1:
        parts.append("the rest hold variables the other checkpoint does not have")
    return "; ".join(parts)


def diff_readers(
    ra: CheckpointReader,
    rb: CheckpointReader,
    atol: float = 0.0,
    rtol: float = 0.0,
    include: Callable[[str], bool] = lambda name: True,
    on_tensor: Callable[[str], None] | None = None,
    jobs: tuple[int, int] = (1, 1),
    selection: Selection | None = None,
    rename_map: str | dict[str, Any] | None = None,
) -> DiffReport:
    """``include`` is asked about each tensor's key and its variable; a tensor is compared if either passes.
    ``selection``: --filter, --exclude and --kind (applied to both sides, each by its own kinds).
    ``jobs``: range reads in flight ahead of the comparison, on A's side and on B's (1: one read at a time)."""
    from ckptcheck.summary import classify_kinds

    ia, ib = ra.info(), rb.info()
    from ckptcheck.formats.keras.archive import KerasArchiveReader

    for reader in (ra, rb):
        if isinstance(reader, KerasArchiveReader):
            reader.crc_checked_elsewhere()  # diff checks every member's CRC itself and warns (_archive_warnings)

    selection = selection or Selection()
    kinds_a, kinds_b = classify_kinds(ra, ia.tensors), classify_kinds(rb, ib.tensors)
    kind_a = {t.name: k for t, k in zip(ia.tensors, kinds_a, strict=True)}
    kind_b = {t.name: k for t, k in zip(ib.tensors, kinds_b, strict=True)}
    # The object graph is bookkeeping, not a value anyone trains; its bytes change with every save counter. A save
    # counter is compared where both sides keep one, and set aside where only one format has it.
    ta, tb = list(ia.tensors), list(ib.tensors)
    variables_b = {t.variable for t in tb if is_bookkeeping(t)}
    variables_a = {t.variable for t in ta if is_bookkeeping(t)}
    aside = [t for t in ta if is_bookkeeping(t) and (t.name == OBJECT_GRAPH_KEY or t.variable not in variables_b)]
    aside += [t for t in tb if is_bookkeeping(t) and (t.name == OBJECT_GRAPH_KEY or t.variable not in variables_a)]
    ta = [t for t in ta if not any(t is x for x in aside)]
    tb = [t for t in tb if not any(t is x for x in aside)]
    keys_alike = same_keys(ia.format, ib.format)
    # Paired first, then selected: a pattern that matches a key (a storage position) on one side only selects the
    # pair, not one half of it (which would read as removed or added).
    whole = pair_tensors(ta, tb, keys_alike)
    passes, excluded = selection.name_tests()

    def kind_ok(t: TensorInfo, kinds: dict[str, str]) -> bool:
        return selection.kinds is None or kinds.get(t.name) in selection.kinds

    def named_ok(t: TensorInfo) -> bool:
        return passes(t) and (include(t.name) or (t.variable is not None and include(t.variable)))

    def one(t: TensorInfo, kinds: dict[str, str]) -> bool:
        return named_ok(t) and not excluded(t) and kind_ok(t, kinds)

    pairs = [(x, y) for x, y in whole.pairs if (named_ok(x) or named_ok(y)) and not (excluded(x) or excluded(y))
             and (kind_ok(x, kind_a) or kind_ok(y, kind_b))]
    removed = [t for t in whole.removed if one(t, kind_a)]
    added = [t for t in whole.added if one(t, kind_b)]
    aside = [t for t in aside if one(t, kind_a if any(t is x for x in ia.tensors) else kind_b)]
    kept = {id(t) for t in (*removed, *added, *aside)} | {id(t) for pair in pairs for t in pair}
    ta = [t for t in ta if id(t) in kept]
    tb = [t for t in tb if id(t) in kept]
    # --- renamed tensors (ckptcheck/renames.py): a rename map's pairs, and leaves renamed with equal values ---
    from ckptcheck.renames import pair_renamed

    more, removed, added, renamed = pair_renamed(ra, rb, removed, added, variable_of, rename_map)
    stored_elsewhere = [(x, y) for x, y in pairs if keys_alike and x.name != y.name]  # (not the renamed)
    pairs += more
    whole = dataclasses.replace(whole, how=whole.how + " and renames") if renamed else whole
    # ---
    pairing = dataclasses.replace(whole, pairs=pairs, removed=removed, added=added, moved=stored_elsewhere)
    optimizers = (optimizer_names(ta, [kind_a[t.name] for t in ta]), optimizer_names(tb, [kind_b[t.name] for t in tb]))
    selected = (sum(id(t) in kept for t in ia.tensors), len(ia.tensors),
                sum(id(t) in kept for t in ib.tensors), len(ib.tensors))
    changed: list[TensorChange] = []
    unchanged: list[tuple[str, str]] = []
    scratch = Scratch()
    ordered = sorted(pairing.pairs, key=lambda p: (p[0].name, p[1].name))
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
                              variable_of(y), kind_a.get(x.name))
        if change.kinds:
            changed.append(change)
        else:
            unchanged.append((identity(x), x.name))
    note = _unmatched_note(ia.format, ib.format, ta, tb, pairing.pairs, pairing.removed, pairing.added,
                           pairing.ambiguous)
    # Graphs are compared where every tensor paired by its place (the same layout, rooted alike, nothing moved): a
    # checkpoint rooted at the model and one rooted at Checkpoint(model=...) reach the same variables by other
    # paths, rightly.
    alike = (keys_alike and not pairing.moved and any(t.name == OBJECT_GRAPH_KEY for t in aside)
             and all(x.name == y.name for x, y in pairing.pairs))
    graph = _graph_differences(ra, rb, {x.name for x, _ in pairing.pairs}) if alike else ()
    unchanged = _kind_first(unchanged, lambda u: kind_a.get(u[1]), lambda u: u[0])
    moved = natural_sorted([(identity(x), x.name, y.name) for x, y in pairing.moved], lambda m: m[0])
    return DiffReport(
        a=ia.path, b=ib.path, format_a=ia.format, format_b=ib.format,
        added=tuple(_kind_first(pairing.added, lambda t: kind_b.get(t.name), identity)),
        removed=tuple(_kind_first(pairing.removed, lambda t: kind_a.get(t.name), identity)),
        changed=tuple(_kind_first(changed, _kind, _identity)), unchanged=tuple(k for _, k in unchanged),
        matching=pairing.how, atol=atol, rtol=rtol, note=note, bookkeeping=tuple(aside),
        warnings=(*_archive_warnings(ia), *_archive_warnings(ib)), graph_differences=graph, moved=tuple(moved),
        unchanged_names=tuple(n for n, _ in unchanged), kinds=kind_a, kinds_b=kind_b, optimizers=optimizers,
        selection=selection, selected=selected, renamed=tuple(renamed),
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


def _identity(change: TensorChange) -> str:
    return change.identity


def _kind(change: TensorChange) -> str | None:
    return change.kind


def _kind_first(items: Sequence[T], kind: Callable[[T], str | None], name: Callable[[T], str]) -> list[T]:
    """Natural order of the names, the model's weights first, then optimizer state, counters and bookkeeping."""
    from ckptcheck.summary import KINDS

    rank = {k: i for i, k in enumerate(KINDS)}
    return sorted(natural_sorted(items, name), key=lambda item: rank.get(kind(item) or "", len(rank)))


CHANGE_ORDERS = ("name", "change")


def _size_of_change(change: TensorChange) -> tuple[int, float, float]:
    """Larger first when sorted ascending: dtype or shape changes (values not comparable), then NaN or Inf that
    appeared or went, then the largest absolute difference, then the largest share of elements that differ."""
    v = change.values
    if v is None:
        return (0, 0.0, 0.0)
    share = v.differing / v.count if v.count else 0.0
    biggest = v.max_abs if not math.isnan(v.max_abs) else math.inf
    return (1 if v.nonfinite_changed else 2, -biggest, -share)


def sort_changes(report: DiffReport, by: str = "name") -> DiffReport:
    """The report with its changed tensors in natural order of their variables, weights first (``name``, as
    diff_readers returns them) or largest difference first (``change``; equal differences in that order)."""
    if by == "name":
        return dataclasses.replace(report, changed=tuple(_kind_first(report.changed, _kind, _identity)))
    if by == "change":
        ordered = _kind_first(report.changed, _kind, _identity)
        return dataclasses.replace(report, changed=tuple(sorted(ordered, key=_size_of_change)))
    raise ValueError(f"unknown order {by!r}; one of {', '.join(CHANGE_ORDERS)}")
