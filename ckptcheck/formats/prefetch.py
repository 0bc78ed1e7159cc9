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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

BLOCK_BYTES = 8 << 20
Fetch = Callable[[int, int, int], bytes]  # (file index, offset, size) -> bytes; thread-safe


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
    def __init__(self, blocks: Iterator[Block], fetch: Fetch, jobs: int, depth: int | None = None) -> None:
        self._blocks = blocks
        self._fetch = fetch
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="ckptcheck-read")
        self._depth = depth or max(2, jobs + 1)
        self._pending: OrderedDict[Block, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._done = False
        self.fetched = 0  # bytes fetched (tests and the bench check each byte is fetched once)
        self._fill()

    def _fill(self) -> None:
        while not self._done and len(self._pending) < self._depth:
            block = next(self._blocks, None)
            if block is None:
                self._done = True
                return
            self._pending[block] = self._pool.submit(self._run, block)

    def _run(self, block: Block) -> bytes:
        data = self._fetch(block.file, block.start, block.end - block.start)
        with self._lock:
            self.fetched += len(data)
        return data

    def take(self, file: int, offset: int, size: int) -> memoryview | None:
        """The bytes [offset, offset + size) of ``file`` if a planned block holds them, else None."""
        with self._lock:
            found: Block | None = None
            for block in self._pending:
                if block.file == file and block.start <= offset and offset + size <= block.end:
                    found = block
                    break
            if found is None:
                return None
            while True:  # blocks planned before this one were skipped by the reader (or are done with)
                first = next(iter(self._pending))
                if first == found:
                    break
                self._pending.popitem(last=False)[1].cancel()
            future = self._pending[found]
            if offset + size == found.end:  # its last chunk: the block is done with
                del self._pending[found]
            self._fill()
        try:
            data = future.result()
        except Exception:
            return None  # read it directly: the reader's own read reports what is wrong, as it always did
        if len(data) < offset + size - found.start:
            return None
        return memoryview(data)[offset - found.start: offset - found.start + size]

    def close(self) -> None:
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._done = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def local_fetcher(paths: list[str]) -> tuple[Fetch, Callable[[], None]]:
    """pread on one descriptor per file (thread-safe, no shared position), and a closer."""
    from ckptcheck.formats.files import open_regular

    lock = threading.Lock()
    files: dict[int, object] = {}

    def fd_of(i: int) -> int:
        with lock:
            f = files.get(i)
            if f is None:
                f = files[i] = open_regular(paths[i])
            return f.fileno()  # type: ignore[attr-defined,no-any-return]

    def fetch(i: int, offset: int, size: int) -> bytes:
        fd = fd_of(i)
        out = os.pread(fd, size, offset)
        while len(out) < size:  # pread may return short on some file systems; an empty read is the end
            more = os.pread(fd, size - len(out), offset + len(out))
            if not more:
                break
            out += more
        return out

    def close() -> None:
        with lock:
            for f in files.values():
                f.close()  # type: ignore[attr-defined]
            files.clear()

    return fetch, close


def remote_fetcher(urls: list[str]) -> tuple[Fetch, Callable[[], None]]:
    """One ranged request per block through fsspec (its event loop serves the threads' requests concurrently)."""
    from ckptcheck.formats import location

    def fetch(i: int, offset: int, size: int) -> bytes:
        return location.read_range(urls[i], offset, size)

    return fetch, lambda: None


def fetcher(paths: list[str]) -> tuple[Fetch, Callable[[], None]]:
    from ckptcheck.formats import location

    if any(location.is_url(p) for p in paths):
        return remote_fetcher(paths)
    return local_fetcher(paths)


def default_jobs(paths: list[str]) -> int:
    """Concurrent reads when --jobs is not given: 8 over a network (latency is what is hidden), and locally
    as many as the cores, up to 4."""
    from ckptcheck.formats import location

    if any(location.is_url(p) for p in paths):
        return 8
    return max(1, min(4, os.cpu_count() or 1))
