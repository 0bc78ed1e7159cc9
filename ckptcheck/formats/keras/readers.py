"""Readers for Keras files: Keras 3 ``.weights.h5`` and ``.keras`` archives, and legacy HDF5 ``.h5`` files.

Values are read with h5py (imported when a file is opened, so ``import ckptcheck`` stays light); Keras and
TensorFlow are never imported. Layouts, as Keras writes them:

* Keras 3 weights (``save_weights("x.weights.h5")``, and ``model.weights.h5`` inside a ``.keras``): datasets
  ``0, 1, ...`` in groups ``layers/<layer>/vars``, nested layers under their own ``layers/``, optimizer variables
  in ``optimizer/vars``, the model's own in ``vars``. bfloat16 values are opaque 2-byte datasets whose ``dtype``
  attribute says ``bfloat16``.
* Keras 3 sharded weights (``save_weights("x.weights.json", max_shard_size=...)``): a JSON map
  ``{"metadata": {"total_size": ...}, "weight_map": {"/layers/dense/vars": ["x_00000.weights.h5"], ...}}`` and
  the shard files beside it, each laid out like a ``.weights.h5``; a group's datasets may span shards, each
  dataset is in one. The weights are every listed shard's datasets together (keras/src/saving/saving_lib.py,
  ShardedH5IOStore).
* ``.keras``: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5`` (or ``model.weights.npz``
  when saved with ``weights_format="npz"``: a zip of pickles inside the zip, see ckptcheck.formats.keras.npz), read in
  memory, never extracted.
* Legacy HDF5 (Keras 2 / tf_keras, Keras 3 ``model.save("x.h5")``): root attributes ``keras_version``,
  ``backend``, ``model_config`` and ``training_config``; group ``model_weights`` whose attribute ``layer_names``
  lists layer groups, each with a ``weight_names`` attribute naming its datasets; ``optimizer_weights`` likewise.
  Weights-only files (``save_weights("x.h5")``) have the layer groups at the root. Name lists over 64 KB are
  split into attributes ``layer_names0``, ``layer_names1``, ...

The layout is recognized from the file's contents, whatever its name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import library_source, open_regular, read_capped
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader, aligned_empty
from ckptcheck.formats.keras import config as keras_config
from ckptcheck.formats.keras import names as keras_names
from ckptcheck.formats.keras import npz
from ckptcheck.formats.resolve import SHARD_MAP_SUFFIX, shard_base
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.model import KERAS, KERAS_H5, KERAS_WEIGHTS, Architecture, CheckpointInfo, TensorInfo, listed_tensor
from ckptcheck.order import natural_key, natural_sorted

if TYPE_CHECKING:
    import h5py

WEIGHTS_MEMBER = "model.weights.h5"
NPZ_WEIGHTS_MEMBER = "model.weights.npz"  # weights_format="npz"
MAX_SHARD_MAP_BYTES = 64 << 20
CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
# Members read whole into memory are refused above these sizes (a zip entry can claim any size).
MAX_CONFIG_BYTES = 64 << 20
MAX_METADATA_BYTES = 1 << 20
MAX_ATTRIBUTE_BYTES = 64 << 20
MAX_NAMES = 1_000_000  # layer_names / weight_names entries: each becomes a Python string
# A dataset declaring far more bytes than the file stores is refused by read() (a shape bomb); iter_chunks
# stays bounded anyway.
_BOMB_FLOOR_BYTES = 1 << 30
_BOMB_EXPANSION = 1000

_KERAS3_ROOTS = ("layers", "vars", "optimizer", "_layer_checkpoint_dependencies")
_TOP_LEVEL_WEIGHTS = "top_level_model_weights"
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version..sizes), name length, extra length
_LOCAL_MAGIC = b"PK\x03\x04"
# Deflate cannot expand its input more than ~1032 times; a member declaring more is refused before it is read.
_DEFLATE_MAX_RATIO = 1032

# Everything h5py, zipfile and zlib raise for damaged input; mapped to CorruptCheckpointError at the boundary.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, zlib.error,
    NotImplementedError, struct.error, UnicodeDecodeError, RecursionError,
)


def open_keras(kind: str, location: str, *, path: str) -> CheckpointReader:
    """Open a Keras file. ``kind`` is what the file looked like from outside (model.KERAS for a zip,
    KERAS_WEIGHTS or KERAS_H5 for HDF5); for HDF5 the layout inside decides the format reported."""
    if kind == KERAS:
        return _open_archive(location, path)
    if kind == KERAS_WEIGHTS and location.endswith(SHARD_MAP_SUFFIX):
        return KerasShardedWeightsReader(location, path=path)
    if kind in (KERAS_WEIGHTS, KERAS_H5):
        return KerasHDF5Reader(location, path=path, named_as=kind)
    raise UnsupportedFormatError(f"not a Keras format: {kind!r}", path=path)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        from ckptcheck.errors import MissingDependencyError

        raise MissingDependencyError("reading Keras files needs h5py", hint="pip install h5py") from None
    return h5py


@contextlib.contextmanager
def _guard(what: str, *, path: str, tensor: str | None = None, hint: str | None = None) -> Iterator[None]:
    """Turn h5py/zipfile/json failures into CorruptCheckpointError naming the file (and tensor)."""
    try:
        yield
    except CkptcheckError:
        raise
    except _READ_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise CorruptCheckpointError(f"{what}: {detail}", path=path, tensor=tensor, hint=hint) from None


def _natural_key(name: str) -> list[str | int]:
    # vars/10 after vars/9, dense_10 after dense_2: the order every command uses (ckptcheck.order).
    return natural_key(name)


def _text(value: Any) -> str:
    """An HDF5 string attribute (bytes, str, numpy scalar or 0-d array) as str."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, found {type(value).__name__}")


# --- one dataset --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    info: TensorInfo
    h5path: str  # the dataset's path inside the HDF5 file
    read_dtype: np.dtype  # what values are read as (bfloat16 for Keras's opaque 2-byte datasets)
    source: int = 0  # which of the reader's HDF5 files holds it (a sharded weights file has several)


def _dtype_of(ds: h5py.Dataset) -> tuple[str, np.dtype]:
    """The TensorFlow dtype name of a dataset and the numpy dtype to read it as."""
    stored = ds.dtype
    if stored.kind == "V" and stored.fields is None and stored.subdtype is None:  # HDF5 opaque
        mark = ds.attrs.get("dtype")  # Keras 3 marks opaque bfloat16 datasets with attribute dtype="bfloat16"
        name = _text(mark) if mark is not None else None
        if name is None and stored.itemsize == 2:
            # Keras 3's legacy .h5 writer stores bfloat16 as the same opaque type without the mark; no other dtype
            # Keras writes comes out as a 2-byte opaque.
            name = "bfloat16"
        known = dtypes.BY_NAME.get(name) if name else None
        if known is not None and known.readable and known.itemsize == stored.itemsize:
            return known.name, known.numpy
        return f"opaque{stored.itemsize * 8}", stored
    return _stored_dtype(stored)


def _stored_dtype(stored: np.dtype) -> tuple[str, np.dtype]:
    """_dtype_of for a type that is not opaque: decided by the HDF5 type alone."""
    h5lib = _h5py()
    if stored.kind == "O" and h5lib.check_string_dtype(stored) is None:
        # Variable-length sequences of numbers, object and region references: nothing a Keras file stores.
        what = "an object reference" if h5lib.check_ref_dtype(stored) is not None else "a variable-length sequence"
        return f"unknown ({what})", stored
    known = dtypes.from_numpy(stored)
    if known is None:
        return f"unknown ({stored})", stored
    if known.is_string:
        return known.name, stored
    return known.name, stored.newbyteorder("=")  # HDF5 converts a big-endian dataset on read


# (dtype name, numpy dtype to read as) by the HDF5 type's serialized form: a model stores a few types across all of
# its datasets (opaque types are not cached: their dtype attribute decides).
_TYPES: dict[bytes, tuple[str, np.dtype]] = {}


def _header(dsid: Any, name: str, *, path: str) -> tuple[tuple[int, ...], str, np.dtype, int]:
    """(shape, dtype name, numpy dtype to read as, bytes) of an open dataset (h5py's DatasetID), from its header
    alone: external and virtual storage refused (ckptcheck reads no other file), a dataset without a dataspace
    refused. Low-level calls, no h5py Dataset object: a Keras file of 100,000 datasets is listed through this."""
    h5lib = _h5py()
    try:  # (not _guard: a context manager per dataset cost ~4 us of ~40)
        # A contiguous dataset stored in this file has an address; external, virtual, chunked, compact or
        # unallocated storage has none, and only then is the property list asked (one list for both questions).
        if dsid.get_offset() is None:
            dcpl = dsid.get_create_plist()
            if dcpl.get_external_count():
                raise UnsupportedFormatError("the dataset keeps its values in an external file; ckptcheck will not "
                                             "follow it", path=path, tensor=name)
            if dcpl.get_layout() == h5lib.h5d.VIRTUAL:
                raise UnsupportedFormatError("the dataset is virtual (its values live in other files)", path=path,
                                             tensor=name)
        dims = dsid.shape
        if dims is None:
            raise CorruptCheckpointError("the dataset has no dataspace", path=path, tensor=name)
        shape = tuple(int(d) for d in dims)
        tid = dsid.get_type()
        encoded = tid.encode()
        found = _TYPES.get(encoded)
        if found is None:
            stored = tid.dtype
            if stored.kind == "V" and stored.fields is None and stored.subdtype is None:  # opaque: see _dtype_of
                found = _dtype_of(h5lib.Dataset(dsid))
            else:
                if len(_TYPES) >= 256:
                    _TYPES.clear()
                found = _TYPES[encoded] = _stored_dtype(stored)
        dtype_name, read_dtype = found
        count = math.prod(shape)
        nbytes = int(dsid.get_storage_size()) if read_dtype.kind == "O" else count * read_dtype.itemsize
    except CkptcheckError:
        raise
    except _READ_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise CorruptCheckpointError(f"cannot read the dataset's header: {detail}", path=path, tensor=name) from None
    return shape, dtype_name, read_dtype, nbytes


def _entry(ds: h5py.Dataset, name: str, h5path: str, label: str, *, path: str, source: int = 0) -> _Entry:
    shape, dtype_name, read_dtype, nbytes = _header(ds.id, name, path=path)
    return _Entry(TensorInfo(name=name, dtype=dtype_name, shape=shape, nbytes=nbytes, file=label), h5path,
                  read_dtype, source)


def _child(group: h5py.Group, relpath: str, *, path: str, what: str) -> Any:
    """``group[relpath]``, refusing soft and external links on the way (Keras writes neither, and an external
    link would read another file named by the checkpoint)."""
    h5lib = _h5py()
    node = group
    for part in relpath.split("/"):
        if not part:
            continue
        if not isinstance(node, h5lib.Group) or part not in node:
            raise CorruptCheckpointError(f"{what} '{relpath}' is listed but missing from {group.name}", path=path)
        link = node.get(part, getlink=True)
        if isinstance(link, (h5lib.SoftLink, h5lib.ExternalLink)):
            raise UnsupportedFormatError(f"'{node.name.rstrip('/')}/{part}' is a link; Keras files have none",
                                         path=path)
        node = node[part]
    return node


# --- the HDF5 layouts ---------------------------------------------------------------------------------------------


# A dataset's header as _header read it during the walk, or the error describing it raised (raised in turn when the
# dataset is loaded, so that problems come in the order they always did: the walk's, then each dataset's by name).
_Header = tuple[tuple[int, ...], str, np.dtype, int] | CkptcheckError


@dataclass
class _Layout:
    format: str
    entries: list[tuple[str, str]]  # (tensor name, dataset path)
    writer: str | None = None
    metadata: dict[str, str] | None = None
    architecture: Architecture | None = None
    variables: dict[str, str] = field(default_factory=dict)  # tensor name -> variable, where the layout says
    # Keras 3: the name attribute of each vars group, by the group holding it (found while the file was walked)
    vars_names: dict[str, str] | None = None
    headers: dict[str, _Header] | None = None  # Keras 3: each dataset's header, by path, read during the walk


def _layout_of(f: h5py.File, *, path: str, allow_empty: bool) -> _Layout:
    h5lib = _h5py()
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
        return _Layout(KERAS_WEIGHTS, entries, vars_names=vars_names, headers=headers)
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "nothing"
    raise UnsupportedFormatError(
        f"HDF5 file is not a Keras weights or model file (top level holds {shown})", path=path,
        hint="ckptcheck reads Keras 3 .weights.h5 (groups layers/.../vars) and legacy Keras .h5 files "
             "(model_weights, or a layer_names attribute)",
    )


def _keras3_entries(f: h5py.File, *, path: str) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, _Header]]:
    """Every dataset in the file, by path, in natural order (vars/10 after vars/9); the ``name`` attribute of every
    ``vars`` group, by the group holding it; and every dataset's header (_header).

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
                    headers[text] = _header(obj, text, path=path)
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
    h5lib = _h5py()
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
            found = _VLEN_READS.get(cset)
            if found is None:
                dtype = aid.dtype
                found = _VLEN_READS[cset] = (dtype, h5lib.h5t.py_create(dtype))
            value = np.empty((), dtype=found[0])
            aid.read(value, mtype=found[1])
        else:
            value = np.empty(aid.shape, dtype=aid.dtype)
            aid.read(value)
        out[prefix.rstrip(b"/").decode("utf-8", "surrogateescape")] = _text(value)


_VLEN_READS: dict[int, tuple[np.dtype, Any]] = {}  # character set -> (numpy dtype, memory type) of a vlen string


def _attr(obj: h5py.HLObject, name: str, *, path: str) -> Any:
    # Declared size (elements x type size); variable-length strings count as their 16-byte handles, their bytes
    # having to exist in the file.
    aid = obj.attrs.get_id(name)
    size = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
    if size > MAX_ATTRIBUTE_BYTES:
        raise CorruptCheckpointError(f"attribute {name} of {obj.name} is {size} bytes, more than the "
                                     f"{MAX_ATTRIBUTE_BYTES} ckptcheck reads", path=path)
    return obj.attrs[name]


def _names_attr(obj: h5py.HLObject, name: str, *, path: str) -> list[str]:
    """A list-of-names attribute, joined back when Keras split it into ``name0``, ``name1``, ... (64 KB limit)."""
    attrs = obj.attrs
    if name in attrs:
        parts = [_attr(obj, name, path=path)]
    else:
        parts = []
        while f"{name}{len(parts)}" in attrs:
            parts.append(_attr(obj, f"{name}{len(parts)}", path=path))
    out: list[str] = []
    for part in parts:
        values = np.asarray(part)
        if values.size == 0:  # Keras writes an empty float64 array for a layer without weights
            continue
        if values.dtype.kind not in "OSU":
            raise CorruptCheckpointError(f"attribute {name} of {obj.name} holds {values.dtype}, not names",
                                         path=path)
        if len(out) + values.size > MAX_NAMES:
            raise CorruptCheckpointError(f"attribute {name} of {obj.name} lists more than {MAX_NAMES:,} names",
                                         path=path, hint="no Keras model has that many layers or weights")
        out += [_text(v) for v in values.reshape(-1)]
    return out


def _json_attr(f: h5py.File, name: str, *, path: str) -> Any:
    raw = _attr(f, name, path=path)
    try:
        text = _text(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptCheckpointError(f"the {name} attribute is not valid JSON (not text)", path=path) from None
    return jsonlimits.loads(text, what=f"the {name} attribute", path=path)


def _legacy_layout(f: h5py.File, *, path: str, full_model: bool) -> _Layout:
    h5lib = _h5py()
    root = _child(f, "model_weights", path=path, what="group") if "model_weights" in f else f
    if not isinstance(root, h5lib.Group):
        raise CorruptCheckpointError("model_weights is not a group", path=path)
    layer_names = _names_attr(root, "layer_names", path=path)
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
        group = _child(root, layer, path=path, what="layer group")
        if not isinstance(group, h5lib.Group):
            raise CorruptCheckpointError(f"layer '{layer}' is not a group", path=path)
        for weight in _names_attr(group, "weight_names", path=path):
            name = f"{layer}/{weight}"
            entries.append((name, prefix + name))
            variables[name] = legacy_variable(weight)
    if "optimizer_weights" in f:
        opt = _child(f, "optimizer_weights", path=path, what="group")
        for weight in _names_attr(opt, "weight_names", path=path):
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
        config = _json_attr(f, "model_config", path=path)
        extra: dict[str, Any] = {}
        if "training_config" in f.attrs:
            training = _json_attr(f, "training_config", path=path)
            extra["training_config"] = training
            metadata.update(_compile_summary(training, "optimizer_config"))
        architecture = keras_config.architecture(config, keras_config.SOURCE_MODEL_CONFIG, path=path, extra=extra)
    return _Layout(KERAS_H5, entries, writer=f"Keras {version}" if version else None, metadata=metadata,
                   architecture=architecture, variables=variables)


_OUTPUT_SUFFIX = re.compile(r":\d+$")


def legacy_variable(weight: str) -> str:
    """A legacy .h5 weight name as the variable's name: Keras 2 wrote TensorFlow's tensor name
    (``dense_1/kernel:0``), Keras 3 the variable's path already."""
    return _OUTPUT_SUFFIX.sub("", weight)


def _functional_models(h5: h5py.File, keys: list[str]) -> set[str]:
    """The models (by group, "" for the root) above the given datasets whose layer list holds an input layer:
    Functional models, the only ones whose ``layers`` include their InputLayers."""
    h5lib = _h5py()
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


def _vars_names(h5: h5py.File, keys: Iterator[str] | list[str]) -> dict[str, str]:
    """The ``name`` attribute Keras 3 writes on each ``vars`` group (the layer's or optimizer's name), by the
    group holding it, for every group above the given datasets."""
    h5lib = _h5py()
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
                out[group] = _text(_attr(node, "name", path=h5.filename))
    return out


def _root_text(f: h5py.File, root: h5py.Group, name: str, *, path: str) -> str | None:
    for obj in (f, root):
        if name in obj.attrs:
            return _text(_attr(obj, name, path=path))
    return None


def _with_orphan_optimizer(info: CheckpointInfo, config: Any) -> CheckpointInfo:
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


def _compile_summary(training: Any, optimizer_key: str) -> dict[str, str]:
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


# --- the readers --------------------------------------------------------------------------------------------------


class _H5Values(CheckpointReader):
    """Listing and value reading shared by the readers: open HDF5 files (one, or a sharded file's shards) and
    named datasets in them."""

    _sources: list[tuple[h5py.File, str]]  # each open HDF5 file and the path named in its errors
    _entries: dict[str, _Entry]
    _info: CheckpointInfo

    def _start(self, location: str, path: str | None) -> None:
        """Set up an empty reader of ``location``, then ``_open`` it; whatever was opened is closed on failure."""
        self.location = location
        self.path = path or location
        self._entries = {}
        self._sources = []
        try:
            self._open(location)
        except BaseException:
            self.close()
            raise

    @abstractmethod
    def _open(self, location: str) -> None:
        """Open the file(s), fill ``_sources`` and ``_entries`` (through ``_load``) and set ``_info``."""

    def _load(self, layout: _Layout, label: str, source: int = 0) -> None:
        h5, where = self._sources[source]
        entries: dict[str, _Entry] = {}
        headers = layout.headers
        with _guard("cannot read the HDF5 structure", path=where):
            for name, h5path in layout.entries:
                if name in entries:
                    raise CorruptCheckpointError("the file lists this weight twice", path=where, tensor=name)
                if name in self._entries:
                    first = self._sources[self._entries[name].source][1]
                    raise CorruptCheckpointError(f"this weight is also in {os.path.basename(first)}", path=where,
                                                 tensor=name, hint="each weight belongs in one shard")
                if headers is not None:  # a Keras 3 layout: every dataset's header was read during the walk
                    header = headers[h5path]
                    if isinstance(header, CkptcheckError):
                        raise header
                    shape, dtype_name, read_dtype, nbytes = header
                    entries[name] = _Entry(listed_tensor(name, dtype_name, shape, nbytes, 0, label), h5path,
                                           read_dtype, source)
                    continue
                ds = _child(h5, h5path, path=where, what="dataset")
                if not isinstance(ds, _h5py().Dataset):
                    raise CorruptCheckpointError(f"'{h5path}' is listed as a weight but is not a dataset",
                                                 path=where, tensor=name)
                entries[name] = _entry(ds, name, h5path, label, path=where, source=source)
        self._entries.update(entries)

    def info(self) -> CheckpointInfo:
        return self._info

    def _name_variables(self, layout: _Layout | None, config: Any = None) -> None:
        """Give each entry its ``variable``: a legacy layout's weight names, or Keras 3's paths worked out from
        the layout, the ``vars`` groups' names and config.json (keras_names)."""
        if layout is not None and layout.format == KERAS_H5:
            variables = layout.variables
        else:
            vars_names: dict[str, str] = {}
            functional: set[str] = set()
            paths = [e.h5path for e in self._entries.values()]
            for h5, where in self._sources:
                with _guard("cannot read the HDF5 structure", path=where):
                    known = layout.vars_names if layout is not None and layout.vars_names is not None else None
                    for group, name in (known if known is not None else _vars_names(h5, paths)).items():
                        vars_names.setdefault(group, name)
                    functional |= _functional_models(h5, paths)
            datasets = [(e.h5path, e.info.shape) for e in self._entries.values()]
            by_path = keras_names.keras3_variables(datasets, vars_names, config, functional)
            variables = {name: by_path[e.h5path] for name, e in self._entries.items() if e.h5path in by_path}
        for name, entry in self._entries.items():  # built directly: two dataclasses.replace a tensor took ~15 us
            i = entry.info
            info = listed_tensor(i.name, i.dtype, i.shape, i.nbytes, i.slices, i.file, variables.get(name, name))
            self._entries[name] = _Entry(info, entry.h5path, entry.read_dtype, entry.source)

    def _get(self, name: str) -> tuple[_Entry, h5py.Dataset, str]:
        entry = self._entries.get(name)
        if entry is None:  # a variable's name (TensorInfo.variable) rather than a key
            entry = self._entries[self.key_of(name)]
        h5, where = self._sources[entry.source]
        with _guard("cannot open the dataset", path=where, tensor=name):
            return entry, h5[entry.h5path], where

    @staticmethod
    def _check_readable(entry: _Entry, where: str, name: str) -> None:
        """Compound, opaque, reference and vlen-number datasets hold no tensor values: refused in one line."""
        if entry.info.dtype.startswith(("unknown", "opaque")):
            raise UnsupportedFormatError(f"the dataset's HDF5 type, {entry.info.dtype}, holds no tensor values "
                                         "ckptcheck reads", path=where, tensor=name,
                                         hint="Keras writes numbers, bfloat16 and strings only")

    def read(self, name: str) -> np.ndarray:
        entry, ds, where = self._get(name)
        self._check_readable(entry, where, name)
        shape = entry.info.shape
        with _guard("cannot read the values", path=where, tensor=name,
                    hint="the file may be truncated or damaged"):
            if entry.read_dtype.kind == "O":
                return np.asarray(ds[()]).reshape(shape)
            self._check_stored(entry, ds, where, name)
            out = np.empty(shape, dtype=entry.read_dtype)
            if out.size:
                ds.read_direct(out)
            return out

    @staticmethod
    def _check_stored(entry: _Entry, ds: h5py.Dataset, where: str, name: str) -> None:
        """Refuse a dataset declaring far more bytes than the file stores (a shape bomb, or a dataset never
        written, whose fill value HDF5 would hand out for as long as asked: 2**40 elements took hours)."""
        declared = entry.info.nbytes
        with _guard("cannot read the dataset's storage", path=where, tensor=name):
            stored = ds.id.get_storage_size()
        if declared > _BOMB_FLOOR_BYTES and declared > _BOMB_EXPANSION * stored:
            raise CorruptCheckpointError(
                f"the dataset declares {declared} bytes but the file stores {stored}; refusing to read it",
                path=where, tensor=name, hint="its values were never written, or the file is crafted",
            )

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        entry, ds, where = self._get(name)
        self._check_readable(entry, where, name)
        shape = entry.info.shape
        if entry.read_dtype.kind == "O":  # strings come whole
            yield self.read(name).reshape(-1)
            return
        self._check_stored(entry, ds, where, name)
        itemsize = entry.read_dtype.itemsize
        count = math.prod(shape)
        if count == 0:
            return
        if not shape or count * itemsize <= chunk_bytes:
            yield self.read(name).reshape(-1)
            return
        # Block along the first axis whose single step fits in chunk_bytes (axis 0 unless one row is too big),
        # iterating over the axes before it: elements come out in storage (C) order.
        axis = len(shape) - 1
        for k in range(len(shape)):
            if math.prod(shape[k + 1 :]) * itemsize <= chunk_bytes:
                axis = k
                break
        step_elems = math.prod(shape[axis + 1 :])
        rows = max(1, min(shape[axis], chunk_bytes // max(1, step_elems * itemsize)))
        buf = np.empty((rows, *shape[axis + 1 :]), dtype=entry.read_dtype)
        for lead in np.ndindex(*shape[:axis]):
            for start in range(0, shape[axis], rows):
                n = min(rows, shape[axis] - start)
                with _guard("cannot read the values", path=where, tensor=name,
                            hint="the file may be truncated or damaged"):
                    ds.read_direct(buf, source_sel=(*lead, slice(start, start + n)), dest_sel=np.s_[0:n])
                yield buf[:n].reshape(-1)

    def close(self) -> None:
        for h5, _where in getattr(self, "_sources", []):
            with contextlib.suppress(Exception):  # closing a damaged file can fail; nothing is lost
                h5.close()
        self._sources = []


def _open_h5(source: str | io.IOBase, *, path: str, what: str) -> h5py.File:
    h5lib = _h5py()
    if isinstance(source, str):  # a URL: h5py reads through the file object (ranged reads)
        with _guard("cannot open", path=path):
            source = library_source(source, whole_below=loc.WHOLE_BYTES)
    try:
        return h5lib.File(source, "r")  # read-only: the user's file is never written
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise CorruptCheckpointError(
            f"{what} cannot be opened as HDF5 ({str(exc).strip() or type(exc).__name__})", path=path,
            hint="the file may be truncated or damaged",
        ) from None


class KerasHDF5Reader(_H5Values):
    """A ``.weights.h5`` (Keras 3) or legacy ``.h5`` file; which one is decided by what the file holds."""

    def __init__(self, location: str, *, path: str | None = None, named_as: str = KERAS_H5) -> None:
        self._named_as = named_as  # a file named .weights.h5 may be empty; a legacy .h5 may not
        self._start(location, path)

    def _open(self, location: str) -> None:
        h5 = _open_h5(location, path=location, what="the file")
        self._sources = [(h5, location)]
        with _guard("cannot read the HDF5 structure", path=location):
            layout = _layout_of(h5, path=location, allow_empty=self._named_as == KERAS_WEIGHTS)
        self.format = layout.format
        self._load(layout, os.path.basename(location))
        self._name_variables(layout)
        metadata = dict(layout.metadata or {})
        shard_map = _shard_map_naming(location)
        if shard_map is not None:  # one shard read on its own holds only part of the weights
            metadata["shard_of"] = os.path.basename(shard_map)
        self._info = CheckpointInfo(
            format=self.format,
            path=self.path,
            location=location,
            files=(location,),
            tensors=tuple(e.info for e in self._entries.values()),
            writer=layout.writer,
            metadata=metadata,
            architecture=layout.architecture,
        )


class _StoredMember(io.RawIOBase):
    """A read-only window onto an uncompressed zip member: seeks are free, where ZipExtFile (before Python 3.12)
    re-reads the member from its start on every backward seek, and h5py seeks back and forth."""

    def __init__(self, archive: str, start: int, size: int) -> None:
        super().__init__()
        self._f = open_regular(archive, whole_below=loc.WHOLE_BYTES)  # closed in close()
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


# Compression methods zipfile reads: stored, deflate, bzip2, LZMA.
READABLE_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def check_member_readable(info: zipfile.ZipInfo, *, path: str) -> None:
    """An encrypted member, or one compressed by a method zipfile cannot undo (deflate64 is 9), cannot be read by
    ckptcheck nor by Keras, which opens members with zipfile: one clear error (exit 2), not damage."""
    if info.flag_bits & 0x1:
        raise UnsupportedFormatError(f"archive member {info.filename} is encrypted", path=path,
                                     hint="Keras cannot load an encrypted .keras either")
    if info.compress_type not in READABLE_ZIP_METHODS:
        raise UnsupportedFormatError(
            f"archive member {info.filename} uses compression method {info.compress_type}, which Python's zipfile "
            "(and so Keras) cannot read", path=path, hint="recompress the archive with deflate, or store it")


class _Archive:
    """The zip of a ``.keras`` file: its members opened by name, JSON members read within size limits, nothing
    extracted."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.config: Any = None  # config.json, once info() has read it
        try:
            self.zip = zipfile.ZipFile(library_source(location, whole_below=loc.WHOLE_BYTES))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise CorruptCheckpointError(
                f"not a readable zip archive ({str(exc).strip() or type(exc).__name__})", path=location,
                hint="a .keras file is a zip archive; this one may be truncated or damaged",
            ) from None

    def weights_member(self) -> zipfile.ZipInfo:
        """model.weights.h5, or model.weights.npz when that is what the archive holds."""
        for name in (WEIGHTS_MEMBER, NPZ_WEIGHTS_MEMBER):
            with contextlib.suppress(KeyError):
                return self.zip.getinfo(name)
        raise CorruptCheckpointError(
            f"the archive has neither {WEIGHTS_MEMBER} nor {NPZ_WEIGHTS_MEMBER}", path=self.location,
            hint=f"a .keras archive holds {CONFIG_MEMBER}, {METADATA_MEMBER} and {WEIGHTS_MEMBER} (or, saved with "
                 f"weights_format='npz', {NPZ_WEIGHTS_MEMBER})",
        )

    def json_member(self, name: str, limit: int, *, required: bool) -> Any:
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            if not required:
                return None
            raise CorruptCheckpointError(f"the archive has no {name}", path=self.location,
                                         hint=f"a .keras archive holds {CONFIG_MEMBER} and {WEIGHTS_MEMBER}") from None
        check_member_readable(info, path=self.location)
        if info.file_size > limit:
            raise CorruptCheckpointError(f"{name} claims {info.file_size} bytes, more than the {limit} ckptcheck "
                                         "reads", path=self.location, hint="the archive may be crafted or damaged")
        with _guard(f"cannot read {name} from the archive", path=self.location), self.zip.open(info) as f:
            data = f.read(limit + 1)  # the size a member claims is not to be trusted
        if len(data) > limit:
            raise CorruptCheckpointError(f"{name} is larger than the {limit} bytes ckptcheck reads",
                                         path=self.location)
        return jsonlimits.loads(data, what=f"{name} in the archive", path=self.location)

    def open_member(self, info: zipfile.ZipInfo) -> io.IOBase:
        """A seekable reader of the member: a free-seeking window when it is stored, else zipfile's stream."""
        check_member_readable(info, path=self.location)
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:  # stored, not encrypted
            archive_size = loc.getsize(self.location)
            with open_regular(self.location, whole_below=loc.WHOLE_BYTES) as f:
                f.seek(info.header_offset)
                header = f.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
                raise CorruptCheckpointError(f"bad local header for {info.filename} in the archive",
                                             path=self.location)
            _magic, name_len, extra_len = _LOCAL_HEADER.unpack(header)
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if info.compress_size != info.file_size or start + info.file_size > archive_size:
                raise CorruptCheckpointError(
                    f"{info.filename} claims {info.file_size} bytes, past the end of the archive",
                    path=self.location, hint="the archive is truncated or damaged",
                )
            return _StoredMember(self.location, start, info.file_size)
        return self._spooled(info)

    def _spooled(self, info: zipfile.ZipInfo) -> io.IOBase:
        """A compressed member, decompressed once into an anonymous temporary file (deleted when closed).

        h5py seeks back and forth; on zipfile's stream every backward seek decompresses the member again from its
        start (a 500 MB deflated weights member took 66 s to list). Its CRC is checked as it is copied. A member
        declaring more than deflate can expand to, or more than the temporary directory can hold, is refused.
        """
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + (1 << 20):
            raise CorruptCheckpointError(
                f"{info.filename} declares {info.file_size} bytes from {info.compress_size} compressed, more than "
                "any deflate stream expands to", path=self.location, hint="the archive is crafted or damaged")
        spool = tempfile.TemporaryFile(prefix="ckptcheck-")  # noqa: SIM115 - returned open, closed by the reader
        try:
            free = shutil.disk_usage(tempfile.gettempdir()).free
            if info.file_size > free:
                raise CorruptCheckpointError(
                    f"{info.filename} is compressed; decompressing its {info.file_size} bytes needs more than the "
                    f"{free} bytes free in the temporary directory", path=self.location,
                    hint="set TMPDIR to a directory with room, or store the archive's weights uncompressed")
            with _guard(f"cannot read {info.filename} from the archive", path=self.location,
                        hint="the archive may be truncated or damaged"), self.zip.open(info) as member:
                copied = 0
                while chunk := member.read(1 << 20):
                    copied += len(chunk)
                    if copied > info.file_size:
                        raise CorruptCheckpointError(f"{info.filename} expands past the {info.file_size} bytes it "
                                                     "declares", path=self.location)
                    spool.write(chunk)
            spool.seek(0)
            return spool
        except BaseException:
            spool.close()
            raise

    def info(self, *, path: str, tensors: tuple[TensorInfo, ...]) -> CheckpointInfo:
        """The archive's CheckpointInfo: config.json's architecture and compile settings, metadata.json's
        version."""
        config = self.config = self.json_member(CONFIG_MEMBER, MAX_CONFIG_BYTES, required=True)
        meta = self.json_member(METADATA_MEMBER, MAX_METADATA_BYTES, required=False)
        metadata: dict[str, str] = {}
        version = None
        if isinstance(config, dict):
            metadata.update(_compile_summary(config.get("compile_config"), "optimizer"))
        if isinstance(meta, dict):
            for key, value in meta.items():
                if key == "keras_version":
                    version = str(value)
                elif isinstance(value, (str, int, float, bool)):
                    metadata[str(key)] = str(value)
        return CheckpointInfo(
            format=KERAS,
            path=path,
            location=self.location,
            files=(self.location,),
            tensors=tensors,
            writer=f"Keras {version}" if version else None,
            metadata=metadata,
            architecture=keras_config.architecture(config, keras_config.SOURCE_CONFIG_JSON, path=self.location),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.zip.close()


def _open_archive(location: str, path: str) -> CheckpointReader:
    """The reader for the weights member the archive holds (h5, or npz)."""
    archive = _Archive(location)
    try:
        member = archive.weights_member()
        if member.filename == NPZ_WEIGHTS_MEMBER:
            return KerasNpzArchiveReader(archive, member, path=path)
        return KerasArchiveReader(location, path=path, archive=archive)
    except BaseException:
        archive.close()
        raise


class KerasArchiveReader(_H5Values):
    """A Keras 3 ``.keras`` zip: config.json and metadata.json read in memory within size limits, the weights read
    from model.weights.h5 inside the archive; nothing is extracted."""

    format = KERAS

    def __init__(self, location: str, *, path: str | None = None, archive: _Archive | None = None) -> None:
        self._archive = archive
        self._member: io.IOBase | None = None
        self._start(location, path)

    def _open(self, location: str) -> None:
        if self._archive is None:
            self._archive = _Archive(location)
        archive = self._archive
        info = archive.weights_member()
        if info.filename != WEIGHTS_MEMBER:
            raise UnsupportedFormatError(f"the archive holds {info.filename}; open it with open_checkpoint",
                                         path=location)
        summary = archive.info(path=self.path, tensors=())  # config.json is checked before the weights
        self._member = archive.open_member(info)
        h5 = _open_h5(self._member, path=location, what=f"{WEIGHTS_MEMBER} in the archive")
        self._sources = [(h5, location)]
        with _guard(f"cannot read the HDF5 structure of {WEIGHTS_MEMBER}", path=location):
            layout = _layout_of(h5, path=location, allow_empty=True)
        if layout.format != KERAS_WEIGHTS:
            raise UnsupportedFormatError(f"{WEIGHTS_MEMBER} in the archive has the legacy .h5 layout", path=location)
        self._load(layout, WEIGHTS_MEMBER)
        self._name_variables(layout, archive.config)
        self._info = _with_orphan_optimizer(
            dataclasses.replace(summary, tensors=tuple(e.info for e in self._entries.values())), archive.config)
        self._weights_info = info
        self._crc_checked = not isinstance(self._member, _StoredMember)  # a spooled member was checked on the way

    def _check_crc(self) -> None:
        """Before the first value is read: the weights member's CRC, which reading it in place would not check
        (a flipped byte would pass manifest and --stats silently). One streamed pass, once."""
        if self._crc_checked:
            return
        member = self._member
        assert isinstance(member, _StoredMember)
        crc = 0
        member.seek(0)
        buf = bytearray(1 << 20)
        while n := member.readinto(buf):
            crc = zlib.crc32(memoryview(buf)[:n], crc)
        if crc != self._weights_info.CRC:
            raise CorruptCheckpointError(
                f"archive member {WEIGHTS_MEMBER} fails its CRC (stored {self._weights_info.CRC:#010x}, calculated "
                f"{crc:#010x}): its values are damaged", path=self.location, hint="run ckptcheck verify")
        self._crc_checked = True

    def crc_checked_elsewhere(self) -> None:
        """verify reads every member of the archive itself and reports a failed CRC once: do not check again per
        tensor."""
        self._crc_checked = True

    def read(self, name: str) -> np.ndarray:
        self._check_crc()
        return super().read(name)

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        self._check_crc()
        yield from super().iter_chunks(name, chunk_bytes)

    def close(self) -> None:
        super().close()
        if self._member is not None:
            with contextlib.suppress(Exception):
                self._member.close()
        if self._archive is not None:
            self._archive.close()
        self._member = None
        self._archive = None


class KerasNpzArchiveReader(CheckpointReader):
    """A Keras 3 ``.keras`` zip whose weights are ``model.weights.npz`` (``weights_format="npz"``): the npz is a
    zip inside the zip, each member read where it lies; its pickles are walked as data, never run
    (ckptcheck.formats.keras.npz)."""

    format = KERAS

    def __init__(self, archive: _Archive, member: zipfile.ZipInfo, *, path: str | None = None) -> None:
        self.location = archive.location
        self.path = path or archive.location
        self._archive: _Archive | None = archive
        self._outer: io.IOBase | None = None
        self._npz: zipfile.ZipFile | None = None
        self._arrays: dict[str, npz.NpzArray] = {}
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._direct: dict[str, int] = {}  # member -> offset of its data in the .keras file, when nothing is compressed
        try:
            self._open(member)
        except BaseException:
            self.close()
            raise

    def _open(self, member: zipfile.ZipInfo) -> None:
        assert self._archive is not None
        where = self.location
        summary = self._archive.info(path=self.path, tensors=())
        self._outer = self._archive.open_member(member)
        with _guard(f"{NPZ_WEIGHTS_MEMBER} in the archive is not a readable zip", path=where,
                    hint="the archive may be truncated or damaged"):
            self._npz = zipfile.ZipFile(self._outer)
            infos = self._npz.infolist()
        for info in infos:
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise UnsupportedFormatError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} is encrypted", path=where)
            self._members[info.filename] = info
            start = self._direct_start(info)
            with _guard(f"cannot read {NPZ_WEIGHTS_MEMBER} member {info.filename}", path=where,
                        hint="the archive may be truncated or damaged"), self._member_file(info, start) as f:
                found = npz.scan_member(f, info.filename, info.file_size, path=where)
            for arr in found:
                if arr.name in self._arrays:
                    raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} lists this weight twice", path=where,
                                                 tensor=arr.name)
                self._arrays[arr.name] = arr
            if start is not None:
                self._direct[info.filename] = start
        ordered = sorted(self._arrays.values(), key=lambda a: _natural_key(a.name))
        self._arrays = {a.name: a for a in ordered}
        tensors = tuple(TensorInfo(a.name, a.dtype, a.shape, a.nbytes, file=NPZ_WEIGHTS_MEMBER) for a in ordered)
        self._info = dataclasses.replace(summary, tensors=tensors)

    def _member_file(self, info: zipfile.ZipInfo, start: int | None) -> IO[bytes]:
        """The npz member as a buffered file: a window onto the .keras file when nothing is compressed (no CRC is
        checked then: `verify` checks every member's), else zipfile's stream."""
        if start is not None:
            return io.BufferedReader(_StoredMember(self.location, start, info.file_size))
        assert self._npz is not None
        return self._npz.open(info)

    def _direct_start(self, info: zipfile.ZipInfo) -> int | None:
        """Where a stored npz member's bytes start in the .keras file, when the npz itself is stored there."""
        outer = self._outer
        if not isinstance(outer, _StoredMember) or info.compress_type != zipfile.ZIP_STORED:
            return None
        if info.compress_size != info.file_size:
            raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} is stored but its sizes "
                                         "differ", path=self.location, hint="the archive may be damaged")
        outer.seek(info.header_offset)
        header = outer.read(_LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise CorruptCheckpointError(f"bad local header for {NPZ_WEIGHTS_MEMBER} member {info.filename}",
                                         path=self.location, hint="the archive may be damaged")
        _magic, name_len, extra_len = _LOCAL_HEADER.unpack(header)
        start = info.header_offset + _LOCAL_HEADER.size + int(name_len) + int(extra_len)
        if start + info.file_size > outer._size:
            raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} runs past the end of "
                                         f"{NPZ_WEIGHTS_MEMBER}", path=self.location, hint="the archive is truncated")
        return int(outer._start) + start

    def info(self) -> CheckpointInfo:
        return self._info

    def _entry(self, name: str) -> npz.NpzArray:
        arr = self._arrays.get(name)
        if arr is None:
            raise self.not_found(name)
        return arr

    @contextlib.contextmanager
    def _values(self, arr: npz.NpzArray) -> Iterator[Any]:
        """A file positioned at the array's first value byte."""
        start = self._direct.get(arr.member)
        with _guard("cannot read the values", path=self.location, tensor=arr.name,
                    hint="the archive may be truncated or damaged"):
            if start is not None:
                with open_regular(self.location, whole_below=loc.WHOLE_BYTES) as f:
                    f.seek(start + arr.offset)
                    yield f
                return
            assert self._npz is not None
            with self._npz.open(self._members[arr.member]) as f:
                f.seek(arr.offset)
                yield f

    def _fill(self, f: Any, view: memoryview, arr: npz.NpzArray) -> None:
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise CorruptCheckpointError(
                    f"short read: {NPZ_WEIGHTS_MEMBER} member {arr.member} ends {len(view) - got} bytes early",
                    path=self.location, tensor=arr.name, hint="the archive is truncated or damaged")
            got += n

    def _native(self, values: np.ndarray) -> np.ndarray:
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))

    def read(self, name: str) -> np.ndarray:
        arr = self._entry(name)
        info = self._members[arr.member]
        stored = max(info.compress_size, 1)
        if arr.nbytes > _BOMB_FLOOR_BYTES and arr.nbytes > _BOMB_EXPANSION * stored:
            raise CorruptCheckpointError(
                f"{NPZ_WEIGHTS_MEMBER} member {arr.member} declares {arr.nbytes} bytes but stores {stored}; "
                "refusing to allocate", path=self.location, tensor=name)
        out = np.empty(arr.nbytes, dtype=np.uint8)
        if arr.nbytes:
            with self._values(arr) as f:
                self._fill(f, out.data, arr)
        return self._native(out.view(arr.read_dtype).reshape(arr.shape))

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        arr = self._entry(name)
        if arr.nbytes == 0:
            return
        itemsize = arr.read_dtype.itemsize
        per_chunk = max(itemsize, chunk_bytes // itemsize * itemsize)
        buf = aligned_empty(min(per_chunk, arr.nbytes))
        view = buf.data
        with self._values(arr) as f:
            done = 0
            while done < arr.nbytes:
                n = min(len(view), arr.nbytes - done)
                self._fill(f, view[:n], arr)
                done += n
                yield self._native(buf[:n].view(arr.read_dtype))

    def npz_members(self) -> tuple[str, ...]:
        return tuple(self._members)

    def close(self) -> None:
        for thing in (self._npz, self._outer):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._npz = None
        self._outer = None
        if self._archive is not None:
            self._archive.close()
        self._archive = None


# --- sharded weights ----------------------------------------------------------------------------------------------


def _shard_map_naming(location: str) -> str | None:
    """The ``<base>.weights.json`` beside a ``<base>_NNNNN.weights.h5`` shard, if there is one."""
    base = shard_base(loc.basename(location))
    if base is None:
        return None
    candidate = loc.join(loc.dirname(location), base + SHARD_MAP_SUFFIX)
    return candidate if loc.isfile(candidate) else None


def read_shard_map(location: str) -> tuple[dict[str, Any], list[str]]:
    """A sharded weights file's JSON map and the shard file names it lists, in order of first mention.

    Shard names must be plain file names: the shards are read from the map's own directory, never from a path
    the file names.
    """
    try:
        with open_regular(location) as f:
            data = read_capped(f, MAX_SHARD_MAP_BYTES)
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot read: {exc.strerror}", path=location) from None
    if data is None:
        raise CorruptCheckpointError(f"the weight map is larger than the {MAX_SHARD_MAP_BYTES} bytes ckptcheck "
                                     "reads", path=location)
    config = jsonlimits.loads(data, what="the weight map", path=location)
    weight_map = config.get("weight_map") if isinstance(config, dict) else None
    if not isinstance(weight_map, dict):
        raise UnsupportedFormatError(
            "JSON without a weight_map: not Keras sharded weights", path=location,
            hint='Keras writes {"metadata": ..., "weight_map": {...}} with save_weights(..., max_shard_size=...)',
        )
    names: dict[str, None] = {}
    for group, files in weight_map.items():
        listed = [files] if isinstance(files, str) else files
        if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
            raise CorruptCheckpointError(f"the weight map's entry for {group!r} is not a list of file names",
                                         path=location)
        for name in listed:
            if not name or name in (".", "..") or "/" in name or "\\" in name or os.path.basename(name) != name:
                raise UnsupportedFormatError(
                    f"the weight map names {name!r}, not a file beside it", path=location,
                    hint="Keras writes shard names without directories; ckptcheck reads shards from the map's "
                         "own directory only",
                )
            names.setdefault(name, None)
    return config, list(names)


class KerasShardedWeightsReader(_H5Values):
    """Keras 3 sharded weights: the ``.weights.json`` map and its shards, read as one set of weights."""

    format = KERAS_WEIGHTS

    def __init__(self, location: str, *, path: str | None = None) -> None:
        self._start(location, path)

    def _open(self, location: str) -> None:
        config, shards = read_shard_map(location)
        directory = loc.dirname(location)
        paths = [loc.join(directory, name) for name in shards]
        missing = [loc.basename(p) for p in paths if not loc.isfile(p)]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise CorruptCheckpointError(
                f"{len(missing)} of the {len(shards)} shard files the weight map names are missing: {shown}",
                path=location, hint="every shard must be beside its .weights.json",
            )
        for source, shard_path in enumerate(paths):
            h5 = _open_h5(shard_path, path=shard_path, what="the shard")
            self._sources.append((h5, shard_path))
            with _guard("cannot read the HDF5 structure", path=shard_path):
                layout = _layout_of(h5, path=shard_path, allow_empty=True)
            if layout.format != KERAS_WEIGHTS:
                raise UnsupportedFormatError("the shard has the legacy .h5 layout, not a Keras 3 weights layout",
                                             path=shard_path)
            self._load(layout, os.path.basename(shard_path), source)
        self._name_variables(None)
        ordered = natural_sorted(self._entries.values(), lambda e: e.info.name)
        metadata: dict[str, str] = {}
        declared = config.get("metadata", {}).get("total_size") if isinstance(config.get("metadata"), dict) else None
        if isinstance(declared, (int, float)) and not isinstance(declared, bool):
            metadata["declared_total_size"] = str(int(declared))
        self._info = CheckpointInfo(
            format=KERAS_WEIGHTS,
            path=self.path,
            location=location,
            files=(location, *paths),
            tensors=tuple(e.info for e in ordered),
            shards=len(paths),
            metadata=metadata,
        )
