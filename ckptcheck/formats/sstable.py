"""Reader for the LevelDB-style sorted table that a tensor bundle's ``.index`` file is.

Layout (tensorflow/tsl/lib/io/table.cc, block.cc, format.cc): data blocks, a metaindex block, an index block
mapping a separator key to each data block's handle, and a 48-byte footer ending in a magic number. Every block
is followed by a 5-byte trailer (compression type, masked crc32c), which is verified on every read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.formats.checksum import crc32c
from ckptcheck.formats.protobuf import DecodeError, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_NO_COMPRESSION = 0
_SNAPPY = 1
_MASK_DELTA = 0xA282EAD8
# An index this large is not a checkpoint index; refuse rather than read it into memory.
MAX_INDEX_BYTES = 2 << 30


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int


@dataclass(frozen=True)
class BlockProblem:
    """A damaged block found while scanning the whole table (used by verification)."""

    offset: int
    size: int
    message: str


class SSTable:
    """An in-memory view of a table file; blocks are checked and decoded lazily, in key order."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data
        if len(data) < FOOTER_SIZE:
            raise self._error(
                f"file is too short to be an index ({len(data)} bytes, a table footer alone is {FOOTER_SIZE})",
                hint="the .index file is empty or truncated" if data else "the .index file is empty",
            )
        footer = data[-FOOTER_SIZE:]
        (magic,) = struct.unpack_from("<Q", footer, 40)
        if magic != TABLE_MAGIC:
            raise self._error(
                "not an sstable (bad magic number)",
                hint="this is not a TensorFlow .index file, or it is truncated",
            )
        try:
            meta_off, pos = read_varint(footer, 0, 40)
            meta_size, pos = read_varint(footer, pos, 40)
            idx_off, pos = read_varint(footer, pos, 40)
            idx_size, pos = read_varint(footer, pos, 40)
        except DecodeError as exc:
            raise self._error(f"bad table footer: {exc.message}") from None
        self.metaindex_handle = BlockHandle(meta_off, meta_size)
        self.index_handle = BlockHandle(idx_off, idx_size)

    @classmethod
    def open(cls, path: str) -> SSTable:
        try:
            size = os.path.getsize(path)
            if size > MAX_INDEX_BYTES:
                raise CorruptCheckpointError(
                    f"file is {size} bytes, far larger than any checkpoint index", path=path
                )
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CorruptCheckpointError(f"cannot read: {exc.strerror}", path=path) from None
        return cls(path, data)

    def _error(self, message: str, hint: str | None = None) -> CorruptCheckpointError:
        return CorruptCheckpointError(message, path=self.path, hint=hint)

    def read_block(self, handle: BlockHandle) -> bytes:
        """Return a block's contents after checking its bounds, trailer and checksum."""
        end = handle.offset + handle.size + BLOCK_TRAILER_SIZE
        if end > len(self.data) - FOOTER_SIZE:
            raise self._error(
                f"truncated block read (block at byte {handle.offset}, {handle.size} bytes, "
                f"runs past the end of the {len(self.data)}-byte file)"
            )
        contents = self.data[handle.offset : handle.offset + handle.size]
        ctype = self.data[handle.offset + handle.size]
        (stored,) = struct.unpack_from("<I", self.data, handle.offset + handle.size + 1)
        actual = crc32c(self.data[handle.offset : handle.offset + handle.size + 1])
        if unmask_crc(stored) != actual:
            raise self._error(f"block checksum mismatch (block at byte {handle.offset}, {handle.size} bytes)")
        if ctype == _NO_COMPRESSION:
            return contents
        if ctype == _SNAPPY:
            raise self._error(
                f"block at byte {handle.offset} is Snappy-compressed, which ckptcheck does not read",
                hint="TensorFlow never compresses bundle indexes; this file was written by another tool",
            )
        raise self._error(f"block at byte {handle.offset} has unknown compression type {ctype}")

    def _block_entries(self, block: bytes, where: int) -> Iterator[tuple[bytes, bytes]]:
        n = len(block)
        if n < 4:
            raise self._error(f"bad block contents (block at byte {where} is {n} bytes)")
        (num_restarts,) = struct.unpack_from("<I", block, n - 4)
        limit = n - 4 - 4 * num_restarts
        if limit < 0:
            raise self._error(f"bad block contents (block at byte {where} claims {num_restarts} restarts)")
        pos = 0
        key = b""
        while pos < limit:
            # Fast path: the three header varints are almost always one byte each.
            shared = block[pos]
            non_shared = block[pos + 1] if pos + 1 < limit else 0x80
            value_len = block[pos + 2] if pos + 2 < limit else 0x80
            if (shared | non_shared | value_len) < 0x80:
                pos += 3
            else:
                try:
                    shared, pos = read_varint(block, pos, limit)
                    non_shared, pos = read_varint(block, pos, limit)
                    value_len, pos = read_varint(block, pos, limit)
                except DecodeError:
                    raise self._error(f"bad entry in block (block at byte {where})") from None
            if shared > len(key) or pos + non_shared + value_len > limit:
                raise self._error(f"bad entry in block (block at byte {where})")
            key = key[:shared] + block[pos : pos + non_shared]
            pos += non_shared
            yield key, block[pos : pos + value_len]
            pos += value_len

    def data_block_handles(self) -> list[BlockHandle]:
        index = self.read_block(self.index_handle)
        handles = []
        for _key, value in self._block_entries(index, self.index_handle.offset):
            try:
                off, p = read_varint(value, 0)
                size, _ = read_varint(value, p)
            except DecodeError:
                raise self._error("bad block handle in the index block") from None
            handles.append(BlockHandle(off, size))
        return handles

    def items(self, problems: list[str] | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) in key order, checking each block's checksum as it is read.

        With a ``problems`` list, a damaged data block is recorded there and skipped instead of raising, so a
        verification can go on to check the entries of the blocks that are intact.
        """
        previous: bytes | None = None
        for handle in self.data_block_handles():
            try:
                entries = list(self._block_entries(self.read_block(handle), handle.offset))
            except CorruptCheckpointError as exc:
                if problems is None:
                    raise
                problems.append(exc.message)
                continue
            for key, value in entries:
                if previous is not None and key <= previous:
                    raise self._error(f"keys out of order in block at byte {handle.offset}")
                previous = key
                yield key, value

    def scan_problems(self) -> list[BlockProblem]:
        """Check every block's checksum and structure without stopping at the first problem."""
        problems: list[BlockProblem] = []
        try:
            handles = self.data_block_handles()
        except CorruptCheckpointError as exc:
            return [BlockProblem(self.index_handle.offset, self.index_handle.size, f"index block: {exc.message}")]
        try:
            self.read_block(self.metaindex_handle)
        except CorruptCheckpointError as exc:
            problems.append(BlockProblem(self.metaindex_handle.offset, self.metaindex_handle.size,
                                         f"metaindex block: {exc.message}"))
        for handle in handles:
            try:
                for _ in self._block_entries(self.read_block(handle), handle.offset):
                    pass
            except CorruptCheckpointError as exc:
                problems.append(BlockProblem(handle.offset, handle.size, exc.message))
        return problems
