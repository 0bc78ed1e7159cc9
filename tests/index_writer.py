"""A tiny, test-only writer of tensor-bundle ``.index`` files, for crafting entries TensorFlow would never write.

Written from the format description in FORMATS.md (section 1): one data block, an empty metaindex block, an index
block and the 48-byte footer, each block followed by its 5-byte trailer (type 0, masked crc32c). Keys are written
whole (no prefix compression) with a single restart point; that is a valid table, just not a compact one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import crc32c as _crc32c

MAGIC = 0xDB4775248B80FB57
_MASK_DELTA = 0xA282EAD8

# DataType enum values used by the tests (tensorflow/core/framework/types.proto).
DT_FLOAT = 1
DT_INT32 = 3
DT_STRING = 7
DT_INT64 = 9


def masked_crc(data: bytes) -> int:
    crc = _crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    """Base-128 varint; negative numbers as their 64-bit two's complement (10 bytes), as protobuf does."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- protobuf messages -------------------------------------------------------------------------------------------


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(value)) + value


def _field_fixed32(number: int, value: int) -> bytes:
    return varint((number << 3) | 5) + struct.pack("<I", value)


def header_proto(num_shards: int = 1, endianness: int = 0, producer: int = 1) -> bytes:
    """BundleHeaderProto: num_shards=1, endianness=2, version=3 {producer=1}."""
    out = _field_varint(1, num_shards)
    if endianness:
        out += _field_varint(2, endianness)
    return out + _field_bytes(3, _field_varint(1, producer))


def shape_proto(dims: Sequence[int]) -> bytes:
    return b"".join(_field_bytes(2, _field_varint(1, d)) for d in dims)


def slice_proto(extents: Sequence[tuple[int, int]]) -> bytes:
    """TensorSliceProto; a length of -1 is written as no length (the whole dimension)."""
    out = b""
    for start, length in extents:
        body = _field_varint(1, start) if start else b""
        if length >= 0:
            body += _field_varint(2, length)
        out += _field_bytes(1, body)
    return out


def entry_proto(
    dtype: int,
    shape: Sequence[int],
    *,
    shard_id: int = 0,
    offset: int = 0,
    size: int = 0,
    crc: int | None = None,
    slices: Iterable[Sequence[tuple[int, int]]] = (),
) -> bytes:
    """BundleEntryProto; ``crc`` is the masked crc32c as stored."""
    out = _field_varint(1, dtype) + _field_bytes(2, shape_proto(shape))
    if shard_id:
        out += _field_varint(3, shard_id)
    if offset:
        out += _field_varint(4, offset)
    if size:
        out += _field_varint(5, size)
    if crc is not None:
        out += _field_fixed32(6, crc)
    for extents in slices:
        out += _field_bytes(7, slice_proto(extents))
    return out


# --- OrderedCode keys of slices ----------------------------------------------------------------------------------


def _ordered_signed(value: int) -> bytes:
    """OrderedCode's WriteSignedNumIncreasing, for the small numbers tests use (-64 <= value < 8192)."""
    if -64 <= value < 64:
        return bytes([(0x80 | value) & 0xFF]) if value >= 0 else bytes([0x40 | (value & 0x3F)])
    if 0 <= value < 8192:
        return bytes([0xC0 | (value >> 8), value & 0xFF])
    raise ValueError(f"{value} is outside what this test writer encodes")


def slice_key(name: str, extents: Sequence[tuple[int, int]]) -> bytes:
    """The index key of one slice: 0x00, the escaped name, 0x00 0x01, rank, then (start, length) per dim."""
    escaped = b"".join({0x00: b"\x00\xff", 0xFF: b"\xff\x00"}.get(c, bytes([c])) for c in name.encode())
    out = b"\x00" + escaped + b"\x00\x01" + bytes([1, len(extents)])
    for start, length in extents:
        out += _ordered_signed(start) + _ordered_signed(length)
    return out


# --- the table ---------------------------------------------------------------------------------------------------


def _block(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)  # one restart point, at offset 0


def _with_trailer(contents: bytes, compression: int = 0) -> bytes:
    kind = bytes([compression])
    return contents + kind + struct.pack("<I", masked_crc(contents + kind))


def write_table(entries: Iterable[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    """A complete table holding ``entries``, which are sorted bytewise here as the format requires.

    ``compression`` is only written in the data block's trailer type byte (the contents stay uncompressed)."""
    items = sorted(entries)
    data_block = _block(items)
    out = _with_trailer(data_block, compression)
    data_handle = varint(0) + varint(len(data_block))
    meta_offset = len(out)
    meta_block = _block([])
    out += _with_trailer(meta_block)
    index_offset = len(out)
    last_key = items[-1][0] if items else b""
    index_block = _block([(last_key, data_handle)])
    out += _with_trailer(index_block)
    handles = varint(meta_offset) + varint(len(meta_block)) + varint(index_offset) + varint(len(index_block))
    return out + handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)


def write_index(path: str, tensors: dict[bytes, bytes], num_shards: int = 1) -> None:
    """Write ``path`` holding a bundle header and the given key -> BundleEntryProto entries."""
    with open(path, "wb") as f:
        f.write(write_table([(b"", header_proto(num_shards)), *tensors.items()]))


# --- TrackableObjectGraph ----------------------------------------------------------------------------------------


def object_graph_proto(
    children: Sequence[Sequence[tuple[int, str]]],
    keys: dict[int, str] | None = None,
    slots: Sequence[tuple[int, int, str, int]] = (),
) -> bytes:
    """A TrackableObjectGraph: node i has ``children[i]`` edges (node id, local name); ``keys`` gives a node a
    VARIABLE_VALUE attribute with that checkpoint key; ``slots`` are (optimizer node, variable node, slot name,
    slot node)."""
    nodes = []
    for node_id, edges in enumerate(children):
        body = b"".join(
            _field_bytes(1, _field_varint(1, child) + _field_bytes(2, name.encode())) for child, name in edges
        )
        if keys and node_id in keys:
            attribute = _field_bytes(1, b"VARIABLE_VALUE") + _field_bytes(3, keys[node_id].encode())
            body += _field_bytes(2, attribute)
        for optimizer, variable, slot_name, slot_node in slots:
            if optimizer == node_id:
                body += _field_bytes(3, _field_varint(1, variable) + _field_bytes(2, slot_name.encode())
                                     + _field_varint(3, slot_node))
        nodes.append(_field_bytes(1, body))
    return b"".join(nodes)
