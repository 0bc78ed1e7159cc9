"""Step 2: enumerate the model's variables (what the restore can write), each with its label, its own name and
its initializer, and the fingerprint each is filled with before the restore."""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckptcheck.compare import same_bits
from ckptcheck.formats.tensorflow.object_graph import escape_name, slot_path
from ckptcheck.numbers import number_text
from ckptcheck.records import KERAS_FORMATS, KERAS_WEIGHTS, TF2
from ckptcheck.restore_check.report import COUNTER, OPTIMIZER, WEIGHT
from ckptcheck.restore_check.user_model import (
    LoadedModel,
    is_keras_model,
    is_optimizer,
    is_variable,
    keras_module,
    path_parts,
    tensorflow_module,
)

# Keras names a layer's initializer after the variable, except for these.
_INITIALIZER_ATTRS = {"recurrent_kernel": "recurrent_initializer", "embeddings": "embeddings_initializer"}
DETERMINISTIC_INITIALIZERS = frozenset({"Constant", "Zeros", "Ones", "Identity", "IdentityInitializer"})


# --- the model's variables ----------------------------------------------------------------------------------------


@dataclass
class Var:
    obj: Any
    label: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    initial: np.ndarray
    initializer: str | None = None
    key: str | None = None  # the stored name the format looks it up by
    fingerprint: np.ndarray | None = None  # constant fills are kept as a broadcast view: no copy per variable
    # The initial value's statistics, taken before the fingerprint overwrites it; the value itself is then dropped
    # (`initial` keeps only its dtype), so the check holds no second copy of the model.
    initial_stats: Any = None
    after: np.ndarray | None = None
    via: str | None = None
    name: str | None = None  # its own name: a Keras variable's path, a tf.Variable's name without ':0'


def value_of(obj: Any) -> np.ndarray:
    value = obj.numpy()
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else np.asarray(value)


def dtype_name(a: np.ndarray) -> str:
    return "string" if a.dtype == object or a.dtype.kind in "SU" else a.dtype.name


def children_of(obj: Any, tf: Any) -> dict[str, Any]:
    try:
        return dict(tf.train.TrackableView.children(obj))
    except (TypeError, AttributeError, ValueError):
        return {}


def walk_trackables(roots: Sequence[tuple[str, Any]], tf: Any, keras: Any, *, into_optimizers: bool,
          escaped: bool = False) -> dict[int, tuple[str, Any]]:
    """Breadth-first over trackable children: the first path (names joined by '/') reaching each object."""
    first: dict[int, tuple[str, Any]] = {}
    queue: deque[tuple[str, Any]] = deque()
    for name, obj in roots:
        if id(obj) not in first:
            first[id(obj)] = (escape_name(name) if escaped else name, obj)
            queue.append(first[id(obj)])
    while queue:
        path, obj = queue.popleft()
        if is_variable(obj, tf, keras) or (is_optimizer(obj) and not into_optimizers and path):
            continue
        for name, child in children_of(obj, tf).items():
            if id(child) in first:
                continue
            part = escape_name(name) if escaped else name
            first[id(child)] = (f"{path}/{part}" if path else part, child)
            queue.append(first[id(child)])
    return first


def _keras_label(obj: Any) -> str | None:
    path = getattr(obj, "path", None)
    return path if isinstance(path, str) and path else None


def tf_name(obj: Any, keras: Any) -> str | None:
    """The name a name-based (TF1) restore looks a variable up by: its TensorFlow name without ':0' (a Keras 3
    variable's is its backing tf.Variable's: the variable's path)."""
    kv = getattr(keras, "Variable", None) if keras is not None else None
    inner = obj.value if kv is not None and isinstance(obj, kv) else obj
    name = getattr(inner, "name", None)
    if not isinstance(name, str):
        return None
    return re.sub(r":\d+$", "", name)


def _initializers(target: Any, keras: Any) -> dict[int, str]:
    """id(variable) -> its initializer, from the Keras layers that own it (a tf.Variable does not keep one)."""
    found: dict[int, str] = {}
    if keras is None:
        return found
    layers: list[Any] = []
    for _, obj in path_parts(target):
        flatten = getattr(obj, "_flatten_layers", None)
        if callable(flatten):
            with contextlib.suppress(Exception):
                layers += list(flatten(include_self=True, recursive=True))
    for layer in layers:
        for attr, value in list(vars(layer).items()):
            if not isinstance(value, keras.Variable) or id(value) in found:
                continue
            base = attr.lstrip("_")
            init = getattr(layer, f"{base}_initializer", None) or getattr(layer, _INITIALIZER_ATTRS.get(base, ""), None)
            if init is not None:
                found[id(value)] = initializer_text(init)
    return found


def initializer_text(init: Any) -> str:
    """A Keras initializer as its class and non-default arguments: ``Constant(value=0.5)``, ``GlorotUniform()``."""
    if isinstance(init, str):
        return init
    name = type(init).__name__
    config: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        config = dict(init.get_config())
    args = ", ".join(f"{k}={argument_text(v)}" for k, v in config.items() if v is not None)
    return f"{name}({args})"


def argument_text(value: Any) -> str:
    if isinstance(value, float):
        return number_text(value)
    return repr(value) if isinstance(value, str) else str(value)


def enumerate_variables(loaded: LoadedModel, fmt: str, tf: Any, keras: Any) -> list[Var]:
    """Every variable the restore can write. Keras files: the model's weights and its optimizer's variables (what
    load_weights reads); TensorFlow bundles: every variable reachable through trackable children (what
    tf.train.Checkpoint saves and restores)."""
    target = loaded.target
    entries: list[tuple[Any, str, str]] = []  # (variable, label, kind)
    if fmt in KERAS_FORMATS:
        seen: set[int] = set()
        for v in target.weights:
            if id(v) not in seen:
                seen.add(id(v))
                entries.append((v, _keras_label(v) or tf_name(v, keras) or "?", WEIGHT))
        opt = getattr(target, "optimizer", None)
        opt_vars = getattr(opt, "variables", ()) if opt is not None else ()
        for v in list((opt_vars() if callable(opt_vars) else opt_vars) or ()):
            if id(v) not in seen:
                seen.add(id(v))
                entries.append((v, _keras_label(v) or tf_name(v, keras) or "?", OPTIMIZER))
    else:
        roots = path_parts(target)
        model_side = walk_trackables(roots, tf, keras, into_optimizers=False)
        everything = walk_trackables(roots, tf, keras, into_optimizers=True)
        found = [(ident, path, obj) for ident, (path, obj) in everything.items() if is_variable(obj, tf, keras)]
        # A Keras 3 variable's own path names it best, then a scoped TensorFlow name (tf_keras's dense/kernel, as in
        # its .h5 files and TF1 checkpoints), unless two variables share it (Keras names optimizer slots after the
        # variable's short name: two tf.Variables named "kernel" give two "adam/kernel_0_momentum"); else the
        # object path.
        keras_paths = [_keras_label(obj) for _, _, obj in found]
        tf_names = [tf_name(obj, keras) for _, _, obj in found]
        for (ident, path, obj), own, name in zip(found, keras_paths, tf_names, strict=True):
            in_model = ident in model_side
            object_path = model_side[ident][0] if in_model else path
            if own and keras_paths.count(own) == 1:
                label = own
            elif name and "/" in name and tf_names.count(name) == 1 and not own:
                label = name
            else:
                label = object_path or own or name or "?"
            entries.append((obj, label, WEIGHT if in_model else OPTIMIZER))
        entries += [(slot, label, OPTIMIZER) for slot, label in _slot_variables(everything, tf, keras)]
    inits = _initializers(target, keras)
    out: list[Var] = []
    labels: dict[str, int] = {}
    for obj, label, kind in entries:
        n = labels.get(label, 0)
        labels[label] = n + 1
        unique = label if n == 0 else f"{label}#{n + 1}"
        value = value_of(obj)
        own = _keras_label(obj) or tf_name(obj, keras) or ""
        if kind == WEIGHT and value.shape == () and value.dtype.kind in "iu" and "/" not in own:
            # A step counter; an integer scalar inside a layer (normalization/count) is the layer's weight, as
            # model.summary() and `inspect` count it.
            kind = COUNTER
        out.append(Var(obj, unique, kind, dtype_name(value), tuple(value.shape), value, inits.get(id(obj)),
                        name=_keras_label(obj) or tf_name(obj, keras)))
    return out


def live_slot(optimizer: Any, variable: Any, slot_name: str) -> Any:
    """``optimizer.get_slot(variable, slot_name)``, or None when the optimizer has no such slot (yet)."""
    get_slot = getattr(optimizer, "get_slot", None)
    if not callable(get_slot):
        return None
    try:
        return get_slot(variable, slot_name)
    except (KeyError, ValueError, AttributeError, TypeError, LookupError):
        return None


def _slot_variables(walked: dict[int, tuple[str, Any]], tf: Any, keras: Any) -> list[tuple[Any, str]]:
    """Slot variables of optimizers that keep them per variable (tf.compat.v1 optimizers, tf_keras's): they are not
    trackable children, so walking does not find them. TensorFlow saves each under
    ``<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>``, the label used here."""
    variables = [(path, obj) for path, obj in walked.values() if is_variable(obj, tf, keras)]
    out: list[tuple[Any, str]] = []
    seen = set(walked)
    for opt_path, opt in walked.values():
        names = getattr(opt, "get_slot_names", None)
        if not is_optimizer(opt) or not callable(names):
            continue
        for slot_name in names():
            for var_path, var in variables:
                slot = live_slot(opt, var, slot_name)
                if slot is not None and is_variable(slot, tf, keras) and id(slot) not in seen:
                    seen.add(id(slot))
                    out.append((slot, slot_path(var_path, opt_path, slot_name)))
    return out


def variable_labels(target: Any) -> dict[str, Any]:
    """label -> variable for what a model function returns, as restore-check and rename maps name them."""
    tf = tensorflow_module()
    keras = keras_module()
    loaded = LoadedModel(target, "", "", None)
    fmt = KERAS_WEIGHTS if is_keras_model(target) and not isinstance(target, dict) else TF2
    labels = {v.label: v.obj for v in enumerate_variables(loaded, fmt, tf, keras)}
    if fmt == KERAS_WEIGHTS:  # a Keras model restored from a bundle has the same labels, and maybe more variables
        for v in enumerate_variables(loaded, TF2, tf, keras):
            labels.setdefault(v.label, v.obj)
    return labels


# --- fingerprints -------------------------------------------------------------------------------------------------


def fingerprint_of(v: Var, k: int, avoid: np.ndarray | None) -> np.ndarray:
    """A value for variable v (number k among variables of its dtype and shape) that no checkpoint holds by chance,
    distinct from the other k's, and different from `avoid` (the value it should be restored to)."""
    dtype = v.initial.dtype
    for attempt in range(4):
        j = k + attempt * 997
        if dtype.kind in "OSU":
            value: Any = f"ckptcheck-fingerprint-{j}".encode()
            arr = np.empty(v.shape, dtype=object)
            arr.fill(value)
        elif dtype.kind == "b":
            arr = ~avoid if avoid is not None and avoid.shape == v.shape and avoid.dtype.kind == "b" else np.full(
                v.shape, j % 2 == 0, dtype=dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            span = min(1000, (int(info.max) - int(info.min)) // 4)
            value = int(info.max) - 3 - j % span if dtype.kind == "u" else int(info.min) + 3 + j % span
            arr = np.full(v.shape, value, dtype=dtype)
        else:
            # (1 + m/128) * 2^-e: exact in bfloat16 and float16 as in float32 and float64.
            value = -(1.0 + (j % 100) / 128.0) * 2.0 ** (-3 - (j // 100) % 8)
            arr = np.full(v.shape, value, dtype=np.float64).astype(dtype)
        if avoid is None or avoid.shape != arr.shape or not same_bits(arr, avoid.astype(arr.dtype, copy=False)
                                                                      if avoid.dtype != object else avoid):
            return arr
    return arr


