"""A minimal protobuf wire-format decoder: just enough for the few messages a checkpoint holds.

ckptcheck must read checkpoints without TensorFlow (and without the protobuf runtime), so the messages of
tensor_bundle.proto and trackable_object_graph.proto are decoded field by field here.
"""

from __future__ import annotations

from typing import TypeVar

from ckptcheck.errors import CorruptCheckpointError

# Wire types
VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5

_MASK64 = (1 << 64) - 1


class DecodeError(CorruptCheckpointError):
    """A protobuf message or varint could not be decoded."""


def read_varint(buf: bytes | bytearray | memoryview, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode an unsigned base-128 varint (at most 10 bytes) at ``pos``; return (value, next position)."""
    end = len(buf) if limit is None else limit
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint longer than 10 bytes")


def to_int64(value: int) -> int:
    """Reinterpret a decoded uint64 as the int64 it encodes (negative numbers take 10 varint bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


Field = tuple[int, int, "int | bytes"]
# A message given as a memoryview (a large record of a V1 file) yields its length-delimited fields as views.
Buffer = TypeVar("Buffer", bytes, memoryview)


def iter_fields(buf: Buffer) -> list[tuple[int, int, int | Buffer]]:
    """(field number, wire type, value) for each field; LENGTH values are bytes, others ints.

    A list rather than a generator, with one-byte varints decoded inline: listing a checkpoint decodes tens of
    thousands of small messages, and this is where that time goes.
    """
    out: list[tuple[int, int, int | Buffer]] = []
    pos = 0
    end = len(buf)
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire == VARINT:
            if pos < end and buf[pos] < 0x80:
                out.append((number, wire, buf[pos]))
                pos += 1
            else:
                value, pos = read_varint(buf, pos, end)
                out.append((number, wire, value))
        elif wire == LENGTH:
            if pos < end and buf[pos] < 0x80:
                size = buf[pos]
                pos += 1
            else:
                size, pos = read_varint(buf, pos, end)
            if pos + size > end:
                raise DecodeError("length-delimited field runs past the end of its message")
            out.append((number, wire, buf[pos : pos + size]))
            pos += size
        elif wire == FIXED32:
            if pos + 4 > end:
                raise DecodeError("truncated fixed32 field")
            out.append((number, wire, int.from_bytes(buf[pos : pos + 4], "little")))
            pos += 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise DecodeError("truncated fixed64 field")
            out.append((number, wire, int.from_bytes(buf[pos : pos + 8], "little")))
            pos += 8
        else:
            # Groups (3, 4) are not used by any message a checkpoint holds.
            raise DecodeError(f"unsupported wire type {wire}")
    return out


def as_int(value: int | bytes, field: str) -> int:
    if not isinstance(value, int):
        raise DecodeError(f"field {field} has the wrong wire type")
    return value


def as_view(value: int | bytes | memoryview, field: str) -> memoryview:
    """A length-delimited field as a view (no copy), from a message given as bytes or as a memoryview."""
    if isinstance(value, int):
        raise DecodeError(f"field {field} has the wrong wire type")
    return memoryview(value)


def as_bytes(value: int | bytes, field: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"field {field} has the wrong wire type")
    return value
