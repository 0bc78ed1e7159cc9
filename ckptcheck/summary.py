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

WEIGHTS, OPTIMIZER, OTHER = "weights", "optimizer", "other"
KINDS = (WEIGHTS, OPTIMIZER, OTHER)
KIND_TITLES = {WEIGHTS: "model weights", OPTIMIZER: "optimizer state", OTHER: "counters and other"}

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


def _kind_and_group(fmt: str, t: TensorInfo, names: set[str] | frozenset[str],
                    refs: dict[str, ObjectRef] | None) -> tuple[str, str]:
    name = t.name
    counter_like = _counter_like(t)
    if fmt in (TF2, SAVEDMODEL):
        if name == OBJECT_GRAPH_KEY:
            return OTHER, name
        ref = refs.get(name) if refs is not None else None
        path = name[: -len(VALUE_SUFFIX)] if name.endswith(VALUE_SUFFIX) else name
        if _TF2_SLOT in path:
            return OPTIMIZER, _parent(path.split(_TF2_SLOT, 1)[0])
        if ref is not None and ref.slot_of:
            return OPTIMIZER, _parent(ref.slot_of)
        paths = ref.paths if ref is not None and ref.paths else (path,)
        plain = [p for p in paths if not _through_optimizer(p)]
        if not plain:
            return OPTIMIZER, _parent(paths[0])
        return (OTHER if counter_like else WEIGHTS), _parent(plain[0])
    if fmt == TF1:
        last = name.rsplit("/", 1)[-1]
        base = _tf1_slot_base(name, names)
        if base is not None:
            return OPTIMIZER, _parent(base)
        if last in _TF1_ACCUMULATORS:
            return OPTIMIZER, name
        if "/" in name and _TF1_SLOTS.fullmatch(last):
            return OPTIMIZER, _parent(name.rsplit("/", 1)[0])
        return (OTHER if counter_like else WEIGHTS), _parent(name)
    if fmt == KERAS_H5:
        top = name.split("/", 1)[0]
        if top == "optimizer_weights":
            return OPTIMIZER, top
        return (OTHER if counter_like else WEIGHTS), top
    if fmt in (KERAS, KERAS_WEIGHTS):
        group = _KERAS3_VARS.sub("", name) or "vars"  # layers/dense/vars/0 -> layers/dense; vars/0: the model's
        if name.startswith(("optimizer/", "optimizer_weights/")):
            return OPTIMIZER, group
        return (OTHER if counter_like else WEIGHTS), group
    return (OTHER if counter_like else WEIGHTS), _parent(name)


def _parent(path: str) -> str:
    """The object (layer) holding a variable: its path without the last part; a top-level variable is its own."""
    head, sep, _tail = path.rpartition("/")
    return head if sep and head else path


def classify(reader: CheckpointReader, tensors: Sequence[TensorInfo],
             refs: dict[str, ObjectRef] | None = None) -> list[tuple[str, str]]:
    """(kind, group) of each tensor, in order: kind one of KINDS, group the layer or top-level object."""
    fmt = reader.info().format
    names = frozenset(t.name for t in reader.info().tensors) if fmt == TF1 else frozenset()
    if fmt in (TF2, SAVEDMODEL):
        refs = _tf2_refs(reader, tensors, refs)
    return [_kind_and_group(fmt, t, names, refs) for t in tensors]


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


def _quick_summary(fmt: str, tensors: Sequence[TensorInfo]) -> Summary | None:
    """The summary when no name can be optimizer state (no key mentions an optimizer, a TF1 name extends no other,
    no slot or accumulator name): then a tensor is weights unless counter-like, which its dtype and shape decide
    (the object graph is a string). Counted per (dtype, shape) and summed in C: the common large listing (20,000
    variables) in a few milliseconds."""
    names = list(map(_NAME, tensors))
    joined = "\n".join(names)
    if "optimizer" in joined.lower() or _TF2_SLOT in joined:
        return None
    if fmt == TF1 and ("/" in joined or any(n in joined for n in _TF1_ACCUMULATORS)):
        return None  # a slot needs a "/" before its name
    pairs = list(map(_DTYPE_SHAPE, tensors))
    per_pair = Counter(pairs)
    other = {p for p in per_pair if p[0] in _NOT_PARAMETERS}
    scalars = {p for p in per_pair if _int_scalar(*p)}  # a counter or a layer's: told tensor by tensor (a few)
    sums = {kind: [0, 0, 0] for kind in KINDS}
    for (dtype, shape), n in per_pair.items():
        if (dtype, shape) not in scalars:
            acc = sums[OTHER if (dtype, shape) in other else WEIGHTS]
            acc[0] += n
            acc[1] += n * math.prod(shape)
    all_bytes = list(map(_NBYTES, tensors))
    other_bytes = sum(compress(all_bytes, map(other.__contains__, pairs)))
    for t in compress(tensors, map(scalars.__contains__, pairs)):
        kind = OTHER if _counter_like(t) else WEIGHTS
        sums[kind][0] += 1
        sums[kind][1] += 1
        other_bytes += t.nbytes if kind == OTHER else 0
    sums[OTHER][2] = other_bytes
    sums[WEIGHTS][2] = sum(all_bytes) - other_bytes
    return _summary_of(sums)


def _summary_of(sums: dict[str, list[int]]) -> Summary:
    counts = {kind: Count(*acc) for kind, acc in sums.items()}
    return Summary(counts, Count(*(sum(acc[i] for acc in sums.values()) for i in range(3))))


def summarize(reader: CheckpointReader, tensors: Sequence[TensorInfo],
              refs: dict[str, ObjectRef] | None = None) -> Summary:
    """Tensors, elements and bytes of each kind among ``tensors``, and in all."""
    quick = _quick_summary(reader.info().format, tensors) if refs is None else None
    if quick is not None:
        return quick
    sums = {kind: [0, 0, 0] for kind in KINDS}
    for t, (kind, _group) in zip(tensors, classify(reader, tensors, refs), strict=True):
        acc = sums[kind]
        acc[0] += 1
        acc[1] += math.prod(t.shape)
        acc[2] += t.nbytes
    return _summary_of(sums)


def groups(reader: CheckpointReader, tensors: Sequence[TensorInfo],
           refs: dict[str, ObjectRef] | None = None) -> list[Group]:
    """One row per layer (or top-level object) and kind: natural order of the names, kinds in KINDS order."""
    found: dict[tuple[str, str], Count] = {}
    for t, key in zip(tensors, classify(reader, tensors, refs), strict=True):
        found[key] = found.get(key, Count()).plus(t)
    rows = sorted((Group(name, kind, count) for (kind, name), count in found.items()),
                  key=lambda g: KINDS.index(g.kind))
    return natural_sorted(rows, lambda g: g.name)  # stable: a name's kinds stay in KINDS order
