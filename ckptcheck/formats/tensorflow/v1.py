"""Reader for V1 checkpoints: the TensorSliceReader format, TensorFlow's default before 0.12.

``tf.compat.v1.train.Saver(write_version=SaverDef.V1)`` still writes it and ``tf.train.load_checkpoint`` still
reads it (TF-Slim's model zoo ``*.ckpt`` files and old TF Serving ``export-*`` files are V1). Layout
(tensorflow/core/util/saved_tensor_slice.proto, saved_tensor_slice_util.{h,cc}, tensor_slice_reader.cc):

* One sorted table (sstable.py) per shard, and no ``.index``: ``model.ckpt-N``, or ``model.ckpt-N-00000-of-00002``
  ... when sharded (the state file then names the pattern ``model.ckpt-N-?????-of-00002``).
* Key ``""`` holds a SavedTensorSlices whose ``meta`` lists every tensor of that file: name, shape, dtype and the
  slices the file holds. Every other key is the OrderedCode of (name, slice) and holds a SavedTensorSlices whose
  ``data`` carries the name, the slice and the values as a TensorProto (``float_val``, ``int_val``, ``string_val``
  ...). A partitioned variable is several slices, reassembled into the full tensor as TensorFlow returns it.
* There is no per-tensor checksum: the table's block checksums are all that guards the values.

Each file is read block by block; a tensor's values are one table record per slice, so reading one holds at most
one slice's record in memory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ckptcheck.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import file_size, open_regular
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader, check_rank, paused_gc
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.formats.tensorflow.bundle import (
    Extent,
    Versions,
    check_versions,
    decode_shape,
    decode_slice,
    decode_slice_key,
    decode_versions,
)
from ckptcheck.formats.tensorflow.dtypes import DType
from ckptcheck.formats.tensorflow.protobuf import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    DecodeError,
    as_bytes,
    as_int,
    as_view,
    iter_fields,
)
from ckptcheck.formats.tensorflow.slices import format_extents, stream_c_order, tiling_problem
from ckptcheck.formats.tensorflow.sstable import SSTable
from ckptcheck.records import TF1, CheckpointInfo, listed_tensor

if TYPE_CHECKING:
    import numpy as np

V1_SHARD_RE = re.compile(r"^(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")
_META_KEY = b""
_GLOB_CHARS = re.compile(r"[*?\[]")
_ESCAPED = re.compile(rb"[\x00\xff]")  # OrderedCode escapes these two bytes of a name

# TensorProto fields (tensorflow/core/framework/tensor.proto) holding values, by DataType enum; what a V1 writer
# fills (SaveTypeTraits in saved_tensor_slice_util.h). ``tensor_content`` (4) is accepted for every numeric type.
_TENSOR_CONTENT = 4
_FLOAT_VAL, _DOUBLE_VAL, _INT_VAL, _STRING_VAL, _SCOMPLEX_VAL = 5, 6, 7, 8, 9
_INT64_VAL, _BOOL_VAL, _DCOMPLEX_VAL, _HALF_VAL, _UINT32_VAL, _UINT64_VAL = 10, 11, 12, 13, 16, 17
_INT_TYPES = {3, 4, 5, 6, 11, 12, 13, 15, 16, 17}  # int32 uint8 int16 int8 qint8 quint8 qint32 qint16 quint16 uint16
_VALUE_FIELD = {
    1: _FLOAT_VAL, 2: _DOUBLE_VAL, 7: _STRING_VAL, 8: _SCOMPLEX_VAL, 9: _INT64_VAL, 10: _BOOL_VAL,
    14: _HALF_VAL, 18: _DCOMPLEX_VAL, 19: _HALF_VAL, 22: _UINT32_VAL, 23: _UINT64_VAL,
    **dict.fromkeys(_INT_TYPES, _INT_VAL),
}


def is_v1_pattern(location: str) -> bool:
    return bool(_GLOB_CHARS.search(os.path.basename(location)))


def v1_files(location: str) -> list[str]:
    """The files of a V1 checkpoint: the file itself, or every shard of a ``...-?????-of-NNNNN`` pattern (or of a
    base whose shards lie beside it), in shard order. Empty when there are none."""
    if is_v1_pattern(location):
        return sorted(p for p in loc.glob(glob.escape(os.path.dirname(location)) + os.sep
                                           + os.path.basename(location)) if loc.isfile(p))
    if loc.isfile(location):
        return [location]
    digits = "[0-9]" * 5
    return sorted(p for p in loc.glob(f"{glob.escape(location)}-{digits}-of-{digits}") if loc.isfile(p))


def missing_shards(location: str) -> list[str]:
    """The shards a ``...-?????-of-NNNNN`` pattern calls for that are not on disk."""
    m = re.match(r"^(?P<base>.+)-\?{5}-of-(?P<count>\d{5})$", location)
    if m is None:
        return []
    count = int(m.group("count"))
    expected = [f"{m.group('base')}-{i:05d}-of-{count:05d}" for i in range(min(count, 100_000))]
    return [p for p in expected if not loc.isfile(p)]


def shard_pattern(path: str) -> str:
    """``model.ckpt-7-00001-of-00002`` -> ``model.ckpt-7-?????-of-00002`` (what the Saver and state file name)."""
    m = V1_SHARD_RE.match(path)
    return f"{m.group('base')}-?????-of-{m.group('count')}" if m else path


# How an uncompressed V1 file begins: the first record's header (shared 0, key length 0, a varint value length)
# and the first byte of its SavedTensorSlices (field 1, meta). Recognises a V1 file whose end is cut off.
_V1_HEAD = re.compile(rb"\x00\x00[\x80-\xff]{0,4}[\x00-\x7f]\x0a")


def looks_like_table(path: str) -> bool:
    """A regular file ending in the table magic number, or beginning as a V1 file does (a cheap test before the
    table of contents is read)."""
    from ckptcheck.formats.tensorflow.sstable import FOOTER_SIZE, TABLE_MAGIC

    try:
        with open_regular(path) as f:
            head = f.read(8)
            size = file_size(f)
            if _V1_HEAD.match(head):
                return True
            if size < FOOTER_SIZE:
                return False
            f.seek(size - 8)
            return int.from_bytes(f.read(8), "little") == TABLE_MAGIC
    except (OSError, UnsupportedFormatError):
        return False


def encode_slice_key(name: bytes, extents: tuple[Extent, ...]) -> bytes:
    """OrderedCode of (name, slice) as EncodeTensorNameSlice writes it: 0x00, the escaped name, 0x00 0x01, the rank,
    then each dimension's start and length (a full dimension is start 0, length -1)."""
    out = bytearray(b"\x00")
    out += _ESCAPED.sub(lambda m: b"\x00\xff" if m.group() == b"\x00" else b"\xff\x00", name)
    out += b"\x00\x01"
    out += _ordered_uint(len(extents))
    for start, length in extents:
        out += _ordered_signed(start)
        out += _ordered_signed(length)
    return bytes(out)


def _ordered_uint(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


# Header bits of an OrderedCode signed number of 1..10 bytes (ordered_code.cc, kLengthToHeaderBits).
_HEADER_BITS = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0), (0xFF, 0),
                (0xFF, 0x80), (0xFF, 0xC0)]


def _ordered_signed(value: int) -> bytes:
    magnitude = ~value if value < 0 else value
    length = 1
    while 7 * length - 1 < magnitude.bit_length():  # a length-byte number carries 7*length - 1 payload bits
        length += 1
    body = bytearray((value & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    first, second = _HEADER_BITS[length]
    body[0] ^= first
    if length > 1:
        body[1] ^= second
    return bytes(body)


# --- TensorProto values ----------------------------------------------------------------------------------------


def _varints(data: bytes | memoryview) -> np.ndarray:
    """Packed base-128 varints as uint64, decoded with numpy (an int_val of millions of elements stays fast)."""
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size == 0 or ends[-1] != raw.size - 1:
        raise DecodeError("truncated packed varint")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > 10:
        raise DecodeError("varint longer than 10 bytes")
    out = np.zeros(ends.size, dtype=np.uint64)
    for k in range(int(lengths.max())):
        has = lengths > k
        idx = starts[has] + k
        out[has] |= (raw[idx].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
    return out


def _values(dtype: DType, proto: memoryview, count: int, where: str) -> np.ndarray:
    """A slice's ``count`` values from its TensorProto, as a flat array of ``dtype``. Packed floats come back as a
    read-only view of the record (no copy); other encodings are decoded into a new array."""
    import numpy as np

    field = _VALUE_FIELD.get(dtype.enum)
    if field is None or not (dtype.readable or dtype.is_string):
        raise UnsupportedFormatError(f"V1 checkpoints store no values of dtype {dtype.name} ckptcheck can read")
    if dtype.is_string:
        strings = [bytes(as_view(v, "string_val")) for n, _w, v in iter_fields(proto) if n == _STRING_VAL]
        out = np.empty(len(strings), dtype=object)
        out[:] = strings
        return _counted(out, count, where)
    pieces: list[np.ndarray] = []
    content: memoryview | None = None
    for number, wire, value in iter_fields(proto):
        if number == _TENSOR_CONTENT:
            content = as_view(value, "tensor_content")
        elif number == field:
            pieces.append(_field_values(field, wire, value))
    target = dtype.numpy
    if content is not None and not pieces:
        if len(content) != count * target.itemsize:
            raise CorruptCheckpointError(f"{where}: tensor_content holds {len(content)} bytes, the slice needs "
                                         f"{count * target.itemsize}")
        return np.frombuffer(content, dtype=target.newbyteorder("<")).astype(target, copy=False)
    flat = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
    if field in (_SCOMPLEX_VAL, _DCOMPLEX_VAL):
        if flat.size % 2:
            raise CorruptCheckpointError(f"{where}: complex values come in an odd number of parts")
        return _counted(flat.view(target), count, where)
    if field == _HALF_VAL:  # the 16 bits of each float16 / bfloat16, held in an int32
        return _counted(flat.astype(np.uint16).view(target), count, where)
    if field in (_FLOAT_VAL, _DOUBLE_VAL):
        return _counted(flat, count, where)
    if field == _BOOL_VAL:
        return _counted(flat != 0, count, where)
    # Integers: varints of the value's 64-bit two's complement (an int32 -1 is ten bytes), cast down as TensorFlow
    # casts its int32 field to int8 or uint8.
    return _counted(flat.view(np.int64).astype(target), count, where)


def _field_values(field: int, wire: int, value: int | memoryview) -> np.ndarray:
    """One occurrence of a repeated numeric field, packed (LENGTH) or single, as a flat array."""
    import numpy as np

    floating = {_FLOAT_VAL: "<f4", _SCOMPLEX_VAL: "<f4", _DOUBLE_VAL: "<f8", _DCOMPLEX_VAL: "<f8"}.get(field)
    if wire == LENGTH:
        data = as_view(value, "values")
        if floating is not None:
            size = np.dtype(floating).itemsize
            if len(data) % size:
                raise DecodeError("packed values of a width that does not divide their bytes")
            return np.frombuffer(data, dtype=floating).astype(floating[1:], copy=False)
        return _varints(data)
    if not isinstance(value, int):
        raise DecodeError("a value with the wrong wire type")
    number = value
    if floating is not None:
        width = 4 if floating == "<f4" else 8
        if wire != (FIXED32 if width == 4 else FIXED64):
            raise DecodeError("a float value with the wrong wire type")
        return np.frombuffer(number.to_bytes(width, "little"), dtype=floating).astype(floating[1:])
    if wire != VARINT:
        raise DecodeError("an integer value with the wrong wire type")
    return np.array([number], dtype=np.uint64)


def _counted(values: np.ndarray, count: int, where: str) -> np.ndarray:
    if values.size != count:
        raise CorruptCheckpointError(f"{where}: the record holds {values.size} values, the slice has {count}")
    return values


# --- the reader ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V1Slice:
    file: int  # which of the checkpoint's files holds it
    extents: tuple[Extent, ...]  # as recorded (length -1: the whole dimension), what its key encodes


@dataclass
class V1Tensor:
    name: str
    key_name: bytes
    dtype: DType
    shape: tuple[int, ...]
    slices: list[V1Slice]

    @property
    def is_whole(self) -> bool:
        """Stored as one slice covering the tensor (a variable that was not partitioned)."""
        if len(self.slices) != 1:
            return False
        return all(length < 0 or (start == 0 and length == dim)
                   for (start, length), dim in zip(self.slices[0].extents, self.shape, strict=False))


def _normalized(extents: tuple[Extent, ...], shape: tuple[int, ...]) -> tuple[Extent, ...]:
    return tuple((0, shape[i]) if length < 0 else (start, length) for i, (start, length) in enumerate(extents))


class V1Reader(CheckpointReader):
    """A V1 checkpoint: one table, or the shards of one, each holding its own table of contents."""

    format = TF1

    def __init__(self, location: str, *, path: str | None = None) -> None:
        self.location = location
        self.path = path or location
        self.files = v1_files(location)
        if not self.files:
            raise CheckpointNotFoundError("no V1 checkpoint files match", path=location)
        self.tables: list[SSTable] = []
        self._tensors: dict[str, V1Tensor] = {}
        self.versions = Versions()
        try:
            for i, f in enumerate(self.files):
                self.tables.append(SSTable.open(f, in_memory=False))
                self._read_meta(i)
        except BaseException:
            self.close()
            raise

    def _read_meta(self, file: int) -> None:
        path = self.files[file]
        first = self.tables[file].first()
        if first is None or first[0] != _META_KEY:
            raise UnsupportedFormatError(
                "a sorted table without a V1 table of contents (no record under the empty key)", path=path,
                hint="V1 checkpoints begin with a SavedTensorSliceMeta; this table holds something else",
            )
        try:
            meta = b""
            for number, _w, value in iter_fields(bytes(first[1])):
                if number == 1:
                    meta = as_bytes(value, "meta")
            entries = []
            for number, _w, value in iter_fields(meta):
                if number == 1:
                    entries.append(as_bytes(value, "tensor"))
                elif number == 2:
                    self.versions = decode_versions(as_bytes(value, "versions"))
            check_versions(self.versions, path=path, what="the V1 checkpoint's")
            with paused_gc():
                for entry in entries:
                    self._add_tensor(file, entry, path)
        except DecodeError as exc:
            raise CorruptCheckpointError(f"bad table of contents: {exc.message}", path=path) from None

    def _add_tensor(self, file: int, entry: bytes, path: str) -> None:
        key_name = b""
        shape: tuple[int, ...] = ()
        dtype_enum = 0
        slices: list[tuple[Extent, ...]] = []
        for number, _w, value in iter_fields(entry):
            if number == 1:
                key_name = as_bytes(value, "name")
            elif number == 2:
                shape, unknown = decode_shape(as_bytes(value, "shape"))
                if unknown:
                    raise CorruptCheckpointError("a tensor of unknown rank", path=path,
                                                 tensor=key_name.decode("utf-8", "surrogateescape"))
            elif number == 3:
                dtype_enum = as_int(value, "type")
            elif number == 4:
                slices.append(decode_slice(as_bytes(value, "slice")))
        name = key_name.decode("utf-8", "surrogateescape")
        if any(d < 0 for d in shape):
            raise CorruptCheckpointError(f"the tensor has an invalid shape {list(shape)}", path=path, tensor=name)
        dtype = dtypes.from_enum(dtype_enum)
        known = self._tensors.get(name)
        if known is None:
            known = self._tensors[name] = V1Tensor(name, key_name, dtype, shape, [])
        elif known.shape != shape or known.dtype != dtype:
            raise CorruptCheckpointError(
                f"{os.path.basename(path)} records it as {dtype.name} {list(shape)}, "
                f"{os.path.basename(self.files[known.slices[0].file])} as {known.dtype.name} {list(known.shape)}",
                path=path, tensor=name,
            )
        known.slices.extend(V1Slice(file, extents) for extents in slices)

    # -- listing --

    @cached_property
    def _info(self) -> CheckpointInfo:
        tensors = []
        with paused_gc():
            for name in sorted(self._tensors):
                t = self._tensors[name]
                size = 1
                for d in t.shape:
                    size *= d
                nbytes = size * t.dtype.itemsize if not t.dtype.is_string else self._record_bytes(t)
                slices = 0 if t.is_whole else len(t.slices)
                file = os.path.basename(self.files[t.slices[0].file]) if t.slices else None
                tensors.append(listed_tensor(name, t.dtype.name, t.shape, nbytes, slices, file, name))
        files = list(self.files)
        meta = self._meta_file()
        if meta is not None:
            files.append(meta)
        return CheckpointInfo(
            format=TF1,
            path=self.path,
            location=self.location,
            files=tuple(files),
            tensors=tuple(tensors),
            shards=len(self.files),
            writer=f"V1 tensor slices (TensorSliceReader format), producer version {self.versions.producer}",
            metadata={"checksum": "table blocks only (V1 stores no per-tensor checksum)"},
        )

    def _record_bytes(self, t: V1Tensor) -> int:
        """What a string tensor's records take in the file (its values' size is not known before they are read).
        A record that cannot be read counts 0 here; reading the tensor reports the damage."""
        total = 0
        for s in t.slices:
            with contextlib.suppress(CorruptCheckpointError):
                total += len(self.tables[s.file].get(encode_slice_key(t.key_name, s.extents)) or b"")
        return total

    def _meta_file(self) -> str | None:
        base = shard_pattern(self.location) if not is_v1_pattern(self.location) else self.location
        m = re.match(r"^(?P<base>.+)-\?{5}-of-\d{5}$", base)
        candidate = (m.group("base") if m else base) + ".meta"
        return candidate if loc.isfile(candidate) else None

    def info(self) -> CheckpointInfo:
        return self._info

    # -- values --

    def v1_tensor(self, name: str) -> V1Tensor:
        t = self._tensors.get(name)
        if t is None:
            raise self.not_found(name)
        return t

    def _tiling(self, t: V1Tensor) -> list[tuple[tuple[Extent, ...], V1Slice]]:
        """The tensor's slices, checked to tile its shape exactly (slices.tiling_problem)."""
        out = [(_normalized(s.extents, t.shape), s) for s in t.slices]
        problem = tiling_problem(t.shape, [norm for norm, _ in out])
        if problem is not None:
            raise CorruptCheckpointError(problem, path=self.files[t.slices[0].file] if t.slices else self.location,
                                         tensor=t.name)
        return out

    def read_slice(self, t: V1Tensor, s: V1Slice) -> np.ndarray:
        """One slice's values, flat, in C order of the slice."""
        path = self.files[s.file]
        norm = _normalized(s.extents, t.shape)
        count = 1
        for _, length in norm:
            count *= length
        shown = format_extents(norm)
        try:
            record = self.tables[s.file].get(encode_slice_key(t.key_name, s.extents))
        except CorruptCheckpointError as exc:  # a damaged block: name the tensor whose record it holds
            raise CorruptCheckpointError(exc.message, path=path, tensor=t.name, hint=exc.hint) from None
        if record is None:
            raise CorruptCheckpointError(f"slice {shown} is listed but has no record in the file", path=path,
                                         tensor=t.name)
        try:
            # Walked as views: a slice's values may be most of a large record, and each bytes slice is a copy.
            data = memoryview(b"")
            for number, _w, value in iter_fields(memoryview(record)):
                if number == 2:
                    data = as_view(value, "data")
            stored_name = None
            stored_slice: tuple[Extent, ...] | None = None
            proto = memoryview(b"")
            for number, _w, value in iter_fields(data):
                if number == 1:
                    stored_name = bytes(as_view(value, "name"))
                elif number == 2:
                    stored_slice = decode_slice(bytes(as_view(value, "slice")))
                elif number == 3:
                    proto = as_view(value, "data")
            if stored_name is not None and stored_name != t.key_name:
                raise CorruptCheckpointError(f"the record of slice {shown} names another tensor, "
                                             f"{stored_name.decode('utf-8', 'backslashreplace')!r}", path=path,
                                             tensor=t.name)
            if stored_slice is not None and _normalized(stored_slice, t.shape) != norm:
                raise CorruptCheckpointError(f"the record of slice {shown} holds slice "
                                             f"{format_extents(_normalized(stored_slice, t.shape))}", path=path,
                                             tensor=t.name)
            return _values(t.dtype, proto, count, f"slice {shown}")
        except DecodeError as exc:
            raise CorruptCheckpointError(f"bad record of slice {shown}: {exc.message}", path=path,
                                         tensor=t.name) from None
        except UnsupportedFormatError as exc:
            raise UnsupportedFormatError(exc.message, path=path, tensor=t.name) from None
        except CorruptCheckpointError as exc:
            if exc.path is None:
                raise CorruptCheckpointError(exc.message, path=path, tensor=t.name) from None
            raise

    def read(self, name: str) -> np.ndarray:
        import numpy as np

        t = self.v1_tensor(name)
        check_rank(t.shape, path=self.files[t.slices[0].file] if t.slices else self.location, tensor=name)
        tiling = self._tiling(t)
        if t.is_whole:  # a copy the caller owns (decoded floats are a read-only view of the record)
            return np.array(self.read_slice(t, t.slices[0]), copy=True).reshape(t.shape)
        # Every slice is read, and its value count checked against the shape it claims, before the whole tensor is
        # allocated: the values are real bytes in the file, so a claimed shape alone allocates nothing.
        parts = [(norm, self.read_slice(t, s)) for norm, s in tiling]
        out = np.empty(t.shape, dtype=object if t.dtype.is_string else t.dtype.numpy)
        for norm, values in parts:
            out[tuple(slice(start, start + n) for start, n in norm)] = values.reshape([n for _, n in norm])
        return out

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """One slice at a time (a V1 slice is one table record), in C order of each slice; a tensor that is not
        partitioned comes out in C order of the whole."""
        t = self.v1_tensor(name)
        for _norm, s in self._tiling(t):
            values = self.read_slice(t, s)
            if values.dtype == object or values.nbytes <= chunk_bytes:
                yield values
                continue
            step = max(1, chunk_bytes // max(1, values.itemsize))
            for start in range(0, values.size, step):
                yield values[start : start + step]
            del values  # it views a record of the file: let it go before the next slice is read

    def iter_c_order(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """C order of the whole; a partitioned variable slice by slice through slices.stream_c_order, each slice's
        record decoded when the walk first reaches it and dropped when the walk has passed it (one or two at a
        time for the row partitions TF1 partitioners write)."""
        t = self.v1_tensor(name)
        if t.is_whole or t.dtype.is_string or not t.shape:
            yield from super().iter_c_order(name, chunk_bytes)
            return
        tiling = self._tiling(t)
        decoded: dict[int, np.ndarray] = {}

        def fetch(i: int, first: int, count: int) -> np.ndarray:
            values = decoded.get(i)
            if values is None:
                values = decoded[i] = self.read_slice(t, tiling[i][1])
            if first + count == values.size:
                del decoded[i]
            return values[first : first + count]

        yield from stream_c_order(t.shape, [norm for norm, _ in tiling], t.dtype.numpy, chunk_bytes, fetch)

    def parts(self, name: str) -> list[V1Slice]:
        t = self.v1_tensor(name)
        return [s for _, s in self._tiling(t)]

    def close(self) -> None:
        for table in self.tables:
            table.close()
        self.tables = []


def unused_records(reader: V1Reader, file: int, keys: Iterable[bytes]) -> list[str]:
    """Of a file's keys, the records its table of contents does not list (a structural problem for verify)."""
    listed = {encode_slice_key(t.key_name, s.extents) for t in reader._tensors.values() for s in t.slices
              if s.file == file}
    out = []
    for key in keys:
        if key == _META_KEY or key in listed:
            continue
        try:
            name, extents = decode_slice_key(key)
            out.append(f"{name} {format_extents(extents)}")
        except DecodeError:
            out.append(key.decode("utf-8", "surrogateescape"))
    return out
