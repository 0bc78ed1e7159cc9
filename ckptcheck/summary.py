"""What a checkpoint holds, counted like Keras's ``model.summary()`` but from the file: elements and bytes of the
model's weights, of the optimizer's state, and of counters and other values, each apart; and the same per layer
(or top-level object).

Each tensor is classified by what the file records, never by loading a model:

* Keras files: the optimizer's group (``optimizer/`` in Keras 3 weights, ``optimizer_weights/`` in legacy .h5);
* TF2 checkpoints: optimizer slots (``.OPTIMIZER_SLOT`` keys, and a Keras optimizer's per-variable lists found
  through the object graph) and values every object path reaches only through an optimizer; the object graph is
  read only when a key names an optimizer, since a Keras optimizer also tracks the model's own variables
  (``optimizer/_trainable_variables/0`` is a kernel, also reached as ``model/.../kernel``);
* TF1 (name-based and V1) checkpoints: a slot stored beside its variable (``dense/kernel/Adam``,
  ``dense/kernel/Adam_1``, ``.../Momentum``: a name that extends another stored name), a slot name of the
  TensorFlow optimizers when its variable is not stored, and the Adam accumulators ``beta1_power`` and
  ``beta2_power``;
* everywhere: an integer scalar outside an optimizer is a counter (``global_step``, ``save_counter``, a step), as
  are strings, variants and the TF2 object graph (bookkeeping, not parameters); but an integer scalar named
  inside a layer (``normalization/count``, whatever the format) is the layer's, a weight as ``model.summary()``
  counts it.

What is neither weights nor optimizer state is split in two: ``bookkeeping``, what the format keeps for itself
(the TF2 object graph, a checkpoint's save counter: a variable named in parentheses), and ``counters``, the rest
(integer scalars outside a layer, strings, variants). These four kinds are every tensor's ``kind`` in ``inspect
--json`` and manifests, and what ``--kind`` selects.

``--group`` groups by layer: the layer part of each tensor's ``variable`` (``conv1_conv`` for
``conv1_conv/kernel``, ``layer_0_attention/query`` for ``layer_0_attention/query/kernel``), the same in every
format; an optimizer's slot is counted with the layer of the variable it belongs to (as optimizer state), the
optimizer's own values under its name (``adam``). A tensor with no variable is grouped by its key, as before.

restore-check names the stored values no model variable used by these same rules (restore_check.stored_kinds:
optimizer state as here; a counter, an integer scalar outside an optimizer; anything else a weight).
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress

from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY, VALUE_SUFFIX
from ckptcheck.order import natural_sorted
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS, SAVEDMODEL, TF1, TF2, ObjectRef, TensorInfo

WEIGHTS, OPTIMIZER, COUNTERS, BOOKKEEPING = "weights", "optimizer", "counters", "bookkeeping"
KINDS = (WEIGHTS, OPTIMIZER, COUNTERS, BOOKKEEPING)
KIND_TITLES = {WEIGHTS: "model weights", OPTIMIZER: "optimizer state", COUNTERS: "counters and other values",
               BOOKKEEPING: "format bookkeeping"}
# Before the bookkeeping was told apart: counters and bookkeeping together (inspect's summary keeps the sum).
OTHER = "other"

_TF2_SLOT = "/.OPTIMIZER_SLOT/"
# Slot names of tf.compat.v1.train optimizers (and tf_keras's v1 wrappers), as the slot's last name part.
_TF1_SLOTS = re.compile(
    r"(Adam|Adam_\d+|AdamW|AdamW_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad|AdagradDA|Adadelta|Adadelta_\d+|Ftrl|"
    r"Ftrl_\d+|ProximalAdagrad|ProximalGradientDescent|Nadam|Nadam_\d+|Adamax|Adamax_\d+|LazyAdam|LazyAdam_\d+)"
)
_TF1_ACCUMULATORS = ("beta1_power", "beta2_power")
_NOT_PARAMETERS = ("string", "variant", "resource")
_KERAS3_VARS = re.compile(r"(?:^|/)vars/\d+$")


@dataclass(frozen=True)
class Count:
    tensors: int = 0
    elements: int = 0
    nbytes: int = 0

    def plus(self, t: TensorInfo) -> Count:
        return Count(self.tensors + 1, self.elements + math.prod(t.shape), self.nbytes + t.nbytes)


@dataclass(frozen=True)
class Summary:
    """Counts by kind (every kind present, zero when none) and in all."""

    kinds: dict[str, Count]
    total: Count


@dataclass(frozen=True)
class Group:
    """One layer or top-level object: its tensors of one kind."""

    name: str
    kind: str
    count: Count


def _through_optimizer(path: str) -> bool:
    return any("optimizer" in part.lower() for part in path.split("/"))


def _tf2_refs(reader: CheckpointReader, tensors: Sequence[TensorInfo],
              refs: dict[str, ObjectRef] | None) -> dict[str, ObjectRef] | None:
    """The object graph's references, read only when some key passes through an optimizer (reading the graph of
    a 20,000-variable checkpoint takes half a second)."""
    if refs is not None:
        return refs
    if "optimizer" not in "\n".join(t.name for t in tensors).lower():
        return None
    found = reader.objects()
    return {r.key: r for r in found} if found is not None else None


def _tf1_slot_base(name: str, names: set[str] | frozenset[str]) -> str | None:
    """The stored variable a TF1 slot extends (``dense/kernel`` for ``dense/kernel/Adam_1``), or None."""
    cut = name.rfind("/")
    while cut > 0:
        if name[:cut] in names:
            return name[:cut]
        cut = name.rfind("/", 0, cut)
    return None


def is_bookkeeping(t: TensorInfo) -> bool:
    """What the format keeps for itself, no model's or training's value: the TF2 object graph, and what a reader
    names in parentheses (a checkpoint's ``(save counter)``)."""
    return t.name == OBJECT_GRAPH_KEY or (t.variable is not None and t.variable.startswith("("))


def _rest(t: TensorInfo) -> str:
    return BOOKKEEPING if is_bookkeeping(t) else COUNTERS


# (kind, group by key, key of the variable an optimizer slot belongs to where the key says it)
_Raw = tuple[str, str, str | None]


def _kind_and_group(fmt: str, t: TensorInfo, names: set[str] | frozenset[str],
                    refs: dict[str, ObjectRef] | None, key_by_path: dict[str, str]) -> _Raw:
    name = t.name
    counter_like = _counter_like(t)
    if fmt in (TF2, SAVEDMODEL):
        if name == OBJECT_GRAPH_KEY:
            return BOOKKEEPING, name, None
        ref = refs.get(name) if refs is not None else None
        path = name[: -len(VALUE_SUFFIX)] if name.endswith(VALUE_SUFFIX) else name
        if _TF2_SLOT in path:
            owner = path.split(_TF2_SLOT, 1)[0]
            return OPTIMIZER, _parent(owner), owner + VALUE_SUFFIX
        if ref is not None and ref.slot_of:
            return OPTIMIZER, _parent(ref.slot_of), key_by_path.get(ref.slot_of)
        paths = ref.paths if ref is not None and ref.paths else (path,)
        plain = [p for p in paths if not _through_optimizer(p)]
        if not plain:
            return OPTIMIZER, _parent(paths[0]), None
        return (_rest(t) if counter_like else WEIGHTS), _parent(plain[0]), None
    if fmt == TF1:
        last = name.rsplit("/", 1)[-1]
        base = _tf1_slot_base(name, names)
        if base is not None:
            return OPTIMIZER, _parent(base), base
        if last in _TF1_ACCUMULATORS:
            return OPTIMIZER, name, None
        if "/" in name and _TF1_SLOTS.fullmatch(last):
            return OPTIMIZER, _parent(name.rsplit("/", 1)[0]), None
        return (_rest(t) if counter_like else WEIGHTS), _parent(name), None
    if fmt == KERAS_H5:
        top = name.split("/", 1)[0]
        if top == "optimizer_weights":
            return OPTIMIZER, top, None
        return (_rest(t) if counter_like else WEIGHTS), top, None
    if fmt in (KERAS, KERAS_WEIGHTS):
        group = _KERAS3_VARS.sub("", name) or "vars"  # layers/dense/vars/0 -> layers/dense; vars/0: the model's
        if name.startswith(("optimizer/", "optimizer_weights/")):
            return OPTIMIZER, group, None
        return (_rest(t) if counter_like else WEIGHTS), group, None
    return (_rest(t) if counter_like else WEIGHTS), _parent(name), None


def _parent(path: str) -> str:
    """The object (layer) holding a variable: its path without the last part; a top-level variable is its own."""
    head, sep, _tail = path.rpartition("/")
    return head if sep and head else path


layer_of = _parent  # the layer part of a variable's name: conv1_conv/kernel -> conv1_conv


def _raw(reader: CheckpointReader, tensors: Sequence[TensorInfo],
         refs: dict[str, ObjectRef] | None) -> list[_Raw]:
    fmt = reader.info().format
    names = frozenset(t.name for t in reader.info().tensors) if fmt == TF1 else frozenset()
    key_by_path: dict[str, str] = {}
    if fmt in (TF2, SAVEDMODEL):
        refs = _tf2_refs(reader, tensors, refs)
        if refs is not None:
            key_by_path = {p: r.key for r in refs.values() for p in r.paths}
    return [_kind_and_group(fmt, t, names, refs, key_by_path) for t in tensors]


def classify_kinds(reader: CheckpointReader, tensors: Sequence[TensorInfo],
                   refs: dict[str, ObjectRef] | None = None) -> list[str]:
    """The kind (one of KINDS) of each tensor, in order."""
    return tally(reader, tensors, refs)[0]


def classify(reader: CheckpointReader, tensors: Sequence[TensorInfo],
             refs: dict[str, ObjectRef] | None = None) -> list[tuple[str, str]]:
    """(kind, group) of each tensor, in order: kind one of KINDS, group its layer (see the module's docstring)."""
    everything = reader.info().tensors
    raw_all = _raw(reader, everything, refs)  # the weights of every tensor listed: a slot's owner may be filtered out
    raw_of = {id(t): r for t, r in zip(everything, raw_all, strict=True)}
    others = [t for t in tensors if id(t) not in raw_of]
    if others:
        raw_of.update(zip(map(id, others), _raw(reader, others, refs), strict=True))
    raw = [raw_of[id(t)] for t in tensors]
    by_key = {t.name: t for t in everything}
    weights = [v for t, (kind, _g, _o) in zip(everything, raw_all, strict=True)
               if kind == WEIGHTS and (v := t.variable) is not None and _named(v)]
    owners = _SlotOwners(weights)
    out = []
    for t, (kind, key_group, owner_key) in zip(tensors, raw, strict=True):
        variable = t.variable
        if kind == BOOKKEEPING or not _named(variable):
            out.append((kind, key_group))
            continue
        assert variable is not None
        if kind != OPTIMIZER:
            out.append((kind, layer_of(variable)))
            continue
        owner = by_key.get(owner_key) if owner_key is not None else None
        owner_variable = owner.variable if owner is not None and _named(owner.variable) else owners.find(variable)
        if owner_variable is not None:
            out.append((kind, layer_of(owner_variable)))
        else:  # the optimizer's own values (adam/iteration), or a slot the names do not tie to a variable
            out.append((kind, variable.split("/", 1)[0] if "/" in variable else variable))
    return out


def _named(variable: str | None) -> bool:
    return variable is not None and not variable.startswith("(")


class _SlotOwners:
    """Which variable an optimizer's value belongs to, from the names alone: Keras 3 names a slot
    ``<optimizer>/<variable path with "/" as "_">_<slot>`` (``adam/conv1_conv_kernel_momentum``); tf_keras
    ``<optimizer>/<slot>/<variable path>`` or ``<optimizer>/<variable path>/<slot>``. The longest variable that
    fits wins."""

    def __init__(self, variables: Sequence[str]) -> None:
        self.flat = {v.replace("/", "_"): v for v in variables}
        self.paths = frozenset(variables)

    def find(self, slot: str) -> str | None:
        parts = slot.split("/")[1:]
        if not parts:
            return None
        for start in range(len(parts)):  # tf_keras: a run of the parts that is a variable's path
            for end in range(len(parts), start, -1):
                if end - start > 1 or len(parts) > 1:
                    joined = "/".join(parts[start:end])
                    if joined in self.paths:
                        return joined
        rest = "/".join(parts)
        cut = len(rest)
        while (cut := rest.rfind("_", 0, cut)) > 0:  # Keras 3: the longest flattened path before "_<slot>"
            found = self.flat.get(rest[:cut])
            if found is not None:
                return found
        return None


def _int_scalar(dtype: str, shape: tuple[int, ...]) -> bool:
    return not shape and dtype.startswith(("int", "uint"))


def _counter_like(t: TensorInfo) -> bool:
    """Not a parameter: a string, variant or resource, or an integer scalar that is a checkpoint's own counter
    (``global_step``, ``save_counter``, ``step``: named on its own). An integer scalar named inside a layer
    (``normalization/count``, in every format) is the layer's, a weight as ``model.summary()`` counts it."""
    if t.dtype in _NOT_PARAMETERS:
        return True
    return _int_scalar(t.dtype, t.shape) and not (t.variable is not None and "/" in t.variable
                                                   and not t.variable.startswith("("))


_NAME = operator.attrgetter("name")
_NBYTES = operator.attrgetter("nbytes")
_DTYPE_SHAPE = operator.attrgetter("dtype", "shape")


def _no_optimizer_names(fmt: str, tensors: Sequence[TensorInfo]) -> bool:
    """No name can be optimizer state (no key mentions an optimizer, a TF1 name extends no other, no slot or
    accumulator name): then a tensor's kind follows from its dtype and shape, and a few names."""
    joined = "\n".join(map(_NAME, tensors))
    if "optimizer" in joined.lower() or _TF2_SLOT in joined:
        return False
    return not (fmt == TF1 and ("/" in joined or any(n in joined for n in _TF1_ACCUMULATORS)))  # a slot needs "/"


def _quick_kinds(tensors: Sequence[TensorInfo]) -> tuple[list[str], Summary]:
    """Kinds, and their summary, where no tensor is optimizer state: weights unless not a parameter (a string,
    variant or resource: the object graph is bookkeeping, others counters) or an integer scalar (a counter,
    bookkeeping or a layer's, told by its name). Decided once per (dtype, shape) and counted in C: the common
    large listing (20,000 variables) in a few milliseconds."""
    pairs = list(map(_DTYPE_SHAPE, tensors))
    per_pair = Counter(pairs)
    kinds = [WEIGHTS] * len(tensors)
    sums = {kind: [0, 0, 0] for kind in KINDS}
    acc = sums[WEIGHTS]  # every tensor counted as weights, then the others moved one by one
    for (_dtype, shape), n in per_pair.items():
        acc[0] += n
        acc[1] += n * math.prod(shape)
    acc[2] = sum(map(_NBYTES, tensors))
    rare = {p for p in per_pair if p[0] in _NOT_PARAMETERS or _int_scalar(*p)}
    if rare:
        for i in compress(range(len(pairs)), map(rare.__contains__, pairs)):
            t = tensors[i]
            if _counter_like(t):
                kinds[i] = kind = _rest(t)
                _move(sums, t, kind)
    return kinds, _summary_of(sums)


def _move(sums: dict[str, list[int]], t: TensorInfo, kind: str) -> None:
    """Count ``t`` as ``kind`` instead of weights."""
    elements = math.prod(t.shape)
    weights, other = sums[WEIGHTS], sums[kind]
    weights[0] -= 1
    weights[1] -= elements
    weights[2] -= t.nbytes
    other[0] += 1
    other[1] += elements
    other[2] += t.nbytes


def _summary_of(sums: dict[str, list[int]]) -> Summary:
    counts = {kind: Count(*acc) for kind, acc in sums.items()}
    return Summary(counts, Count(*(sum(acc[i] for acc in sums.values()) for i in range(3))))


def summary_of(tensors: Sequence[TensorInfo], kinds: Sequence[str]) -> Summary:
    """Tensors, elements and bytes of each kind, from the kinds already told."""
    sums = {kind: [0, 0, 0] for kind in KINDS}
    for t, kind in zip(tensors, kinds, strict=True):
        acc = sums[kind]
        acc[0] += 1
        acc[1] += math.prod(t.shape)
        acc[2] += t.nbytes
    return _summary_of(sums)


def tally(reader: CheckpointReader, tensors: Sequence[TensorInfo],
          refs: dict[str, ObjectRef] | None = None) -> tuple[list[str], Summary]:
    """The kind of each tensor (one of KINDS), in order, and the summary of them: tensors, elements and bytes of
    each kind, and in all."""
    if refs is None and _no_optimizer_names(reader.info().format, tensors):
        return _quick_kinds(tensors)
    kinds = [kind for kind, _group, _owner in _raw(reader, tensors, refs)]
    return kinds, summary_of(tensors, kinds)


def summarize(reader: CheckpointReader, tensors: Sequence[TensorInfo],
              refs: dict[str, ObjectRef] | None = None) -> Summary:
    """Tensors, elements and bytes of each kind among ``tensors``, and in all."""
    return tally(reader, tensors, refs)[1]


def groups(reader: CheckpointReader, tensors: Sequence[TensorInfo],
           refs: dict[str, ObjectRef] | None = None) -> list[Group]:
    """One row per layer and kind: the model's weights first, then optimizer state, counters and bookkeeping,
    each in natural order of the names."""
    found: dict[tuple[str, str], Count] = {}
    for t, key in zip(tensors, classify(reader, tensors, refs), strict=True):
        found[key] = found.get(key, Count()).plus(t)
    rows = natural_sorted((Group(name, kind, count) for (kind, name), count in found.items()), lambda g: g.name)
    return sorted(rows, key=lambda g: KINDS.index(g.kind))  # stable: each kind's groups stay in name order
