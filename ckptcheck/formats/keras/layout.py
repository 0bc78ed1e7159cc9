"""The two HDF5 layouts Keras writes, recognized from a file's contents whatever its name.

* Keras 3 weights (``save_weights("x.weights.h5")``, and ``model.weights.h5`` inside a ``.keras``): datasets
  ``0, 1, ...`` in groups ``layers/<layer>/vars``, nested layers under their own ``layers/``, optimizer variables
  in ``optimizer/vars``, the model's own in ``vars``. bfloat16 values are opaque 2-byte datasets whose ``dtype``
  attribute says ``bfloat16``.
* Legacy HDF5 (Keras 2 / tf_keras, Keras 3 ``model.save("x.h5")``): root attributes ``keras_version``,
  ``backend``, ``model_config`` and ``training_config``; group ``model_weights`` whose attribute ``layer_names``
  lists layer groups, each with a ``weight_names`` attribute naming its datasets; ``optimizer_weights`` likewise.
  Weights-only files (``save_weights("x.h5")``) have the layer groups at the root. Name lists over 64 KB are
  split into attributes ``layer_names0``, ``layer_names1``, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats.keras import config as keras_config
from ckptcheck.formats.keras.h5 import (
    MAX_ATTRIBUTE_BYTES,
    VLEN_READS,
    attr_text,
    child_node,
    dataset_header,
    import_h5py,
    read_attr,
    read_json_attr,
    read_names_attr,
)
from ckptcheck.order import natural_sorted
from ckptcheck.records import KERAS_H5, KERAS_WEIGHTS, Architecture, CheckpointInfo

if TYPE_CHECKING:
    import h5py


_KERAS3_ROOTS = ("layers", "vars", "optimizer", "_layer_checkpoint_dependencies")

_TOP_LEVEL_WEIGHTS = "top_level_model_weights"


# --- the HDF5 layouts ---------------------------------------------------------------------------------------------


# A dataset's header as read during the walk, or the error describing it raised (raised in turn when the
# dataset is loaded, so that problems come in the order they always did: the walk's, then each dataset's by name).
_Header = tuple[tuple[int, ...], str, np.dtype, int] | CkptcheckError


@dataclass
class Layout:
    format: str
    entries: list[tuple[str, str]]  # (tensor name, dataset path)
    writer: str | None = None
    metadata: dict[str, str] | None = None
    architecture: Architecture | None = None
    variables: dict[str, str] = field(default_factory=dict)  # tensor name -> variable, where the layout says
    # Keras 3: the name attribute of each vars group, by the group holding it (found while the file was walked)
    vars_names: dict[str, str] | None = None
    headers: dict[str, _Header] | None = None  # Keras 3: each dataset's header, by path, read during the walk


def layout_of(f: h5py.File, *, path: str, allow_empty: bool) -> Layout:
    h5lib = import_h5py()
    keys = list(f.keys())
    attrs = set(f.attrs.keys())
    if "model_weights" in keys or "model_config" in attrs:
        return _legacy_layout(f, path=path, full_model=True)
    if "layer_names" in attrs or "layer_names0" in attrs:
        return _legacy_layout(f, path=path, full_model=False)
    if any(k in keys and isinstance(f.get(k, getlink=True), h5lib.HardLink) for k in _KERAS3_ROOTS) or (
        allow_empty and not keys
    ):
        entries, vars_names, headers = _keras3_entries(f, path=path)
        return Layout(KERAS_WEIGHTS, entries, vars_names=vars_names, headers=headers)
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "nothing"
    raise UnsupportedFormatError(
        f"HDF5 file is not a Keras weights or model file (top level holds {shown})", path=path,
        hint="ckptcheck reads Keras 3 .weights.h5 (groups layers/.../vars) and legacy Keras .h5 files "
             "(model_weights, or a layer_names attribute)",
    )


def _keras3_entries(f: h5py.File, *, path: str) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, _Header]]:
    """Every dataset in the file, by path, in natural order (vars/10 after vars/9); the ``name`` attribute of every
    ``vars`` group, by the group holding it; and every dataset's header (dataset_header).

    One walk of the links, group by group, each object opened once from its parent with HDF5's own calls: no h5py
    object per dataset, no lookup of a path from the root (a file of 100,000 datasets took ~35 s walked by HDF5's
    link and object visitors and then opened dataset by dataset). Keras writes only hard links; a soft or external
    link is refused (an external one would read another file the checkpoint names). An object linked twice is
    walked once, under its first path (as HDF5's visitors do), so a group linked into itself is no cycle.
    """
    from h5py import h5d, h5g, h5l, h5o

    links: list[bytes] = []  # the first link that is not a hard link
    too_deep: list[bytes] = []
    datasets: list[str] = []
    headers: dict[str, _Header] = {}
    vars_names: dict[str, str] = {}
    seen = {h5o.get_info(f.id).addr}

    def walk(gid: Any, prefix: bytes) -> None:
        children: list[tuple[bytes, int, int]] = []
        gid.links.iterate(lambda name, info: children.append((name, info.type, info.u)), info=True)
        for name, kind, address in children:
            full = prefix + name
            if kind != h5l.TYPE_HARD:
                if not links:
                    links.append(full)
                continue
            if address in seen:
                continue
            seen.add(address)
            if full.count(b"/") > 64:
                too_deep.append(full)
                continue
            obj = h5o.open(gid, name)
            if isinstance(obj, h5d.DatasetID):
                text = full.decode("utf-8", "surrogateescape")
                datasets.append(text)
                try:
                    headers[text] = dataset_header(obj, text, path=path)
                except CkptcheckError as exc:
                    headers[text] = exc
            elif isinstance(obj, h5g.GroupID):
                if name == b"vars":
                    _read_vars_name(obj, prefix, vars_names)
                walk(obj, full + b"/")

    walk(f.id, b"")
    if links:
        shown = links[0].decode("utf-8", "backslashreplace")
        raise UnsupportedFormatError(f"'{shown}' is a link; Keras files have none", path=path)
    if too_deep:
        raise CorruptCheckpointError("groups nest more than 64 levels deep", path=path)
    return [(n, n) for n in natural_sorted(datasets, str)], vars_names, headers


def _read_vars_name(gid: Any, prefix: bytes, out: dict[str, str]) -> None:
    """The ``name`` attribute of a ``vars`` group (open as ``gid``, below ``prefix``) into ``out``, by the group
    holding it; read with HDF5's attribute calls (h5py's AttributeManager opened each attribute twice, for its size
    check and its value). An attribute too large or unreadable is left out."""
    h5lib = import_h5py()
    h5a = h5lib.h5a
    if not h5a.exists(gid, b"name"):
        return
    aid = h5a.open(gid, b"name")
    space, tid = aid.get_space(), aid.get_type()
    if space.get_simple_extent_npoints() * tid.get_size() > MAX_ATTRIBUTE_BYTES:
        return
    with contextlib.suppress(ValueError, OSError, TypeError, UnicodeDecodeError):
        if space.get_simple_extent_type() == h5lib.h5s.SCALAR and tid.is_variable_str():
            # What Keras writes: one variable-length string, read as h5py reads it (bytes), into one reused array.
            cset = tid.get_cset()
            found = VLEN_READS.get(cset)
            if found is None:
                dtype = aid.dtype
                found = VLEN_READS[cset] = (dtype, h5lib.h5t.py_create(dtype))
            value = np.empty((), dtype=found[0])
            aid.read(value, mtype=found[1])
        else:
            value = np.empty(aid.shape, dtype=aid.dtype)
            aid.read(value)
        out[prefix.rstrip(b"/").decode("utf-8", "surrogateescape")] = attr_text(value)


def _legacy_layout(f: h5py.File, *, path: str, full_model: bool) -> Layout:
    h5lib = import_h5py()
    root = child_node(f, "model_weights", path=path, what="group") if "model_weights" in f else f
    if not isinstance(root, h5lib.Group):
        raise CorruptCheckpointError("model_weights is not a group", path=path)
    layer_names = read_names_attr(root, "layer_names", path=path)
    if not layer_names and "layer_names" not in root.attrs and "layer_names0" not in root.attrs:
        raise CorruptCheckpointError(f"{root.name} has no layer_names attribute", path=path,
                                     hint="a legacy Keras .h5 lists its layers in a layer_names attribute")
    groups = list(layer_names)
    # Keras 3's legacy writer keeps the model's own variables in a group that layer_names does not list.
    if _TOP_LEVEL_WEIGHTS in root and _TOP_LEVEL_WEIGHTS not in groups:
        groups.append(_TOP_LEVEL_WEIGHTS)
    prefix = root.name.rstrip("/") + "/"
    entries: list[tuple[str, str]] = []
    variables: dict[str, str] = {}
    for layer in groups:
        group = child_node(root, layer, path=path, what="layer group")
        if not isinstance(group, h5lib.Group):
            raise CorruptCheckpointError(f"layer '{layer}' is not a group", path=path)
        for weight in read_names_attr(group, "weight_names", path=path):
            name = f"{layer}/{weight}"
            entries.append((name, prefix + name))
            variables[name] = legacy_variable(weight)
    if "optimizer_weights" in f:
        opt = child_node(f, "optimizer_weights", path=path, what="group")
        for weight in read_names_attr(opt, "weight_names", path=path):
            name = f"optimizer_weights/{weight}"
            entries.append((name, "/" + name))
            variables[name] = legacy_variable(weight)
    version = _root_text(f, root, "keras_version", path=path)
    metadata: dict[str, str] = {}
    backend = _root_text(f, root, "backend", path=path)
    if backend:
        metadata["backend"] = backend
    architecture = None
    if full_model and "model_config" in f.attrs:
        config = read_json_attr(f, "model_config", path=path)
        extra: dict[str, Any] = {}
        if "training_config" in f.attrs:
            training = read_json_attr(f, "training_config", path=path)
            extra["training_config"] = training
            metadata.update(compile_summary(training, "optimizer_config"))
        architecture = keras_config.architecture(config, keras_config.SOURCE_MODEL_CONFIG, path=path, extra=extra)
    return Layout(KERAS_H5, entries, writer=f"Keras {version}" if version else None, metadata=metadata,
                   architecture=architecture, variables=variables)


_OUTPUT_SUFFIX = re.compile(r":\d+$")


def legacy_variable(weight: str) -> str:
    """A legacy .h5 weight name as the variable's name: Keras 2 wrote TensorFlow's tensor name
    (``dense_1/kernel:0``), Keras 3 the variable's path already."""
    return _OUTPUT_SUFFIX.sub("", weight)


def functional_models(h5: h5py.File, keys: list[str]) -> set[str]:
    """The models (by group, "" for the root) above the given datasets whose layer list holds an input layer:
    Functional models, the only ones whose ``layers`` include their InputLayers."""
    h5lib = import_h5py()
    containers: set[str] = set()
    for key in keys:
        parts = key.split("/")
        containers.update("/".join(parts[: k + 1]) for k, part in enumerate(parts[:-1]) if part == "layers")
    out: set[str] = set()
    for container in containers:
        node = h5.get(container)
        if isinstance(node, h5lib.Group) and any(child.startswith("input_layer") for child in node):
            out.add(container[: -len("layers")].rstrip("/"))
    return out


def read_vars_names(h5: h5py.File, keys: Iterator[str] | list[str]) -> dict[str, str]:
    """The ``name`` attribute Keras 3 writes on each ``vars`` group (the layer's or optimizer's name), by the
    group holding it, for every group above the given datasets."""
    h5lib = import_h5py()
    groups: set[str] = set()
    for key in keys:
        parts = key.split("/")
        groups.update("/".join(parts[:k]) for k in range(len(parts) - 1))
    out: dict[str, str] = {}
    for group in groups:
        holder = h5.get(f"{group}/vars" if group else "vars", getlink=True)
        if not isinstance(holder, h5lib.HardLink):
            continue
        node = h5[f"{group}/vars" if group else "vars"]
        if isinstance(node, h5lib.Group) and "name" in node.attrs:
            with contextlib.suppress(ValueError, CorruptCheckpointError):
                out[group] = attr_text(read_attr(node, "name", path=h5.filename))
    return out


def _root_text(f: h5py.File, root: h5py.Group, name: str, *, path: str) -> str | None:
    for obj in (f, root):
        if name in obj.attrs:
            return attr_text(read_attr(obj, name, path=path))
    return None


def with_orphan_optimizer(info: CheckpointInfo, config: Any) -> CheckpointInfo:
    """A .keras archive whose weights hold optimizer state its config.json's compile_config does not name (Keras
    drops the optimizer from compile_config on some saves; a model compiled from that config gets Keras's default
    optimizer, which this state does not fit): say so in its metadata."""
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    state = sum(1 for t in info.tensors if t.name.startswith("optimizer/"))
    if not state or not isinstance(compile_config, dict) or compile_config.get("optimizer"):
        return info
    metadata = {**info.metadata, "optimizer_state": f"{state} values stored, but config.json's compile_config names "
                                                    f"no optimizer"}
    return dataclasses.replace(info, metadata=metadata)


def compile_summary(training: Any, optimizer_key: str) -> dict[str, str]:
    """Optimizer class and loss from a legacy training_config or a Keras 3 compile_config."""
    out: dict[str, str] = {}
    if not isinstance(training, dict):
        return out
    opt = training.get(optimizer_key)
    if isinstance(opt, dict) and isinstance(opt.get("class_name"), str):
        out["optimizer"] = opt["class_name"]
    loss = training.get("loss")
    if isinstance(loss, str):
        out["loss"] = loss
    return out

