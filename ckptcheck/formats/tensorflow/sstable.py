"""Reader for the LevelDB-style sorted table: a tensor bundle's ``.index`` file, and each file of a V1 checkpoint.

Layout (tensorflow/tsl/lib/io/table.cc, block.cc, format.cc): data blocks, a metaindex block, an index block
mapping a separator key to each data block's handle, and a 48-byte footer ending in a magic number. Every block
is followed by a 5-byte trailer (compression type, masked crc32c of the stored bytes and the type byte), which is
verified on every read. TensorFlow's table builder Snappy-compresses a block (type 1) when its build has Snappy
and that saves at least 12.5 % (table_builder.cc): many 1.x and 2.x releases did, so such blocks are read here
(raw Snappy through cramjam, imported when the first compressed block appears).

A bundle's index is small and read whole into memory; a V1 checkpoint keeps its values in the table, so it is
read block by block from the file (``SSTable.open(path, in_memory=False)``), and so is an index too large to read
whole (a sparse 2 GB file costs only the blocks its footer points at). A block too large to read lightly has its
checksum checked in pieces before it is read: a damaged one claiming gigabytes costs no memory.
"""

from __future__ import annotations

import bisect
import operator
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, cast

from ckptcheck.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats.files import file_size, open_regular
from ckptcheck.formats.tensorflow.checksum import crc32c
from ckptcheck.formats.tensorflow.protobuf import DecodeError, read_varint

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_NO_COMPRESSION = 0
_SNAPPY = 1
_MASK_DELTA = 0xA282EAD8
# A value: bytes from a table read into memory, a view of its block from a table read from the file.
Value = bytes | memoryview
# A table up to this size is read whole (one read is the fastest way to a bundle index); larger ones block by block.
IN_MEMORY_BYTES = 64 << 20
# A block larger than this has its checksum checked in pieces before it is read whole.
CHECK_FIRST_BYTES = 16 << 20
# A Snappy stream cannot expand its input more than ~21x (a 3-byte copy of 64 bytes is the best case); a block
# declaring more is damaged, and is refused before anything is allocated for it.
_SNAPPY_MAX_EXPANSION = 24


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


class BlockHandle(NamedTuple):  # a NamedTuple: defined at every start, where a frozen dataclass takes ~1 ms
    offset: int
    size: int


class BlockProblem(NamedTuple):
    """A damaged block found while scanning the whole table (used by verification)."""

    offset: int
    size: int
    message: str


class SSTable:
    """A view of a table file; blocks are read, checked and decoded lazily, in key order.

    ``data`` is the whole file (a bundle index), or None with ``file`` open on it (a V1 checkpoint, whose blocks
    are read one at a time).
    """

    def __init__(self, path: str, data: bytes | None, file: BinaryIO | None = None, size: int | None = None) -> None:
        self.path = path
        self.data = data
        self._file = file
        self.size = len(data) if data is not None else (size or 0)
        self._handles: tuple[list[bytes], list[BlockHandle]] | None = None
        self._cached: tuple[int, list[tuple[bytes, Value]]] | None = None  # the last data block decoded
        self._keys_read: dict[int, list[bytes]] = {}  # data block -> its keys, for blocks read and checked
        if self.size < FOOTER_SIZE:
            raise self._error(
                f"file is too short to be a table ({self.size} bytes, a table footer alone is {FOOTER_SIZE})",
                hint="the file is empty or truncated" if self.size else "the file is empty",
            )
        footer = self._raw(self.size - FOOTER_SIZE, FOOTER_SIZE)
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
    def open(cls, path: str, *, in_memory: bool | None = None) -> SSTable:
        """Open the table at ``path``: read whole when ``in_memory`` (by default, when it is at most
        IN_MEMORY_BYTES), otherwise kept open and read block by block."""
        try:
            f = open_regular(path)
        except OSError as exc:
            raise CorruptCheckpointError(f"cannot read: {exc.strerror}", path=path) from None
        try:
            size = file_size(f)
            if not (in_memory if in_memory is not None else size <= IN_MEMORY_BYTES):
                return cls(path, None, f, size)
            with f:
                data = f.read(size + 1)
            if len(data) != size:
                raise CorruptCheckpointError("the file changed size while it was read", path=path)
            return cls(path, data)
        except OSError as exc:
            f.close()
            raise CorruptCheckpointError(f"cannot read: {exc.strerror}", path=path) from None
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _raw(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        if self._file is None:
            raise self._error("the table is closed")
        self._file.seek(offset)
        out = self._file.read(n)
        if len(out) != n:
            raise self._error(f"truncated block read (wanted {n} bytes at byte {offset}, the file ended)")
        return out

    def _error(self, message: str, hint: str | None = None) -> CorruptCheckpointError:
        return CorruptCheckpointError(message, path=self.path, hint=hint)

    def read_block(self, handle: BlockHandle) -> bytes | memoryview:
        """Return a block's contents after checking its bounds, trailer and checksum, decompressed if need be.

        Damage (bounds, checksum, a compressed block that does not decompress) raises CorruptCheckpointError; a
        block whose checksum holds but whose compression type ckptcheck does not know raises
        UnsupportedFormatError: the file is intact, written by something newer.
        """
        end = handle.offset + handle.size + BLOCK_TRAILER_SIZE
        if end > self.size - FOOTER_SIZE:
            raise self._error(
                f"truncated block read (block at byte {handle.offset}, {handle.size} bytes, "
                f"runs past the end of the {self.size}-byte file)"
            )
        if self.data is None and handle.size > CHECK_FIRST_BYTES:
            self._check_in_pieces(handle)
        stored = self._raw(handle.offset, handle.size + BLOCK_TRAILER_SIZE)
        ctype = stored[handle.size]
        (masked,) = struct.unpack_from("<I", stored, handle.size + 1)
        if unmask_crc(masked) != crc32c(memoryview(stored)[: handle.size + 1]):
            raise self._error(f"block checksum mismatch (block at byte {handle.offset}, {handle.size} bytes)")
        if ctype == _NO_COMPRESSION:
            # A file-backed table (V1) holds values, some of them large: hand them out as views of the block
            # rather than copies (each slice of bytes is a copy). An index's small entries stay bytes.
            return stored[: handle.size] if self.data is not None else memoryview(stored)[: handle.size]
        if ctype == _SNAPPY:
            return self._snappy(memoryview(stored)[: handle.size], handle)
        raise UnsupportedFormatError(
            f"block at byte {handle.offset} uses compression type {ctype}, which no TensorFlow release writes "
            "(0 is none, 1 is Snappy)", path=self.path,
            hint="the block's checksum is intact: the file was written by a tool ckptcheck does not know",
        )

    def _check_in_pieces(self, handle: BlockHandle) -> None:
        """A large block's checksum, read a piece at a time, before the block is read whole."""
        assert self._file is not None
        self._file.seek(handle.offset)
        crc = 0
        left = handle.size + 1  # the contents and the type byte
        while left:
            piece = self._file.read(min(left, 1 << 20))
            if not piece:
                raise self._error(f"truncated block read (block at byte {handle.offset}, the file ended)")
            crc = crc32c(piece, crc)
            left -= len(piece)
        stored_crc = self._file.read(4)
        if len(stored_crc) != 4 or unmask_crc(struct.unpack("<I", stored_crc)[0]) != crc:
            raise self._error(f"block checksum mismatch (block at byte {handle.offset}, {handle.size} bytes)")

    def _snappy(self, compressed: memoryview, handle: BlockHandle) -> bytes:
        """Decompress a raw Snappy block (a varint uncompressed length, then the stream)."""
        try:
            declared, _ = read_varint(compressed, 0, min(len(compressed), 10))
        except DecodeError:
            raise self._error(f"Snappy block at byte {handle.offset} has no valid length") from None
        if declared > _SNAPPY_MAX_EXPANSION * len(compressed) + 64:
            raise self._error(
                f"Snappy block at byte {handle.offset} declares {declared} bytes from {len(compressed)}, more than "
                "any Snappy stream expands to"
            )
        from ckptcheck.formats.tensorflow.snappy import decompress

        out = decompress(compressed, declared)
        if out is None:
            raise self._error(f"Snappy block at byte {handle.offset} ({handle.size} bytes) does not decompress",
                              hint="its checksum holds, so it was damaged before it was written")
        return out

    def _block_entries(self, block: bytes | memoryview, where: int) -> tuple[list[bytes], list[Value]]:
        """A block's keys and values, in order: two lists (a listing walks 20,000 entries, and a generator's steps
        and pairs cost a tenth of it)."""
        n = len(block)
        if n < 4:
            raise self._error(f"bad block contents (block at byte {where} is {n} bytes)")
        (num_restarts,) = struct.unpack_from("<I", block, n - 4)
        limit = n - 4 - 4 * num_restarts
        if limit < 0:
            raise self._error(f"bad block contents (block at byte {where} claims {num_restarts} restarts)")
        keys: list[bytes] = []
        values: list[Value] = []
        pos = 0
        key = b""
        while pos < limit:
            # Fast path: the three header varints are almost always one byte each. (Bytes read past `limit` are
            # the restart array's, never past the block; an entry they start runs past `limit`, caught below.)
            shared = block[pos]
            non_shared = block[pos + 1]
            value_len = block[pos + 2]
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
            keys.append(key)
            values.append(block[pos : pos + value_len])
            pos += value_len
        return keys, values

    def _index(self) -> tuple[list[bytes], list[BlockHandle]]:
        """Each data block's separator key (>= every key in it, < every key after it) and handle."""
        if self._handles is None:
            index = self.read_block(self.index_handle)
            keys: list[bytes] = []
            handles: list[BlockHandle] = []
            for key, value in zip(*self._block_entries(index, self.index_handle.offset), strict=True):
                try:
                    off, p = read_varint(value, 0)
                    size, _ = read_varint(value, p)
                except DecodeError:
                    raise self._error("bad block handle in the index block") from None
                keys.append(key)
                handles.append(BlockHandle(off, size))
            self._handles = (keys, handles)
        return self._handles

    def data_block_handles(self) -> list[BlockHandle]:
        return list(self._index()[1])

    def _entries_of(self, i: int, handle: BlockHandle) -> list[tuple[bytes, Value]]:
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        self._cached = None  # let the last block go before the next is read (a V1 block can be one large record)
        keys, values = self._block_entries(self.read_block(handle), handle.offset)
        entries = list(zip(keys, values, strict=True))
        self._cached = (i, entries)
        self._keys_read[i] = keys
        return entries

    def checked_keys(self) -> tuple[list[bytes], list[BlockProblem]]:
        """Every key of the table and every damaged block (metaindex and data blocks): blocks already read through
        get() are not read again (a V1 file's values are its blocks: verify reads each once)."""
        problems: list[BlockProblem] = []
        try:
            self.read_block(self.metaindex_handle)
        except CorruptCheckpointError as exc:
            problems.append(BlockProblem(self.metaindex_handle.offset, self.metaindex_handle.size,
                                         f"metaindex block: {exc.message}"))
        try:
            handles = self._index()[1]
        except CorruptCheckpointError as exc:
            return [], [*problems, BlockProblem(self.index_handle.offset, self.index_handle.size,
                                                f"index block: {exc.message}")]
        keys: list[bytes] = []
        for i, handle in enumerate(handles):
            known = self._keys_read.get(i)
            if known is None:
                try:
                    known = self._block_entries(self.read_block(handle), handle.offset)[0]
                except CorruptCheckpointError as exc:
                    problems.append(BlockProblem(handle.offset, handle.size, exc.message))
                    continue
            keys += known
        return keys, problems

    def get(self, key: bytes) -> Value | None:
        """The value stored under ``key``, reading only the block that can hold it (the last one read is kept,
        so looking keys up in order reads each block once)."""
        keys, handles = self._index()
        i = bisect.bisect_left(keys, key)
        if i == len(keys):
            return None
        for k, value in self._entries_of(i, handles[i]):
            if k == key:
                return value
            if k > key:
                break
        return None

    def first(self) -> tuple[bytes, Value] | None:
        """The first (key, value) of the table, reading only the first data block."""
        _keys, handles = self._index()
        for i, handle in enumerate(handles):
            entries = self._entries_of(i, handle)
            if entries:
                return entries[0]
        return None

    def items(self, problems: list[str] | None = None) -> Iterator[tuple[bytes, Value]]:
        """Every (key, value) in key order, a block at a time, checking each block's checksum as it is read.

        With a ``problems`` list, a damaged data block is recorded there and skipped instead of raising, so a
        verification can go on to check the entries of the blocks that are intact.
        """
        self._cached = None
        for keys, values in self._data_blocks(problems):
            yield from zip(keys, values, strict=True)

    def index_entries(self, problems: list[str] | None = None) -> tuple[list[bytes], list[bytes]]:
        """Every key and value of the table in key order, as two lists, each value as bytes (a bundle's index:
        its entries are small, and kept); checked as items() checks them, ``problems`` as there."""
        keys: list[bytes] = []
        values: list[bytes] = []
        for block_keys, block_values in self._data_blocks(problems):
            keys += block_keys
            values += map(bytes, block_values) if self.data is None else cast(list[bytes], block_values)
        return keys, values

    def _data_blocks(self, problems: list[str] | None) -> Iterator[tuple[list[bytes], list[Value]]]:
        """Each data block's keys and values, checked: its checksum, and its keys strictly increasing within it
        and from the last block's (one pass in C); a damaged block is skipped into ``problems`` when given."""
        last: bytes | None = None
        for handle in self.data_block_handles():
            try:
                keys, values = self._block_entries(self.read_block(handle), handle.offset)
            except CorruptCheckpointError as exc:
                if problems is None:
                    raise
                problems.append(exc.message)
                continue
            if not all(map(operator.lt, keys, keys[1:])) or (keys and last is not None and keys[0] <= last):
                raise self._error(f"keys out of order in block at byte {handle.offset}")
            last = keys[-1] if keys else last
            yield keys, values

    def scan_problems(self) -> list[BlockProblem]:
        """Check every block's checksum and structure without stopping at the first problem."""
        return self.checked_keys()[1]
