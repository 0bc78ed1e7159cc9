"""What a checkpoint holds, as ckptcheck's readers list it: frozen dataclasses, rendered by the render package and
nothing else.

The reports of the other commands live with the code that makes them (``verify.VerifyReport``,
``diff.DiffReport``, ``stats.TensorStats``; generate, roundtrip and restore-check in ``reports``), so that a listing
does not pay for creating classes it never uses (a frozen dataclass costs ~1 ms to define).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Format names, shared with `ckptcheck generate --format`.
TF1 = "tf1"  # name-based tf.compat.v1.train.Saver bundle (also Estimator model_dirs)
TF2 = "tf2"  # object-based tf.train.Checkpoint bundle (has _CHECKPOINTABLE_OBJECT_GRAPH)
SAVEDMODEL = "savedmodel"  # a SavedModel's variables/variables bundle
KERAS = "keras"  # Keras 3 .keras zip archive
KERAS_WEIGHTS = "keras-weights"  # Keras 3 .weights.h5
KERAS_H5 = "keras-h5"  # legacy HDF5 (Keras 2 / tf_keras, or Keras 3 model.save("x.h5"))
KERAS_FORMATS = (KERAS, KERAS_WEIGHTS, KERAS_H5)  # every Keras file format
SAFETENSORS = "safetensors"  # a .safetensors file (what `ckptcheck export` writes)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One stored tensor as listed (no values read)."""

    name: str
    dtype: str  # TensorFlow's name: float32, bfloat16, string, ...
    shape: tuple[int, ...]
    nbytes: int  # bytes the values take in the checkpoint's data files
    slices: int = 0  # > 0: a partitioned variable stored as this many slices
    file: str | None = None  # data file holding the values (the first slice's for a partitioned variable)
    # The name the model knows the tensor by, the same in every format (Keras's Variable.path, a TF2 object graph's
    # full_name, a TF1 variable name); bookkeeping that is no model variable is named in parentheses, e.g.
    # "(object graph)". None only where a reader cannot tell.
    variable: str | None = None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


_new = object.__new__
_set_name, _set_dtype, _set_shape, _set_nbytes, _set_slices, _set_file, _set_variable = (
    TensorInfo.__dict__[f].__set__ for f in ("name", "dtype", "shape", "nbytes", "slices", "file", "variable")
)


def listed_tensor(
    name: str, dtype: str, shape: tuple[int, ...], nbytes: int, slices: int, file: str | None,
    variable: str | None = None,
) -> TensorInfo:
    """TensorInfo(name, dtype, shape, nbytes, slices, file, variable) at half the cost, for readers listing tens of
    thousands: a frozen dataclass's __init__ goes through object.__setattr__ for every field, the slots are set
    directly."""
    t: TensorInfo = _new(TensorInfo)
    _set_name(t, name)
    _set_dtype(t, dtype)
    _set_shape(t, shape)
    _set_nbytes(t, nbytes)
    _set_slices(t, slices)
    _set_file(t, file)
    _set_variable(t, variable)
    return t


@dataclass(frozen=True)
class LayerSummary:
    """One layer of a recorded architecture, as its config describes it."""

    name: str
    class_name: str
    module: str | None
    details: dict[str, Any] = field(default_factory=dict)  # units, activation, initializers...


@dataclass(frozen=True)
class SafetyFinding:
    """Something in a saved model that would run code, touch files or the network, or import non-Keras code.

    Two findings are the same when they say the same thing at the same place: ``rule``, ``severity`` and ``when``
    follow from the message and take no part in comparing them."""

    location: str  # layer name, config path, zip member, HDF5 object, or SavedModel function/op
    message: str  # what it would do
    rule: str = field(default="", compare=False)  # a stable id (SARIF's ruleId): "keras-gadget", "tf-op", ...
    # "warning": what a loader would do that the file brings (code, files, network); "note": true and worth
    # knowing, but no loading attack (a registered custom class the user installs, an op ckptcheck does not know).
    severity: str = field(default="warning", compare=False)
    when: str = field(default="load", compare=False)  # "load" or "call" (a SavedModel function run on a call)


@dataclass(frozen=True)
class Architecture:
    """What a Keras file's config records about the model (read as JSON, nothing is loaded)."""

    source: str  # "config.json" or "model_config attribute"
    model_class: str
    model_name: str | None
    layers: tuple[LayerSummary, ...]
    findings: tuple[SafetyFinding, ...] = ()


@dataclass(frozen=True)
class CheckpointInfo:
    """What `inspect` shows: the checkpoint as a whole and its tensors."""

    format: str
    path: str  # as the user gave it
    location: str  # what it resolved to: a bundle prefix or a file
    files: tuple[str, ...]
    tensors: tuple[TensorInfo, ...]
    shards: int | None = None
    writer: str | None = None  # version of what wrote it, where recorded
    metadata: dict[str, str] = field(default_factory=dict)
    architecture: Architecture | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint named by a `checkpoint` state file, or on disk beside it without being named."""

    prefix: str
    step: int | None
    exists: bool
    latest: bool
    named: bool = True  # False: on disk, but the state file no longer names it (a manager past max_to_keep...)


@dataclass(frozen=True)
class ObjectRef:
    """A stored tensor of a TF2 checkpoint with every object path that reaches it."""

    key: str  # checkpoint key
    paths: tuple[str, ...]  # object paths (attribute name last), shortest first
    slot_of: str | None = None  # for an optimizer slot: the path of the variable it belongs to
    slot_name: str | None = None
    optimizer: str | None = None  # path of the optimizer that owns the slot
    # The variable's own name when it was saved (the graph's full_name): what a name-based reader such as
    # tf.compat.v1.train.Saver matches when it restores from this object-based checkpoint.
    saved_name: str | None = None
