"""Which callables a Keras config may name: the modeling APIs, and everything else a loader could be made to call.

A Keras 3 config names every object by ``module`` + ``class_name`` (or ``"function"`` and the function's name), and
the loader resolves it by importing or looking up that name. Keras 3.0–3.10 resolved any name in a Keras module
(and 3.0–3.8 any module at all), so a config could name ``keras.utils.get_file`` (downloads a URL),
``keras.models.load_model`` (loads a second file), ``keras.config.enable_unsafe_deserialization`` or
``keras.src.backend.common.global_state.set_global_attribute`` (turn safe mode off) and have it called while the
model is built (CVE-2025-8747, CVE-2025-9906). Keras's own ``NON_MODELING_APIS`` list is a floor: here a callable
is allowed only when it lies in a modeling package (layers, activations, initializers, losses, metrics,
regularizers, constraints, optimizers, ops, dtype policies, quantizers, random) or is one of the model classes;
anything else in Keras's namespace is a finding, whatever its module.

Also here: the config values that a known layer reads as a file path or URL when it is built.
"""

from __future__ import annotations

import re

# Packages of keras / keras.src / tf_keras / tf_keras.src whose every name is a modeling API.
_MODELING = frozenset({
    "layers", "activations", "initializers", "losses", "metrics", "regularizers", "constraints", "optimizers",
    "ops", "dtype_policies", "quantizers", "random", "mixed_precision",
})
# The model classes, wherever they live (keras.models, keras.src.models.functional, tf_keras.src.engine.*).
_MODEL_CLASSES = frozenset({"Model", "Sequential", "Functional", "Layer", "InputLayer"})
_MODEL_PACKAGES = frozenset({"models", "engine"})
# What top-level ``keras`` exports as classes a config can hold (keras.Model, keras.DTypePolicy, ...).
_TOP_LEVEL = _MODEL_CLASSES | frozenset({
    "DTypePolicy", "FloatDTypePolicy", "QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy", "Initializer", "Loss",
    "Metric", "Optimizer", "Quantizer", "Regularizer", "Constraint", "Operation", "Variable", "KerasTensor",
    "InputSpec", "Function",
})
# Named gadgets: what they do, said in the finding. Looked up by name in every Keras module.
GADGETS: dict[str, str] = {
    "get_file": "downloads a URL to the host",
    "load_model": "loads another model file, with whatever that file brings",
    "model_from_json": "deserializes another model config, with whatever it brings",
    "model_from_config": "deserializes another model config, with whatever it brings",
    "model_from_yaml": "deserializes another model config, with whatever it brings",
    "deserialize_keras_object": "deserializes another config, with whatever it brings",
    "load_weights": "reads weights from another file",
    "save_model": "writes a model file",
    "save_weights": "writes a weights file",
    "save_img": "writes an image file",
    "load_img": "reads an image file from the host",
    "enable_unsafe_deserialization": "turns safe_mode off, so Lambda bytecode in the file then runs",
    "set_global_attribute": "sets Keras's global state (safe_mode_saving=False turns safe mode off)",
    "clear_session": "resets Keras's global state",
    "register_keras_serializable": "registers code under a name the rest of the config can then reach",
    "func_load": "turns Python bytecode into a function",
}
# Other names that read or write files, fetch, or run code, in whatever module they hide.
_SUSPICIOUS = re.compile(
    r"(file|_dataset_from_directory|download|unsafe|global_attribute|exec|eval|system|popen|spawn|import|"
    r"^open$|^load|^save)", re.IGNORECASE,
)


# Keras 3 writes its own activations, losses and metrics as functions of module "builtins" (``{"module": "builtins",
# "class_name": "function", "config": "relu"}``) and finds them by name in its BUILTIN_MODULES (activations,
# constraints, initializers, losses, metrics, optimizers, regularizers). Keras 3.0-3.10 imported Python's
# ``builtins`` for any other name (``exec``, ``eval``): only these names are Keras's own.
KERAS_BUILTIN_FUNCTIONS = frozenset({
    "binary_accuracy", "binary_crossentropy", "binary_focal_crossentropy", "categorical_accuracy",
    "categorical_crossentropy", "categorical_focal_crossentropy", "categorical_generalized_cross_entropy",
    "categorical_hinge", "celu", "circle", "concordance_correlation", "cosine_similarity", "ctc", "dice", "elu",
    "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "hinge", "huber", "kl_divergence", "leaky_relu", "linear", "log_cosh", "log_sigmoid", "log_softmax",
    "mean_absolute_error", "mean_absolute_percentage_error", "mean_squared_error",
    "mean_squared_logarithmic_error", "mish", "pearson_correlation", "poisson", "relu", "relu6", "selu",
    "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_categorical_accuracy",
    "sparse_categorical_crossentropy", "sparse_plus", "sparse_sigmoid", "sparse_top_k_categorical_accuracy",
    "sparsemax", "squared_hinge", "squareplus", "swish", "tanh", "tanh_shrink", "threshold",
    "top_k_categorical_accuracy", "tversky", "mse", "mae", "mape", "msle", "kld", "logcosh",
    "kullback_leibler_divergence",
})


def is_keras_builtin(module: str, name: str) -> bool:
    """A Keras activation, loss or metric written as a function of module ``builtins``."""
    return module == "builtins" and name in KERAS_BUILTIN_FUNCTIONS


def is_keras_module(module: str) -> bool:
    """Whether ``module`` is Keras itself (keras, keras.*, keras.src.*, tf_keras, tf_keras.*)."""
    return any(module == root or module.startswith(root + ".") for root in ("keras", "tf_keras"))


def non_modeling(module: str, name: str, *, function: bool) -> str | None:
    """Why ``module.name`` (in a Keras module) is no modeling API, or None when it is one."""
    if name in GADGETS:
        return GADGETS[name]
    if _SUSPICIOUS.search(name):
        return "is no Keras modeling API, and its name says it touches files or runs code"
    parts = module.split(".")[1:]
    if parts[:1] == ["src"]:
        parts = parts[1:]
    if not parts:
        allowed = not function and name in _TOP_LEVEL
    elif parts[0] in _MODEL_PACKAGES:
        allowed = not function and name in _MODEL_CLASSES
    elif parts[0] == "applications":  # classes the application models define (ConvNeXt's LayerScale); not
        allowed = not function and name[:1].isupper()  # decode_predictions, which downloads its class index
    else:
        allowed = parts[0] in _MODELING
    if allowed:
        return None
    return f"is no Keras modeling API (keras.{parts[0] if parts else name} is outside layers, activations, " \
           "initializers, losses, metrics, regularizers, constraints, optimizers, ops and the model classes)"


# Layer settings a layer reads as a file path or URL when it is built: {class name: keys}.
_PATH_KEYS: dict[str, tuple[str, ...]] = {
    "StringLookup": ("vocabulary", "idf_weights"),
    "IntegerLookup": ("vocabulary", "idf_weights"),
    "TextVectorization": ("vocabulary", "idf_weights"),
    "TFSMLayer": ("filepath",),
}
# keras-hub / keras-nlp tokenizers: vocabulary, merges and SentencePiece protos may be given as files.
_TOKENIZER_KEYS = ("vocabulary", "merges", "proto", "spm_proto", "vocabulary_file")


def path_settings(class_name: str, inner: dict[str, object]) -> list[tuple[str, str]]:
    """(key, path) for each setting of a ``class_name`` layer that its loader would read as a file or URL."""
    keys = _PATH_KEYS.get(class_name)
    if keys is None and class_name.endswith("Tokenizer"):
        keys = _TOKENIZER_KEYS
    if keys is None:
        return []
    return [(k, v) for k in keys if isinstance(v := inner.get(k), str) and v]


def path_message(class_name: str, layer: str, key: str, value: str) -> str:
    what = "URL" if "://" in value else "file"
    if class_name == "TFSMLayer":
        return (f"TFSMLayer '{layer}' loads the SavedModel at '{value}' and runs its initializers "
                "(CVE-2026-1462)")
    return f"{class_name} '{layer}' reads its {key} from the {what} '{value}'"
