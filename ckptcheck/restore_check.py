"""Will a model restore from this checkpoint, and what would be left behind?

`restore_check(checkpoint, model)` builds the user's model (``FILE.py:FUNCTION``, or the architecture of a
``.keras`` file), creates what it would otherwise create lazily, and restores the checkpoint into it with the
format's own restore: `tf.train.Checkpoint.restore` for TF2 checkpoints and SavedModel variables (object-based),
the same call for TF1 checkpoints (which have no object graph, so TensorFlow falls back to variable names), and
`Model.load_weights` for Keras files.

What happened is measured, not predicted. Before the restore every variable is filled with a fingerprint, a value
no checkpoint holds by chance; afterwards a variable whose fingerprint is gone was written by the restore, and its
value is compared bit for bit with the stored values, read by ckptcheck's own readers. Alongside, the format's
matching rule is computed to say why: the stored name each variable is looked up by (TF2: its object path, matched
edge by edge from the root as TensorFlow does; TF1: its variable name; Keras 3: the key Keras's own writer gives
it, found by saving the fingerprinted model; legacy .h5: its position among the layers with weights), and whether
that name is missing or holds another dtype or shape. Unrestored variables and unused values of the same dtype
and shape are paired by name similarity into rename suggestions, which `write_rename_map` writes as a reviewable
JSON mapping and `apply_rename_map` applies.

TensorFlow and Keras are imported inside the functions that need them; the user's model file is imported with
its output sent to stderr, and its errors are reported as its own (type, message, file and line).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
import traceback
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ckptcheck.errors import CkptcheckError, UsageError
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.object_graph import OPTIMIZER_SLOT, escape_name, parse_graph, slot_path
from ckptcheck.model import KERAS, KERAS_H5, KERAS_WEIGHTS, SAVEDMODEL, TF1, TF2, ObjectRef, TensorInfo
from ckptcheck.reports import (
    COUNTER,
    MISMATCH,
    MISSING,
    OPTIMIZER,
    RESTORED,
    RESTORED_DIFFERENT,
    SKIPPED,
    WEIGHT,
    KeptValue,
    Mismatch,
    RenameSuggestion,
    RestoreCheckReport,
    RestoreStop,
    StoredValueUse,
    VariableCheck,
)

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
KERAS_SKIPS_OPTIMIZER = "Skipping variable loading for optimizer"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
RENAME_MAP_SCHEMA = "ckptcheck.rename-map/1"
MAX_MESSAGE_CHARS = 500
MAX_MAP_BYTES = 64 << 20
# Keras names a layer's initializer after the variable, except for these.
_INITIALIZER_ATTRS = {"recurrent_kernel": "recurrent_initializer", "embeddings": "embeddings_initializer"}
_DETERMINISTIC_INITIALIZERS = frozenset({"Constant", "Zeros", "Ones", "Identity", "IdentityInitializer"})

StageCallback = Callable[[str], None]


class ModelLoadError(UsageError):
    """The model file failed to import, FUNCTION raised, or the model raised when called: the user's own error,
    reported as its exception type and message with the file and line it came from."""


# --- the model --------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """What --model named, loaded: the object to restore into, and where its code lives."""

    target: Any
    spec: str
    kind: str  # described: "keras Sequential 'seq'", "tf.Module 'mlp'", "dict of model, optimizer"
    code_file: str | None  # the FILE.py whose frames errors are reported from
    notes: list[str] = field(default_factory=list)


def _one_line(text: str) -> str:
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)  # TensorFlow's op-wrapper prefix
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _user_frame(exc: BaseException, code_file: str) -> tuple[str, int | None]:
    """The file and line to blame: the deepest frame in the model file's directory (its own code and modules
    beside it), else the model file itself; a SyntaxError names its own location."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno
    home = os.path.dirname(os.path.realpath(code_file)) + os.sep
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if os.path.realpath(f.filename).startswith(home)
           and not any(part in f.filename for part in ("site-packages", "dist-packages"))]
    if own:
        return own[-1].filename, own[-1].lineno
    return code_file, None


@contextlib.contextmanager
def user_code(code_file: str | None, doing: str, *, blame: str | None = None) -> Iterator[None]:
    """Run the user's code: its prints go to stderr (stdout may carry JSON), and anything it raises becomes a
    ModelLoadError carrying its type, message, and the file and line it came from (or `blame`, for code that
    is not in a file of the user's, such as a .keras file's config)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except (KeyboardInterrupt, CkptcheckError):
        raise
    except BaseException as exc:  # SystemExit from the user's code is its error too
        message = f"{type(exc).__name__}: {_one_line(str(exc))}" if str(exc) else type(exc).__name__
        if code_file is None:
            raise ModelLoadError(message, path=blame, hint=f"raised while {doing}") from None
        path, line = _user_frame(exc, code_file)
        where = f"{path}:{line}" if line is not None else path
        raise ModelLoadError(message, path=where, hint=f"raised while {doing}") from None


def _import_file(path: str) -> Any:
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:12]
    name = f"_ckptcheck_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError("cannot import this file as Python", path=path, hint="--model FILE.py:FUNCTION")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    here = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, here)  # so it can import modules beside it
    try:
        with user_code(path, f"importing {os.path.basename(path)}"):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(here)
    return module


def load_model(spec: str) -> LoadedModel:
    """``FILE.py:FUNCTION`` -> what FUNCTION() returns; ``FILE.keras`` -> a fresh model built from its config.json
    (the architecture and initializers, not the file's weights), compiled as it records."""
    keras = _import_keras()
    if spec.lower().endswith(".keras"):
        return _model_from_keras_file(spec, keras)
    path, sep, function = spec.rpartition(":")
    if not sep or not path or not function.isidentifier():
        raise UsageError(f"--model {spec!r}: expected FILE.py:FUNCTION or a .keras file",
                         hint="e.g. --model models.py:build_model")
    if not os.path.isfile(path):
        raise UsageError("no such model file", path=path, hint="--model FILE.py:FUNCTION")
    module = _import_file(path)
    fn = getattr(module, function, None)
    if fn is None or not callable(fn):
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and getattr(v, "__module__", None) == module.__name__ and not n.startswith("_"))
        raise UsageError(f"defines no function {function!r}", path=path,
                         hint=f"functions it defines: {', '.join(defined)}" if defined else "it defines no functions")
    with user_code(path, f"calling {function}()"):
        target = fn()
    loaded = LoadedModel(target, spec, _describe_target(target), path)
    _check_target(loaded, keras)
    return loaded


def _model_from_keras_file(path: str, keras: Any) -> LoadedModel:
    if not os.path.isfile(path):
        raise UsageError("no such model file", path=path)
    if not zipfile.is_zipfile(path):
        raise UsageError("not a .keras archive (not a zip file)", path=path)
    from ckptcheck.roundtrip import keras_config

    found = keras_config(path)
    if found is None:
        raise UsageError("the archive has no config.json", path=path, hint="--model takes a .keras file")
    config = found[1]
    notes = [f"built from {os.path.basename(path)}'s config.json with fresh initial values (its weights are not "
             f"loaded)"]
    compile_config = config.get("compile_config")
    if isinstance(compile_config, dict) and not compile_config.get("optimizer"):
        # Keras would compile it (deserializing compiles too) with its default optimizer, RMSprop, which the
        # file's optimizer state does not fit: build the model uncompiled instead.
        config = {k: v for k, v in config.items() if k != "compile_config"}
    with user_code(None, "building the model its config.json describes", blame=path):
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
        if not model.built and isinstance(config.get("build_config"), dict):
            model.build_from_config(config["build_config"])
        if isinstance(compile_config, dict) and compile_config.get("optimizer"):
            model.compile_from_config(compile_config)
            notes.append("compiled as its config.json records")
        elif isinstance(compile_config, dict):
            notes.append("not compiled: its config.json's compile_config names no optimizer, so no optimizer was "
                         "built" + _orphan_optimizer_text(path))
    return LoadedModel(model, path, _describe_target(model), None, notes)


def _orphan_optimizer_text(path: str) -> str:
    """The optimizer state a .keras file stores although its config names no optimizer."""
    import ckptcheck

    try:
        with ckptcheck.open_checkpoint(path) as reader:
            count = sum(1 for t in reader.tensors() if t.name.startswith("optimizer/"))
    except (OSError, ValueError, CkptcheckError):
        return ""
    return (f"; the file stores {count} optimizer values its config does not name (Keras cannot load them into a "
            f"model compiled from this config)") if count else ""


def _check_target(loaded: LoadedModel, keras: Any) -> None:
    target = loaded.target
    if target is None:
        raise UsageError("the model function returned None", path=loaded.code_file,
                         hint="return the model (a Keras model, a tf.Module, or a dict of trackables)")
    parts = target.values() if isinstance(target, dict) else [target]
    if isinstance(target, dict) and not target:
        raise UsageError("the model function returned an empty dict", path=loaded.code_file)
    if isinstance(target, dict) and not all(isinstance(k, str) and k for k in target):
        raise UsageError("the dict's keys must be non-empty strings (they name the checkpoint's root objects)",
                         path=loaded.code_file)
    tf = _import_tensorflow()
    for part in parts:
        if not _is_trackable(part, tf, keras):
            raise UsageError(f"the model function returned an object of type {type(part).__name__}, which "
                             f"TensorFlow cannot restore into", path=loaded.code_file,
                             hint="return a Keras model, a tf.Module, or a dict of trackables (models, optimizers, "
                                  "variables)")


def _is_trackable(obj: Any, tf: Any, keras: Any) -> bool:
    return isinstance(obj, tf.__internal__.tracking.Trackable) or _is_variable(obj, tf, keras)


def _describe_target(target: Any) -> str:
    if isinstance(target, dict):
        return "dict of " + ", ".join(f"{k}: {_describe_one(v)}" for k, v in target.items())
    return _describe_one(target)


def _describe_one(obj: Any) -> str:
    cls = type(obj)
    name = getattr(obj, "name", None)
    package = cls.__module__.split(".")[0]
    base = cls.__name__ if package.startswith("_ckptcheck_model_") or package == "__main__" else (
        f"{package} {cls.__name__}")
    return f"{base} '{name}'" if isinstance(name, str) and name else base


# --- TensorFlow and Keras ----------------------------------------------------------------------------------------


def _import_tensorflow() -> Any:
    from ckptcheck.generate import import_tensorflow

    return import_tensorflow()


def _import_keras() -> Any:
    """Keras 3 when it is installed (TensorFlow 2.16+ ships it); None otherwise."""
    _import_tensorflow()
    try:
        import keras
    except ImportError:
        return None
    return keras


def _is_variable(obj: Any, tf: Any, keras: Any) -> bool:
    if isinstance(obj, tf.Variable):
        return True
    kv = getattr(keras, "Variable", None) if keras is not None else None
    return kv is not None and isinstance(obj, kv)


def _is_optimizer(obj: Any) -> bool:
    return hasattr(obj, "apply_gradients")


def _is_keras_model(obj: Any) -> bool:
    return hasattr(obj, "load_weights") and hasattr(obj, "weights") and hasattr(obj, "layers")


@contextlib.contextmanager
def _quiet(tf: Any, caught: list[str]) -> Iterator[None]:
    """TensorFlow's and absl's log lines off stderr, and Python warnings collected (they become notes)."""
    loggers = [tf.get_logger(), logging.getLogger("absl")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        for w in seen:
            if issubclass(w.category, DeprecationWarning):
                continue
            text = _one_line(str(w.message))
            if text and text not in caught:
                caught.append(text)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# --- building what is created lazily ------------------------------------------------------------------------------


def parse_input_shapes(specs: Sequence[str] | None) -> tuple[tuple[int, ...], ...]:
    """``--input-shape 3`` or ``--input-shape 28,28,1`` (without the batch dimension), once per model input."""
    shapes = []
    for spec in specs or ():
        try:
            dims = tuple(int(d) for d in spec.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UsageError(f"--input-shape {spec!r}: expected dimensions like 3 or 28,28,1") from None
        if not dims or any(d <= 0 for d in dims):
            raise UsageError(f"--input-shape {spec!r}: every dimension must be at least 1")
        shapes.append(dims)
    return tuple(shapes)


def _parts(target: Any) -> list[tuple[str, Any]]:
    return list(target.items()) if isinstance(target, dict) else [("", target)]


def _config_input_shapes(location: str) -> tuple[tuple[int, ...], ...]:
    """The input shapes a Keras file's config records (build_config, or the InputLayer's batch shape)."""
    from ckptcheck.roundtrip import keras_config

    try:
        found = keras_config(location)
    except (OSError, ValueError, CkptcheckError):
        return ()
    if found is None or not isinstance(found[1], dict):
        return ()
    config = found[1]
    candidates: list[Any] = []
    build = config.get("build_config")
    if isinstance(build, dict):
        candidates.append(build.get("input_shape"))
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if isinstance(layers, list):
        for layer in layers:
            cfg = layer.get("config") if isinstance(layer, dict) else None
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer" and isinstance(cfg, dict):
                candidates.append(cfg.get("batch_shape") or cfg.get("batch_input_shape"))
    for shape in candidates:
        shapes = _batch_shapes(shape)
        if shapes:
            return shapes
    return ()


def _batch_shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        nested = [_batch_shapes(v) for v in value]
        return tuple(s[0] for s in nested) if all(len(s) == 1 for s in nested) else ()
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(d, int) and d > 0 for d in value[1:]):
        return (tuple(value[1:]),)
    return ()


def _shape_text(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join("(1, " + ", ".join(str(d) for d in s) + ")" for s in shapes)


def _unbuilt(obj: Any) -> bool:
    """A Keras model or layer whose variables do not exist yet, or a tf.Module with none (created on call)."""
    if _is_keras_model(obj) or hasattr(obj, "built"):
        return getattr(obj, "built", True) is False
    variables = getattr(obj, "variables", None)
    return callable(obj) and isinstance(variables, (tuple, list)) and not variables


def build_lazy(loaded: LoadedModel, input_shapes: Sequence[tuple[int, ...]], fmt: str, location: str) -> list[str]:
    """Create what the model creates lazily, before the restore: call it on zeros (when --input-shape is given, or
    when it is not built and a Keras file's config records its input shape), then build each optimizer."""
    tf = _import_tensorflow()
    keras = _import_keras()
    done: list[str] = []
    for name, obj in _parts(loaded.target):
        if _is_variable(obj, tf, keras) or _is_optimizer(obj) or not callable(obj):
            continue
        shapes = tuple(input_shapes)
        source = "--input-shape"
        if not shapes and _unbuilt(obj):
            if fmt in (KERAS, KERAS_WEIGHTS, KERAS_H5):
                shapes = _config_input_shapes(location)
                source = "the input shape the checkpoint's config records"
            if not shapes:
                what = "has no variables yet: Keras creates a layer's variables on its first call" if hasattr(
                    obj, "built") else "has no variables yet: it creates them when first called"
                label = f"'{name}' ({_describe_one(obj)})" if name else f"the model ({_describe_one(obj)})"
                raise UsageError(f"{label} {what}", path=loaded.spec,
                                 hint="pass --input-shape with the shape of one example, e.g. --input-shape 3 for "
                                      "inputs of shape (batch, 3), so ckptcheck can call it once on zeros")
        if not shapes:
            continue
        zeros = [np.zeros((1, *s), dtype=np.float32) for s in shapes]
        arg: Any = zeros[0] if len(zeros) == 1 else zeros
        label = f"'{name}'" if name else "the model"
        with user_code(loaded.code_file, f"calling {label} on zeros of shape {_shape_text(shapes)}"):
            if hasattr(obj, "built"):
                obj(arg, training=False)
            else:
                obj(arg)
        done.append(f"called {label} once on zeros of shape {_shape_text(shapes)} ({source}) so that it creates "
                    f"its variables")
    done += _build_optimizers(loaded, tf, keras)
    return done


def _unbuilt_optimizer(opt: Any) -> bool:
    """Keras 3 optimizers say `built`; tf_keras's set `_built` only once built."""
    built = getattr(opt, "built", None)
    if isinstance(built, bool):
        return not built
    return not getattr(opt, "_built", False)


def _build_optimizers(loaded: LoadedModel, tf: Any, keras: Any) -> list[str]:
    done = []
    parts = _parts(loaded.target)
    models = [(n, o) for n, o in parts if not _is_optimizer(o) and not _is_variable(o, tf, keras)]
    owned = [(n, getattr(o, "optimizer", None), o) for n, o in models if _is_keras_model(o)]
    loose = [(n, o, None) for n, o in parts if _is_optimizer(o)]
    for name, opt, owner in owned + loose:
        if opt is None or not hasattr(opt, "build") or not _unbuilt_optimizer(opt):
            continue
        if owner is not None:
            variables = list(owner.trainable_variables)
        else:
            variables = [v for _, o in models for v in (
                [o] if _is_variable(o, tf, keras) else list(getattr(o, "trainable_variables", ())))]
        with user_code(loaded.code_file, "building the optimizer"):
            opt.build(variables)
        # A dict may name the model's own optimizer too ({"model": m, "optimizer": m.optimizer}): use that name.
        named = next((n for n, o in parts if o is opt and n), None)
        if named:
            who = f"'{named}'"
        elif name:
            who = f"the optimizer of '{name}'" if owner is not None else f"'{name}'"
        else:
            who = "the model's optimizer"
        done.append(f"built {who} ({type(opt).__name__}) over {len(variables)} trainable variables, so its state "
                    f"exists before the restore, as after a first training step")
    return done


# --- the model's variables ----------------------------------------------------------------------------------------


@dataclass
class _Var:
    obj: Any
    label: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    initial: np.ndarray
    initializer: str | None = None
    key: str | None = None  # the stored name the format looks it up by
    fingerprint: np.ndarray | None = None
    after: np.ndarray | None = None
    via: str | None = None
    name: str | None = None  # its own name: a Keras variable's path, a tf.Variable's name without ':0'


def _value_of(obj: Any) -> np.ndarray:
    value = obj.numpy()
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else np.asarray(value)


def _dtype_name(a: np.ndarray) -> str:
    return "string" if a.dtype == object or a.dtype.kind in "SU" else a.dtype.name


def _children(obj: Any, tf: Any) -> dict[str, Any]:
    try:
        return dict(tf.train.TrackableView.children(obj))
    except (TypeError, AttributeError, ValueError):
        return {}


def _walk(roots: Sequence[tuple[str, Any]], tf: Any, keras: Any, *, into_optimizers: bool,
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
        if _is_variable(obj, tf, keras) or (_is_optimizer(obj) and not into_optimizers and path):
            continue
        for name, child in _children(obj, tf).items():
            if id(child) in first:
                continue
            part = escape_name(name) if escaped else name
            first[id(child)] = (f"{path}/{part}" if path else part, child)
            queue.append(first[id(child)])
    return first


def _keras_label(obj: Any) -> str | None:
    path = getattr(obj, "path", None)
    return path if isinstance(path, str) and path else None


def _tf_name(obj: Any, keras: Any) -> str | None:
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
    for _, obj in _parts(target):
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
    args = ", ".join(f"{k}={_number_text(v)}" for k, v in config.items() if v is not None)
    return f"{name}({args})"


def _number_text(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)


def _enumerate(loaded: LoadedModel, fmt: str, tf: Any, keras: Any) -> list[_Var]:
    """Every variable the restore can write. Keras files: the model's weights and its optimizer's variables (what
    load_weights reads); TensorFlow bundles: every variable reachable through trackable children (what
    tf.train.Checkpoint saves and restores)."""
    target = loaded.target
    entries: list[tuple[Any, str, str]] = []  # (variable, label, kind)
    if fmt in (KERAS, KERAS_WEIGHTS, KERAS_H5):
        seen: set[int] = set()
        for v in target.weights:
            if id(v) not in seen:
                seen.add(id(v))
                entries.append((v, _keras_label(v) or _tf_name(v, keras) or "?", WEIGHT))
        opt = getattr(target, "optimizer", None)
        opt_vars = getattr(opt, "variables", ()) if opt is not None else ()
        for v in list((opt_vars() if callable(opt_vars) else opt_vars) or ()):
            if id(v) not in seen:
                seen.add(id(v))
                entries.append((v, _keras_label(v) or _tf_name(v, keras) or "?", OPTIMIZER))
    else:
        roots = _parts(target)
        model_side = _walk(roots, tf, keras, into_optimizers=False)
        everything = _walk(roots, tf, keras, into_optimizers=True)
        found = [(ident, path, obj) for ident, (path, obj) in everything.items() if _is_variable(obj, tf, keras)]
        # A Keras 3 variable's own path names it best, then a scoped TensorFlow name (tf_keras's dense/kernel, as in
        # its .h5 files and TF1 checkpoints), unless two variables share it (Keras names optimizer slots after the
        # variable's short name: two tf.Variables named "kernel" give two "adam/kernel_0_momentum"); else the
        # object path.
        keras_paths = [_keras_label(obj) for _, _, obj in found]
        tf_names = [_tf_name(obj, keras) for _, _, obj in found]
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
    out: list[_Var] = []
    labels: dict[str, int] = {}
    for obj, label, kind in entries:
        n = labels.get(label, 0)
        labels[label] = n + 1
        unique = label if n == 0 else f"{label}#{n + 1}"
        value = _value_of(obj)
        if kind == WEIGHT and value.shape == () and value.dtype.kind in "iu":
            kind = COUNTER
        out.append(_Var(obj, unique, kind, _dtype_name(value), tuple(value.shape), value, inits.get(id(obj)),
                        name=_keras_label(obj) or _tf_name(obj, keras)))
    return out


def _live_slot(optimizer: Any, variable: Any, slot_name: str) -> Any:
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
    variables = [(path, obj) for path, obj in walked.values() if _is_variable(obj, tf, keras)]
    out: list[tuple[Any, str]] = []
    seen = set(walked)
    for opt_path, opt in walked.values():
        names = getattr(opt, "get_slot_names", None)
        if not _is_optimizer(opt) or not callable(names):
            continue
        for slot_name in names():
            for var_path, var in variables:
                slot = _live_slot(opt, var, slot_name)
                if slot is not None and _is_variable(slot, tf, keras) and id(slot) not in seen:
                    seen.add(id(slot))
                    out.append((slot, slot_path(var_path, opt_path, slot_name)))
    return out


def variable_labels(target: Any) -> dict[str, Any]:
    """label -> variable for what a model function returns, as restore-check and rename maps name them."""
    tf = _import_tensorflow()
    keras = _import_keras()
    loaded = LoadedModel(target, "", "", None)
    fmt = KERAS_WEIGHTS if _is_keras_model(target) and not isinstance(target, dict) else TF2
    labels = {v.label: v.obj for v in _enumerate(loaded, fmt, tf, keras)}
    if fmt == KERAS_WEIGHTS:  # a Keras model restored from a bundle has the same labels, and maybe more variables
        for v in _enumerate(loaded, TF2, tf, keras):
            labels.setdefault(v.label, v.obj)
    return labels


# --- fingerprints -------------------------------------------------------------------------------------------------


def _fingerprint(v: _Var, k: int, avoid: np.ndarray | None) -> np.ndarray:
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
        if avoid is None or avoid.shape != arr.shape or not _same_bits(arr, avoid.astype(arr.dtype, copy=False)
                                                                      if avoid.dtype != object else avoid):
            return arr
    return arr


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    from ckptcheck.roundtrip import same_bits

    return same_bits(a, b)


# --- what the format looks each variable up by ----------------------------------------------------------------------


def short_key(key: str) -> str:
    """A TF2 key without its `/.ATTRIBUTES/VARIABLE_VALUE` tail: the object path of the variable."""
    return key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key


def _tf2_root(loaded: LoadedModel, reader: CheckpointReader, tf: Any) -> tuple[Any, Any, str, list[str]]:
    """The tf.train.Checkpoint to restore with, the object its graph's root stands for, how it is written, and
    notes. A dict names the root's children; else the model becomes `model=` when the checkpoint's root has a
    `model` child (tf.train.Checkpoint(model=...), as `ckptcheck generate` writes), and the root itself otherwise
    (a SavedModel, or tf_keras's save_weights)."""
    target = loaded.target
    root_children = _root_children(reader)
    if isinstance(target, dict):
        ckpt = tf.train.Checkpoint(**target)
        return ckpt, ckpt, f"tf.train.Checkpoint({', '.join(f'{k}=...' for k in target)})", []
    if "model" in root_children or not root_children:
        ckpt = tf.train.Checkpoint(model=target)
        return ckpt, ckpt, "tf.train.Checkpoint(model=<model>)", []
    note = (f"the checkpoint's root has no `model` child (it has {', '.join(root_children)}): the model was "
            f"restored as the root; return a dict from FUNCTION to name its objects otherwise")
    return tf.train.Checkpoint(root=target), target, "tf.train.Checkpoint(root=<model>)", [note]


def _root_children(reader: CheckpointReader) -> list[str]:
    data = getattr(reader, "object_graph_bytes", lambda: None)()
    if not data:
        return []
    nodes = parse_graph(data)
    return [name for _, name in nodes[0].children] if nodes else []


@dataclass
class _Tf2Match:
    keys: dict[int, str]  # id(live object) -> the VARIABLE_VALUE key of the checkpoint node bound to it
    others: dict[str, str]  # key -> path of a bound live object that is not a model variable (save_counter...)


def _match_tf2(reader: CheckpointReader, root: Any, variables: Sequence[_Var], tf: Any, keras: Any) -> _Tf2Match:
    """Bind checkpoint nodes to live objects as TensorFlow's object-based restore does: from the root, each
    checkpoint child edge to the live child of the same name, breadth first; a node is bound once."""
    data = getattr(reader, "object_graph_bytes", lambda: None)()
    if not data:
        return _Tf2Match({}, {})
    nodes = parse_graph(data)
    bound: dict[int, Any] = {0: root}
    path_of: dict[int, str] = {0: ""}
    queue: deque[int] = deque([0])
    while queue:
        node_id = queue.popleft()
        live = _children(bound[node_id], tf)
        for child_id, name in nodes[node_id].children:
            if child_id in bound or not 0 <= child_id < len(nodes) or name not in live:
                continue
            bound[child_id] = live[name]
            parent = path_of[node_id]
            path_of[child_id] = f"{parent}/{escape_name(name)}" if parent else escape_name(name)
            queue.append(child_id)
    # Slot variables are bound through their optimizer's slot records: the optimizer's slot of that name for the
    # variable the original node is bound to (when the optimizer has created it; else TensorFlow defers it).
    for node_id, obj in list(bound.items()):
        for slot in nodes[node_id].slots:
            original = bound.get(slot.original_node)
            if original is None or slot.slot_node in bound or not 0 <= slot.slot_node < len(nodes):
                continue
            live = _live_slot(obj, original, slot.slot_name)
            if live is not None:
                bound[slot.slot_node] = live
                path_of[slot.slot_node] = slot_path(path_of[slot.original_node], path_of[node_id], slot.slot_name)
    wanted = {id(v.obj) for v in variables}
    keys: dict[int, str] = {}
    others: dict[str, str] = {}
    for node_id, obj in bound.items():
        for attr in nodes[node_id].attributes:
            if id(obj) in wanted and attr.name == "VARIABLE_VALUE":
                keys.setdefault(id(obj), attr.checkpoint_key)
            elif id(obj) not in wanted:
                others[attr.checkpoint_key] = path_of[node_id] or "(root)"
    return _Tf2Match(keys, others)


def _predict_tf2(variables: Sequence[_Var], match: _Tf2Match, root: Any, tf: Any, keras: Any) -> None:
    """The key each variable is restored from; for one the restore does not reach, the key it would be saved
    under (its object path through the model, for a weight)."""
    model_side = _walk([("", root)], tf, keras, into_optimizers=False, escaped=True)
    everything = _walk([("", root)], tf, keras, into_optimizers=True, escaped=True)
    for v in variables:
        found = match.keys.get(id(v.obj))
        if found is not None:
            v.key = found
            continue
        path = (model_side.get(id(v.obj)) or everything.get(id(v.obj)) or ("", None))[0]
        v.key = path + VALUE_SUFFIX if path else None


def _predict_keras3(model: Any, variables: Sequence[_Var], work: str) -> None:
    """Keras 3 keys layers by class and position (layers/dense_1/vars/0), not by name: save the fingerprinted
    model with Keras's own writer and see where each fingerprint lands."""
    import ckptcheck

    probe = os.path.join(work, "probe.weights.h5")
    model.save_weights(probe)
    by_group: dict[tuple[str, tuple[int, ...]], list[_Var]] = {}
    for v in variables:
        by_group.setdefault((v.dtype, v.shape), []).append(v)
    with ckptcheck.open_checkpoint(probe) as reader:
        for t in reader.tensors():
            group = [v for v in by_group.get((t.dtype, t.shape), []) if v.key is None]
            if not group:
                continue
            value = reader.read(t.name)
            hit = next((v for v in group if v.fingerprint is not None and _same_bits(v.fingerprint, value)), None)
            if hit is not None:
                hit.key = t.name


def _predict_legacy_h5(model: Any, variables: Sequence[_Var], stored: Sequence[TensorInfo]) -> None:
    """Keras loads a legacy .h5 by position: the k-th layer with weights takes the k-th layer group of the file,
    weight by weight in order (trainable, then non-trainable). Optimizer state is not read."""
    groups: list[list[str]] = []
    last = None
    for t in stored:
        if t.name.startswith("optimizer_weights/"):
            continue
        layer = t.name.split("/", 1)[0]
        if layer != last:
            groups.append([])
            last = layer
        groups[-1].append(t.name)
    by_id = {id(v.obj): v for v in variables}
    layers = [layer for layer in getattr(model, "layers", []) if layer.weights]
    for layer, names in zip(layers, groups, strict=False):
        weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        for w, name in zip(weights, names, strict=False):
            v = by_id.get(id(w))
            if v is not None:
                v.key = name


# --- stored values ------------------------------------------------------------------------------------------------


def _stored_kind(fmt: str, t: TensorInfo, names: set[str], ref: ObjectRef | None) -> str:
    optimizer = False
    if fmt in (TF2, SAVEDMODEL):
        paths = ref.paths if ref is not None else (t.name,)
        optimizer = bool(ref is not None and ref.slot_of) or all(
            any("optimizer" in part.lower() for part in p.split("/")) for p in paths)
    elif fmt == TF1:
        base = t.name.rsplit("/", 1)[-1]
        optimizer = base.endswith("_power") or any(t.name.startswith(n + "/") for n in names if n != t.name)
    else:
        optimizer = t.name.startswith(("optimizer/", "optimizer_weights/"))
    if optimizer:
        return OPTIMIZER
    if t.shape == () and t.dtype.startswith(("int", "uint")):
        return COUNTER
    return WEIGHT


class _Stored:
    """The checkpoint's values, read once each, on demand."""

    def __init__(self, reader: CheckpointReader) -> None:
        self.reader = reader
        self.infos = {t.name: t for t in reader.tensors() if t.name != OBJECT_GRAPH_KEY}
        self._cache: dict[str, np.ndarray] = {}

    def read(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = self.reader.read(key)
        return self._cache[key]


def _equal(after: np.ndarray, stored: np.ndarray) -> tuple[bool, str | None]:
    """Whether a restored value is the stored one: bit for bit, or after the dtype conversion a restore does."""
    if after.shape != stored.shape:
        return False, None
    if _same_bits(after, stored):
        return True, None
    if after.dtype == object or stored.dtype == object or after.dtype == stored.dtype:
        return False, None
    try:
        with np.errstate(all="ignore"):
            converted = stored.astype(after.dtype)
    except (TypeError, ValueError):
        return False, None
    if _same_bits(after, converted):
        return True, f"converted from {_dtype_name(stored)} to {_dtype_name(after)}"
    return False, None


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape or a.dtype == object or b.dtype == object:
        return None
    try:
        with np.errstate(all="ignore"):
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    except (TypeError, ValueError):
        return None
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else 0.0


# --- suggestions ----------------------------------------------------------------------------------------------------


def _components(name: str) -> list[str]:
    return [p for p in short_key(name).split("/") if p]


def rename_of(checkpoint_name: str, model_name: str) -> tuple[str, str] | None:
    """The whole path components in which two names differ, as (in the checkpoint, in the model): dense_1 -> head.
    ("", "") for equal names; None when they differ in their last component (kernel vs bias: other variables)."""
    a, b = _components(checkpoint_name), _components(model_name)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    if a == b:
        return "", ""
    if end == 0:
        return None
    return "/".join(a[start: len(a) - end]), "/".join(b[start: len(b) - end])


def _index_like(part: str) -> bool:
    """Positions, not names (`5`, `layer_with_weights-3`): a rename of positions is no evidence."""
    return any(p.isdigit() or re.fullmatch(r"layer(_with_weights)?-\d+", p) is not None
               for p in part.split("/") if p)


def _flat_renamed(stored: str, model: str, rename: tuple[str, str]) -> bool:
    """Keras names an optimizer slot after its variable's path with '/' as '_' (adam/seq_dense_1_kernel_momentum):
    the same layer rename, inside the last component."""
    a, b = rename
    if not a or not b:
        return False
    ca, cb = _components(stored), _components(model)
    if len(ca) != len(cb) or ca[:-1] != cb[:-1]:
        return False
    flat_a, flat_b = a.replace("/", "_"), b.replace("/", "_")
    renamed = f"_{ca[-1]}_".replace(f"_{flat_a}_", f"_{flat_b}_")[1:-1]
    return renamed == cb[-1] and renamed != ca[-1]


@dataclass
class _Names:
    """The names a variable (or a stored value) is known by, each with how many others share it."""

    own: str | None  # the variable's own name: Keras path, TensorFlow name; for a stored value its `variable`
    path: str | None  # TF2: the object path through the model


def suggest(variables: Sequence[VariableCheck], values: Sequence[StoredValueUse], *, use_paths: bool = False
            ) -> tuple[RenameSuggestion, ...]:
    """Pair each unrestored variable with an unused stored value of the same dtype and shape, on evidence only:
    the value's recorded name (the name the saving model knew it by) equal to the variable's own name, or equal
    after one consistent rename of whole path components (a renamed layer or scope) that explains several values,
    or is the only fit for both. Names shared by several variables (TensorFlow's `kernel`, `Variable`) are no
    evidence; TF2 object paths through the model stand in for them (`use_paths`), unless they are positions
    (`_operations/12`). Never paired on mere similarity."""
    waiting = [v for v in variables if not v.restored and v.status != RESTORED_DIFFERENT]
    free = [s for s in values if not s.consumed]
    model_names = _counts(v.name for v in variables)
    stored_names = _counts(s.variable for s in values)

    def v_name(v: VariableCheck) -> str | None:
        if v.name and model_names[v.name] == 1 and not v.name.startswith("("):
            return v.name
        return None

    def s_name(s: StoredValueUse) -> str | None:
        if s.variable and stored_names[s.variable] == 1 and not s.variable.startswith("("):
            return s.variable
        return None

    def names(v: VariableCheck, s: StoredValueUse) -> list[tuple[str, str, str]]:
        """(stored name, model name, what they are) to compare: own names when both are unique, else object
        paths."""
        a, b = s_name(s), v_name(v)
        if a is not None and b is not None:
            return [(a, b, "name")]
        if use_paths and v.key is not None and s.label and not _index_like(short_key(s.label)):
            return [(s.label, short_key(v.key), "object path")]
        return []

    groups: dict[tuple[str, tuple[int, ...]], list[StoredValueUse]] = {}
    for s in free:
        groups.setdefault((s.dtype, s.shape), []).append(s)
    out: list[RenameSuggestion] = []
    taken_v: set[str] = set()
    taken_s: set[str] = set()

    def take(v: VariableCheck, s: StoredValueUse, rename: tuple[str, str], support: int, what: str = "name"
             ) -> None:
        taken_v.add(v.variable)
        taken_s.add(s.key)
        out.append(RenameSuggestion(variable=v.variable, variable_key=v.key, key=s.key, dtype=v.dtype, shape=v.shape,
                                    score=1.0, rename=rename, evidence=_evidence_text(rename, support, what),
                                    stored_variable=s.variable))

    # 1. The same name: the value this variable was saved as (a restore that stopped, or was skipped, left it).
    candidates: list[tuple[VariableCheck, StoredValueUse, tuple[str, str]]] = []
    kinds: dict[tuple[str, str], str] = {}
    for v in waiting:
        for s in groups.get((v.dtype, v.shape), ()):
            for a, b, what in names(v, s):
                rename = rename_of(a, b)
                if rename == ("", ""):
                    if v.variable not in taken_v and s.key not in taken_s:
                        take(v, s, rename, 1, what)
                elif (rename is not None and v.kind == WEIGHT and s.kind == WEIGHT and not _index_like(rename[0])
                      and not _index_like(rename[1])):
                    # Only weights are renamed: optimizer state follows its variable (step 3), and a rename of the
                    # optimizer itself (adam -> sgd) pairs state of another algorithm.
                    candidates.append((v, s, rename))
                    kinds[(v.variable, s.key)] = what
    # 2. One rename of whole components that several values agree on (or the only fit for both sides).
    candidates = [c for c in candidates if c[0].variable not in taken_v and c[1].key not in taken_s]
    support = _counts(r for _, _, r in candidates)
    per_v = _counts(v.variable for v, _, _ in candidates)
    per_s = _counts(s.key for _, s, _ in candidates)
    accepted = {r for r, n in support.items()
                if n >= 2 or any(per_v[v.variable] == 1 and per_s[s.key] == 1 for v, s, rr in candidates if rr == r)}
    best: dict[str, list[tuple[VariableCheck, StoredValueUse, tuple[str, str]]]] = {}
    for v, s, r in candidates:
        if r in accepted:
            best.setdefault(v.variable, []).append((v, s, r))
    for options in best.values():
        top = max(support[r] for _, _, r in options)
        options = [o for o in options if support[o[2]] == top and o[1].key not in taken_s]
        if len(options) == 1:  # two renames as well supported: no evidence which
            v, s, r = options[0]
            take(v, s, r, support[r], kinds[(v.variable, s.key)])
    # 3. Optimizer slots named after their variable's path (Keras 3), under a rename already established.
    layer_renames = [r for r in accepted if r[0] and r[1]]
    for v in waiting:
        if v.variable in taken_v or not v.name:
            continue
        fits = [(s, r) for s in groups.get((v.dtype, v.shape), ()) if s.key not in taken_s and s.variable
                for r in layer_renames if _flat_renamed(s.variable, v.name, r)]
        if len(fits) == 1:
            take(v, fits[0][0], fits[0][1], support[fits[0][1]])
    return tuple(sorted(out, key=lambda x: x.variable))


def _counts(items: Iterator[Any] | Sequence[Any] | Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _evidence_text(rename: tuple[str, str], support: int, what: str = "name") -> str:
    if rename == ("", ""):
        return f"the same {what}"
    a, b = rename
    change = f"{a} -> {b}" if a and b else (f"scope {b}/ added" if b else f"scope {a}/ dropped")
    return f"the same {what} after {change}" + (f" ({support} values agree)" if support > 1 else " (the only fit)")


# --- rename maps ----------------------------------------------------------------------------------------------------


def rename_map_dict(report: RestoreCheckReport) -> dict[str, Any]:
    """The suggestions as a mapping to review: each entry restores `variable` from the stored `key`."""
    return {
        "schema": RENAME_MAP_SCHEMA,
        "checkpoint": report.location,
        "format": report.format,
        "model": report.model,
        "note": "Each entry restores the model variable `variable` from the checkpoint value `key`. Review every "
                "entry and delete the wrong ones; then check with `ckptcheck restore-check CHECKPOINT --model MODEL "
                "--apply-rename-map THIS_FILE`, and in your own code call "
                "ckptcheck.restore_check.apply_rename_map(model, checkpoint, THIS_FILE) after your restore.",
        "renames": [
            {"variable": s.variable, "key": s.key, "dtype": s.dtype, "shape": list(s.shape), "score": s.score,
             "rename": {"checkpoint": s.rename[0], "model": s.rename[1]}, "also": list(s.also),
             "evidence": s.evidence, "stored_variable": s.stored_variable}
            for s in report.suggestions
        ],
    }


def write_rename_map(report: RestoreCheckReport, path: str) -> dict[str, Any]:
    data = rename_map_dict(report)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return data


def read_rename_map(source: str | dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, key) pairs from a rename map file (or its parsed dict), checked for shape."""
    where = source if isinstance(source, str) else "rename map"
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise UsageError("no such rename map file", path=source)
        if os.path.getsize(source) > MAX_MAP_BYTES:
            raise UsageError("too large for a rename map", path=source)
        try:
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"not a JSON rename map: {_one_line(str(exc))}", path=source) from None
    else:
        data = source
    if not isinstance(data, dict) or data.get("schema") != RENAME_MAP_SCHEMA or not isinstance(data.get("renames"),
                                                                                                list):
        raise UsageError(f"not a rename map (expected an object with schema {RENAME_MAP_SCHEMA!r} and a renames list)",
                         path=where, hint="write one with `ckptcheck restore-check ... --rename-map FILE`")
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(data["renames"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("variable"), str)
                and isinstance(entry.get("key"), str)):
            raise UsageError(f"renames[{i}] needs string fields `variable` and `key`", path=where)
        pairs.append((entry["variable"], entry["key"]))
    variables = [v for v, _ in pairs]
    dup = next((v for v in variables if variables.count(v) > 1), None)
    if dup is not None:
        raise UsageError(f"variable {dup!r} is mapped twice", path=where)
    return pairs


def _resolve_map(pairs: Sequence[tuple[str, str]], by_label: dict[str, Any], stored: _Stored, where: str,
                 shape_of: Callable[[Any], tuple[str, tuple[int, ...]]]) -> list[tuple[str, str, Any]]:
    out = []
    for variable, key in pairs:
        if variable not in by_label:
            close = difflib.get_close_matches(variable, list(by_label), n=3)
            raise UsageError(f"the model has no variable {variable!r}", path=where,
                             hint=f"did you mean {', '.join(close)}?" if close else "see restore-check's variable list")
        if key not in stored.infos:
            close = difflib.get_close_matches(key, list(stored.infos), n=3)
            raise UsageError(f"the checkpoint stores no {key!r} (mapped to {variable})", path=where,
                             hint=f"did you mean {', '.join(close)}?" if close else "run `ckptcheck inspect`")
        info = stored.infos[key]
        dtype, shape = shape_of(by_label[variable])
        if (dtype, shape) != (info.dtype, info.shape):
            raise UsageError(f"{variable} is {dtype} {list(shape)} but {key} is {info.dtype} {list(info.shape)}",
                             path=where, hint="a rename map only maps values of the same dtype and shape")
        out.append((variable, key, by_label[variable]))
    return out


def apply_rename_map(model: Any, checkpoint: str, rename_map: str | dict[str, Any]) -> tuple[str, ...]:
    """Assign each mapped variable of `model` (what your model function returns) the stored value the map names,
    read by ckptcheck. Call it after your own restore; returns the variables assigned."""
    import ckptcheck

    pairs = read_rename_map(rename_map)
    by_label = variable_labels(model)
    where = rename_map if isinstance(rename_map, str) else "rename map"
    with ckptcheck.open_checkpoint(checkpoint) as reader:
        stored = _Stored(reader)

        def shape_of(obj: Any) -> tuple[str, tuple[int, ...]]:
            value = _value_of(obj)
            return _dtype_name(value), tuple(value.shape)

        resolved = _resolve_map(pairs, by_label, stored, where, shape_of)
        for _, key, obj in resolved:
            obj.assign(stored.read(key))
    return tuple(v for v, _, _ in resolved)


# --- the check ------------------------------------------------------------------------------------------------------


def restore_check(
    checkpoint: str,
    model: str,
    *,
    input_shapes: Sequence[tuple[int, ...]] = (),
    allow_unused: bool = False,
    ignore_optimizer: bool = False,
    apply_map: str | None = None,
    on_stage: StageCallback | None = None,
    allow_missing: Sequence[str] = (),
) -> RestoreCheckReport:
    """Restore CHECKPOINT into the model --model builds and report every variable and every stored value."""
    import gc

    pairs = read_rename_map(apply_map) if apply_map is not None else None
    tf = _import_tensorflow()
    try:
        with _quiet(tf, []):
            return _check(checkpoint, model, input_shapes, allow_unused, ignore_optimizer, apply_map, pairs,
                          on_stage or (lambda _what: None), tf, allow_missing)
    finally:
        # A restore that raised leaves TensorFlow's restore coordinator on the model's objects, and it logs every
        # unrestored value when they are collected: collect them now, while TensorFlow's logger is quiet.
        with _quiet(tf, []):
            gc.collect()


def _check(checkpoint: str, model: str, input_shapes: Sequence[tuple[int, ...]], allow_unused: bool,
           ignore_optimizer: bool, apply_map: str | None, pairs: list[tuple[str, str]] | None, stage: StageCallback,
           tf: Any, allow_missing: Sequence[str] = ()) -> RestoreCheckReport:
    import ckptcheck

    with ckptcheck.open_checkpoint(checkpoint) as reader:
        fmt = reader.format
        location = reader.info().location
        stage("loading the model")
        keras = _import_keras()
        loaded = load_model(model)
        if fmt in (KERAS, KERAS_WEIGHTS, KERAS_H5) and (isinstance(loaded.target, dict)
                                                          or not _is_keras_model(loaded.target)):
            raise UsageError(f"a Keras file is restored with Model.load_weights; the model is a {loaded.kind}",
                             path=model, hint="return a Keras model from FUNCTION for a Keras checkpoint")
        stage("building")
        built = loaded.notes + build_lazy(loaded, input_shapes, fmt, location)
        variables = _enumerate(loaded, fmt, tf, keras)
        stored = _Stored(reader)
        stage("restoring")
        with tempfile.TemporaryDirectory(prefix="ckptcheck-restore-check-") as work:
            outcome = _restore(fmt, location, loaded, reader, stored, variables, work, tf, keras)
        for v in variables:
            v.after = _value_of(v.obj)
            v.via = "restore" if v.fingerprint is not None and not _same_bits(v.after, v.fingerprint) else None
        if pairs is not None:
            _apply_pairs(pairs, variables, stored, apply_map or "")
        stage("comparing")
        skipped_optimizer = next((w for w in outcome.warnings if w.startswith(KERAS_SKIPS_OPTIMIZER)), None)
        checks, mismatches = _checks(variables, stored, fmt, outcome.error, outcome.warned, skipped_optimizer)
        values = _uses(fmt, reader, stored, checks, outcome.others)
        suggestions = suggest(checks, values, use_paths=fmt in (TF2, SAVEDMODEL))
        notes = outcome.notes + _format_notes(fmt, variables, keras, stored)
        stopped = _stopped(fmt, outcome.error, checks, mismatches)
        recipes = _recipes(fmt, loaded, variables, mismatches, stopped, outcome.method)
    return RestoreCheckReport(
        checkpoint=checkpoint, location=location, format=fmt, model=model, model_kind=loaded.kind,
        method=outcome.method, built=tuple(built), restore_error=outcome.error, variables=tuple(checks),
        values=tuple(values), mismatches=tuple(mismatches), suggestions=suggestions, notes=tuple(notes),
        allow_unused=allow_unused, ignore_optimizer=ignore_optimizer, applied_map=apply_map,
        allow_missing=tuple(allow_missing), stopped=stopped, recipes=tuple(recipes))


def _stopped(fmt: str, error: str | None, checks: Sequence[VariableCheck], mismatches: Sequence[Mismatch]
             ) -> RestoreStop | None:
    """TensorFlow's restore (object- and name-based) raises at the first dtype or shape mismatch, and what it had
    not reached yet stays unrestored although it is stored under its own name, fitting."""
    if error is None or fmt not in (TF2, SAVEDMODEL, TF1):
        return None
    left = tuple(c.variable for c in checks if c.status == SKIPPED)
    if not left:
        return None
    named = re.search(r"and name (\S+?)(?::\d+)?\.?$", error)
    at = None
    if named is not None:
        by_name = [c for c in checks if c.status == MISMATCH and named.group(1) in (c.name, c.variable)]
        at = by_name[0] if len(by_name) == 1 else None
    if at is None and mismatches:
        at = next((c for c in checks if c.variable == mismatches[0].variable), None)
    return RestoreStop(variable=at.variable if at else None, key=at.key if at else None, error=error,
                       left_behind=left)


def _recipes(fmt: str, loaded: LoadedModel, variables: Sequence[_Var], mismatches: Sequence[Mismatch],
             stopped: RestoreStop | None, method: str) -> list[str]:
    """Ways to load everything but the mismatched layers in this format. Each is measured by the tests against
    TensorFlow and Keras (tests/test_restore_real.py); none is offered where it was not."""
    out: list[str] = []
    if not mismatches:
        return out
    target = loaded.target
    if fmt in (KERAS, KERAS_WEIGHTS):
        layers = sorted({m.variable.rsplit("/", 1)[0] for m in mismatches if "/" in m.variable})
        out.append("model.load_weights(PATH, skip_mismatch=True) loads every layer whose variables fit and skips "
                   f"the rest with a warning ({', '.join(layers[:5])}{', ...' if len(layers) > 5 else ''})")
        return out
    if fmt not in (TF2, SAVEDMODEL, TF1):
        return out
    head = _head_layers(target, variables, mismatches)
    if fmt == TF2 and head is not None and method.startswith("tf.train.Checkpoint(model=<model>)"):
        index, names = head
        out.append(f"restore a model without the head, which shares the other layers: backbone = keras.Model("
                   f"model.inputs, model.layers[{index}].output); tf.train.Checkpoint(model=backbone).restore("
                   f"PATH).expect_partial() restores every layer but {', '.join(names)} (not the optimizer's state)")
    if stopped is not None:
        out.append(f"write the values left behind as a rename map (--rename-map FILE: {len(stopped.left_behind)} "
                   f"variables, each from the value saved under its own name) and after your restore (which raises: "
                   f"catch it) call ckptcheck.restore_check.apply_rename_map(model, PATH, FILE)")
    return out


def _head_layers(target: Any, variables: Sequence[_Var], mismatches: Sequence[Mismatch]
                 ) -> tuple[int, list[str]] | None:
    """(the index in model.layers of the last layer before them, the mismatched layers) when every mismatch is
    in the last layers of a Keras functional model: the case a model without the head restores."""
    if isinstance(target, dict) or type(target).__name__ != "Functional" or not _is_keras_model(target):
        return None
    by_label = {v.label: v for v in variables}
    owners = set()
    for m in mismatches:
        v = by_label.get(m.variable)
        if v is not None and v.kind == OPTIMIZER:
            continue  # the head's optimizer slots: the recipe leaves the optimizer out anyway
        if v is None or v.kind != WEIGHT or not v.name or "/" not in v.name:
            return None
        owners.add(v.name.rsplit("/", 1)[0])
    layers = list(target.layers)
    k = len(owners)
    if k == 0 or k >= len(layers) or {layer.name for layer in layers[-k:]} != owners:
        return None
    return -k - 1, [layer.name for layer in layers[-k:]]


@dataclass
class _Outcome:
    method: str
    error: str | None
    notes: list[str]
    others: dict[str, str]  # stored key -> a non-variable live object that consumed it
    warned: bool = False  # the restore emitted warnings
    warnings: tuple[str, ...] = ()  # their text


def _restore(fmt: str, location: str, loaded: LoadedModel, reader: CheckpointReader, stored: _Stored,
             variables: list[_Var], work: str, tf: Any, keras: Any) -> _Outcome:
    """Fingerprint every variable, run the format's restore, and say how (the error it raised, if any)."""
    notes: list[str] = []
    others: dict[str, str] = {}
    root = None
    if fmt in (TF2, SAVEDMODEL):
        root, graph_root, written, root_notes = _tf2_root(loaded, reader, tf)
        notes += root_notes
        _ = root.save_counter  # created now (not on restore), so it is bound like any other object
        match = _match_tf2(reader, graph_root, variables, tf, keras)
        _predict_tf2(variables, match, graph_root, tf, keras)
        others = match.others
        method = (f"{written}.restore() — object-based: stored objects are matched to the model's by their path "
                  f"of attribute names from the root")
    elif fmt == TF1:
        target = loaded.target
        root = tf.train.Checkpoint(**target) if isinstance(target, dict) else tf.train.Checkpoint(model=target)
        for v in variables:
            v.key = _tf_name(v.obj, keras)
        method = ("tf.train.Checkpoint(...).restore() — name-based: a TF1 checkpoint has no object graph, so "
                  "TensorFlow matches each variable by its name")
    elif fmt == KERAS_H5:
        _predict_legacy_h5(loaded.target, variables, list(stored.infos.values()))
        method = ("keras.Model.load_weights() — legacy HDF5: the k-th layer with weights takes the file's k-th layer "
                  "group, whatever the names")
    else:
        method = ("keras.Model.load_weights() — Keras 3 layout: layers are keyed by class and position "
                  "(layers/dense_1/vars/0), not by their names")
    groups: dict[tuple[str, tuple[int, ...]], int] = {}
    for v in variables:
        k = groups.get((v.dtype, v.shape), 0)
        groups[(v.dtype, v.shape)] = k + 1
        avoid = stored.read(v.key) if v.key in stored.infos and stored.infos[v.key].shape == v.shape else None
        v.fingerprint = _fingerprint(v, k, avoid)
        v.obj.assign(v.fingerprint)
        v.fingerprint = _value_of(v.obj)  # as the variable holds it
    if fmt in (KERAS, KERAS_WEIGHTS):
        with _quiet(tf, []):
            _predict_keras3(loaded.target, variables, work)
    error = None
    warned: list[str] = []
    with _quiet(tf, warned):
        try:
            if root is not None:
                status = root.restore(location)
                with contextlib.suppress(AttributeError):
                    status.expect_partial()  # its own "unresolved object" log lines say less than this report
                del status
            else:
                loaded.target.load_weights(location)
        except Exception as exc:  # whatever the restore raises is what the user's own restore would raise
            error = f"{type(exc).__name__}: {_one_line(str(exc))}"
    return _Outcome(method, error, notes + [f"the restore warned: {w}" for w in warned], others, bool(warned),
                    tuple(warned))


def _apply_pairs(pairs: Sequence[tuple[str, str]], variables: list[_Var], stored: _Stored, where: str) -> None:
    by_label = {v.label: v for v in variables}
    resolved = _resolve_map(pairs, dict(by_label), stored, where, lambda v: (v.dtype, v.shape))
    for _label, key, v in resolved:
        v.obj.assign(stored.read(key))
        v.after = _value_of(v.obj)
        v.via = f"rename map:{key}"


def _checks(variables: Sequence[_Var], stored: _Stored, fmt: str, error: str | None, warned: bool,
            skipped_optimizer: str | None = None) -> tuple[list[VariableCheck], list[Mismatch]]:
    checks: list[VariableCheck] = []
    mismatches: list[Mismatch] = []
    for v in variables:
        assert v.after is not None
        info = stored.infos.get(v.key) if v.key is not None else None
        if v.via is not None:
            checks.append(_written(v, stored, info))
            continue
        kept = _kept(v)
        if skipped_optimizer is not None and v.kind == OPTIMIZER and fmt in (KERAS, KERAS_WEIGHTS):
            # Keras compares the optimizer's variable count with the file's and loads none of them when they differ.
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, SKIPPED, v.key, name=v.name,
                                        reason=f"Keras skipped the whole optimizer: {skipped_optimizer}", kept=kept))
            continue
        if info is not None and (info.dtype, info.shape) != (v.dtype, v.shape):
            mismatches.append(Mismatch(v.label, info.name, (v.dtype, info.dtype), (v.shape, info.shape)))
            parts = []
            if info.dtype != v.dtype:
                parts.append(f"dtype {info.dtype}")
            if info.shape != v.shape:
                parts.append(f"shape {list(info.shape)}")
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, MISMATCH, v.key, name=v.name,
                                        reason=f"stored with {' and '.join(parts)}", kept=kept))
        elif info is not None:
            why = "stored with this dtype and shape, but the restore did not write it"
            if error is not None:
                why += " (the restore raised: see above)"
            elif warned:
                why += " (see the restore's warnings)"
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, SKIPPED, v.key, name=v.name, reason=why,
                                        kept=kept))
        else:
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, MISSING, v.key, name=v.name,
                                        reason=_missing_reason(v, fmt), kept=kept))
    return checks, mismatches


def _missing_reason(v: _Var, fmt: str) -> str:
    if v.key is None:
        if fmt == KERAS_H5:
            return ("load_weights does not read a legacy .h5's optimizer_weights" if v.kind == OPTIMIZER else
                    "the file has no layer group at its position")
        return "the restore looks it up under no stored name"
    if fmt in (TF2, SAVEDMODEL):
        return "nothing stored at this object path"
    return "nothing stored under this name"


def _written(v: _Var, stored: _Stored, info: TensorInfo | None) -> VariableCheck:
    """A variable the restore (or the rename map) wrote: find the stored value it now equals."""
    assert v.after is not None
    via = "rename map" if v.via and v.via.startswith("rename map:") else "restore"
    preferred = v.via.split(":", 1)[1] if v.via and v.via.startswith("rename map:") else v.key
    candidates = [k for k in ([preferred] if preferred in stored.infos else [])]
    candidates += sorted((k for k, t in stored.infos.items() if t.shape == v.shape and k != preferred),
                         key=lambda k: (stored.infos[k].variable != v.name, k))
    equal: list[tuple[str, str | None]] = []
    for k in candidates:
        same, conversion = _equal(v.after, stored.read(k))
        if same:
            equal.append((k, conversion))
            if k == preferred:
                break
    if equal:
        source, conversion = equal[0]
        notes = []
        if conversion:
            notes.append(conversion)
        if via == "restore" and preferred is not None and source != preferred:
            notes.append(f"ckptcheck expected it to come from {short_key(preferred)}")
        if len(equal) > 1 and source != preferred:
            notes.append("equal values are also stored at " + ", ".join(short_key(k) for k, _ in equal[1:4]))
        return VariableCheck(v.label, v.kind, v.dtype, v.shape, RESTORED, v.key, name=v.name, source=source,
                             values_equal=True, via=via, reason="; ".join(notes) or None)
    near = preferred if preferred in stored.infos else None
    diff = _max_abs_diff(v.after, stored.read(near)) if near is not None else None
    why = "written by the restore, but equal to no stored value"
    if near is not None:
        why += f"; it differs from {short_key(near)}" + (f" by up to {diff:.6g}" if diff is not None else "")
    return VariableCheck(v.label, v.kind, v.dtype, v.shape, RESTORED_DIFFERENT, v.key, name=v.name, source=near,
                         values_equal=False, via=via, reason=why)


def _kept(v: _Var) -> KeptValue:
    """What a variable that was not restored holds: its initial value, described by its initializer where the code
    that built it says, and by statistics of the values."""
    from ckptcheck.stats import stats_of_chunks

    stats = stats_of_chunks(v.label, v.dtype, [v.initial.reshape(-1)]) if v.initial.size else None
    summary = _stats_text(stats)
    if v.initializer is not None:
        cls = v.initializer.split("(", 1)[0]
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower()
        if cls in _DETERMINISTIC_INITIALIZERS:
            described = (stats.note if stats is not None and stats.note else summary) or "its initial value"
            return KeptValue(v.initializer, f"{described} (its initializer, {v.initializer})", stats)
        return KeptValue(v.initializer, f"{snake} draw" + (f" ({summary})" if summary else ""), stats)
    if stats is not None and stats.note and stats.note.startswith(("constant", "all ")):
        return KeptValue(None, f"{stats.note} (its initial value)", stats)
    return KeptValue(None, f"its initial value: {summary}" if summary else "its initial value", stats)


def _stats_text(stats: Any) -> str:
    if stats is None or stats.min is None:
        return stats.note if stats is not None and stats.note else ""
    return (f"min {_number_text(stats.min)}, max {_number_text(stats.max)}, mean {_number_text(stats.mean)}, "
            f"std {_number_text(stats.std)}")


def _uses(fmt: str, reader: CheckpointReader, stored: _Stored, checks: Sequence[VariableCheck],
          others: dict[str, str]) -> list[StoredValueUse]:
    refs: dict[str, ObjectRef] = {}
    if fmt in (TF2, SAVEDMODEL):
        refs = {r.key: r for r in reader.objects() or ()}
    used: dict[str, list[VariableCheck]] = {}
    looked: dict[str, list[VariableCheck]] = {}
    for c in checks:
        if c.source is not None and c.status in (RESTORED, RESTORED_DIFFERENT):
            used.setdefault(c.source, []).append(c)
        if c.key is not None and c.status in (MISMATCH, SKIPPED):
            looked.setdefault(c.key, []).append(c)
    names = set(stored.infos)
    out = []
    for key, t in stored.infos.items():
        ref = refs.get(key)
        label = short_key(key)
        if ref is not None and ref.paths:
            # The path through the model reads better than the optimizer's list that reached it first.
            plain = [p for p in ref.paths if not any("optimizer" in part.lower() for part in p.split("/"))]
            label = short_key(plain[0] if plain else ref.paths[0])
        users = used.get(key, [])
        kind = users[0].kind if users else _stored_kind(fmt, t, names, ref)
        by = [c.variable for c in users]
        if not users and key in others:
            path = others[key]
            by = [f"{path} (tf.train.Checkpoint's own counter)" if path == "save_counter" else f"{path} (not a "
                  f"model variable)"]
        note = None
        if key in looked:
            c = looked[key][0]
            note = (f"{c.variable} looks for it, but is {c.dtype} {list(c.shape)}" if c.status == MISMATCH else
                    f"{c.variable} looks for it, but the restore did not write it")
        elif not by and ref is not None and any(OPTIMIZER_SLOT in p for p in ref.paths):
            note = ("optimizer slot not created yet: TensorFlow holds the value and restores it when the slot is "
                    "created (first apply_gradients)")
        out.append(StoredValueUse(key=key, label=label, kind=kind, dtype=t.dtype, shape=t.shape, used_by=tuple(by),
                                  note=note, variable=t.variable))
    return out


def _format_notes(fmt: str, variables: Sequence[_Var], keras: Any, stored: _Stored) -> list[str]:
    notes = []
    kv = getattr(keras, "Variable", None) if keras is not None else None
    keras_vars = [v for v in variables if kv is not None and isinstance(v.obj, kv) and v.via is None]
    if fmt == TF1 and keras_vars and len(keras_vars) == sum(1 for v in variables
                                                            if kv is not None and isinstance(v.obj, kv)):
        notes.append(f"TensorFlow's name-based restore does not restore Keras 3 variables ({len(keras_vars)} here), "
                     f"whatever their names: copy the values yourself (a rename map does it: --rename-map, then "
                     f"apply_rename_map)")
    if fmt == KERAS_H5 and any(k.startswith("optimizer_weights/") for k in stored.infos):
        notes.append("keras.Model.load_weights reads only a legacy .h5's model_weights; keras.saving.load_model also "
                     "sets the optimizer from optimizer_weights")
    return notes
