"""Readers of Keras HDF5 weights: a ``.weights.h5`` or legacy ``.h5`` file, and sharded weights.

Sharded weights (``save_weights("x.weights.json", max_shard_size=...)``): a JSON map
``{"metadata": {"total_size": ...}, "weight_map": {"/layers/dense/vars": ["x_00000.weights.h5"], ...}}`` and the
shard files beside it, each laid out like a ``.weights.h5``; a group's datasets may span shards, each dataset is in
one. The weights are every listed shard's datasets together (keras/src/saving/saving_lib.py, ShardedH5IOStore).
Values are read with h5py; Keras and TensorFlow are never imported.
"""

from __future__ import annotations

import contextlib
import math
import os
from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import open_regular, read_capped
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader
from ckptcheck.formats.keras import names as keras_names
from ckptcheck.formats.keras.h5 import (
    BOMB_EXPANSION,
    BOMB_FLOOR_BYTES,
    Entry,
    child_node,
    dataset_entry,
    import_h5py,
    open_h5,
    read_guard,
)
from ckptcheck.formats.keras.layout import Layout, functional_models, layout_of, read_vars_names
from ckptcheck.formats.resolve import SHARD_MAP_SUFFIX, shard_base
from ckptcheck.order import natural_sorted
from ckptcheck.records import KERAS_H5, KERAS_WEIGHTS, CheckpointInfo, listed_tensor

if TYPE_CHECKING:
    import h5py


MAX_SHARD_MAP_BYTES = 64 << 20


# --- the readers --------------------------------------------------------------------------------------------------


class H5Values(CheckpointReader):
    """Listing and value reading shared by the readers: open HDF5 files (one, or a sharded file's shards) and
    named datasets in them."""

    _sources: list[tuple[h5py.File, str]]  # each open HDF5 file and the path named in its errors
    _entries: dict[str, Entry]
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

    def _load(self, layout: Layout, label: str, source: int = 0) -> None:
        h5, where = self._sources[source]
        entries: dict[str, Entry] = {}
        headers = layout.headers
        with read_guard("cannot read the HDF5 structure", path=where):
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
                    entries[name] = Entry(listed_tensor(name, dtype_name, shape, nbytes, 0, label), h5path,
                                           read_dtype, source)
                    continue
                ds = child_node(h5, h5path, path=where, what="dataset")
                if not isinstance(ds, import_h5py().Dataset):
                    raise CorruptCheckpointError(f"'{h5path}' is listed as a weight but is not a dataset",
                                                 path=where, tensor=name)
                entries[name] = dataset_entry(ds, name, h5path, label, path=where, source=source)
        self._entries.update(entries)

    def info(self) -> CheckpointInfo:
        return self._info

    def _name_variables(self, layout: Layout | None, config: Any = None) -> None:
        """Give each entry its ``variable``: a legacy layout's weight names, or Keras 3's paths worked out from
        the layout, the ``vars`` groups' names and config.json (keras_names)."""
        if layout is not None and layout.format == KERAS_H5:
            variables = layout.variables
        else:
            vars_names: dict[str, str] = {}
            functional: set[str] = set()
            paths = [e.h5path for e in self._entries.values()]
            for h5, where in self._sources:
                with read_guard("cannot read the HDF5 structure", path=where):
                    known = layout.vars_names if layout is not None and layout.vars_names is not None else None
                    for group, name in (known if known is not None else read_vars_names(h5, paths)).items():
                        vars_names.setdefault(group, name)
                    functional |= functional_models(h5, paths)
            datasets = [(e.h5path, e.info.shape) for e in self._entries.values()]
            by_path = keras_names.keras3_variables(datasets, vars_names, config, functional)
            variables = {name: by_path[e.h5path] for name, e in self._entries.items() if e.h5path in by_path}
        for name, entry in self._entries.items():  # built directly: two dataclasses.replace a tensor took ~15 us
            i = entry.info
            info = listed_tensor(i.name, i.dtype, i.shape, i.nbytes, i.slices, i.file, variables.get(name, name))
            self._entries[name] = Entry(info, entry.h5path, entry.read_dtype, entry.source)

    def _get(self, name: str) -> tuple[Entry, h5py.Dataset, str]:
        entry = self._entries.get(name)
        if entry is None:  # a variable's name (TensorInfo.variable) rather than a key
            entry = self._entries[self.key_of(name)]
        h5, where = self._sources[entry.source]
        with read_guard("cannot open the dataset", path=where, tensor=name):
            return entry, h5[entry.h5path], where

    @staticmethod
    def _check_readable(entry: Entry, where: str, name: str) -> None:
        """Compound, opaque, reference and vlen-number datasets hold no tensor values: refused in one line."""
        if entry.info.dtype.startswith(("unknown", "opaque")):
            raise UnsupportedFormatError(f"the dataset's HDF5 type, {entry.info.dtype}, holds no tensor values "
                                         "ckptcheck reads", path=where, tensor=name,
                                         hint="Keras writes numbers, bfloat16 and strings only")

    def read(self, name: str) -> np.ndarray:
        entry, ds, where = self._get(name)
        self._check_readable(entry, where, name)
        shape = entry.info.shape
        with read_guard("cannot read the values", path=where, tensor=name,
                    hint="the file may be truncated or damaged"):
            if entry.read_dtype.kind == "O":
                return np.asarray(ds[()]).reshape(shape)
            self._check_stored(entry, ds, where, name)
            out = np.empty(shape, dtype=entry.read_dtype)
            if out.size:
                ds.read_direct(out)
            return out

    @staticmethod
    def _check_stored(entry: Entry, ds: h5py.Dataset, where: str, name: str) -> None:
        """Refuse a dataset declaring far more bytes than the file stores (a shape bomb, or a dataset never
        written, whose fill value HDF5 would hand out for as long as asked: 2**40 elements took hours)."""
        declared = entry.info.nbytes
        with read_guard("cannot read the dataset's storage", path=where, tensor=name):
            stored = ds.id.get_storage_size()
        if declared > BOMB_FLOOR_BYTES and declared > BOMB_EXPANSION * stored:
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
                with read_guard("cannot read the values", path=where, tensor=name,
                            hint="the file may be truncated or damaged"):
                    ds.read_direct(buf, source_sel=(*lead, slice(start, start + n)), dest_sel=np.s_[0:n])
                yield buf[:n].reshape(-1)

    def close(self) -> None:
        for h5, _where in getattr(self, "_sources", []):
            with contextlib.suppress(Exception):  # closing a damaged file can fail; nothing is lost
                h5.close()
        self._sources = []


class KerasHDF5Reader(H5Values):
    """A ``.weights.h5`` (Keras 3) or legacy ``.h5`` file; which one is decided by what the file holds."""

    def __init__(self, location: str, *, path: str | None = None, named_as: str = KERAS_H5) -> None:
        self._named_as = named_as  # a file named .weights.h5 may be empty; a legacy .h5 may not
        self._start(location, path)

    def _open(self, location: str) -> None:
        h5 = open_h5(location, path=location, what="the file")
        self._sources = [(h5, location)]
        with read_guard("cannot read the HDF5 structure", path=location):
            layout = layout_of(h5, path=location, allow_empty=self._named_as == KERAS_WEIGHTS)
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


class KerasShardedWeightsReader(H5Values):
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
            h5 = open_h5(shard_path, path=shard_path, what="the shard")
            self._sources.append((h5, shard_path))
            with read_guard("cannot read the HDF5 structure", path=shard_path):
                layout = layout_of(h5, path=shard_path, allow_empty=True)
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

