"""Opening the user's files for reading: regular files only.

A FIFO named like a checkpoint's file blocks a plain ``open`` forever, and ``/dev/zero`` or ``/dev/urandom`` reads
until memory runs out. Every file ckptcheck reads is opened here: without blocking, then checked to be a regular
file (on the open descriptor, so nothing can be swapped in between) before a byte is read.
"""

from __future__ import annotations

import io
import os
import stat

from ckptcheck.errors import CheckpointNotFoundError, NotRegularFileError

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def not_regular(path: str, mode: int) -> NotRegularFileError:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return NotRegularFileError(f"is {kind}, not a regular file; ckptcheck reads checkpoint files only", path=path,
                                  hint="pass the checkpoint's own files (reading a pipe or device could block or "
                                       "never end)")


def open_regular(path: str, *, whole_below: int = 0) -> io.BufferedReader:
    """``open(path, "rb")`` for a regular file; a FIFO, device, socket or directory raises NotRegularFileError
    (exit 2) without blocking. A missing or unreadable file raises OSError, as ``open`` does. A URL is opened
    for ranged reading through fsspec (location.open_file); only then is fsspec imported. A URL's object of at most
    ``whole_below`` bytes is fetched whole (the Keras readers ask for it: see location.WHOLE_BYTES)."""
    if "://" in path:
        from ckptcheck.formats import location

        if location.is_url(path):
            return location.open_file(path, whole_below=whole_below)  # type: ignore[return-value]  # the same reading surface
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        os.set_blocking(fd, True)
        return io.BufferedReader(io.FileIO(fd, "rb", closefd=True))
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str) -> None:
    """For libraries that open by path themselves (h5py): refuse what open_regular refuses, without opening it."""
    if "://" in path:
        from ckptcheck.formats import location

        if location.is_url(path):
            if not location.isfile(path):
                raise CheckpointNotFoundError("cannot read: not found", path=path)
            return
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read: {exc.strerror}", path=path) from None
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)


def library_source(path: str, *, whole_below: int = 0) -> str | io.BufferedReader:
    """What to hand a library that opens files itself (h5py, zipfile): a local path as it is, once check_regular
    has accepted it; a URL as open_regular's ranged file object (``whole_below``: see open_regular)."""
    check_regular(path)
    if "://" in path:
        from ckptcheck.formats import location

        if location.is_url(path):
            return open_regular(path, whole_below=whole_below)
    return path


def file_size(f: io.BufferedReader) -> int:
    """The size of a file open_regular opened: a local file's from its descriptor, a URL's from the store."""
    size = getattr(f, "size", None)
    if isinstance(size, int):
        return size
    return os.fstat(f.fileno()).st_size


def read_capped(f: io.BufferedReader, limit: int) -> bytes | None:
    """The rest of the file, or None when it holds more than ``limit`` bytes. Read in pieces: ``read(limit + 1)``
    would allocate the whole limit up front however small the file."""
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        part = f.read(min(1 << 20, limit + 1 - total))
        if not part:
            return b"".join(parts)
        parts.append(part)
        total += len(part)
    return None
