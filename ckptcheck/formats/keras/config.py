"""What a Keras model config records, read as plain JSON: a layer summary and what loading it would run.

Handles Keras 3 ``config.json`` (every object as ``{"module", "class_name", "config", "registered_name"}``), the
legacy ``model_config`` attribute of ``.h5`` files as Keras 2 / tf_keras and Keras 3 write it (class names without
modules), Sequential and Functional models, models nested in models and wrapper layers (TimeDistributed,
Bidirectional). Nothing here imports Keras or deserializes anything: the safety findings are made by looking at
the JSON a loader would act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.formats.keras.callables import is_keras_builtin, non_modeling, path_message, path_settings
from ckptcheck.formats.keras.callables import is_keras_module as is_keras_module  # re-exported (names.py)
from ckptcheck.records import Architecture, LayerSummary, SafetyFinding

MAX_CONFIG_BYTES = 64 << 20  # a Keras config is read whole: refused above this (a zip entry can claim any size)

SOURCE_CONFIG_JSON = "config.json"
SOURCE_MODEL_CONFIG = "model_config attribute"

# Deeper nesting than any real model has; a crafted config must not exhaust the stack.
MAX_DEPTH = 200

# Layer settings worth a column, in the order shown; besides these, every *_initializer, *_regularizer and
# *_constraint that is set.
_DETAIL_KEYS = (
    "units", "filters", "kernel_size", "strides", "padding", "pool_size", "rate", "input_dim", "output_dim",
    "num_heads", "key_dim", "target_shape", "batch_shape", "batch_input_shape", "axis", "epsilon", "momentum",
    "activation", "recurrent_activation", "use_bias", "return_sequences",
)
_DETAIL_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_TRAILING_KEYS = ("trainable", "dtype")
# tf_keras registers some of its own classes under the default package "Custom" (its optimizers and two more);
# these names resolve to tf_keras code, not the user's.
_TF_KERAS_REGISTERED = frozenset(
    "Custom>" + n for n in ("Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lion", "Nadam",
                            "RMSprop", "SGD", "SharpnessAwareMinimization", "CustomScaleLayer")
)
# Keys of a layer config holding another layer (wrappers).
_WRAPPED_KEYS = ("layer", "forward_layer", "backward_layer")


def architecture(config: Any, source: str, *, path: str, extra: dict[str, Any] | None = None) -> Architecture:
    """Summarize a model config. ``extra`` holds other configs a loader would also deserialize (e.g. the legacy
    ``training_config``): they are scanned for findings only. Raises CorruptCheckpointError (with ``path``) when
    the config is not a model config at all."""
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"the {source} is not a JSON object", path=path)
    class_name = config.get("class_name")
    if not isinstance(class_name, str):
        raise CorruptCheckpointError(f"the {source} names no model class", path=path,
                                     hint="a Keras model config is {\"class_name\": ..., \"config\": {...}}")
    inner = config.get("config")
    model_name = _name_of(config)
    layers = tuple(_layers(_layer_list(inner), prefix="", depth=1, path=path, source=source))
    findings = list(findings_of(config, path=path))
    for key, value in (extra or {}).items():
        findings += findings_of(value, path=path, where=key)
    return Architecture(
        source=source,
        model_class=class_name,
        model_name=model_name,
        layers=layers,
        findings=tuple(dict.fromkeys(findings)),  # in order, each once
    )


# --- the layer summary ------------------------------------------------------------------------------------------


def _layer_list(inner: Any) -> list[Any]:
    """The layers of a model's inner config: ``config.layers``, or the config itself in very old Sequentials."""
    if isinstance(inner, list):
        return inner
    if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
        return list(inner["layers"])
    return []


def _name_of(obj: dict[str, Any]) -> str | None:
    inner = obj.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        return str(inner["name"])
    name = obj.get("name")
    return name if isinstance(name, str) else None


def _layers(items: list[Any], *, prefix: str, depth: int, path: str, source: str) -> Iterator[LayerSummary]:
    if depth > MAX_DEPTH:
        raise CorruptCheckpointError(f"the {source} nests models deeper than {MAX_DEPTH} levels", path=path)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        class_name = item.get("class_name")
        name = _name_of(item) or f"layer_{i}"
        full = prefix + name
        module = item.get("module")
        inner = item.get("config")
        details = _details(inner) if isinstance(inner, dict) else {}
        yield LayerSummary(
            name=full,
            class_name=class_name if isinstance(class_name, str) else "?",
            module=module if isinstance(module, str) else None,
            details=details,
        )
        nested = _layer_list(inner) if isinstance(inner, dict) and "layers" in inner else []
        if nested:  # a model used as a layer: its layers follow it, named outer/inner
            yield from _layers(nested, prefix=full + "/", depth=depth + 1, path=path, source=source)
        if isinstance(inner, dict):
            wrapped = [inner[k] for k in _WRAPPED_KEYS if isinstance(inner.get(k), dict)]
            if wrapped:
                yield from _layers(wrapped, prefix=full + "/", depth=depth + 1, path=path, source=source)


def _details(inner: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _DETAIL_KEYS:
        if key in inner and inner[key] is not None:
            out[key] = _describe(inner[key])
    for key, value in inner.items():
        if key.endswith(_DETAIL_SUFFIXES) and value is not None:
            out[key] = _describe(value)
    if isinstance(inner.get("function"), (dict, list, str)):
        out["function"] = _describe_function(inner)
    if isinstance(inner.get("layers"), list):
        out["layers"] = len(inner["layers"])
    for key in _TRAILING_KEYS:
        if key in inner and inner[key] is not None:
            out[key] = _describe_dtype(inner[key]) if key == "dtype" else _describe(inner[key])
    return out


def _describe(value: Any, depth: int = 0) -> Any:
    """Readable text for a config value: serialized objects as ``Class(arg=value, ...)``, scalars as they are."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, str):
        return value
    if depth > 8:
        return "..."
    if isinstance(value, list):
        return "(" + ", ".join(_text(_describe(v, depth + 1)) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        class_name = value.get("class_name")
        inner = value.get("config")
        if class_name == "function" and isinstance(inner, str):  # Keras 3: a function by name
            module = value.get("module")
            return f"{module}.{inner}" if isinstance(module, str) and not is_keras_module(module) else inner
        if class_name == "__lambda__":
            return "<lambda bytecode>"
        if isinstance(class_name, str):
            return class_name + "(" + _args(inner, depth) + ")"
        return "{" + ", ".join(f"{k}: {_text(_describe(v, depth + 1))}" for k, v in value.items()) + "}"
    return str(value)


def _args(inner: Any, depth: int) -> str:
    if not isinstance(inner, dict):
        return "" if inner is None else _text(_describe(inner, depth + 1))
    # Unset options are noise, but an unset seed is worth seeing: it means the values are not reproducible.
    items = [(k, v) for k, v in inner.items() if v is not None or k == "seed"]
    return ", ".join(f"{k}={_text(_describe(v, depth + 1))}" for k, v in items)


def _text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, (bool, float)) else str(value)


def _describe_dtype(value: Any) -> Any:
    # Keras 3 writes a DTypePolicy object ({"class_name": "DTypePolicy", "config": {"name": "bfloat16"}});
    # Keras 2 a plain name or a Policy object. The policy's name is what matters.
    if isinstance(value, dict):
        inner = value.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("name"), str):
            return inner["name"]
    return _describe(value)


def _describe_function(inner: dict[str, Any]) -> str:
    fn = inner.get("function")
    kind = inner.get("function_type")
    if kind == "lambda" or (isinstance(fn, dict) and fn.get("class_name") == "__lambda__"):
        return "<lambda bytecode>"
    if isinstance(fn, str):
        module = inner.get("module")
        return f"{module}.{fn}" if isinstance(module, str) and module else fn
    return _text(_describe(fn))


# --- safety -----------------------------------------------------------------------------------------------------


def findings_of(config: Any, *, path: str, where: str = "") -> list[SafetyFinding]:
    """Everything in a config that would run code, or import code from outside Keras, if the model were loaded.

    Looks at every object in the JSON, wherever it is (layers, activations, initializers, losses, metrics...)."""
    out: list[SafetyFinding] = []
    _scan(config, layer=None, layer_class=None, key=where, depth=0, out=out, path=path)
    return list(dict.fromkeys(out))


def _scan(node: Any, *, layer: str | None, layer_class: str | None, key: str, depth: int,
          out: list[SafetyFinding], path: str, is_layer: bool = False, parent: dict[str, Any] | None = None) -> None:
    """Walk the JSON; ``layer`` is the path of the layer being walked, so findings can name it."""
    if depth > MAX_DEPTH:
        raise CorruptCheckpointError(f"the config nests deeper than {MAX_DEPTH} levels", path=path)
    if isinstance(node, list):
        for i, item in enumerate(node):
            _scan(item, layer=layer, layer_class=layer_class, key=f"{key}[{i}]", depth=depth + 1, out=out,
                  path=path, is_layer=is_layer, parent=parent)
        return
    if not isinstance(node, dict):
        return
    class_name = node.get("class_name")
    inner = node.get("config")
    if is_layer:
        name = _name_of(node) or key
        layer = name if layer is None else f"{layer}/{name}"
        layer_class = class_name if isinstance(class_name, str) else None
    location = layer or key or "config"
    if isinstance(class_name, str):
        _check_object(node, class_name, inner, layer, layer_class, key, location, out, parent)
        if isinstance(inner, dict):
            for setting, value in path_settings(class_name, inner):
                name = _name_of(node) or location.rsplit("/", 1)[-1]
                out.append(SafetyFinding(location, path_message(class_name, name, setting, value), "keras-path"))
    if "function_type" in node or "output_shape_type" in node:
        _check_keras2_lambda(node, layer, location, out)
    for k, v in node.items():
        if isinstance(v, (dict, list)):
            # Layers sit in a model's `layers` list and under a wrapper's `layer` keys.
            child_is_layer = (k == "layers" and isinstance(v, list)) or (k in _WRAPPED_KEYS and isinstance(v, dict))
            _scan(v, layer=layer, layer_class=layer_class, key=f"{key}.{k}" if key else k, depth=depth + 1,
                  out=out, path=path, is_layer=child_is_layer, parent=node)


def _check_object(node: dict[str, Any], class_name: str, inner: Any, layer: str | None, layer_class: str | None,
                  key: str, location: str, out: list[SafetyFinding], parent: dict[str, Any] | None = None) -> None:
    field = key.rsplit(".", 1)[-1] if key else "config"
    lambda_function = layer is not None and layer_class == "Lambda" and field == "function"
    if class_name == "__lambda__":
        if lambda_function:
            msg = f"Lambda layer '{_last(layer)}' carries Python bytecode that runs on load"
        elif layer is not None:
            msg = f"layer '{_last(layer)}' has a Python lambda ({field}) whose bytecode runs on load"
        else:
            msg = f"a Python lambda ({field}) whose bytecode runs on load"
        out.append(SafetyFinding(location, msg, "lambda-bytecode"))
        return
    if class_name.startswith("__") and class_name.endswith("__"):  # tensors, arrays, bytes, slices: data
        return
    module = node.get("module")
    function = class_name == "function"
    name = inner if function else class_name
    if not isinstance(name, str):
        return
    registered = node.get("registered_name")
    if function and isinstance(module, str) and is_keras_builtin(module, name):
        return
    if isinstance(module, str) and module and not is_keras_module(module):
        custom = _registered_class(registered, name, module) if not function else None
        if custom is not None:
            out.append(_custom(location, f"{custom}' (module '{module}'"))
            return
        what = f"function '{name}'" if function else f"class '{name}'"
        msg = f"config imports module '{module}' ({what})"
        if lambda_function:
            msg = f"Lambda layer '{_last(layer)}' calls '{module}.{name}', imported from outside Keras" + \
                  _arguments(parent)
        out.append(SafetyFinding(location, msg, "module-import"))
        return
    if isinstance(module, str) and module:
        why = non_modeling(module, name, function=function)
        if why is not None:
            caller = f"Lambda layer '{_last(layer)}' calls" if lambda_function else "config names"
            out.append(SafetyFinding(location, f"{caller} '{module}.{name}', which {why}" + _arguments(parent),
                                     "keras-gadget"))
            return
    custom = registered if isinstance(registered, str) and ">" in registered else None
    if custom is None and ">" in class_name:  # Keras 2 names registered objects "package>Name"
        custom = class_name
    if custom is not None and custom not in _TF_KERAS_REGISTERED:
        out.append(_custom(location, custom + "'"))


def _custom(location: str, what: str) -> SafetyFinding:
    """A registered custom object: code the user installs, run if it is importable. True, and no loading attack."""
    return SafetyFinding(location, f"custom object '{what} is code registered outside Keras; loading runs it if "
                                   "it is importable", "custom-object", severity="note")


# Modules whose classes are never a user's registered layer: a name there is a way to reach the module.
_SYSTEM_MODULES = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "builtins", "shutil", "socket", "importlib", "pickle", "runpy",
    "ctypes", "io", "pathlib", "urllib", "http", "requests", "code", "codeop", "pty", "multiprocessing", "asyncio",
    "webbrowser", "tempfile", "glob", "zipfile", "tarfile", "marshal", "types", "functools", "operator",
    "numpy", "tensorflow", "torch", "jax",
})


def _registered_class(registered: Any, name: str, module: str) -> str | None:
    """``registered`` when it is how Keras names a registered custom class ("package>Name" of this very class, in
    a module of the user's), else None."""
    if not isinstance(registered, str) or ">" not in registered or registered.rsplit(">", 1)[1] != name:
        return None
    if module.split(".", 1)[0] in _SYSTEM_MODULES:
        return None
    return registered


def _last(layer: str | None) -> str:
    return (layer or "").rsplit("/", 1)[-1]


def _arguments(parent: dict[str, Any] | None) -> str:
    """A Lambda's ``arguments`` (the keyword arguments its function is called with), briefly."""
    args = parent.get("arguments") if isinstance(parent, dict) else None
    if not isinstance(args, dict) or not args:
        return ""
    text = ", ".join(f"{k}={v!r}" for k, v in list(args.items())[:6])
    return f" with {text[:300]}"


def _check_keras2_lambda(inner: dict[str, Any], layer: str | None, location: str,
                         out: list[SafetyFinding]) -> None:
    """Keras 2 Lambda configs: ``function`` + ``function_type`` ("lambda": marshalled bytecode; "function": a
    name looked up in ``module``), likewise ``output_shape`` + ``output_shape_type``."""
    name = layer.rsplit("/", 1)[-1] if layer else None
    for field, kind_key, module_key in (("function", "function_type", "module"),
                                        ("output_shape", "output_shape_type", "output_shape_module")):
        kind = inner.get(kind_key)
        if kind == "lambda":
            if field == "function" and name is not None:
                msg = f"Lambda layer '{name}' carries Python bytecode that runs on load"
            else:
                msg = f"{field} of {'layer ' + repr(name) if name else 'the config'} is Python bytecode that runs " \
                      "on load"
            out.append(SafetyFinding(location, msg, "lambda-bytecode"))
        elif kind == "function":
            module = inner.get(module_key)
            fn = inner.get(field)
            if not isinstance(module, str) or not module or not isinstance(fn, str):
                continue
            if not is_keras_module(module):
                out.append(SafetyFinding(location, f"config imports module '{module}' (function '{fn}')",
                                         "module-import"))
            elif (why := non_modeling(module, fn, function=True)) is not None:
                caller = f"Lambda layer '{name}' calls" if name is not None else "config names"
                out.append(SafetyFinding(location, f"{caller} '{module}.{fn}', which {why}" + _arguments(inner),
                                         "keras-gadget"))
