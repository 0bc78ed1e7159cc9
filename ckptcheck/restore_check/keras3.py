"""Will Keras 3 load this Keras 2 (tf_keras) `.h5`? Asked of the installed Keras, layer by layer.

Keras 3 loads a legacy `.h5` by deserializing its `model_config` (keras.saving.load_model -> legacy_h5_format ->
saving_utils.model_from_config) and stops at the first layer it cannot rebuild, with that layer's error. Here each
layer of the config is deserialized on its own, with the same call, in safe mode, so the report names every layer
that fails and Keras's own reason. Nothing is predicted: a layer is said to fail only because the installed Keras
failed on it.

Where a failure is an argument Keras 2 records and Keras 3 does not take, and dropping it is certain not to change
the layer (`groups=1` on a DepthwiseConv2D, the build shapes tf_keras's MultiHeadAttention records), the fix is
offered, after checking that Keras then deserializes the layer. With every layer fixed, the whole model is loaded
with `keras.saving.load_model` from a copy of the file carrying the fixed config, and what happened is measured:
which weights hold the file's values, and what became of the optimizer's state.

Layers that ckptcheck's safety scan flags are not deserialized.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ckptcheck.errors import UsageError

MAX_REASON_CHARS = 400


@dataclass(frozen=True)
class Fix:
    """An argument Keras 2 records that Keras 3 does not take, and why dropping it changes nothing."""

    argument: str
    value: Any
    why: str


def _always(_value: Any) -> bool:
    return True


# (layer class, argument) -> (when dropping it is certain, why). A fix is offered only for an argument the
# installed Keras itself refused, and only once Keras deserializes the layer without it.
CERTAIN_FIXES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("DepthwiseConv2D", "groups"): (
        lambda v: v == 1,
        "Keras 2's DepthwiseConv2D records Conv2D's groups=1; Keras 3's takes no groups (one filter per input "
        "channel either way)"),
    ("MultiHeadAttention", "query_shape"): (
        _always, "tf_keras records the shapes the layer was built with; Keras 3 builds it on its first call"),
    ("MultiHeadAttention", "key_shape"): (
        _always, "tf_keras records the shapes the layer was built with; Keras 3 builds it on its first call"),
    ("MultiHeadAttention", "value_shape"): (
        _always, "tf_keras records the shapes the layer was built with; Keras 3 builds it on its first call"),
    ("MultiHeadAttention", "softmax_robust_masking"): (
        lambda v: v is False,
        "False is tf_keras's default masking (a large negative number added where masked), which Keras 3 does"),
}

# Layers that are not layers of the model's own but TensorFlow calls tf_keras wrapped: no config fixes them.
_TF_OP_LAYERS = {
    "TFOpLambda": "a TensorFlow function tf_keras called on a Keras tensor",
    "SlicingOpLambda": "a tensor slice tf_keras recorded as a layer",
}


@dataclass(frozen=True)
class LayerCheck:
    """One layer of the config, deserialized by the installed Keras."""

    path: str  # its name, under the names of the models holding it ("encoder/mha")
    class_name: str
    ok: bool
    error: str | None = None  # Keras's own reason, when it failed
    fixes: tuple[Fix, ...] = ()  # certain fixes for it
    fixed_ok: bool | None = None  # after the fixes, Keras deserializes it (None: no fix to try)
    fixed_error: str | None = None  # what Keras says after the fixes, when it still fails
    advice: str | None = None  # no fix, but what to do (a TFOpLambda)
    skipped: str | None = None  # not deserialized (the safety scan flags it)


@dataclass(frozen=True)
class LoadCheck:
    """keras.saving.load_model on a copy of the file with every fix applied, measured."""

    error: str | None  # it raised this (type: message); None when it returned a model
    compile_error: str | None = None  # load_model (compile=True) raised this, and compile=False loaded the model
    weights: int = 0  # the model's weights
    weights_equal: int = 0  # of them, holding a value the file's model_weights stores (bit for bit)
    compiled: bool = False
    optimizer: str | None = None  # the optimizer's class after loading
    optimizer_variables: int = 0  # variables the optimizer holds after loading
    optimizer_loaded: tuple[str, ...] = ()  # of them, those holding a value the file's optimizer_weights stores
    stored_optimizer_values: int = 0  # values in the file's optimizer_weights
    logged: tuple[str, ...] = ()  # what Keras logged or warned while loading


@dataclass(frozen=True)
class Keras3Report:
    """What the installed Keras does with a legacy `.h5`, layer by layer, and the whole model once fixed."""

    path: str
    keras_version: str
    model_class: str
    layers: tuple[LayerCheck, ...]
    whole_error: str | None  # deserializing the whole config as it is (None: it deserializes)
    fixed_error: str | None  # the whole config with every certain fix (None: it deserializes; == whole if none)
    load: LoadCheck | None  # the fixed file loaded with keras.saving.load_model (None: not tried)
    fixed_config: dict[str, Any] | None = field(default=None, compare=False)  # the config with the fixes
    notes: tuple[str, ...] = ()

    @property
    def failing(self) -> tuple[LayerCheck, ...]:
        return tuple(c for c in self.layers if not c.ok)

    @property
    def ok(self) -> bool:
        """Keras 3 deserializes the config as it is, and (where measured) load_model loads and compiles it."""
        loaded = self.load is None or (self.load.error is None and self.load.compile_error is None)
        return self.whole_error is None and not self.failing and loaded


def _reason(exc: BaseException) -> str:
    """Keras's own reason: the `Exception encountered:` part of a deserialization error, else its first sentence;
    on one line."""
    text = str(exc)
    marker = "Exception encountered:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = " ".join(text.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _unrecognized(reason: str) -> dict[str, Any] | None:
    """The arguments of `Unrecognized keyword arguments passed to X: {...}`, as Keras printed them."""
    found = re.search(r"Unrecognized keyword arguments(?: passed to \w+)?: (\{.*\})", reason)
    if found is None:
        return None
    try:
        value = ast.literal_eval(found.group(1))
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, dict) else None


class _Keras:
    """The installed Keras's legacy-.h5 deserializer: the call keras.saving.load_model makes for an .h5."""

    def __init__(self) -> None:
        from ckptcheck.lab.gate import import_keras, import_keras_module

        self.keras = import_keras()
        self._options = import_keras_module("keras.src.legacy.saving.saving_options")
        self._utils = import_keras_module("keras.src.legacy.saving.saving_utils")
        self._safe = import_keras_module("keras.src.saving.serialization_lib")

    def deserialize(self, config: dict[str, Any]) -> None:
        with self._options.keras_option_scope(use_legacy_config=True), self._safe.SafeModeScope(True), \
                _quiet_keras():
            self._utils.model_from_config(copy.deepcopy(config))


@contextlib.contextmanager
def _quiet_keras(caught: list[str] | None = None) -> Iterator[None]:
    """Keras's and absl's log lines and Python warnings off stderr, collected into `caught`."""

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if caught is not None and record.levelno >= logging.WARNING:
                caught.append(" ".join(record.getMessage().split()))

    loggers = [logging.getLogger("absl"), logging.getLogger("tensorflow"), logging.getLogger()]
    handler = _Collect()
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]
        lg.propagate = False
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        if caught is not None:
            caught += [" ".join(str(w.message).split()) for w in seen if not issubclass(w.category, DeprecationWarning)]
    finally:
        for lg, level, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate
            lg.setLevel(level)


def _layers(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, layer entry) of every layer, nested models opened (their own entries are not yielded)."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            continue
        name = entry["config"].get("name") or entry.get("name") or entry.get("class_name") or "?"
        path = f"{prefix}/{name}" if prefix else str(name)
        nested = entry["config"].get("layers")
        if isinstance(nested, list) and entry.get("class_name") in ("Functional", "Model", "Sequential"):
            yield from _layers(entry, path)
        else:
            yield path, entry


def _entry_config(entry: dict[str, Any]) -> dict[str, Any]:
    """What model_from_config takes for one layer entry of a model's config."""
    out = {"class_name": entry.get("class_name"), "config": entry.get("config")}
    for key in ("module", "registered_name"):
        if key in entry:
            out[key] = entry[key]
    return out


def _check_layer(keras: _Keras, path: str, entry: dict[str, Any]) -> tuple[LayerCheck, dict[str, Any] | None]:
    """The layer's check, and its config with the certain fixes applied (None when there are none)."""
    cls = str(entry.get("class_name"))
    try:
        keras.deserialize(_entry_config(entry))
    except Exception as exc:  # whatever Keras raises is its reason
        reason = _reason(exc)
    else:
        return LayerCheck(path, cls, True), None
    advice = None
    if cls in _TF_OP_LAYERS:
        op = entry["config"].get("function") or entry["config"].get("name")
        advice = (f"{_TF_OP_LAYERS[cls]} ({op}); Keras 3 has no such layer and no config fixes it: build the model "
                  f"in code (keras.ops, keras.layers) and load this file's weights with model.load_weights (by "
                  f"position: layers without weights do not count)")
    unknown = _unrecognized(reason)
    fixes: list[Fix] = []
    if unknown:
        for argument, value in unknown.items():
            rule = CERTAIN_FIXES.get((cls, argument))
            if rule is None or not rule[0](value):
                fixes = []
                break
            fixes.append(Fix(argument, value, rule[1]))
    if not fixes:
        return LayerCheck(path, cls, False, reason, advice=advice), None
    fixed = copy.deepcopy(entry)
    for fix in fixes:
        fixed["config"].pop(fix.argument, None)
    try:
        keras.deserialize(_entry_config(fixed))
    except Exception as exc:  # still fails: said, and no fix offered as certain
        return LayerCheck(path, cls, False, reason, tuple(fixes), False, _reason(exc), advice), None
    return LayerCheck(path, cls, False, reason, tuple(fixes), True, None, advice), fixed


def _set_layer(config: dict[str, Any], path: str, entry: dict[str, Any]) -> None:
    """Replace the entry of the layer at `path` in `config` (nested models by name)."""
    parts = path.split("/")
    node = config
    for part in parts[:-1]:
        node = next(e for e in node["config"]["layers"] if (e["config"].get("name") or e.get("name")) == part)
    layers = node["config"]["layers"]
    for i, e in enumerate(layers):
        if (e["config"].get("name") or e.get("name")) == parts[-1]:
            layers[i] = entry
            return


def keras3_check(path: str, *, measure_load: bool = True, fixed_copy: str | None = None) -> Keras3Report:
    """Deserialize every layer of a legacy `.h5`'s model_config with the installed Keras; with every layer
    deserializing once fixed, load a copy of the file holding the fixed config with keras.saving.load_model
    (`measure_load`) and measure what it holds. `fixed_copy`: also write that copy there."""
    from ckptcheck.formats.keras import safety
    from ckptcheck.formats.resolve import resolve
    from ckptcheck.records import KERAS_H5

    resolved = resolve(path)
    if resolved.kind != KERAS_H5 and getattr(resolved, "format_hint", None) != KERAS_H5:
        raise UsageError("not a legacy .h5 (Keras 2 / tf_keras HDF5 model): nothing for this check to rebuild",
                         path=path, hint="a .keras or .weights.h5 is Keras 3's own format")
    found = safety.model_config(resolved.location)
    if found is None or not isinstance(found[1], dict):
        raise UsageError("the file records no model_config (weights only): there is no architecture to rebuild",
                         path=path, hint="build the model in code and load the weights with model.load_weights")
    config = found[1]
    scan = safety.scan(resolved.location)
    flagged = {f.location: f.message for f in (scan.findings if scan is not None else ()) if f.severity != "note"}
    keras = _Keras()
    checks: list[LayerCheck] = []
    fixed_config = copy.deepcopy(config)
    any_fix = False
    for layer_path, entry in _layers(config):
        name = layer_path.rsplit("/", 1)[-1]
        why = flagged.get(layer_path) or flagged.get(name)
        if why is not None:
            checks.append(LayerCheck(layer_path, str(entry.get("class_name")), False,
                                     skipped=f"not deserialized: ckptcheck scan flags it ({why})"))
            continue
        check, fixed = _check_layer(keras, layer_path, entry)
        checks.append(check)
        if fixed is not None:
            _set_layer(fixed_config, layer_path, fixed)
            any_fix = True
    notes: list[str] = []
    if flagged:
        notes.append("ckptcheck scan flags this file; the flagged layers were not deserialized, and the model is "
                     "not loaded")
    whole_error = fixed_error = None
    if not flagged:
        whole_error = _whole(keras, config)
        fixed_error = _whole(keras, fixed_config) if any_fix else whole_error
    load = None
    fixes_all = all(c.ok or c.fixed_ok for c in checks)
    if measure_load and not flagged and fixes_all and fixed_error is None:
        load = _load_fixed(keras, resolved.location, fixed_config, fixed_copy if any_fix else None)
    return Keras3Report(
        path=path, keras_version=str(getattr(keras.keras, "__version__", "?")),
        model_class=str(config.get("class_name")), layers=tuple(checks), whole_error=whole_error,
        fixed_error=fixed_error, load=load, fixed_config=fixed_config if any_fix else None, notes=tuple(notes))


def _whole(keras: _Keras, config: dict[str, Any]) -> str | None:
    try:
        keras.deserialize(config)
    except Exception as exc:  # Keras's reason for the whole model
        return _reason(exc)
    return None


def _digest(value: Any) -> tuple[str, tuple[int, ...], str]:
    import numpy as np

    a = np.ascontiguousarray(value)
    return a.dtype.str, tuple(a.shape), hashlib.sha256(a.tobytes()).hexdigest()


def _load_fixed(keras: _Keras, location: str, fixed_config: dict[str, Any], fixed_copy: str | None) -> LoadCheck:
    """keras.saving.load_model on a copy of the file holding the fixed config; which of the model's weights and
    the optimizer's variables then hold the file's values (bit for bit)."""
    import json

    import h5py

    import ckptcheck

    with tempfile.TemporaryDirectory(prefix="ckptcheck-keras3-") as work:
        copy_path = os.path.join(work, "fixed.h5")
        shutil.copyfile(location, copy_path)
        with h5py.File(copy_path, "r+") as f:
            f.attrs["model_config"] = json.dumps(fixed_config)
        if fixed_copy is not None:
            shutil.copyfile(copy_path, fixed_copy)
        with ckptcheck.open_checkpoint(location) as reader:
            weights: dict[tuple[str, tuple[int, ...], str], str] = {}
            state: dict[tuple[str, tuple[int, ...], str], str] = {}
            n_state = 0
            for t in reader.tensors():
                target = state if t.name.startswith("optimizer_weights/") else weights
                n_state += t.name.startswith("optimizer_weights/")
                target.setdefault(_digest(reader.read(t.name)), t.name)
        caught: list[str] = []
        compile_error = None
        try:
            with _quiet_keras(caught):
                model = keras.keras.saving.load_model(copy_path, safe_mode=True)
        except Exception as exc:  # what load_model raised, measured; then without compiling (the training_config)
            compile_error = _reason(exc)
            try:
                with _quiet_keras(caught):
                    model = keras.keras.saving.load_model(copy_path, safe_mode=True, compile=False)
            except Exception as exc2:  # the architecture or the weights themselves
                return LoadCheck(_reason(exc2), compile_error, stored_optimizer_values=n_state,
                                 logged=tuple(dict.fromkeys(caught)))
        equal = sum(1 for w in model.weights if _digest(w.numpy()) in weights)
        opt = getattr(model, "optimizer", None)
        opt_vars = list(getattr(opt, "variables", ()) or ()) if opt is not None else []
        loaded = tuple(str(getattr(v, "path", getattr(v, "name", "?"))) for v in opt_vars
                       if _digest(v.numpy()) in state)
        return LoadCheck(None, compile_error, len(model.weights), equal,
                         bool(getattr(model, "compiled", opt is not None)),
                         type(opt).__name__ if opt is not None else None, len(opt_vars), loaded, n_state,
                         tuple(dict.fromkeys(caught)))
