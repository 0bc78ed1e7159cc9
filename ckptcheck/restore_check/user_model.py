"""Step 1: load the user's model (``FILE.py:FUNCTION``, or the architecture of a ``.keras`` file) with its
output sent to stderr and its errors reported as its own, then create what it would create lazily (call it on
zeros, build its optimizers)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import sys
import traceback
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ckptcheck.errors import CkptcheckError, UsageError
from ckptcheck.records import KERAS_FORMATS

MAX_MESSAGE_CHARS = 500


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


def one_line(text: str) -> str:
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
        message = f"{type(exc).__name__}: {one_line(str(exc))}" if str(exc) else type(exc).__name__
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


def model_file_and_function(spec: str) -> tuple[str, str]:
    """``FILE.py:FUNCTION`` split, the file checked to exist (UsageError otherwise)."""
    path, sep, function = spec.rpartition(":")
    if not sep or not path or not function.isidentifier():
        raise UsageError(f"--model {spec!r}: expected FILE.py:FUNCTION or a .keras file",
                         hint="e.g. --model models.py:build_model")
    if not os.path.isfile(path):
        raise UsageError("no such model file", path=path, hint="--model FILE.py:FUNCTION")
    return path, function


def load_model(spec: str) -> LoadedModel:
    """``FILE.py:FUNCTION`` -> what FUNCTION() returns; ``FILE.keras`` -> a fresh model built from its config.json
    (the architecture and initializers, not the file's weights), compiled as it records."""
    keras = keras_module()
    if spec.lower().endswith(".keras"):
        return _model_from_keras_file(spec, keras)
    path, function = model_file_and_function(spec)
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
    from ckptcheck.formats.keras.safety import model_config

    found = model_config(path)
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
    tf = tensorflow_module()
    for part in parts:
        if not _is_trackable(part, tf, keras):
            raise UsageError(f"the model function returned an object of type {type(part).__name__}, which "
                             f"TensorFlow cannot restore into", path=loaded.code_file,
                             hint="return a Keras model, a tf.Module, or a dict of trackables (models, optimizers, "
                                  "variables)")


def _is_trackable(obj: Any, tf: Any, keras: Any) -> bool:
    return isinstance(obj, tf.__internal__.tracking.Trackable) or is_variable(obj, tf, keras)


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


def tensorflow_module() -> Any:
    from ckptcheck.lab.gate import import_tensorflow

    return import_tensorflow()


def keras_module() -> Any:
    """Keras 3 when it is installed (TensorFlow 2.16+ ships it); None otherwise."""
    tensorflow_module()
    try:
        import keras
    except ImportError:
        return None
    return keras


def is_variable(obj: Any, tf: Any, keras: Any) -> bool:
    if isinstance(obj, tf.Variable):
        return True
    kv = getattr(keras, "Variable", None) if keras is not None else None
    return kv is not None and isinstance(obj, kv)


def is_optimizer(obj: Any) -> bool:
    return hasattr(obj, "apply_gradients")


def is_keras_model(obj: Any) -> bool:
    return hasattr(obj, "load_weights") and hasattr(obj, "weights") and hasattr(obj, "layers")


@contextlib.contextmanager
def quiet_logs(tf: Any, caught: list[str]) -> Iterator[None]:
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
            text = one_line(str(w.message))
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


def path_parts(target: Any) -> list[tuple[str, Any]]:
    return list(target.items()) if isinstance(target, dict) else [("", target)]


def _config_input_shapes(location: str) -> tuple[tuple[int, ...], ...]:
    """The input shapes a Keras file's config records (build_config, or the InputLayer's batch shape)."""
    from ckptcheck.formats.keras.safety import model_config

    try:
        found = model_config(location)
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
    if is_keras_model(obj) or hasattr(obj, "built"):
        return getattr(obj, "built", True) is False
    variables = getattr(obj, "variables", None)
    return callable(obj) and isinstance(variables, (tuple, list)) and not variables


def build_lazy(loaded: LoadedModel, input_shapes: Sequence[tuple[int, ...]], fmt: str, location: str) -> list[str]:
    """Create what the model creates lazily, before the restore: call it on zeros (when --input-shape is given, or
    when it is not built and a Keras file's config records its input shape), then build each optimizer."""
    tf = tensorflow_module()
    keras = keras_module()
    done: list[str] = []
    for name, obj in path_parts(loaded.target):
        if is_variable(obj, tf, keras) or is_optimizer(obj) or not callable(obj):
            continue
        shapes = tuple(input_shapes)
        source = "--input-shape"
        if not shapes and _unbuilt(obj):
            if fmt in KERAS_FORMATS:
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
    parts = path_parts(loaded.target)
    models = [(n, o) for n, o in parts if not is_optimizer(o) and not is_variable(o, tf, keras)]
    owned = [(n, getattr(o, "optimizer", None), o) for n, o in models if is_keras_model(o)]
    loose = [(n, o, None) for n, o in parts if is_optimizer(o)]
    for name, opt, owner in owned + loose:
        if opt is None or not hasattr(opt, "build") or not _unbuilt_optimizer(opt):
            continue
        if owner is not None:
            variables = list(owner.trainable_variables)
        else:
            variables = [v for _, o in models for v in (
                [o] if is_variable(o, tf, keras) else list(getattr(o, "trainable_variables", ())))]
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
