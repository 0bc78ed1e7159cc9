"""safetensors files (``*.safetensors``): read and checked as the safetensors library checks them, and written.

The layout: 8 bytes, the header's length N as a little-endian u64; N bytes of UTF-8 JSON, an object mapping each
tensor's name to ``{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`` plus an optional
``"__metadata__"`` object of strings; then the data, each tensor's bytes little-endian in C order at
``data_offsets`` (counted from the end of the header). There is no checksum of any kind.

The rules the library (safetensors 0.4 - 0.8, ``Metadata::validate`` and ``read_metadata``) holds a file to, each
checked here: the header is at most 100,000,000 bytes and lies inside the file; it is UTF-8 JSON of that shape
(dims and offsets non-negative integers, the metadata's values strings, a dtype it names); sorted by offsets the
tensors start at 0 and follow each other without a gap or an overlap; each takes exactly its shape's element
count times its dtype's size; and the last ends where the file ends. The library stops at the first broken rule;
here every broken rule is found (``SafetensorsReader.layout_problems``), so ``verify`` names them all.

The header is parsed within bounds: its JSON items are counted before it is parsed (jsonlimits), and each
tensor's record is reduced to a small tuple as the parser builds it, so a hostile header of many tiny tensors does
not become gigabytes of Python dicts. Values are streamed through one reused buffer.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from ckptcheck.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats.files import file_size, open_regular
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader, check_rank, paused_gc, read_buffer
from ckptcheck.records import SAFETENSORS, CheckpointInfo, listed_tensor

if TYPE_CHECKING:
    import numpy as np

SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's MAX_HEADER_SIZE
METADATA_KEY = "__metadata__"
# __metadata__ entries ckptcheck's export writes: JSON objects mapping each tensor's name to the key it was stored
# under in the source checkpoint, and to the variable it holds (TensorInfo.variable is read from the latter).
KEYS_METADATA = "ckptcheck.keys"
VARIABLES_METADATA = "ckptcheck.variables"
_LONG_METADATA = 200  # metadata values longer than this are listed by their length (inspect shows metadata)


class Dtype(NamedTuple):
    name: str  # as safetensors names it: F32, BF16, ...
    bits: int  # per element
    tf_name: str  # TensorFlow's / ml_dtypes' name, as TensorInfo.dtype holds dtypes
    numpy: bool  # whether values can be read as a numpy array (the packed 4- and 6-bit floats cannot)


# Every dtype safetensors 0.8 knows, in its own order (of increasing alignment).
DTYPES: dict[str, Dtype] = {d.name: d for d in (
    Dtype("BOOL", 8, "bool", True),
    Dtype("F4", 4, "float4_e2m1fn", False),
    Dtype("F6_E2M3", 6, "float6_e2m3fn", False),
    Dtype("F6_E3M2", 6, "float6_e3m2fn", False),
    Dtype("U8", 8, "uint8", True),
    Dtype("I8", 8, "int8", True),
    Dtype("F8_E5M2", 8, "float8_e5m2", True),
    Dtype("F8_E4M3", 8, "float8_e4m3fn", True),
    Dtype("F8_E8M0", 8, "float8_e8m0fnu", True),
    Dtype("F8_E4M3FNUZ", 8, "float8_e4m3fnuz", True),
    Dtype("F8_E5M2FNUZ", 8, "float8_e5m2fnuz", True),
    Dtype("I16", 16, "int16", True),
    Dtype("U16", 16, "uint16", True),
    Dtype("F16", 16, "float16", True),
    Dtype("BF16", 16, "bfloat16", True),
    Dtype("I32", 32, "int32", True),
    Dtype("U32", 32, "uint32", True),
    Dtype("F32", 32, "float32", True),
    Dtype("C64", 64, "complex64", True),
    Dtype("F64", 64, "float64", True),
    Dtype("I64", 64, "int64", True),
    Dtype("U64", 64, "uint64", True),
)}
# What ckptcheck export writes: TensorFlow's dtype name -> the safetensors name, for the dtypes every safetensors
# release since 0.3 reads (F8_E8M0, the fnuz float8s and C64 came later; a file holding one is refused whole by
# older readers).
WRITABLE = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
            "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
            "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}
_U64 = 1 << 64
_INT = {int}


def numpy_dtype(dtype: Dtype) -> np.dtype:
    """The little-endian numpy dtype of a safetensors dtype whose values numpy holds."""
    import numpy as np

    from ckptcheck.formats.tensorflow import dtypes

    if dtype.tf_name == "float8_e8m0fnu":
        import ml_dtypes

        found = getattr(ml_dtypes, "float8_e8m0fnu", None)
        if found is None:
            raise UnsupportedFormatError("values of dtype F8_E8M0 need ml_dtypes 0.5 or later")
        e8m0: np.dtype = np.dtype(found)
        return e8m0
    found_dtype: np.dtype = dtypes.numpy_dtype(dtype.tf_name).newbyteorder("<")
    return found_dtype


class Entry(NamedTuple):
    """One tensor as the header describes it."""

    name: str
    dtype: Dtype
    shape: tuple[int, ...]
    start: int  # data_offsets, from the end of the header
    end: int


class Header(NamedTuple):
    length: int  # N, the header's bytes
    entries: tuple[Entry, ...]  # in the order of their offsets
    metadata: dict[str, str] | None
    data_bytes: int  # what the file holds after the header

    @property
    def data_start(self) -> int:
        return 8 + self.length


class _Record(NamedTuple):
    """A tensor's JSON object as the parser hands it over, before it is checked (built as a plain tuple by the
    parser's hook: a NamedTuple's own constructor costs a Python call per tensor)."""

    dtype: Any
    shape: Any
    offsets: Any


_new_tuple = tuple.__new__


class _Pairs(list[tuple[str, Any]]):
    """Any other JSON object, kept as its (key, value) pairs so that a name given twice is seen."""


def _object(pairs: list[tuple[str, Any]]) -> Any:
    if len(pairs) >= 3:
        d = dict(pairs)
        shape, offsets = d.get("shape"), d.get("data_offsets")
        if len(d) == len(pairs) and "dtype" in d and isinstance(shape, list) and isinstance(offsets, list):
            # A tensor's record, reduced at once: its dict and lists are freed as the parse goes on.
            dt = d["dtype"]
            known = DTYPES.get(dt) if isinstance(dt, str) else None
            return _new_tuple(_Record, (known if known is not None else dt, tuple(shape), tuple(offsets)))
    return _Pairs(pairs)


def _is_count(value: Any) -> bool:
    """A JSON integer a Rust usize holds (what the library's serde accepts for a dim or an offset)."""
    return type(value) is int and 0 <= value < _U64


def _entry(name: str, value: Any, *, path: str) -> Entry:
    """One tensor's record, checked as the library's deserializer checks it (fields it does not know are
    ignored, as it ignores them)."""
    def bad(message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"the header's record of the tensor {message}", path=path, tensor=name,
                                      hint="the file is damaged or was not written as safetensors")

    if isinstance(value, _Pairs):
        fields = [k for k, _ in value]
        twice = sorted({k for k in fields if fields.count(k) > 1})
        if twice:
            raise bad(f"gives {', '.join(twice)} twice")
        missing = [f for f in ("dtype", "shape", "data_offsets") if f not in fields]
        if missing:
            raise bad(f"has no {', '.join(missing)}")
        d = dict(value)
        value = _Record(DTYPES.get(d["dtype"], d["dtype"]) if isinstance(d["dtype"], str) else d["dtype"],
                        d["shape"], d["data_offsets"])
    elif not isinstance(value, _Record):
        raise bad("is not an object")
    if not isinstance(value.dtype, Dtype):
        if isinstance(value.dtype, str):
            raise UnsupportedFormatError(
                f"the tensor's dtype {value.dtype[:40]!r} is none the safetensors format defines", path=path,
                tensor=name, hint=f"safetensors dtypes are {', '.join(DTYPES)}")
        raise bad("has a dtype that is not a string")
    if not (isinstance(value.shape, tuple) and all(_is_count(d) for d in value.shape)):
        raise bad(f"has an invalid shape {_short(value.shape)} (a list of non-negative integers)")
    offsets = value.offsets
    if not (isinstance(offsets, tuple) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise bad(f"has invalid data_offsets {_short(offsets)} (two non-negative integers)")
    return Entry(name, value.dtype, value.shape, offsets[0], offsets[1])


def _short(value: Any) -> str:
    text = json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_header(f: IO[bytes], size: int, *, path: str) -> Header:
    """The header of an open safetensors file of ``size`` bytes, its syntax checked; the layout of the offsets is
    checked by layout_problems. A header the library would not parse raises CorruptCheckpointError (a dtype it
    does not define, UnsupportedFormatError)."""
    if size < 8:
        raise CorruptCheckpointError(f"the file is {size} bytes, shorter than the 8-byte length that starts a "
                                     "safetensors file", path=path)
    f.seek(0)
    prefix = f.read(8)
    if len(prefix) != 8:
        raise CorruptCheckpointError("short read of the header length", path=path)
    (n,) = struct.unpack("<Q", prefix)
    if n > MAX_HEADER_BYTES:
        raise CorruptCheckpointError(f"the header claims {n:,} bytes, more than the {MAX_HEADER_BYTES:,} the "
                                     "safetensors library accepts", path=path,
                                     hint="the file is damaged, crafted, or not a safetensors file")
    if 8 + n > size:
        raise CorruptCheckpointError(f"the header claims {n:,} bytes but the file holds {size - 8:,} after its "
                                     "length", path=path, hint="the file is truncated, or not a safetensors file")
    raw = f.read(n)
    if len(raw) != n:
        raise CorruptCheckpointError("short read of the header", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(f"the header is not UTF-8 (byte {exc.start})", path=path,
                                     hint="the file is damaged, or not a safetensors file") from None
    del raw
    items = text.count(",") + text.count("[") + text.count("{")
    if items > jsonlimits.MAX_JSON_ITEMS:
        raise CorruptCheckpointError(
            f"the header holds about {items:,} JSON items, more than the {jsonlimits.MAX_JSON_ITEMS:,} ckptcheck "
            "parses", path=path, hint="no real safetensors file has a header that large; it is crafted or damaged")
    try:
        top = json.loads(text, object_pairs_hook=_object)
    except RecursionError:
        raise CorruptCheckpointError("the header nests JSON too deeply to parse", path=path) from None
    except ValueError as exc:
        raise CorruptCheckpointError(f"the header is not valid JSON ({exc})", path=path) from None
    del text
    if not isinstance(top, _Pairs):
        raise CorruptCheckpointError("the header is not a JSON object of tensors", path=path)
    metadata: dict[str, str] | None = None
    entries: list[Entry] = []
    seen: set[str] = set()
    for name, value in top:
        if name in seen:
            raise CorruptCheckpointError("the header names this tensor twice", path=path, tensor=name)
        seen.add(name)
        if name == METADATA_KEY:
            if value is None:
                continue
            if not (isinstance(value, _Pairs) and all(isinstance(v, str) for _, v in value)):
                raise CorruptCheckpointError("the header's __metadata__ is not an object of strings", path=path)
            metadata = dict(value)
            continue
        # The common case checked inline (a known dtype, dims and two offsets that are non-negative integers);
        # anything else goes through _entry, which says what is wrong.
        if type(value) is _Record:
            dt, shape, offsets = value
            if (type(dt) is Dtype and len(offsets) == 2 and type(offsets[0]) is int and type(offsets[1]) is int
                    and 0 <= offsets[0] < _U64 and 0 <= offsets[1] < _U64
                    and (not shape or (set(map(type, shape)) == _INT and min(shape) >= 0 and max(shape) < _U64))):
                entries.append(_new_tuple(Entry, (name, dt, shape, offsets[0], offsets[1])))
                continue
        entries.append(_entry(name, value, path=path))
    del top, seen
    entries.sort(key=lambda e: (e.start, e.end))  # as the library orders them before it checks them
    return Header(n, tuple(entries), metadata, size - 8 - n)


def tensor_bytes(dtype: Dtype, shape: Sequence[int]) -> int | None:
    """The bytes a tensor of this dtype and shape takes, or None when its bits do not end on a byte."""
    bits = math.prod(shape) * dtype.bits
    return bits // 8 if bits % 8 == 0 else None


def layout_problems(header: Header, *, path: str) -> list[CorruptCheckpointError]:
    """Every way the tensors' offsets break the library's rules, in offset order: gaps, overlaps, offsets past the
    end of the file, sizes that are not dtype times shape, and data no tensor covers. Empty for a sound file."""
    problems: list[CorruptCheckpointError] = []
    at = 0  # where the next tensor should start
    previous: str | None = None
    for e in header.entries:
        where = f"data_offsets [{e.start}, {e.end}]"
        if e.end < e.start:
            problems.append(CorruptCheckpointError(f"{where} end before they begin", path=path, tensor=e.name))
            continue
        if e.start < at:
            problems.append(CorruptCheckpointError(
                f"{where} overlap the bytes of `{previous}` (which end at {at})", path=path, tensor=e.name))
        elif e.start > at:
            problems.append(CorruptCheckpointError(
                f"{where} leave {e.start - at:,} bytes after " + (f"`{previous}`" if previous else "the header")
                + " that no tensor covers", path=path, tensor=e.name))
        needed = tensor_bytes(e.dtype, e.shape)
        if needed is None:
            problems.append(CorruptCheckpointError(
                f"shape {list(e.shape)} of {e.dtype.name} is not a whole number of bytes", path=path, tensor=e.name))
        elif needed != e.end - e.start:
            problems.append(CorruptCheckpointError(
                f"shape {list(e.shape)} of {e.dtype.name} takes {needed:,} bytes but {where} hold "
                f"{e.end - e.start:,}", path=path, tensor=e.name))
        if e.end > header.data_bytes:
            problems.append(CorruptCheckpointError(
                f"{where} run past the end of the file ({header.data_bytes:,} bytes of data after the header)",
                path=path, tensor=e.name, hint="the file is truncated"))
        if e.end >= at:
            at, previous = e.end, e.name
    if at < header.data_bytes:
        problems.append(CorruptCheckpointError(
            f"the last {header.data_bytes - at:,} bytes of the file are covered by no tensor (the data ends at "
            f"{at:,} of {header.data_bytes:,})", path=path, hint="the file has bytes appended, or a tensor is missing "
            "from its header"))
    return problems


def _recorded(metadata: dict[str, str] | None, key: str, *, path: str) -> dict[str, str]:
    """A JSON object of strings that ckptcheck's export recorded under ``key``; empty when absent or malformed
    (it is only a label)."""
    raw = (metadata or {}).get(key)
    if raw is None:
        return {}
    try:
        found = jsonlimits.loads(raw, what=f"the metadata's {key}", path=path)
    except CorruptCheckpointError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str)}


class SafetensorsReader(CheckpointReader):
    """A ``.safetensors`` file. Opening it reads and checks the header; ``tolerant``: broken offsets are kept in
    ``layout_problems`` (for verify) instead of refusing the file."""

    format = SAFETENSORS

    def __init__(self, location: str, *, path: str | None = None, tolerant: bool = False) -> None:
        self.path = path if path is not None else location
        self.location = location
        try:
            self._f = open_regular(location)
        except FileNotFoundError:
            raise CheckpointNotFoundError("no such file", path=location) from None
        except OSError as exc:
            raise CheckpointNotFoundError(f"cannot read: {exc.strerror}", path=location) from None
        self._spare: Any = None
        try:
            with paused_gc():  # (hundreds of thousands of acyclic tuples: collections only cost time)
                self.header = read_header(self._f, file_size(self._f), path=location)
                self.layout_problems = layout_problems(self.header, path=location)
                if self.layout_problems and not tolerant:
                    first = self.layout_problems[0]
                    more = len(self.layout_problems) - 1
                    raise CorruptCheckpointError(
                        first.message + (f" (and {more} more problem(s); `ckptcheck verify` lists them)"
                                         if more else ""), path=first.path, tensor=first.tensor, hint=first.hint)
                self._entries = {e.name: e for e in self.header.entries}
                self._info = self._make_info()
        except BaseException:
            self._f.close()
            raise

    def _make_info(self) -> CheckpointInfo:
        meta = self.header.metadata
        variables = _recorded(meta, VARIABLES_METADATA, path=self.location)
        tensors = [listed_tensor(e.name, e.dtype.tf_name, e.shape, e.end - e.start, 0, None,
                                 variables.get(e.name, e.name))
                   for e in self.header.entries]
        shown = {k: (v if len(v) <= _LONG_METADATA else f"({len(v):,} characters)") for k, v in (meta or {}).items()}
        return CheckpointInfo(
            format=SAFETENSORS, path=self.path, location=self.location, files=(self.location,),
            tensors=tuple(tensors), writer=None, metadata=shown)

    def info(self) -> CheckpointInfo:
        return self._info

    def entry(self, name: str) -> Entry:
        e = self._entries.get(name)
        if e is None:
            e = self._entries[self.key_of(name)]
        return e

    def recorded_keys(self) -> dict[str, str]:
        """For a file ckptcheck exported: each tensor's key in the checkpoint it came from."""
        return _recorded(self.header.metadata, KEYS_METADATA, path=self.location)

    def _readable(self, e: Entry) -> np.dtype:
        if not e.dtype.numpy:
            raise UnsupportedFormatError(f"values of the packed {e.dtype.bits}-bit dtype {e.dtype.name} cannot be "
                                         "read as an array", path=self.location, tensor=e.name)
        if e.end > self.header.data_bytes or e.end < e.start or tensor_bytes(e.dtype, e.shape) != e.end - e.start:
            raise CorruptCheckpointError(f"data_offsets [{e.start}, {e.end}] do not hold the tensor inside the file",
                                         path=self.location, tensor=e.name)
        return numpy_dtype(e.dtype)

    def _read_at(self, e: Entry, offset: int, view: memoryview) -> None:
        self._f.seek(self.header.data_start + offset)
        done = 0
        while done < len(view):
            got = self._f.readinto(view[done:])
            if not got:
                raise CorruptCheckpointError(f"short read at byte {self.header.data_start + offset + done:,}: the "
                                             "file ends early", path=self.location, tensor=e.name,
                                             hint="the file was truncated after it was opened")
            done += got

    def read(self, name: str) -> np.ndarray:
        from ckptcheck.formats.interface import aligned_empty

        e = self.entry(name)
        dt = self._readable(e)
        check_rank(e.shape, path=self.location, tensor=e.name)
        raw = aligned_empty(e.end - e.start)
        self._read_at(e, e.start, raw.data)
        return raw.view(dt).reshape(e.shape)

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's elements in C order (its storage order), through one reused buffer."""
        import numpy as np

        e = self.entry(name)
        dt = self._readable(e)
        total = e.end - e.start
        step = max(dt.itemsize, chunk_bytes - chunk_bytes % dt.itemsize)
        want = min(step, max(total, dt.itemsize))
        spare, self._spare = self._spare, None  # another iterator interleaving with this one takes its own
        buf = spare if spare is not None and len(spare) >= want else read_buffer(max(want, 1 << 20))
        try:
            whole = memoryview(buf)
            done = 0
            while done < total:
                n = min(want, total - done)
                view = whole[:n]
                self._read_at(e, e.start + done, view)
                done += n
                yield np.frombuffer(view, dtype=dt)
        finally:
            if self._spare is None or len(self._spare) < len(buf):
                self._spare = buf

    def close(self) -> None:
        self._f.close()


def encode_header(entries: Sequence[tuple[str, str, Sequence[int], int, int]], metadata: dict[str, str]) -> bytes:
    """The length prefix and header of a safetensors file: ``entries`` (name, safetensors dtype, shape, begin,
    end) in data order after ``__metadata__``, the JSON padded with spaces to a multiple of 8 bytes as the library
    pads it (so that data starting there is aligned for every dtype). Names must be valid UTF-8."""
    header: dict[str, Any] = {METADATA_KEY: metadata} if metadata else {}
    for name, dtype, shape, begin, end in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
