"""`inspect`: what a checkpoint stores, filtered, ordered, counted and (on request) grouped, with statistics and
object paths — the listing the command renders, as one report."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptcheck.errors import UsageError
from ckptcheck.records import KERAS_H5, SAVEDMODEL, CheckpointInfo, ObjectRef, TensorInfo
from ckptcheck.selection import Selection
from ckptcheck.selection import name_matcher as selection_matcher

if TYPE_CHECKING:
    from ckptcheck.formats.interface import CheckpointReader
    from ckptcheck.stats import TensorStats
    from ckptcheck.summary import Group, Summary

SORTS = ("name", "size")


@dataclass(frozen=True)
class InspectReport:
    """One checkpoint's listing: ``tensors`` those shown (filtered and ordered), ``summary`` their parameter count,
    and what was asked for: ``groups`` (one row per layer and kind), ``stats`` (by key), ``refs`` (the object
    graph's paths, by key), ``layers`` (the architecture's layers a filter selects; None: every layer)."""

    info: CheckpointInfo
    tensors: list[TensorInfo]
    summary: Summary
    filtered: bool  # --filter, --kind or --exclude left some out
    groups: list[Group] | None = None
    stats: dict[str, TensorStats] | None = None
    refs: dict[str, ObjectRef] | None = None
    layers: list[str] | None = None
    kinds: list[str] | None = None  # each shown tensor's kind (summary.KINDS), in order


def name_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A glob when the pattern has glob characters, else a substring test (selection.name_matcher)."""
    return selection_matcher(pattern)


def check_options(*, group: bool, stats: bool, objects: bool, tensor: str | None = None) -> None:
    """The options that do not combine, refused before anything is read."""
    if group and (stats or objects or tensor is not None):
        raise UsageError("--group shows one row per layer; it does not combine with --stats, --objects or --tensor")


def inspect_checkpoint(
    reader: CheckpointReader,
    *,
    filter_: str | None = None,
    sort: str = "name",
    objects: bool = False,
    stats: bool = False,
    group: bool = False,
    each: Callable[[Sequence[TensorInfo]], Iterable[TensorInfo]] = iter,
    kinds: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> InspectReport:
    """List ``reader``'s checkpoint. ``each`` walks the tensors whose statistics are computed (a progress bar).
    ``kinds``, ``exclude``: --kind and --exclude (selection.Selection)."""
    from ckptcheck import summary as summaries
    from ckptcheck.formats.interface import paused_gc
    from ckptcheck.order import sort_tensors

    check_options(group=group, stats=stats, objects=objects)
    info = reader.info()
    match = name_matcher(filter_)
    selection = Selection.of(filter_, exclude, kinds)
    shown, _kinds = selection.apply(reader, info.tensors)
    with paused_gc():  # (tens of thousands of acyclic keys and rows: collections only cost time)
        shown = sort_tensors(shown, sort)
    refs = None
    if objects:
        found = reader.objects()
        if found is None:
            if info.format == SAVEDMODEL:
                raise UsageError("--objects needs an object graph, and this SavedModel's variables have none (it was "
                                 "written by TF1's SavedModelBuilder or an Estimator export, which save by name)",
                                 path=reader.path, hint="its keys are the variables' names; inspect lists them")
            raise UsageError(f"--objects needs an object-based (TF2) checkpoint; this one is {info.format}",
                             path=reader.path,
                             hint="name-based checkpoints key tensors by variable name, there is no object graph")
        refs = {r.key: r for r in found}
    stats_by_name = None
    if stats:
        from ckptcheck.stats import tensor_stats

        stats_by_name = {t.name: tensor_stats(reader, t.name) for t in each(shown)}
    with paused_gc():
        shown_kinds, counted = summaries.tally(reader, shown, refs)
    grouped = summaries.groups(reader, shown, refs) if group else None
    if grouped is not None and sort == "size":
        grouped.sort(key=lambda g: -g.count.nbytes)
    layers = _matching_layers(info, match, shown) if filter_ and info.architecture is not None else None
    return InspectReport(info, shown, counted, not selection.everything, grouped, stats_by_name, refs, layers,
                         shown_kinds)


def _matching_layers(info: CheckpointInfo, match: Callable[[str], bool], shown: Sequence[TensorInfo]) -> list[str]:
    """The layers --filter selects: those whose name it matches; in a legacy .h5, whose tensors are named by
    layer (dense/dense/kernel:0), also those holding a tensor it matches. (Keras 3 names its weights by layer
    class and position, layers/dense_1/vars/0, which need not be the layer's name.)"""
    assert info.architecture is not None
    tops = {t.name.split("/", 1)[0] for t in shown} if info.format == KERAS_H5 else set()
    return [layer.name for layer in info.architecture.layers if match(layer.name) or layer.name in tops]
