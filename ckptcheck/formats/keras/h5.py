"""One HDF5 dataset as Keras stores it: its dtype, header and bounded reads, with h5py imported on first use.

Everything h5py raises for damaged input is mapped to CorruptCheckpointError here (``read_guard``).
"""

from __future__ import annotations

import contextlib
import io
import lzma
import math
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import library_source
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.order import natural_key
from ckptcheck.records import TensorInfo

if TYPE_CHECKING:
    import h5py


MAX_ATTRIBUTE_BYTES = 64 << 20

MAX_NAMES = 1_000_000  # layer_names / weight_names entries: each becomes a Python string

# A dataset declaring far more bytes than the file stores is refused by read() (a shape bomb); iter_chunks
# stays bounded anyway.
BOMB_FLOOR_BYTES = 1 << 30

BOMB_EXPANSION = 1000


# Everything h5py, zipfile and zlib raise for damaged input; mapped to CorruptCheckpointError at the boundary.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
    NotImplementedError, struct.error, UnicodeDecodeError, RecursionError,
)


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        from ckptcheck.errors import MissingDependencyError

        raise MissingDependencyError("reading Keras files needs h5py", hint="pip install h5py") from None
    return h5py


@contextlib.contextmanager
def read_guard(what: str, *, path: str, tensor: str | None = None, hint: str | None = None) -> Iterator[None]:
    """Turn h5py/zipfile/json failures into CorruptCheckpointError naming the file (and tensor)."""
    try:
        yield
    except CkptcheckError:
        raise
    except _READ_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise CorruptCheckpointError(f"{what}: {detail}", path=path, tensor=tensor, hint=hint) from None


def member_order_key(name: str) -> list[str | int]:
    # vars/10 after vars/9, dense_10 after dense_2: the order every command uses (ckptcheck.order).
    return natural_key(name)


def attr_text(value: Any) -> str:
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
class Entry:
    info: TensorInfo
    h5path: str  # the dataset's path inside the HDF5 file
    read_dtype: np.dtype  # what values are read as (bfloat16 for Keras's opaque 2-byte datasets)
    source: int = 0  # which of the reader's HDF5 files holds it (a sharded weights file has several)


def _dtype_of(ds: h5py.Dataset) -> tuple[str, np.dtype]:
    """The TensorFlow dtype name of a dataset and the numpy dtype to read it as."""
    stored = ds.dtype
    if stored.kind == "V" and stored.fields is None and stored.subdtype is None:  # HDF5 opaque
        mark = ds.attrs.get("dtype")  # Keras 3 marks opaque bfloat16 datasets with attribute dtype="bfloat16"
        name = attr_text(mark) if mark is not None else None
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
    h5lib = import_h5py()
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


def dataset_header(dsid: Any, name: str, *, path: str) -> tuple[tuple[int, ...], str, np.dtype, int]:
    """(shape, dtype name, numpy dtype to read as, bytes) of an open dataset (h5py's DatasetID), from its header
    alone: external and virtual storage refused (ckptcheck reads no other file), a dataset without a dataspace
    refused. Low-level calls, no h5py Dataset object: a Keras file of 100,000 datasets is listed through this."""
    h5lib = import_h5py()
    try:  # (not read_guard: a context manager per dataset cost ~4 us of ~40)
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


def dataset_entry(ds: h5py.Dataset, name: str, h5path: str, label: str, *, path: str, source: int = 0) -> Entry:
    shape, dtype_name, read_dtype, nbytes = dataset_header(ds.id, name, path=path)
    return Entry(TensorInfo(name=name, dtype=dtype_name, shape=shape, nbytes=nbytes, file=label), h5path,
                  read_dtype, source)


def child_node(group: h5py.Group, relpath: str, *, path: str, what: str) -> Any:
    """``group[relpath]``, refusing soft and external links on the way (Keras writes neither, and an external
    link would read another file named by the checkpoint)."""
    h5lib = import_h5py()
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


VLEN_READS: dict[int, tuple[np.dtype, Any]] = {}  # character set -> (numpy dtype, memory type) of a vlen string


def read_attr(obj: h5py.HLObject, name: str, *, path: str) -> Any:
    # Declared size (elements x type size); variable-length strings count as their 16-byte handles, their bytes
    # having to exist in the file.
    aid = obj.attrs.get_id(name)
    size = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
    if size > MAX_ATTRIBUTE_BYTES:
        raise CorruptCheckpointError(f"attribute {name} of {obj.name} is {size} bytes, more than the "
                                     f"{MAX_ATTRIBUTE_BYTES} ckptcheck reads", path=path)
    return obj.attrs[name]


def read_names_attr(obj: h5py.HLObject, name: str, *, path: str) -> list[str]:
    """A list-of-names attribute, joined back when Keras split it into ``name0``, ``name1``, ... (64 KB limit)."""
    attrs = obj.attrs
    if name in attrs:
        parts = [read_attr(obj, name, path=path)]
    else:
        parts = []
        while f"{name}{len(parts)}" in attrs:
            parts.append(read_attr(obj, f"{name}{len(parts)}", path=path))
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
        out += [attr_text(v) for v in values.reshape(-1)]
    return out


def read_json_attr(f: h5py.File, name: str, *, path: str) -> Any:
    raw = read_attr(f, name, path=path)
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw[()]
    if not isinstance(raw, (bytes, str)):  # (np.bytes_ is bytes: parsed as it is, never decoded into a copy)
        raise CorruptCheckpointError(f"the {name} attribute is not valid JSON (not text)", path=path)
    return jsonlimits.loads(raw, what=f"the {name} attribute", path=path)


def open_h5(source: str | io.IOBase, *, path: str, what: str) -> h5py.File:
    h5lib = import_h5py()
    if isinstance(source, str):  # a URL: h5py reads through the file object (ranged reads)
        with read_guard("cannot open", path=path):
            source = library_source(source, whole_below=loc.WHOLE_BYTES)
    try:
        return h5lib.File(source, "r")  # read-only: the user's file is never written
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise CorruptCheckpointError(
            f"{what} cannot be opened as HDF5 ({str(exc).strip() or type(exc).__name__})", path=path,
            hint="the file may be truncated or damaged",
        ) from None

