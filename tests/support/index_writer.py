"""A tiny, test-only writer of tensor-bundle ``.index`` files, for crafting entries TensorFlow would never write.

Written from the format description in FORMATS.md (section 1): one data block, an empty metaindex block, an index
block and the 48-byte footer, each block followed by its 5-byte trailer (type 0, masked crc32c). Keys are written
whole (no prefix compression) with a single restart point; that is a valid table, just not a compact one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import crc32c as _crc32c
import numpy as np

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


def versions_proto(producer: int = 1, min_consumer: int = 0, bad_consumers: Sequence[int] = ()) -> bytes:
    """VersionDef: producer=1, min_consumer=2, bad_consumers=3 (repeated)."""
    out = _field_varint(1, producer)
    if min_consumer:
        out += _field_varint(2, min_consumer)
    return out + b"".join(_field_varint(3, v) for v in bad_consumers)


def header_proto(num_shards: int = 1, endianness: int = 0, producer: int = 1, min_consumer: int = 0,
                 bad_consumers: Sequence[int] = ()) -> bytes:
    """BundleHeaderProto: num_shards=1, endianness=2, version=3 (a VersionDef)."""
    out = _field_varint(1, num_shards)
    if endianness:
        out += _field_varint(2, endianness)
    return out + _field_bytes(3, versions_proto(producer, min_consumer, bad_consumers))


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


def block(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)  # one restart point, at offset 0


SNAPPY = 1


def snappy_raw(contents: bytes) -> bytes:
    """Raw Snappy (a varint length, then the stream), as TensorFlow's table builder stores a compressed block."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(contents))


def with_trailer(contents: bytes, compression: int = 0) -> bytes:
    kind = bytes([compression])
    return contents + kind + struct.pack("<I", masked_crc(contents + kind))


def write_table(entries: Iterable[tuple[bytes, bytes]], compression: int = 0, *, compress: bool = False) -> bytes:
    """A complete table holding ``entries``, which are sorted bytewise here as the format requires.

    ``compression`` is written in the data block's trailer type byte; with ``compress`` (and type 1) the contents
    are Snappy-compressed as well, otherwise they are stored as they are under whatever type byte was given."""
    items = sorted(entries)
    data_block = block(items)
    stored = snappy_raw(data_block) if compress and compression == SNAPPY else data_block
    out = with_trailer(stored, compression)
    data_handle = varint(0) + varint(len(stored))
    meta_offset = len(out)
    meta_block = block([])
    out += with_trailer(meta_block)
    index_offset = len(out)
    last_key = items[-1][0] if items else b""
    index_block = block([(last_key, data_handle)])
    out += with_trailer(index_block)
    handles = varint(meta_offset) + varint(len(meta_block)) + varint(index_offset) + varint(len(index_block))
    return out + handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)


def snappy_reencode(table: bytes, *, min_saving: float = 0.0) -> tuple[bytes, int]:
    """The same table with every block (data, metaindex, index) Snappy-compressed as TensorFlow's table builder
    does it, and how many blocks were compressed.

    The builder keeps a block uncompressed unless Snappy saves at least 12.5 % of it; ``min_saving`` 0 compresses
    every block whatever it saves, so tests cover compressed index and metaindex blocks too. Blocks are parsed
    with the test's own walk of the format (FORMATS.md), not with ckptcheck's reader.
    """
    (magic,) = struct.unpack_from("<Q", table, len(table) - 8)
    assert magic == MAGIC
    footer = table[-48:]

    def read_varint_at(buf: bytes, pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value, pos
            shift += 7

    def block_at(offset: int, size: int) -> bytes:
        assert table[offset + size] == 0, "re-encode an uncompressed table"
        return table[offset : offset + size]

    def entries_of(block: bytes) -> list[tuple[bytes, bytes]]:
        (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        limit = len(block) - 4 - 4 * restarts
        pos, key, out = 0, b"", []
        while pos < limit:
            shared, pos = read_varint_at(block, pos)
            non_shared, pos = read_varint_at(block, pos)
            value_len, pos = read_varint_at(block, pos)
            key = key[:shared] + block[pos : pos + non_shared]
            pos += non_shared
            out.append((key, block[pos : pos + value_len]))
            pos += value_len
        return out

    meta_off, p = read_varint_at(footer, 0)
    meta_size, p = read_varint_at(footer, p)
    index_off, p = read_varint_at(footer, p)
    index_size, _ = read_varint_at(footer, p)
    out = bytearray()
    compressed = 0

    def put(contents: bytes) -> bytes:
        nonlocal compressed
        packed = snappy_raw(contents)
        offset = len(out)
        if len(packed) <= len(contents) * (1 - min_saving):
            out.extend(with_trailer(packed, SNAPPY))
            compressed += 1
            size = len(packed)
        else:
            out.extend(with_trailer(contents))
            size = len(contents)
        return varint(offset) + varint(size)

    new_index = []
    for separator, handle in entries_of(block_at(index_off, index_size)):
        offset, q = read_varint_at(handle, 0)
        size, _ = read_varint_at(handle, q)
        new_index.append((separator, put(block_at(offset, size))))
    meta_handle = put(block_at(meta_off, meta_size))
    index_handle = put(block(new_index))
    return bytes(out) + (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", MAGIC), compressed


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


def write_scalars(prefix: str, n: int) -> None:
    """A bundle of ``n`` float32 scalars holding 0, 1, 2, ..., named ``layer_{i // 10}/kernel_{i % 10}`` (numbers
    of several widths, out of natural order in the index's byte order): ``prefix``.index and its one data file."""
    data = np.arange(n, dtype="<f4").tobytes()
    write_index(prefix + ".index", {
        f"layer_{i // 10}/kernel_{i % 10}".encode(): entry_proto(DT_FLOAT, [], offset=4 * i, size=4,
                                                                 crc=masked_crc(data[4 * i:4 * i + 4]))
        for i in range(n)})
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(data)

