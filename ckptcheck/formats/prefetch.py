"""Reading ahead with a small pool of concurrent range reads, for the commands that read every byte (verify,
manifest, diff).

A reader that knows the order it will read in (the tensors' parts, shard by shard) hands that plan to a
ReadAhead. The plan's byte ranges are merged into blocks where they touch in the same file (thousands of small
tensors become a few requests) and cut where a part is larger than a block; ``jobs`` threads fetch the blocks in
plan order, at most ``depth`` of them ahead of the reader, so memory stays within ``depth`` blocks whatever the
checkpoint's size. The reader still asks for each chunk as before (``take``); a chunk inside a fetched block is
copied out of it, anything else (a read the plan did not foresee, a block whose fetch failed) returns None and
is read directly, so a wrong plan costs time, never correctness. Blocks before the one a chunk came from are
dropped: each byte is fetched once when the reader follows the plan.

Over a network this overlaps the latency of one request with the transfer of others; on a local disk the reads
(``os.pread``, which releases the GIL) overlap the checksumming.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the thread pool is imported only when reads go ahead (default_jobs needs none of it)
    from concurrent.futures import Future

BLOCK_BYTES = 4 << 20
IN_FLIGHT_BYTES = 48 << 20  # at most this much fetched and not yet read, whatever --jobs asks
Buffer = memoryview
Fetch = Callable[[int, int, int], Buffer]  # (file index, offset, size) -> its bytes; thread-safe
Recycle = Callable[[Buffer], None]  # a fetched buffer that is done with, for reuse


@dataclass(frozen=True)
class Block:
    file: int
    start: int
    end: int


def plan_blocks(ranges: Iterable[tuple[int, int, int, int]], block_bytes: int = BLOCK_BYTES) -> Iterator[Block]:
    """Blocks covering ``ranges`` — (file, offset, size, step): a part read in chunks of ``step`` bytes — in
    order. Touching ranges of one file merge up to ``block_bytes``; a larger part is cut at multiples of its
    step, so that no chunk the reader asks for straddles two blocks."""
    current: Block | None = None
    for file, offset, size, step in ranges:
        if size <= 0:
            continue
        end = offset + size
        if current is not None and current.file == file and current.end == offset \
                and end - current.start <= block_bytes:
            current = Block(file, current.start, end)
            continue
        if current is not None:
            yield current
            current = None
        if size <= block_bytes:
            current = Block(file, offset, end)
            continue
        piece = max(step, block_bytes - block_bytes % max(step, 1))
        for start in range(offset, end, piece):
            yield Block(file, start, min(end, start + piece))
    if current is not None:
        yield current


class ReadAhead:
    def __init__(self, blocks: Iterator[Block], fetch: Fetch, jobs: int, *, recycle: Recycle | None = None,
                 block_bytes: int = BLOCK_BYTES) -> None:
        self._blocks = blocks
        self._fetch = fetch
        self._recycle = recycle
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ckptcheck-read")
        self._depth = max(2, min(jobs + 1, IN_FLIGHT_BYTES // max(block_bytes, 1)))
        self._pending: OrderedDict[Block, Future[Buffer]] = OrderedDict()
        self._lock = threading.Lock()
        self._done = False
        self._finished: Buffer | None = None  # the last block read to its end, reused at the next take
        self.fetched = 0  # bytes fetched (tests and the bench check each byte is fetched once)
        self._fill()

    def _fill(self) -> None:
        while not self._done and len(self._pending) < self._depth:
            block = next(self._blocks, None)
            if block is None:
                self._done = True
                return
            self._pending[block] = self._pool.submit(self._run, block)

    def _run(self, block: Block) -> Buffer:
        data = self._fetch(block.file, block.start, block.end - block.start)
        with self._lock:
            self.fetched += len(data)
        return data

    def _drop(self, future: Future[Buffer]) -> None:
        if future.cancel() or not future.done() or self._recycle is None or future.exception() is not None:
            return
        self._recycle(future.result())

    def take(self, file: int, offset: int, size: int) -> memoryview | None:
        """The bytes [offset, offset + size) of ``file`` if a planned block holds them, else None. The view is
        valid until the next take (its block's buffer is reused only after that)."""
        with self._lock:
            if self._finished is not None and self._recycle is not None:
                self._recycle(self._finished)
            self._finished = None
            found: Block | None = None
            for block in self._pending:
                if block.file == file and block.start <= offset and offset + size <= block.end:
                    found = block
                    break
            if found is None:
                return None
            while True:  # blocks planned before this one were skipped by the reader (or are done with)
                first, future = next(iter(self._pending.items()))
                if first == found:
                    break
                del self._pending[first]
                self._drop(future)
            last = offset + size == found.end  # its last chunk: the block is done with after this one
            if last:
                del self._pending[found]
            self._fill()
        try:
            data = future.result()
        except Exception:
            return None  # read it directly: the reader's own read reports what is wrong, as it always did
        if len(data) < offset + size - found.start:
            return None
        if last:
            with self._lock:
                self._finished = data
        return data[offset - found.start: offset - found.start + size]

    def take_into(self, file: int, offset: int, view: memoryview) -> bool:
        """take, copied into ``view``; False (nothing copied) when no planned block holds the bytes."""
        data = self.take(file, offset, len(view))
        if data is None:
            return False
        view[:] = data
        return True

    def close(self) -> None:
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._done = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def local_fetcher(paths: list[str]) -> tuple[Fetch, Recycle, Callable[[], None]]:
    """preadv on one descriptor per file (thread-safe: no shared position) into recycled buffers (a fresh one
    per block cost the kernel zeroing its pages, more than the read itself), a recycler and a closer."""
    from ckptcheck.formats.files import open_regular
    from ckptcheck.formats.interface import read_buffer

    lock = threading.Lock()
    files: dict[int, Any] = {}
    spare: list[Any] = []

    def fd_of(i: int) -> int:
        with lock:
            f = files.get(i)
            if f is None:
                f = files[i] = open_regular(paths[i])
            fd: int = f.fileno()
            return fd

    def fetch(i: int, offset: int, size: int) -> Buffer:
        fd = fd_of(i)
        with lock:
            buf = spare.pop() if spare and len(spare[-1]) >= size else read_buffer(max(size, BLOCK_BYTES))
        view = memoryview(buf)[:size]
        got = 0
        while got < size:  # preadv may return short; an empty read is the end of the file
            n = os.preadv(fd, [view[got:]], offset + got)
            if n <= 0:
                break
            got += n
        return view[:got]

    def recycle(data: Buffer) -> None:
        with lock:
            if len(spare) < 16:
                spare.append(data.obj)

    def close() -> None:
        with lock:
            for f in files.values():
                f.close()
            files.clear()
            spare.clear()

    return fetch, recycle, close


def remote_fetcher(urls: list[str]) -> tuple[Fetch, Recycle | None, Callable[[], None]]:
    """One ranged request per block through fsspec (its event loop serves the threads' requests concurrently)."""
    from ckptcheck.formats import location

    def fetch(i: int, offset: int, size: int) -> Buffer:
        return memoryview(location.read_range(urls[i], offset, size))

    return fetch, None, lambda: None


def fetcher(paths: list[str]) -> tuple[Fetch, Recycle | None, Callable[[], None]]:
    from ckptcheck.formats import location

    if any(location.is_url(p) for p in paths):
        return remote_fetcher(paths)
    return local_fetcher(paths)


def default_jobs(paths: list[str]) -> int:
    """Concurrent reads when --jobs is not given: 8 over a network (latency is what is hidden); locally half
    the cores, up to 4 (a read-ahead thread needs a core of its own beside the checksumming one: on 2 cores,
    reading from the page cache, one read at a time was as fast — bench/NOTES.md)."""
    from ckptcheck.formats import location

    if any(location.is_url(p) for p in paths):
        return 8
    return max(1, min(4, (os.cpu_count() or 1) // 2))
