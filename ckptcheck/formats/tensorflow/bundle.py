"""Native reader for TensorFlow's tensor-bundle checkpoints (TF1 Saver, tf.train.Checkpoint, SavedModel).

A bundle is a prefix P with ``P.index`` (a sorted table of BundleEntryProto, see sstable.py) and data shards
``P.data-0000i-of-0000N``. Entries are decoded here from the protobuf wire format; values are read with bounds
checked against the shard's real size before anything is allocated, and checked against the entry's crc32c.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import io
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property, lru_cache
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple, cast

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import file_size, open_regular
from ckptcheck.formats.interface import (
    DEFAULT_CHUNK_BYTES,
    CheckpointReader,
    aligned_empty,
    check_rank,
    paused_gc,
    read_buffer,
)
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.formats.tensorflow.checksum import crc32c
from ckptcheck.formats.tensorflow.dtypes import DType
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
from ckptcheck.formats.tensorflow.protobuf import (
    DecodeError,
    as_bytes,
    as_int,
    iter_fields,
    read_varint,
    to_int64,
)
from ckptcheck.formats.tensorflow.slices import format_extents, stream_c_order, tiling_problem
from ckptcheck.formats.tensorflow.sstable import SSTable, unmask_crc
from ckptcheck.records import TF1, TF2, CheckpointInfo, ObjectRef, TensorInfo, listed_tensor

if TYPE_CHECKING:  # numpy is imported where values are read, not for listing
    import mmap

    import numpy as np

    from ckptcheck.formats.prefetch import ReadAhead

_HEADER_KEY = b""
_SLICE_KEY_START = 0x00  # slice keys are OrderedCode-encoded and begin with WriteNumIncreasing(0) = b"\x00"
_NAMES_START = b"\x01"  # every key from here on is a tensor's name
_LITTLE, _BIG = 0, 1

Extent = tuple[int, int]  # (start, length); length -1 means the whole dimension


def shard_filename(prefix: str, shard: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# The checkpoint format version TensorFlow's readers declare (kTensorBundleVersion, TF_CHECKPOINT_VERSION): a file
# whose VersionDef asks for newer readers, or names this one as bad, is refused as TensorFlow refuses it.
READER_VERSION = 1


class Versions(NamedTuple):  # a NamedTuple: defined at every start, where a frozen dataclass takes ~1 ms
    """A VersionDef (tensorflow/core/framework/versions.proto)."""

    producer: int = 0
    min_consumer: int = 0
    bad_consumers: tuple[int, ...] = ()


def decode_versions(buf: bytes) -> Versions:
    producer = min_consumer = 0
    bad: list[int] = []
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            producer = to_int64(as_int(value, "producer"))
        elif number == 2:
            min_consumer = to_int64(as_int(value, "min_consumer"))
        elif number == 3:
            bad.append(to_int64(as_int(value, "bad_consumers")))
    return Versions(producer, min_consumer, tuple(bad))


def check_versions(versions: Versions, *, path: str, what: str) -> None:
    """Refuse a file written for newer readers (UnsupportedFormatError, exit 2: intact, but not decodable here)."""
    if versions.min_consumer > READER_VERSION or READER_VERSION in versions.bad_consumers:
        raise UnsupportedFormatError(
            f"{what} format version {versions.producer} needs a reader of version {versions.min_consumer} or "
            f"newer{' and names version 1 as bad' if READER_VERSION in versions.bad_consumers else ''}; "
            f"ckptcheck reads version {READER_VERSION}, as TensorFlow 2.x does", path=path,
            hint="a newer TensorFlow wrote it",
        )


class BundleHeader(NamedTuple):
    num_shards: int
    endianness: int
    producer: int
    min_consumer: int
    versions: Versions = Versions()


class BundleEntry(NamedTuple):
    """A decoded BundleEntryProto (tensorflow/core/protobuf/tensor_bundle.proto).

    A NamedTuple rather than a frozen dataclass: tens of thousands are built per listing, at a third of the cost.
    """

    key: str
    dtype: DType
    shape: tuple[int, ...]
    unknown_rank: bool
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    slices: tuple[tuple[Extent, ...], ...]

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@lru_cache(maxsize=4096)
def decode_shape(buf: bytes) -> tuple[tuple[int, ...], bool]:
    # Cached: a model repeats a few shapes across thousands of entries (and every Adam slot copies its variable's).
    dims: list[int] = []
    unknown = False
    for number, _wire, value in iter_fields(buf):
        if number == 2:  # dim
            size = 0
            for n2, _w2, v2 in iter_fields(as_bytes(value, "shape.dim")):
                if n2 == 1:
                    size = to_int64(as_int(v2, "dim.size"))
            dims.append(size)
        elif number == 3:
            unknown = bool(value)
    return tuple(dims), unknown


def decode_slice(buf: bytes) -> tuple[Extent, ...]:
    extents: list[Extent] = []
    for number, _wire, value in iter_fields(buf):
        if number != 1:
            continue
        start, length = 0, -1  # an extent with no length covers the whole dimension
        for n2, _w2, v2 in iter_fields(as_bytes(value, "slice.extent")):
            if n2 == 1:
                start = to_int64(as_int(v2, "extent.start"))
            elif n2 == 2:
                length = to_int64(as_int(v2, "extent.length"))
        extents.append((start, length))
    return tuple(extents)


_HEADS: dict[bytes, tuple[DType, tuple[int, ...], bool]] = {}  # dtype and shape fields -> decoded, see below


_tuple_new = tuple.__new__  # a BundleEntry without the Python-level __new__ a NamedTuple has


def _decode_entry_fast(key: str, buf: bytes) -> BundleEntry | None:
    """The common entry in one pass without intermediate objects; None for anything else (slices, unknown fields,
    fields out of the writer's order, a varint past 6 bytes: 4 TiB), which the general decoder then handles.

    Listing a checkpoint decodes every entry, so this is the loop that decides how fast `inspect` answers.
    TensorFlow writes dtype (field 1) and shape (field 2) first; models repeat a few (dtype, shape) pairs, so
    those leading bytes are looked up whole. Then come shard_id (3, absent when 0), offset (4), size (5), each a
    varint decoded here byte by byte without a loop, and crc32c (6, fixed32) last: a fifth fewer instructions than
    a loop over the fields and their bytes.
    """
    end = len(buf)
    if end < 9 or buf[0] != 0x08 or buf[1] >= 0x80 or buf[2] != 0x12 or buf[3] >= 0x80 or buf[end - 5] != 0x35:
        return None
    pos = 4 + buf[3]
    head = buf[:pos]
    known = _HEADS.get(head)
    if known is None:
        if pos > end:
            return None
        shape, unknown = decode_shape(buf[4:pos])
        if len(_HEADS) >= 4096:
            _HEADS.clear()
        known = _HEADS[head] = (dtypes.from_enum(buf[1]), shape, unknown)
    ints = [0, 0, 0, 0, 0, 0]  # by field number: -, -, -, shard_id, offset, size
    try:  # (a varint cut short by the end of the entry: IndexError)
        for tag in (0x18, 0x20, 0x28):  # fields 3, 4 and 5, varints
            if buf[pos] != tag:
                continue
            b = buf[pos + 1]
            if b < 0x80:
                ints[tag >> 3] = b
                pos += 2
                continue
            c = buf[pos + 2]
            if c < 0x80:
                ints[tag >> 3] = b & 0x7F | c << 7
                pos += 3
                continue
            d = buf[pos + 3]
            if d < 0x80:
                ints[tag >> 3] = b & 0x7F | (c & 0x7F) << 7 | d << 14
                pos += 4
                continue
            e = buf[pos + 4]
            if e < 0x80:
                ints[tag >> 3] = b & 0x7F | (c & 0x7F) << 7 | (d & 0x7F) << 14 | e << 21
                pos += 5
                continue
            f = buf[pos + 5]
            if f < 0x80:
                ints[tag >> 3] = b & 0x7F | (c & 0x7F) << 7 | (d & 0x7F) << 14 | (e & 0x7F) << 21 | f << 28
                pos += 6
                continue
            g = buf[pos + 6]
            if g >= 0x80:
                return None
            ints[tag >> 3] = (b & 0x7F | (c & 0x7F) << 7 | (d & 0x7F) << 14 | (e & 0x7F) << 21 | (f & 0x7F) << 28
                              | g << 35)
            pos += 7
    except IndexError:
        return None
    if pos != end - 5:  # the crc32c's tag, checked above
        return None
    return _tuple_new(BundleEntry, (key, known[0], known[1], known[2], ints[3], ints[4], ints[5],
                                    int.from_bytes(buf[end - 4 :], "little"), ()))


def decode_entry(key: str, buf: bytes) -> BundleEntry:
    return _decode_entry_fast(key, buf) or _decode_entry_general(key, buf)


def _decode_entry_general(key: str, buf: bytes) -> BundleEntry:
    """Any valid BundleEntryProto: fields in any order, repeated (the last wins), unknown ones skipped."""
    dtype_enum = 0
    shape: tuple[int, ...] = ()
    unknown = False
    shard_id = offset = size = 0
    crc: int | None = None
    slices: list[tuple[Extent, ...]] = []
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            dtype_enum = as_int(value, "dtype")
        elif number == 2:
            shape, unknown = decode_shape(as_bytes(value, "shape"))
        elif number == 3:
            shard_id = to_int64(as_int(value, "shard_id"))
        elif number == 4:
            offset = to_int64(as_int(value, "offset"))
        elif number == 5:
            size = to_int64(as_int(value, "size"))
        elif number == 6:
            crc = as_int(value, "crc32c")
        elif number == 7:
            slices.append(decode_slice(as_bytes(value, "slices")))
    return BundleEntry(key, dtypes.from_enum(dtype_enum), shape, unknown, shard_id, offset, size, crc, tuple(slices))


def decode_header(buf: bytes) -> BundleHeader:
    num_shards = 1
    endianness = _LITTLE
    versions = Versions()
    for number, _wire, value in iter_fields(buf):
        if number == 1:
            num_shards = to_int64(as_int(value, "num_shards"))
        elif number == 2:
            endianness = as_int(value, "endianness")
        elif number == 3:
            versions = decode_versions(as_bytes(value, "version"))
    return BundleHeader(num_shards, endianness, versions.producer, versions.min_consumer, versions)


# --- OrderedCode (tensorflow/core/lib/strings/ordered_code.cc), for the keys of slices -----------------------


def _read_ordered_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    n = len(buf)
    while pos < n:
        c = buf[pos]
        if c == 0x00:
            if pos + 1 >= n:
                break
            nxt = buf[pos + 1]
            if nxt == 0x01:
                return bytes(out), pos + 2
            if nxt != 0xFF:
                break
            out.append(0)
            pos += 2
        elif c == 0xFF:
            if pos + 1 >= n or buf[pos + 1] != 0x00:
                break
            out.append(0xFF)
            pos += 2
        else:
            out.append(c)
            pos += 1
    raise DecodeError("bad string in slice key")


def _read_ordered_uint(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise DecodeError("truncated number in slice key")
    length = buf[pos]
    if length > 8 or pos + 1 + length > len(buf):
        raise DecodeError("bad number in slice key")
    return int.from_bytes(buf[pos + 1 : pos + 1 + length], "big"), pos + 1 + length


def _read_ordered_signed(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise DecodeError("truncated signed number in slice key")
    negative = not buf[pos] & 0x80
    flip = 0xFF if negative else 0x00
    # The length is the count of leading bits equal to the sign bit (the sign bit included), 1 to 10.
    bits = 0
    length = 0
    for i in range(min(2, len(buf) - pos)):
        bits = (bits << 8) | (buf[pos + i] ^ flip)
    bits <<= 8 * (2 - min(2, len(buf) - pos))
    while length < 16 and bits & (0x8000 >> length):
        length += 1
    if not 1 <= length <= 10 or pos + length > len(buf):
        raise DecodeError("bad signed number in slice key")
    raw = int.from_bytes(bytes(b ^ flip for b in buf[pos : pos + length]), "big")
    payload_bits = 8 * length - length - 1  # minus the length bits and the delimiter bit
    value = raw & ((1 << payload_bits) - 1)
    return (~value if negative else value), pos + length


def decode_slice_key(key: bytes) -> tuple[str, tuple[Extent, ...]]:
    """Split a slice entry's key into the variable name and the slice's extents."""
    if not key or key[0] != _SLICE_KEY_START:
        raise DecodeError("not a slice key")
    name, pos = _read_ordered_string(key, 1)
    ndims, pos = _read_ordered_uint(key, pos)
    extents = []
    for _ in range(ndims):
        start, pos = _read_ordered_signed(key, pos)
        length, pos = _read_ordered_signed(key, pos)
        extents.append((start, length))
    if pos != len(key):
        raise DecodeError("trailing bytes in slice key")
    return name.decode("utf-8", "surrogateescape"), tuple(extents)


def _normalize(extents: tuple[Extent, ...], shape: tuple[int, ...]) -> tuple[Extent, ...]:
    """Full extents (length -1) written out, so a slice compares equal however it was recorded."""
    out = []
    for i, (start, length) in enumerate(extents):
        if length < 0:
            start, length = 0, shape[i] if i < len(shape) else -1
        out.append((start, length))
    return tuple(out)


# --- The reader ------------------------------------------------------------------------------------------------


# How verify looks for a URL's data shards (BundleReader.absent_shards).
_SHARDS_LISTED = 64
_SHARDS_LOOKED_UP = 1000


class BundleReader(CheckpointReader):
    def __init__(
        self, prefix: str, *, path: str | None = None, format: str | None = None, tolerant: bool = False
    ) -> None:
        """Open the bundle at ``prefix``. ``tolerant`` (for verification) skips damaged index blocks, recording
        them in ``index_problems``, instead of refusing the whole checkpoint."""
        self.prefix = prefix
        self.index_problems: list[str] = []  # with tolerant: damaged blocks skipped, the metaindex's included
        self.path = path or prefix
        self.index_path = prefix + ".index"
        table = SSTable.open(self.index_path)
        entries: dict[str, BundleEntry] = {}
        slice_keys: dict[str, dict[tuple[Extent, ...], BundleEntry]] = {}
        header: BundleHeader | None = None
        keys, values = table.index_entries(self.index_problems if tolerant else None)
        # Keys in byte order: the header's empty key first, then the slices' keys (each begins with a 0 byte),
        # then the tensors' names.
        first = 1 if keys and keys[0] == _HEADER_KEY else 0
        named = bisect.bisect_left(keys, _NAMES_START, first)
        try:
            with paused_gc():
                if first:
                    header = decode_header(values[0])
                for key, value in zip(keys[first:named], values[first:named], strict=True):
                    name, extents = decode_slice_key(key)
                    slice_keys.setdefault(name, {})[extents] = decode_entry(name, value)
                names = list(map(bytes.decode, keys[named:], repeat("utf-8"), repeat("surrogateescape")))
                found = list(map(_decode_entry_fast, names, values[named:]))
                if None in found:  # (an entry laid out otherwise: the general decoder)
                    found = [e or _decode_entry_general(n, v) for e, n, v in zip(found, names, values[named:],
                                                                                  strict=True)]
                entries = dict(zip(names, cast(list[BundleEntry], found), strict=True))
        except DecodeError as exc:
            raise CorruptCheckpointError(f"bad entry in index: {exc.message}", path=self.index_path) from None
        if header is None and self.index_problems:
            # The block that held the header was damaged: that is the problem, not a second one.
            raise CorruptCheckpointError(self.index_problems[0], path=self.index_path)
        if header is None:
            raise CorruptCheckpointError("the index has no bundle header", path=self.index_path,
                                         hint="this .index was not written by TensorFlow's bundle writer")
        check_versions(header.versions, path=self.index_path, what="the bundle's")
        if header.num_shards < 1 or header.num_shards > 1_000_000:
            raise CorruptCheckpointError(f"the header claims {header.num_shards} shards", path=self.index_path)
        if header.endianness not in (_LITTLE, _BIG):
            raise CorruptCheckpointError(f"unknown endianness {header.endianness} in the header",
                                         path=self.index_path)
        if tolerant:  # the metaindex block lists nothing TensorFlow reads, but it is checked like every block
            try:
                table.read_block(table.metaindex_handle)
            except CorruptCheckpointError as exc:
                self.index_problems.append(f"metaindex block: {exc.message}")
        self.header = header
        self.entries = entries
        self._slice_entries = slice_keys
        self.has_object_graph = OBJECT_GRAPH_KEY in entries
        self.format = format or (TF2 if self.has_object_graph else TF1)
        self._files: dict[int, io.BufferedReader] = {}
        self._file_sizes: dict[int, int] = {}  # taken when a shard is opened; a shorter file fails the read itself
        self._spare: mmap.mmap | None = None  # the read buffer iter_part_bytes reuses
        # The object graph's elements once read and checked (the listing reads it for the variable names): over a
        # URL, verify and diff would otherwise fetch it a second time.
        self._graph: tuple[BundleEntry, list[bytes]] | None = None
        self._ahead: ReadAhead | None = None  # read_ahead's fetches, served by _read_at
        self._ahead_close: Callable[[], None] | None = None

    # -- listing --

    @property
    def num_shards(self) -> int:
        return self.header.num_shards

    def shard_path(self, shard: int) -> str:
        return shard_filename(self.prefix, shard, self.header.num_shards)

    def shards_used(self) -> list[int]:
        """The data shards some entry (or slice of a partitioned variable) keeps its bytes in, in order."""
        used = {e.shard_id for e in self.entries.values() if e.size}
        used |= {e.shard_id for stored in self._slice_entries.values() for e in stored.values() if e.size}
        return sorted(i for i in used if 0 <= i < self.num_shards)

    def absent_shards(self) -> tuple[list[int], tuple[str, ...]]:
        """The data shards that are not there, and a note when some could not be looked for. A URL's shards are
        looked up one request each up to _SHARDS_LISTED; past it, by one listing of the directory where the store
        has one, and past _SHARDS_LOOKED_UP without a listing (plain HTTP), only those holding tensors: a header
        may claim a million shards."""
        shards = range(self.num_shards)
        if not loc.is_url(self.prefix) or self.num_shards <= _SHARDS_LISTED:
            return [i for i in shards if not loc.exists(self.shard_path(i))], ()
        with contextlib.suppress(OSError, CkptcheckError):
            present = set(loc.listdir(loc.dirname(self.prefix)))
            return [i for i in shards if loc.basename(self.shard_path(i)) not in present], ()
        if self.num_shards <= _SHARDS_LOOKED_UP:
            return [i for i in shards if not loc.exists(self.shard_path(i))], ()
        used = self.shards_used()
        note = (f"the header names {self.num_shards:,} data shards and this store has no listing: the {len(used):,} "
                "holding tensors were looked up, the others not")
        return [i for i in used if not loc.exists(self.shard_path(i))], (note,)

    def slices_of(self, entry: BundleEntry) -> list[tuple[tuple[Extent, ...], BundleEntry]]:
        """The stored slices of a partitioned variable, each matched to its own entry."""
        stored = self._slice_entries.get(entry.key, {})
        by_norm = {_normalize(ext, entry.shape): e for ext, e in stored.items()}
        out = []
        for extents in entry.slices:
            norm = _normalize(extents, entry.shape)
            found = by_norm.get(norm)
            if found is None:
                raise CorruptCheckpointError(
                    f"slice {format_extents(norm)} is listed but has no entry in the index",
                    path=self.index_path, tensor=entry.key,
                )
            out.append((norm, found))
        return out

    def _stored_nbytes(self, entry: BundleEntry) -> int:
        if entry.slices:
            stored = self._slice_entries.get(entry.key, {})
            return sum(e.size for e in stored.values())
        return entry.size

    @cached_property
    def _info(self) -> CheckpointInfo:
        with paused_gc():
            tensors = self._list_tensors()
        files = [self.index_path] + [self.shard_path(i) for i in range(self.num_shards)]
        meta = self.prefix + ".meta"
        if loc.exists(meta):
            files.append(meta)
        metadata = {}
        if self.header.endianness == _BIG:
            metadata["endianness"] = "big"
        return CheckpointInfo(
            format=self.format,
            path=self.path,
            location=self.prefix,
            files=tuple(files),
            tensors=tuple(tensors),
            shards=self.num_shards,
            writer=f"tensor bundle, producer version {self.header.producer}",
            metadata=metadata,
        )

    def _list_tensors(self) -> list[TensorInfo]:
        shard_names = [os.path.basename(self.shard_path(i)) for i in range(self.num_shards)]
        num_shards = len(shard_names)
        tensors = []
        entries = self.entries
        variables = self.variable_names()
        for name in sorted(entries):  # index order is byte order: already sorted for UTF-8, a linear pass
            e = entries[name]
            nbytes = e.size
            shard = e.shard_id
            if e.slices:
                stored = self._slice_entries.get(name, {})
                first = min(stored.values(), key=lambda s: (s.shard_id, s.offset), default=None)
                shard = first.shard_id if first is not None else 0
                nbytes = self._stored_nbytes(e)
            file = shard_names[shard] if 0 <= shard < num_shards else None
            tensors.append(listed_tensor(name, e.dtype.name, e.shape, nbytes, len(e.slices), file,
                                         variables.get(name, name)))
        return tensors

    def variable_names(self) -> dict[str, str]:
        """Each key's ``variable`` where it is not the key itself: in an object-based bundle the name the graph
        records for it when saved (its full_name; for Keras 3 the variable's path), bookkeeping in parentheses.
        A name-based (TF1) bundle is keyed by variable name already: nothing to add."""
        if not self.has_object_graph:
            return {}
        from ckptcheck.formats.tensorflow.object_graph import key_variables, saved_names, variable_saved_names

        saved: dict[str, str] = {}
        entry = self.entries[OBJECT_GRAPH_KEY]
        try:  # the graph's bytes and checksum, without numpy: listing stays light
            if not entry.slices and entry.dtype.is_string and entry.num_elements == 1:
                self.check_bounds(entry, OBJECT_GRAPH_KEY)
                data = bytes(self._byte_elements(entry, OBJECT_GRAPH_KEY)[0])
                # Variables only (nearly every checkpoint): found by search; anything else is decoded in full.
                found = variable_saved_names(data)
                saved = found if found is not None and len(found) == len(self.entries) - 1 else saved_names(data)
        except CorruptCheckpointError:
            pass  # verify reports a damaged graph; the listing names tensors by their keys
        return key_variables(self.entries, saved, OBJECT_GRAPH_KEY)

    def info(self) -> CheckpointInfo:
        return self._info

    # -- values --

    def entry(self, name: str) -> BundleEntry:
        """The entry stored under key ``name``, or holding the variable ``name``."""
        e = self.entries.get(name)
        if e is None:
            e = self.entries[self.key_of(name)]
        return e

    def _shard_file(self, shard: int, tensor: str) -> io.BufferedReader:
        f = self._files.get(shard)
        if f is None:
            if not 0 <= shard < self.num_shards:
                raise CorruptCheckpointError(
                    f"entry names shard {shard} but the header says there are {self.num_shards}",
                    path=self.index_path, tensor=tensor,
                )
            path = self.shard_path(shard)
            try:
                f = open_regular(path)  # kept open for the reader's life, closed in close()
            except FileNotFoundError:
                raise CorruptCheckpointError(
                    "data shard is missing", path=path, tensor=tensor,
                    hint=f"a bundle with {self.num_shards} shard(s) needs every .data file beside its .index",
                ) from None
            except OSError as exc:
                raise CorruptCheckpointError(f"cannot read: {exc.strerror}", path=path, tensor=tensor) from None
            self._files[shard] = f
            self._file_sizes[shard] = file_size(f)
        return f

    def check_bounds(self, entry: BundleEntry, tensor: str) -> None:
        """Check that the entry's bytes lie inside its shard and fit its dtype and shape."""
        self._shard_file(entry.shard_id, tensor)
        if entry.unknown_rank or any(d < 0 for d in entry.shape):
            raise CorruptCheckpointError(f"entry has an invalid shape {list(entry.shape)}",
                                         path=self.index_path, tensor=tensor)
        if entry.offset < 0 or entry.size < 0:
            raise CorruptCheckpointError(f"entry has a negative offset or size ({entry.offset}, {entry.size})",
                                         path=self.index_path, tensor=tensor)
        file_size = self._file_sizes[entry.shard_id]
        if entry.offset + entry.size > file_size:
            raise CorruptCheckpointError(
                f"data runs past the end of the shard (bytes {entry.offset}..{entry.offset + entry.size - 1}, "
                f"file is {file_size} bytes)",
                path=self.shard_path(entry.shard_id), tensor=tensor, hint="the shard file is truncated",
            )
        if entry.dtype.is_string:
            if entry.num_elements > entry.size:  # every element takes at least one length byte
                raise CorruptCheckpointError(
                    f"entry claims {entry.num_elements} strings in {entry.size} bytes",
                    path=self.index_path, tensor=tensor,
                )
        elif entry.dtype.is_variant:
            if entry.num_elements * 5 > entry.size:  # a length byte and a 4-byte checksum at least, each
                raise CorruptCheckpointError(
                    f"entry claims {entry.num_elements} variant elements in {entry.size} bytes",
                    path=self.index_path, tensor=tensor,
                )
        elif not entry.dtype.readable:
            raise UnsupportedFormatError(f"values of dtype {entry.dtype.name} cannot be read",
                                         path=self.index_path, tensor=tensor)
        elif entry.num_elements * entry.dtype.itemsize != entry.size:
            raise CorruptCheckpointError(
                f"invalid size in bundle entry: shape {list(entry.shape)} of {entry.dtype.name} needs "
                f"{entry.num_elements * entry.dtype.itemsize} bytes, the entry says {entry.size}",
                path=self.index_path, tensor=tensor,
            )

    def _checksum_error(self, entry: BundleEntry, tensor: str, actual: int) -> CorruptCheckpointError:
        stored = unmask_crc(entry.crc32c or 0)
        return CorruptCheckpointError(
            f"checksum mismatch (bytes {entry.offset}..{entry.offset + entry.size - 1}: stored crc32c "
            f"{stored:#010x}, calculated {actual:#010x})",
            path=self.shard_path(entry.shard_id), tensor=tensor,
        )

    def _numpy_dtype(self, dtype: DType) -> np.dtype:
        dt = dtype.numpy
        return dt.newbyteorder(">") if self.header.endianness == _BIG and dt.itemsize > 1 else dt

    def _read_entry(self, entry: BundleEntry, tensor: str) -> np.ndarray:
        self.check_bounds(entry, tensor)
        if entry.dtype.is_bytes:
            return self._read_byte_elements(entry, tensor)
        return self._read_numeric(entry, tensor, aligned_empty(entry.size)).reshape(entry.shape)

    def _read_at(self, entry: BundleEntry, tensor: str, offset: int, view: memoryview) -> None:
        """Fill ``view`` from the entry's shard at ``offset``. Seeks every time: another stream on this reader may
        have moved the file position."""
        if self._ahead is not None and self._ahead.take_into(entry.shard_id, offset, view):
            return
        f = self._shard_file(entry.shard_id, tensor)
        f.seek(offset)
        if f.readinto(view) != len(view):
            raise CorruptCheckpointError("short read from the shard", path=self.shard_path(entry.shard_id),
                                         tensor=tensor)

    def _entry_bytes(self, entry: BundleEntry, tensor: str) -> bytearray:
        """An entry's bytes, whole (strings and variants, whose sizes check_bounds has held to the shard's)."""
        data = bytearray(entry.size)
        self._read_at(entry, tensor, entry.offset, memoryview(data))
        return data

    def _read_numeric(self, entry: BundleEntry, tensor: str, raw: np.ndarray) -> np.ndarray:
        """A numeric entry whose bounds are checked, read into ``raw`` (uint8, its size) and checked against its
        crc32c; flat, in native byte order."""
        self._read_at(entry, tensor, entry.offset, raw.data)
        self._check_crc(entry, tensor, raw)
        return self._typed(entry, raw)

    def _check_crc(self, entry: BundleEntry, tensor: str, raw: np.ndarray) -> None:
        if entry.crc32c is not None:
            actual = crc32c(raw.data)
            if actual != unmask_crc(entry.crc32c):
                raise self._checksum_error(entry, tensor, actual)

    def _typed(self, entry: BundleEntry, raw: np.ndarray) -> np.ndarray:
        arr = raw.view(self._numpy_dtype(entry.dtype))
        return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder == ">" else arr

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray | None:
        """The whole tensor read into ``out`` (a uint8 buffer) as a flat array viewing it, or None when it does
        not fit or is not one numeric entry (strings, partitioned variables): then stream it instead.

        For comparing many small tensors: one call and no generator per tensor (a diff of 2,000 tensors spent
        ~40 us a pair setting up chunk streams for tensors that fit in one chunk).
        """
        entry = self.entry(name)
        if entry.slices or entry.dtype.is_bytes or entry.size > out.nbytes:
            return None
        self.check_bounds(entry, name)
        return self._read_numeric(entry, name, out[: entry.size])

    def _byte_elements(self, entry: BundleEntry, tensor: str) -> list[bytes]:
        """A string or variant entry's elements (a variant element: its serialized VariantTensorDataProto), with
        every checksum checked; numpy is not needed."""
        if self._graph is not None and self._graph[0] is entry:
            return self._graph[1]
        if entry.dtype.is_variant:
            return self._variant_elements(entry, tensor, self._entry_bytes(entry, tensor))
        elements = [element for chunk in self._stream_strings(entry, tensor) for element in chunk]
        if tensor == OBJECT_GRAPH_KEY and entry is self.entries.get(OBJECT_GRAPH_KEY):
            self._graph = (entry, elements)
        return elements

    def _variant_elements(self, entry: BundleEntry, tensor: str, data: bytearray) -> list[bytes]:
        """Layout (tensor_bundle.cc, WriteVariantTensor): per element a varint64 length, the bytes, and a masked
        crc32c of everything so far; the running crc32c takes each length as a uint64 (8 bytes, the bundle's byte
        order), the bytes, and the 4 checksum bytes. The entry's crc32c is the final one."""
        path = self.shard_path(entry.shard_id)
        order = ">" if self.header.endianness == _BIG else "<"
        elements: list[bytes] = []
        crc = 0
        pos = 0
        for i in range(entry.num_elements):
            try:
                length, pos = read_varint(data, pos)
            except DecodeError:
                raise CorruptCheckpointError(f"bad length of variant element {i}", path=path, tensor=tensor) from None
            if pos + length + 4 > len(data):
                raise CorruptCheckpointError(f"variant element {i} runs past the entry's {len(data)} bytes",
                                             path=path, tensor=tensor)
            crc = crc32c(struct.pack(order + "Q", length), crc)
            body = bytes(data[pos : pos + length])
            crc = crc32c(body, crc)
            pos += length
            (stored,) = struct.unpack_from(order + "I", data, pos)
            if unmask_crc(stored) != crc:
                raise CorruptCheckpointError(f"checksum mismatch after variant element {i}", path=path,
                                             tensor=tensor)
            crc = crc32c(data[pos : pos + 4], crc)
            pos += 4
            elements.append(body)
        if pos != len(data):
            raise CorruptCheckpointError(f"{len(data) - pos} bytes follow the last variant element", path=path,
                                         tensor=tensor)
        if entry.crc32c is not None and crc != unmask_crc(entry.crc32c):
            raise self._checksum_error(entry, tensor, crc)
        return elements

    def _stream_strings(
        self, entry: BundleEntry, tensor: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> Iterator[list[bytes]]:
        """A string entry's elements, a bounded number at a time, with the same checks as a whole read: the
        lengths' checksum after the lengths, the entry's after the last byte (numpy is not needed).

        Memory is the lengths (8 bytes an element) and one chunk, not every element at once (10 million strings
        read whole were 1.5 GB of Python objects).
        """
        path = self.shard_path(entry.shard_id)
        count = entry.num_elements
        lengths = array.array("Q", bytes(8 * count))
        offset, end = entry.offset, entry.offset + entry.size
        pending = bytearray()
        pos = 0
        packed = bytearray()
        length_crc = 0
        for i in range(count):
            if len(pending) - pos < 10 and offset < end:  # room for the longest varint
                more = min(end - offset, 1 << 16)
                buf = bytearray(more)
                self._read_at(entry, tensor, offset, memoryview(buf))
                offset += more
                del pending[:pos]
                pending += buf
                pos = 0
            try:
                value, pos = read_varint(pending, pos)
            except DecodeError:
                raise CorruptCheckpointError("bad string lengths", path=path, tensor=tensor) from None
            lengths[i] = value
            packed += struct.pack("<I", value) if value <= 0xFFFFFFFF else struct.pack("<Q", value)
            if len(packed) >= 1 << 16:
                length_crc = crc32c(packed, length_crc)
                packed.clear()
        length_crc = crc32c(packed, length_crc)
        body_start = offset - (len(pending) - pos)
        lengths_bytes = body_start - entry.offset
        total = lengths_bytes + 4 + sum(lengths)
        if total != entry.size:
            raise CorruptCheckpointError(f"string lengths add up to {total} bytes, the entry says {entry.size}",
                                         path=path, tensor=tensor)
        stored = bytearray(4)
        self._read_at(entry, tensor, body_start, memoryview(stored))
        (stored_len_crc,) = struct.unpack("<I", stored)
        if unmask_crc(stored_len_crc) != length_crc:
            raise CorruptCheckpointError("checksum mismatch in the string lengths", path=path, tensor=tensor)
        # The entry's crc32c runs over the same packed lengths, then the 4 checksum bytes, then the element bytes.
        crc = crc32c(bytes(stored), length_crc)
        position = body_start + 4
        limit = max(1, min(chunk_bytes, 1 << 22))
        i = 0
        while i < count:
            j, size = i, 0
            while j < count and (j == i or (size + lengths[j] <= limit and j - i < 65536)):
                size += lengths[j]
                j += 1
            data = bytearray(size)
            self._read_at(entry, tensor, position, memoryview(data))
            crc = crc32c(data, crc)
            position += size
            out = []
            start = 0
            for k in range(i, j):
                n = lengths[k]
                out.append(bytes(data[start : start + n]))
                start += n
            yield out
            i = j
        if entry.crc32c is not None and crc != unmask_crc(entry.crc32c):
            raise self._checksum_error(entry, tensor, crc)

    def _read_byte_elements(self, entry: BundleEntry, tensor: str) -> np.ndarray:
        """A string or variant entry as an object array of bytes."""
        import numpy as np

        out = np.empty(entry.num_elements, dtype=object)
        for i, element in enumerate(self._byte_elements(entry, tensor)):
            out[i] = element
        return out.reshape(entry.shape)

    def _tiling(self, entry: BundleEntry, name: str) -> list[tuple[tuple[Extent, ...], BundleEntry]]:
        """The slices of a partitioned variable, checked to tile its shape exactly (slices.tiling_problem), each of
        the variable's dtype and storing the shape it claims."""
        slices = self.slices_of(entry)
        problem = tiling_problem(entry.shape, [extents for extents, _ in slices])
        if problem is not None:
            raise CorruptCheckpointError(problem, path=self.index_path, tensor=name)
        for extents, part in slices:
            where = format_extents(extents)
            if tuple(n for _, n in extents) != part.shape:
                raise CorruptCheckpointError(f"slice {where} stores shape {list(part.shape)}",
                                             path=self.index_path, tensor=name)
            if part.dtype != entry.dtype:
                raise CorruptCheckpointError(f"slice {where} stores {part.dtype.name}, the variable is "
                                             f"{entry.dtype.name}", path=self.index_path, tensor=name)
        return slices

    def _assemble(self, entry: BundleEntry, name: str) -> np.ndarray:
        import numpy as np

        slices = self._tiling(entry, name)
        # Every slice's bytes are checked against its shard before the whole tensor is allocated, so an index
        # claiming a huge shape fails here rather than in np.empty.
        for _, part in slices:
            self.check_bounds(part, name)
        out = np.empty(entry.shape, dtype=object if entry.dtype.is_bytes else entry.dtype.numpy)
        for extents, part in slices:
            index = tuple(slice(s, s + n) for s, n in extents)
            out[index] = self._read_entry(part, name)
        return out

    def read(self, name: str) -> np.ndarray:
        entry = self.entry(name)
        check_rank(entry.shape, path=self.index_path, tensor=name)
        if entry.slices:
            return self._assemble(entry, name)
        return self._read_entry(entry, name)

    def parts(self, name: str) -> list[BundleEntry]:
        """The entries holding a tensor's bytes: itself, or each slice of a partitioned variable."""
        entry = self.entry(name)
        if not entry.slices:
            return [entry]
        return [part for _, part in self._tiling(entry, name)]

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        for part in self.parts(name):
            yield from self.iter_part(part, name, chunk_bytes)

    def iter_c_order(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's elements in C order of the whole; a partitioned numeric variable is streamed block by block
        from its slices, never assembled, so memory stays within about ``chunk_bytes`` whatever its size.

        Each slice's bytes are read in the order they are stored (slices.stream_c_order), so its crc32c is
        computed as they pass and checked when its last byte has.
        """
        entry = self.entry(name)
        if not entry.slices or entry.dtype.is_bytes or not entry.shape:
            yield from super().iter_c_order(name, chunk_bytes)
            return
        yield from self._stream_slices(entry, name, chunk_bytes)

    def _stream_slices(self, entry: BundleEntry, name: str, chunk_bytes: int) -> Iterator[np.ndarray]:
        tiling = self._tiling(entry, name)
        for _, part in tiling:
            self.check_bounds(part, name)
        dt = self._numpy_dtype(entry.dtype)
        scratch = aligned_empty(max(chunk_bytes, dt.itemsize))
        crcs = [0] * len(tiling)

        def fetch(i: int, first: int, count: int) -> np.ndarray:
            part = tiling[i][1]
            view = scratch[: count * dt.itemsize] if count * dt.itemsize <= len(scratch) else aligned_empty(
                count * dt.itemsize)
            self._read_at(part, name, part.offset + first * dt.itemsize, view.data)
            crcs[i] = crc32c(view.data, crcs[i])
            last = (first + count) * dt.itemsize == part.size
            if last and part.crc32c is not None and crcs[i] != unmask_crc(part.crc32c):
                raise self._checksum_error(part, name, crcs[i])
            return view.view(dt)

        for chunk in stream_c_order(entry.shape, [extents for extents, _ in tiling], dt, chunk_bytes, fetch):
            yield chunk.astype(dt.newbyteorder("=")) if dt.byteorder == ">" else chunk

    def iter_part(self, part: BundleEntry, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """One entry's elements in chunks read into a reused buffer; its crc32c is checked after the last chunk."""
        import numpy as np

        self.check_bounds(part, name)
        if part.dtype.is_string:
            for elements in self._stream_strings(part, name, chunk_bytes):
                out = np.empty(len(elements), dtype=object)
                out[:] = elements
                yield out
            return
        if part.dtype.is_bytes:
            yield self._read_byte_elements(part, name).reshape(-1)
            return
        dt = self._numpy_dtype(part.dtype)
        swap = dt.byteorder == ">"
        for view in self._stream(part, name, chunk_bytes):
            arr = np.frombuffer(view, dtype=dt)
            yield arr.astype(dt.newbyteorder("=")) if swap else arr

    def iter_part_bytes(
        self, part: BundleEntry, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> Iterator[memoryview]:
        """A numeric entry's bytes in chunks of whole elements, read into a reused buffer (numpy is not needed);
        its crc32c is checked after the last chunk. Each chunk is valid only until the next is yielded."""
        self.check_bounds(part, name)
        return self._stream(part, name, chunk_bytes)

    def _stream(self, part: BundleEntry, name: str, chunk_bytes: int) -> Iterator[memoryview]:
        """iter_part_bytes for an entry whose bounds are checked."""
        itemsize = part.dtype.itemsize
        step = max(itemsize, chunk_bytes - chunk_bytes % itemsize)
        want = min(step, max(part.size, itemsize))
        # One buffer serves part after part: a fresh one per tensor cost the kernel zeroing every page of it
        # (a third of a 1 GiB diff). An iterator interleaving with another on this reader takes its own.
        spare, self._spare = self._spare, None
        buf = spare if spare is not None and len(spare) >= want else read_buffer(max(want, 1 << 20))
        try:
            crc = 0
            remaining = part.size
            offset = part.offset
            whole = memoryview(buf)
            while remaining > 0:
                n = min(remaining, want)
                ahead = self._ahead.take(part.shard_id, offset, n) if self._ahead is not None else None
                if ahead is not None:
                    view = ahead  # the fetched block itself, valid until the next take: no copy
                else:
                    view = whole[:n]
                    self._read_at(part, name, offset, view)
                crc = crc32c(view, crc)
                offset += n
                remaining -= n
                yield view
            if part.crc32c is not None and crc != unmask_crc(part.crc32c):
                raise self._checksum_error(part, name, crc)
        finally:
            if self._spare is None or len(self._spare) < len(buf):
                self._spare = buf

    def check_part(self, part: BundleEntry, name: str) -> None:
        """Read one entry to its end, checking its bounds and checksums; raise CorruptCheckpointError if damaged."""
        if part.dtype.is_string:
            self.check_bounds(part, name)
            if self._graph is not None and self._graph[0] is part:
                return  # read whole and checked already
            for _chunk in self._stream_strings(part, name):
                pass
            return
        if part.dtype.is_bytes:
            self.check_bounds(part, name)
            self._byte_elements(part, name)
            return
        for _view in self.iter_part_bytes(part, name):
            pass

    # -- object graph --

    def object_graph_bytes(self) -> bytes | None:
        if not self.has_object_graph:
            return None
        value = self.read(OBJECT_GRAPH_KEY)
        return bytes(value.reshape(-1)[0]) if value.size else None

    def objects(self) -> tuple[ObjectRef, ...] | None:
        data = self.object_graph_bytes()
        if data is None:
            return None
        from ckptcheck.formats.tensorflow.object_graph import object_refs

        try:
            return object_refs(data, stored=set(self.entries))
        except DecodeError as exc:
            raise CorruptCheckpointError(f"the object graph cannot be decoded: {exc.message}",
                                         path=self.index_path, tensor=OBJECT_GRAPH_KEY) from None

    def read_ahead(self, names: Sequence[str], jobs: int, *, slices: bool = True) -> None:
        """Fetch the numeric parts of ``names`` ahead of their reads, ``jobs`` ranges at a time, merged where they
        touch in a shard (formats/prefetch.py). Strings, variants and (unless ``slices``) partitioned variables
        are left to the direct reads: their reads follow other patterns."""
        self._stop_ahead()
        if jobs <= 1:
            return
        from ckptcheck.formats.prefetch import ReadAhead, fetcher, plan_blocks

        ranges: list[tuple[int, int, int, int]] = []
        for name in names:
            try:
                entry = self.entry(name)
                if entry.dtype.is_bytes or (entry.slices and not slices):
                    continue
                for part in self.parts(name):
                    self.check_bounds(part, name)  # what is out of bounds is never read: not fetched either
                    itemsize = part.dtype.itemsize
                    step = max(itemsize, DEFAULT_CHUNK_BYTES - DEFAULT_CHUNK_BYTES % itemsize)
                    ranges.append((part.shard_id, part.offset, part.size, step))
            except (CkptcheckError, KeyError):
                continue  # read directly, where its reads report what is wrong
        if not ranges:
            return
        fetch, recycle, self._ahead_close = fetcher([self.shard_path(i) for i in range(self.num_shards)])
        self._ahead = ReadAhead(plan_blocks(ranges), fetch, jobs, recycle=recycle)

    def _stop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self._ahead_close is not None:
            self._ahead_close()
            self._ahead_close = None

    def close(self) -> None:
        self._stop_ahead()
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._file_sizes.clear()


def read_pair_into(
    ra: CheckpointReader, name_a: str, out_a: np.ndarray, rb: CheckpointReader, name_b: str, out_b: np.ndarray,
    same: Callable[[np.ndarray, np.ndarray], bool],
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """Two bundles' whole numeric tensors read into ``out_a`` and ``out_b`` (as read_into), and whether their bytes
    are the same (``same``, given the raw bytes); None where read_into would be. A's checksum is checked; B's too,
    unless B's bytes are A's and B stores A's checksum, which then holds for B as it held for A: comparing two saves
    of one model, most tensors are computed one checksum instead of two (~40 ms of a 1 GiB diff)."""
    if not isinstance(ra, BundleReader) or not isinstance(rb, BundleReader):
        return None
    ea, eb = ra.entry(name_a), rb.entry(name_b)
    if any(e.slices or e.dtype.is_bytes or e.size > out.nbytes for e, out in ((ea, out_a), (eb, out_b))):
        return None
    ra.check_bounds(ea, name_a)
    rb.check_bounds(eb, name_b)
    raw_a, raw_b = out_a[: ea.size], out_b[: eb.size]
    a = ra._read_numeric(ea, name_a, raw_a)
    rb._read_at(eb, name_b, eb.offset, raw_b.data)
    identical = ra.header.endianness == rb.header.endianness and same(raw_a, raw_b)
    if not identical or eb.crc32c != ea.crc32c:
        rb._check_crc(eb, name_b, raw_b)
    return a, rb._typed(eb, raw_b), identical
