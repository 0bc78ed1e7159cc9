"""The ``variable`` of each tensor of a Keras 3 weights file: Keras's own ``Variable.path``, read from the layout.

Keras 3 (keras/src/saving/saving_lib.py) stores a layer's variables as ``<group>/vars/0, 1, ...`` in the order the
layer created them, trainable ones first (Layer.save_own_variables). The groups of a model's layer list are named
after each layer's class (``dense``, ``dense_1``, ... in list order); a layer's own sub-layers under the attribute
holding them (``multi_head_attention/query_dense``). Keras 3.x writes each ``vars`` group's ``name`` attribute:
the layer's (or optimizer's) name. A ``.keras`` archive's config.json lists the layers with class and options.

A variable's path is the name scopes it was created in and its name. A layer of a model's layer list is built on
its own (``conv1/kernel``, even inside a nested model); a sub-layer is built by its parent, in its scope
(``mha/query/kernel``). The variable names come from the class: Dense creates ``kernel`` then ``bias``, and so on,
in the table below; where the class is unknown or the count leaves a choice the config does not settle, the
tensor is named ``<layer path>/vars/<i>``.

An optimizer's variables are ``iteration``, ``learning_rate`` (unless it is a schedule), then its per-variable
state for each trainable variable in turn (Adam: momentum and velocity), named
``<optimizer>/<variable path with / as _>_<slot>``. Which trainable variable each belongs to follows from the
order of the model's trainable variables: known from config.json (the layer order) and the classes; without it,
the state is named ``<optimizer>/vars/<i>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from ckptcheck.formats.keras.config import is_keras_module

VARS = "vars"
LAYERS = "layers"

Options = Mapping[str, Any]
# class (snake case, as Keras names a layer list's groups) -> (number of stored variables, config options) ->
# variable names in storage order, or None where they are not determined.
_Namer = Callable[[int, Options | None], Sequence[str] | None]


def _by_count(*lists: Sequence[str]) -> _Namer:
    table = {len(names): names for names in lists}
    return lambda count, _options: table.get(count)


def _normalization(count: int, options: Options | None, *, moving: bool) -> Sequence[str] | None:
    """BatchNormalization: gamma (if scale), beta (if center), then moving_mean, moving_variance (not trainable);
    Layer/GroupNormalization likewise without the moving statistics."""
    fixed = ["moving_mean", "moving_variance"] if moving else []
    if options is not None:
        names = [n for n, key in (("gamma", "scale"), ("beta", "center")) if options.get(key, True)]
        if options.get("rms_scaling"):
            names = ["gamma"]
        names += fixed
        return names if len(names) == count else None
    if count == 2 + len(fixed):
        return ["gamma", "beta", *fixed]
    if count == len(fixed):
        return fixed
    return None


_KERNEL_BIAS = _by_count(["kernel"], ["kernel", "bias"])
_RECURRENT = _by_count(["kernel", "recurrent_kernel"], ["kernel", "recurrent_kernel", "bias"])
VARIABLE_NAMES: dict[str, _Namer] = {
    **{cls: _KERNEL_BIAS for cls in (
        "dense", "einsum_dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
        "conv3d_transpose", "depthwise_conv1d", "depthwise_conv2d",
    )},
    "separable_conv1d": _by_count(["depthwise_kernel", "pointwise_kernel"],
                                  ["depthwise_kernel", "pointwise_kernel", "bias"]),
    "separable_conv2d": _by_count(["depthwise_kernel", "pointwise_kernel"],
                                  ["depthwise_kernel", "pointwise_kernel", "bias"]),
    "embedding": _by_count(["embeddings"]),
    "batch_normalization": lambda n, o: _normalization(n, o, moving=True),
    "layer_normalization": lambda n, o: _normalization(n, o, moving=False),
    "group_normalization": lambda n, o: _normalization(n, o, moving=False),
    "p_re_lu": _by_count(["alpha"]),
    # keras.layers.Normalization (every EfficientNet holds one): its statistics, none trainable; with mean and
    # variance given to the constructor it stores nothing.
    "normalization": _by_count(["mean", "variance", "count"]),
    # (Not keras.applications.convnext.LayerScale: its weight has no name of its own, and Keras numbers such names
    # across the whole process, variable, variable_1, ...: the file cannot say which.)
    "lstm_cell": _RECURRENT,
    "gru_cell": _RECURRENT,
    "simple_rnn_cell": _RECURRENT,
}
# The variables of the classes above that Keras creates with trainable=False, by class: they take no optimizer state.
_NOT_TRAINABLE = {
    "batch_normalization": frozenset({"moving_mean", "moving_variance"}),
    "normalization": frozenset({"mean", "variance", "count"}),
}
# Sub-layers a layer creates under attributes, by attribute: their class, and the order the parent creates them
# (its variables, and so the optimizer's, follow that order, not the file's alphabetical one).
_SUBLAYER_CLASS = {"query_dense": "einsum_dense", "key_dense": "einsum_dense", "value_dense": "einsum_dense",
                   "output_dense": "einsum_dense"}
_SUBLAYER_NAME = {("multi_head_attention", "query_dense"): "query", ("multi_head_attention", "key_dense"): "key",
                  ("multi_head_attention", "value_dense"): "value",
                  ("multi_head_attention", "output_dense"): "attention_output"}
_SUBLAYER_ORDER = {"multi_head_attention": ("query_dense", "key_dense", "value_dense", "output_dense"),
                   "bidirectional": ("forward_layer", "backward_layer")}
# Optimizer class (lower case) -> its per-variable state, in the order it is created for each variable.
_OPTIMIZER_SLOTS = {"adam": ("momentum", "velocity"), "adamw": ("momentum", "velocity"), "sgd": ("momentum",),
                    "rmsprop": ("velocity",), "adagrad": ("accumulator",), "lion": ("momentum",),
                    "sgd-plain": ()}


def to_snake_case(name: str) -> str:
    """A class name as Keras names its groups (keras/src/utils/naming.py): BatchNormalization ->
    batch_normalization, Conv2D -> conv2d."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _base(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


@dataclass(frozen=True)
class _Layout:
    """What is known about the file as a whole."""

    vars_names: Mapping[str, str]  # group -> the `name` attribute of its `vars`
    configs: dict[str, dict[str, Any]]  # group -> its layer's config.json item (empty without config.json)
    frozen: frozenset[str]  # groups of layers config.json marks trainable: false (or inside one)
    functional: AbstractSet[str]  # models (by group) whose layer list holds input layers


@dataclass
class _Layer:
    group: str  # the group holding `vars` ("" for the file's root)
    name: str  # the layer's name
    path: str  # the name scopes its variables are created in
    cls: str | None  # snake-case class, when known
    options: Options | None  # its config, when known
    trainable: bool = True
    stored: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (key, shape) by index
    names: Sequence[str] | None = None


def keras3_variables(
    datasets: Sequence[tuple[str, tuple[int, ...]]],
    vars_names: Mapping[str, str],
    config: Any = None,
    functional: AbstractSet[str] = frozenset(),
) -> dict[str, str]:
    """key -> variable for a Keras 3 weights layout.

    ``datasets``: each stored dataset's path in the file (``layers/dense/vars/0``) and shape; ``vars_names``: the
    ``name`` attribute of each ``vars`` group, by the group holding it (``layers/dense``); ``config``: the
    archive's config.json, if any; ``functional``: the models (by group, "" for the file's root) whose layer list
    holds input layers, which only a Functional model's does.
    """
    configs, frozen = _config_index(config)
    layout = _Layout(vars_names, configs, frozen, functional)
    layers: dict[str, _Layer] = {}
    for key, shape in datasets:
        group, sep, index = key.rpartition("/" + VARS + "/")
        if not sep:
            if key.startswith(VARS + "/"):
                group, index = "", key[len(VARS) + 1 :]
            else:
                continue
        if "/" in index or not index.isdigit():
            continue
        layer = layers.get(group)
        if layer is None:
            layer = layers[group] = _describe(group, layout, layers)
        layer.stored.append((key, shape))
    out: dict[str, str] = {}
    optimizer = layers.pop("optimizer", None)
    for layer in layers.values():
        layer.stored.sort(key=lambda item: int(item[0].rsplit("/", 1)[1]))
        namer = VARIABLE_NAMES.get(layer.cls) if layer.cls else None
        names = namer(len(layer.stored), layer.options) if namer else None
        if names is None or len(names) != len(layer.stored) or not _indices_complete(layer):
            names = None
        layer.names = names
        for i, (key, _shape) in enumerate(layer.stored):
            out[key] = f"{layer.path}/{names[i]}" if names else f"{layer.path}/{VARS}/{key.rsplit('/', 1)[1]}"
    if optimizer is not None:
        optimizer.stored.sort(key=lambda item: int(item[0].rsplit("/", 1)[1]))
        trainable = _trainable_order(layers, configs) if configs else None
        out.update(_optimizer_variables(optimizer, trainable, config))
    return out


def config_layout(config: Any) -> tuple[dict[str, str], set[str]]:
    """What a weights file without ``vars`` names (a ``model.weights.npz``) takes from config.json instead: the
    names of the model and its optimizer (``vars_names`` of keras3_variables, for the root group "" and
    "optimizer") and which models are Functional (``functional``)."""
    names: dict[str, str] = {}
    functional: set[str] = set()
    if not isinstance(config, dict):
        return names, functional
    inner = config.get("config")
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        names[""] = inner["name"]
    if config.get("class_name") == "Functional":
        functional.add("")
    configs, _frozen = _config_index(config)
    functional.update(group for group, item in configs.items() if item.get("class_name") == "Functional")
    compile_config = config.get("compile_config")
    opt = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    opt_inner = opt.get("config") if isinstance(opt, dict) else None
    if isinstance(opt_inner, dict) and isinstance(opt_inner.get("name"), str):
        names["optimizer"] = opt_inner["name"]
    return names, functional


def _indices_complete(layer: _Layer) -> bool:
    return [int(k.rsplit("/", 1)[1]) for k, _ in layer.stored] == list(range(len(layer.stored)))


def _describe(group: str, layout: _Layout, layers: dict[str, _Layer]) -> _Layer:
    parent, _, attr = group.rpartition("/")
    item = layout.configs.get(group)
    known = layout.vars_names.get(group) or (_config_name(item) if item else None)
    if known is None and parent and parent.rpartition("/")[2] != LAYERS:
        owner = layers.get(parent) or _describe(parent, layout, layers)
        layers.setdefault(parent, owner)
        known = _SUBLAYER_NAME.get((owner.cls or "", attr))  # the name the parent gives it, when fixed
    if known is None and group not in ("", "optimizer"):
        # Neither the file (Keras before 3.x wrote no name attribute) nor a config names the layer: its tensors
        # keep their keys, <group>/vars/<i>, rather than a guessed name.
        return _Layer(group, attr, group, None, None)
    name = known or attr or "model"
    if item is not None and _config_name(item) not in (None, name):
        item = None  # the file and the config disagree about this layer: trust neither's class
    options: Options | None = None
    cls: str | None = None
    trainable = True
    if item is not None:
        inner = item.get("config")
        options = inner if isinstance(inner, dict) else None
        module = item.get("module")
        class_name = item.get("class_name")
        if isinstance(class_name, str) and (not isinstance(module, str) or is_keras_module(module)):
            cls = to_snake_case(class_name)
        trainable = group not in layout.frozen
    if group == "optimizer" or group == "":
        return _Layer(group, name, name, None, None)
    in_list = parent == LAYERS or parent.endswith("/" + LAYERS)
    if in_list:  # a layer of a model's list; its group is named after its class
        # A Functional model's layers are built on their own, before the model exists; any other model (a
        # Sequential, a subclassed Model) builds its layers in its own name's scope (seq/dense/kernel).
        model = parent[: -len(LAYERS)].rstrip("/")
        owner_name = layout.vars_names.get(model)
        path = name if model in layout.functional or not owner_name else f"{owner_name}/{name}"
        if cls is None and item is None:
            cls = _base(attr)
    else:  # a sub-layer, built in its parent's scope
        owner = layers.get(parent) or _describe(parent, layout, layers)
        layers.setdefault(parent, owner)
        path = f"{owner.path}/{name}"
        trainable = owner.trainable
        if cls is None:
            cls = _SUBLAYER_CLASS.get(attr) or _base(name)
    return _Layer(group, name, path, cls, options, trainable)


def _config_name(item: dict[str, Any]) -> str | None:
    inner = item.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str):
        name = item.get("name")
    return name if isinstance(name, str) else None


def _layer_items(model: Any) -> list[dict[str, Any]]:
    inner = model.get("config") if isinstance(model, dict) else None
    items = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(items, list):
        return []
    items = [i for i in items if isinstance(i, dict)]
    # Sequential.layers leaves out its InputLayer, which its config lists first.
    if model.get("class_name") == "Sequential" and items and items[0].get("class_name") == "InputLayer":
        items = items[1:]
    return items


def _config_index(config: Any) -> tuple[dict[str, dict[str, Any]], frozenset[str]]:
    """Group path -> the layer's config item, naming each model's layer list as Keras does (class in snake
    case, ``_1``, ``_2``, ... for repeats, in list order); and the groups of frozen layers (trainable: false, or
    inside a frozen model)."""
    out: dict[str, dict[str, Any]] = {}
    frozen_groups: set[str] = set()

    def walk(model: Any, prefix: str, frozen: bool, depth: int) -> None:
        if depth > 64:
            return
        used: dict[str, int] = {}
        for item in _layer_items(model):
            class_name = item.get("class_name")
            if not isinstance(class_name, str):
                return  # the list cannot be mapped past an unnamed class
            base = to_snake_case(class_name)
            if base in used:
                used[base] += 1
                group = f"{base}_{used[base]}"
            else:
                used[base] = 0
                group = base
            path = f"{prefix}{LAYERS}/{group}"
            out[path] = item
            inner = item.get("config")
            off = frozen or (isinstance(inner, dict) and inner.get("trainable") is False)
            if off:
                frozen_groups.add(path)
            if isinstance(inner, dict) and isinstance(inner.get("layers"), list):
                walk(item, path + "/", off, depth + 1)

    if isinstance(config, dict):
        walk(config, "", False, 0)
    return out, frozenset(frozen_groups)


def _trainable_order(layers: dict[str, _Layer], configs: dict[str, dict[str, Any]]
                     ) -> list[tuple[_Layer, int]] | None:
    """The model's trainable variables in Keras's order (model.trainable_variables, which the optimizer's state
    follows): its own, then layer by layer as config.json lists them; within a layer its own variables, then its
    sub-layers'. None where that order is not determined (a class whose sub-layer order is unknown)."""
    holding: set[str] = set()  # every group at or above a group with variables
    for group in layers:
        parts = group.split("/") if group else []
        holding.update("/".join(parts[:k]) for k in range(len(parts) + 1))
    order: list[tuple[_Layer, int]] = []
    seen: set[str] = set()

    def own(group: str) -> bool:
        layer = layers.get(group)
        if layer is None or not layer.stored:
            return True
        seen.add(group)
        if not layer.trainable:
            return True
        if layer.names is None:  # a class whose variables are unknown: each a candidate, the optimizer decides
            order.extend((layer, i) for i in range(len(layer.stored)))
        else:
            fixed = _NOT_TRAINABLE.get(layer.cls or "", frozenset())
            order.extend((layer, i) for i, n in enumerate(layer.names) if n not in fixed)
        return True

    def model(group: str) -> bool:
        prefix = (group + "/" if group else "") + LAYERS + "/"
        listed = [g for g in configs if g.startswith(prefix) and "/" not in g[len(prefix) :]]
        return all(layer(g) for g in listed if g in holding)

    def layer(group: str) -> bool:
        if not own(group):
            return False
        subs = [g for g in holding if g.rpartition("/")[0] == group and g.rpartition("/")[2] != LAYERS]
        if len(subs) > 1:
            described = layers.get(group)
            wanted = _SUBLAYER_ORDER.get(described.cls or "") if described else None
            if wanted is None or any(g.rpartition("/")[2] not in wanted for g in subs):
                return False
            subs.sort(key=lambda g: wanted.index(g.rpartition("/")[2]))
        if not all(layer(g) for g in subs):
            return False
        return model(group) if (group + "/" + LAYERS) in holding else True

    if not own("") or not model(""):
        return None
    if any(g not in seen for g, described in layers.items() if described.stored):  # not in the config's lists
        return None
    return order


def _optimizer_variables(optimizer: _Layer, trainable: list[tuple[_Layer, int]] | None,
                         config: Any) -> dict[str, str]:
    name = optimizer.name
    stored = optimizer.stored
    out = {key: f"{name}/{VARS}/{key.rsplit('/', 1)[1]}" for key, _ in stored}
    if not stored or stored[0][1] != ():
        return out
    out[stored[0][0]] = f"{name}/iteration"
    rest = stored[1:]
    # Without the class in config.json (a weights file; Keras also leaves it out of some archives), the name
    # Keras gave the optimizer: its class in snake case, numbered (adam_2, rm_sprop). The counts and shapes below
    # must still fit the class's state before anything is named after it.
    cls = _optimizer_class(config) or _base(name).replace("_", "").lower()
    slots = _OPTIMIZER_SLOTS.get(cls)
    if trainable is not None and slots is not None:
        # A layer of a class ckptcheck does not know may hold trainable variables or not: either none of them or
        # all of them are, when the optimizer's count says which; the shapes must then pair one by one.
        known = [(layer, i) for layer, i in trainable if layer.names is not None]
        candidates = [trainable] if len(known) == len(trainable) else [known, trainable]
        fitting = [c for c in candidates if len(rest) in (len(slots) * len(c), len(slots) * len(c) + 1)]
        if fitting:
            found = [named for c in fitting if (named := _slot_names(name, rest, c, slots)) is not None]
            if found and all(named == found[0] for named in found):  # one way to pair them (or they agree)
                out.update(found[0])
            return out
    if len(rest) >= 1 and rest[0][1] == ():
        out[rest[0][0]] = f"{name}/learning_rate"
    return out


def _slot_names(name: str, rest: list[tuple[str, tuple[int, ...]]], variables: list[tuple[_Layer, int]],
                slots: Sequence[str]) -> dict[str, str] | None:
    """The optimizer's values after its iteration named: the learning rate when one more is stored than the slots,
    then ``slots`` for each of ``variables`` in turn; None where a shape says the pairing is wrong. A variable of
    an unknown class keeps its slots positional (its own name is unknown)."""
    named: dict[str, str] = {}
    if len(rest) > len(slots) * len(variables):
        if rest[0][1] != ():
            return None
        named[rest[0][0]] = f"{name}/learning_rate"
        rest = rest[1:]
    for n, (key, shape) in enumerate(rest):
        layer, i = variables[n // len(slots)]  # rest is empty when there are no slots
        if layer.stored[i][1] != shape:
            return None
        if layer.names is not None:
            path = f"{layer.path}/{layer.names[i]}".replace("/", "_")
            named[key] = f"{name}/{path}_{slots[n % len(slots)]}"
    return named


def _optimizer_class(config: Any) -> str | None:
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    opt = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    if isinstance(opt, dict) and isinstance(opt.get("class_name"), str):
        module = opt.get("module")
        if isinstance(module, str) and not is_keras_module(module):
            return None
        inner = opt.get("config")
        if isinstance(inner, dict) and inner.get("amsgrad"):
            return None  # velocity_hat follows: not in the table
        if opt["class_name"] == "SGD" and isinstance(inner, dict) and not inner.get("momentum"):
            return "sgd-plain"
        return str(opt["class_name"]).lower()
    return None
