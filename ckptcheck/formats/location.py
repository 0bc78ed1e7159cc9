"""Where a checkpoint lives: a local path, or a URL read through fsspec (``gs://``, ``s3://``, ``http(s)://``,
``hf://``, ``memory://``, ...).

Local paths go straight to the os functions and files.open_regular: nothing of fsspec is imported for them, so a
local command starts and reads as fast as it did before URLs were accepted. A URL is read with ranged requests:
files are opened with a small read-ahead block (never a whole-file download), sizes come from the store's
metadata, and every failure of the store (404, 403, a timeout, no range support, missing credentials) becomes
one typed error naming the URL (RemoteError, or CheckpointNotFoundError for what is not there).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ckptcheck.errors import CheckpointNotFoundError, CkptcheckError, MissingDependencyError, RemoteError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# Metadata reads (an index's footer, a Keras file's HDF5 headers, a zip's central directory) fetch this much
# past what was asked, so that the small reads that follow are served from memory. Large reads (tensor data)
# pass through: each byte is fetched once.
READ_AHEAD = 64 << 10
TIMEOUT_ENV = "CKPTCHECK_REMOTE_TIMEOUT"  # seconds without progress before a remote read gives up
DEFAULT_TIMEOUT = 60.0

# What each store's fsspec backend looks at for credentials, said when it found none.
_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials and ~/.aws/config, "
          "and the instance's metadata service",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default credentials "
          "(~/.config/gcloud/application_default_credentials.json) and the instance's metadata service",
    "hf": "HF_TOKEN and the token `huggingface-cli login` saved",
    "az": "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
}
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub", "az": "adlfs",
             "abfs": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def scheme(path: str) -> str | None:
    """The protocol of a URL (``s3``, ``https``), or None for a local path (``file://`` counts as local)."""
    m = _SCHEME.match(path)
    if m is None:
        return None
    proto = m.group(1).lower()
    return None if proto == "file" else proto


def is_url(path: str) -> bool:
    return "://" in path and scheme(path) is not None


def local_path(path: str) -> str:
    """A ``file://`` URL as the plain path it names; anything else unchanged."""
    return path[len("file://"):] if path[:7].lower() == "file://" else path


# --- the filesystem behind a URL ---------------------------------------------------------------------------------

_fs_lock = threading.Lock()
_filesystems: dict[str, Any] = {}


def timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


def _options(proto: str) -> dict[str, Any]:
    """Timeouts, so that a store that stops answering fails the command instead of hanging it."""
    seconds = timeout()
    if proto in ("http", "https"):
        import aiohttp

        return {"client_kwargs": {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=seconds,
                                                                   sock_read=seconds)}}
    if proto in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": seconds, "read_timeout": seconds,
                                  "retries": {"max_attempts": 2}}}
    return {}


def filesystem(url: str) -> tuple[Any, str]:
    """fsspec's filesystem for a URL, and the path within it (one filesystem per protocol, reused)."""
    proto = scheme(url) or "file"
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("reading URLs needs fsspec", path=url,
                                     hint="pip install 'ckptcheck[remote]' (and s3fs or gcsfs for s3:// or gs://)"
                                     ) from None
    with _remote_errors(url):
        with _fs_lock:
            fs = _filesystems.get(proto)
            if fs is None:
                cls = fsspec.get_filesystem_class(proto)
                fs = cls(skip_instance_cache=True, **_options(proto))
                _filesystems[proto] = fs
        return fs, fs._strip_protocol(url)


def forget_filesystems() -> None:
    """Drop the cached filesystems and whole files (tests change endpoints and credentials between sessions)."""
    with _fs_lock:
        _filesystems.clear()
    with _scope_lock:
        _whole.clear()
        _infos.clear()


# --- errors ------------------------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def translate(exc: BaseException, url: str) -> CkptcheckError:
    """One typed error, naming the URL, for whatever fsspec or its backend raised."""
    if isinstance(exc, CkptcheckError):
        return exc
    proto = scheme(url) or ""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if isinstance(exc, ImportError):
        backend = _BACKENDS.get(proto, exc.name or "its fsspec backend")
        return MissingDependencyError(f"reading {proto}:// URLs needs {backend}", path=url,
                                      hint=f"pip install {backend}")
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "NoAuthTokenError") or (
        "credential" in text.lower() and not isinstance(exc, (FileNotFoundError, PermissionError))
    ):
        where = _CREDENTIALS.get(proto, "the environment and the backend's configuration files")
        return RemoteError(f"no credentials for {proto}:// ({text})", path=url, hint=f"fsspec looked at {where}")
    status = _status(exc)
    cause = exc.__cause__
    if status is None and cause is not None:  # fsspec's HTTP info() says FileNotFoundError for any failure
        status = _status(cause)
        if status is None and isinstance(exc, FileNotFoundError) and not isinstance(cause, FileNotFoundError):
            return translate(cause, url)  # a timeout, a refused connection: said as such
    if isinstance(exc, FileNotFoundError) and status in (None, 404, 410):
        return CheckpointNotFoundError(f"not found ({f'HTTP {status}' if status else 'no such object'})", path=url)
    if isinstance(exc, PermissionError) or status in (401, 403):
        return RemoteError(f"access denied (HTTP {status or 403})", path=url,
                           hint=f"check the credentials fsspec uses: {_CREDENTIALS.get(proto, 'the store')}")
    if status is not None:
        return RemoteError(f"the server answered HTTP {status}", path=url)
    if isinstance(exc, TimeoutError) or "timeout" in name.lower() or "timed out" in text.lower():
        return RemoteError(f"timed out after {timeout():g} s without an answer", path=url,
                           hint=f"set {TIMEOUT_ENV} (seconds) to wait longer")
    if "range" in text.lower():
        return RemoteError("the server does not support range requests", path=url,
                           hint="ckptcheck reads only the parts it needs; serve the files from a store that "
                                "answers Range requests (206 Partial Content)")
    if name.startswith(("ClientConnector", "ServerDisconnected", "EndpointConnection", "ConnectionClosed")) or (
        isinstance(exc, ConnectionError)
    ):
        return RemoteError(f"cannot connect ({text})", path=url)
    return RemoteError(f"cannot read: {name}: {text}", path=url)


@contextlib.contextmanager
def _remote_errors(url: str) -> Iterator[None]:
    try:
        yield
    except CkptcheckError:
        raise
    except Exception as exc:
        raise translate(exc, url) from None


# --- the operations the readers need -----------------------------------------------------------------------------


def _info(url: str) -> dict[str, Any] | None:
    """The object's metadata, or None when nothing is there. Within a command (command_scope) each URL is asked
    once: resolving a path, the safety scan and the readers ask about the same few objects many times."""
    with _scope_lock:
        if _scopes and url in _infos:
            return _infos[url]
    fs, path = filesystem(url)
    info: dict[str, Any] | None
    try:
        with _remote_errors(url):
            info = fs.info(path)
    except CheckpointNotFoundError:
        info = None
    with _scope_lock:
        if _scopes:
            _infos[url] = info
    return info


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    return _info(path) is not None


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    info = _info(path)
    return info is not None and info.get("type", "file") == "file"


def isdir(path: str) -> bool:
    """A directory (for object stores: a prefix holding objects). Over plain HTTP nothing is a directory: a
    server's index page is not a listing ckptcheck relies on."""
    if not is_url(path):
        return os.path.isdir(path)
    if scheme(path) in ("http", "https"):
        return False
    info = _info(path.rstrip("/"))
    return info is not None and info.get("type") == "directory"


def getsize(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    info = _info(path)
    if info is None:
        raise FileNotFoundError(2, "No such file or directory", path)
    return int(info.get("size") or 0)


def listdir(path: str) -> list[str]:
    """The names in a directory (raises OSError when it cannot be listed, as os.listdir does)."""
    if not is_url(path):
        return os.listdir(path)
    if scheme(path) in ("http", "https"):
        raise NotADirectoryError(20, "an HTTP server has no directory listing ckptcheck relies on", path)
    fs, p = filesystem(path)
    with _remote_errors(path):
        return [posixpath.basename(str(name).rstrip("/")) for name in fs.ls(p, detail=False)]


def glob(pattern: str) -> list[str]:
    """Paths matching a glob, as URLs for a URL pattern."""
    if not is_url(pattern):
        import glob as globmod

        return globmod.glob(pattern)
    if scheme(pattern) in ("http", "https"):
        return []
    fs, p = filesystem(pattern)
    proto = scheme(pattern)
    try:
        with _remote_errors(pattern):
            return [f"{proto}://{str(name).lstrip('/')}" for name in fs.glob(p)]
    except CheckpointNotFoundError:  # no such bucket: nothing matches
        return []


def join(base: str, *names: str) -> str:
    if not is_url(base):
        return os.path.join(base, *names)
    out = base
    for name in names:
        out = out.rstrip("/") + "/" + name if out else name
    return out


def dirname(path: str) -> str:
    if not is_url(path):
        return os.path.dirname(path)
    stripped = path.rstrip("/")
    proto, _, rest = stripped.partition("://")
    if "/" not in rest:
        return stripped  # the bucket or host itself
    return f"{proto}://{rest.rpartition('/')[0]}"


def basename(path: str) -> str:
    if not is_url(path):
        return os.path.basename(path)
    return path.rstrip("/").rpartition("/")[2]


def isabs(path: str) -> bool:
    return is_url(path) or os.path.isabs(path)


def realpath(path: str) -> str:
    return path if is_url(path) else os.path.realpath(path)


def read_range(url: str, offset: int, size: int) -> bytes:
    """The bytes [offset, offset + size) of an object, in one ranged request (thread-safe)."""
    fs, path = filesystem(url)
    with _remote_errors(url):
        data: bytes = fs.cat_file(path, start=offset, end=offset + size)
    if len(data) > size:  # the whole object came back: the server ignored the Range header
        raise translate(ValueError("the server does not support range requests"), url)
    return data


def download(url: str, dest: str) -> None:
    """Copy an object to a local file (for TensorFlow's and Keras's own restore, which read local paths)."""
    fs, path = filesystem(url)
    with _remote_errors(url):
        fs.get_file(path, dest)


# Windows of READ_AHEAD bytes kept per open file (4 MiB): HDF5 returns to a group's metadata between datasets.
_WINDOWS_KEPT = 64
# A Keras file (HDF5, zip) no larger than this is fetched whole, in one request: its metadata lies between its
# tensors, and many small requests for it cost more than the file. Within a command (command_scope), it is kept
# for the command's other opens of it (the safety scan, the reader), up to _WHOLE_KEPT in all, and dropped at the
# command's end: a file changed on the store between two calls of the library is read again.
WHOLE_BYTES = 16 << 20
_WHOLE_KEPT = 32 << 20
_scope_lock = threading.Lock()
_whole: OrderedDict[tuple[str, int], bytes] = OrderedDict()
_infos: dict[str, dict[str, Any] | None] = {}  # _info's answers within a command
_scopes = 0


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """One command's reads: each object's metadata asked once, small Keras files fetched whole once, shared by the
    command's opens and forgotten after it (a library caller between two commands sees the store as it is)."""
    global _scopes
    with _scope_lock:
        _scopes += 1
    try:
        yield
    finally:
        with _scope_lock:
            _scopes -= 1
            if not _scopes:
                _whole.clear()
                _infos.clear()


def _whole_file(url: str, f: Any, size: int) -> bytes:
    key = (url, size)
    with _scope_lock:
        kept = _whole.get(key)
        if kept is not None:
            _whole.move_to_end(key)
            return kept
    with _remote_errors(url):
        f.seek(0)
        fetched: bytes = f.read(size)
    with _scope_lock:
        if _scopes:
            _whole[key] = fetched
            while sum(len(v) for v in _whole.values()) > _WHOLE_KEPT:
                _whole.popitem(last=False)
    return fetched


class RemoteFile(io.RawIOBase):
    """A seekable, read-only view of an object in a store, for readers that take a file (the sorted-table reader,
    h5py, zipfile). Every failure of the store becomes a typed error naming the URL.

    A small read (at most ``read_ahead`` bytes) fetches a window of ``read_ahead`` bytes from where it starts, and
    the last _WINDOWS_KEPT windows are kept: sequential small reads fetch each byte once, and a reader that goes
    back to metadata it read before (HDF5 does, between datasets) finds it here. A large read (tensor data) is
    fetched exactly, after whatever part of it a kept window already holds: a whole-file pass fetches each byte
    about once, not once per read-ahead that ran past it."""

    def __init__(self, url: str, *, read_ahead: int = READ_AHEAD, whole_below: int = 0) -> None:
        super().__init__()
        self.url = url
        self._read_ahead = max(read_ahead, 1)
        self._pos = 0
        self._windows: OrderedDict[int, bytes] = OrderedDict()  # start -> bytes, the most recently used last
        info = _info(url)
        if info is None:
            raise CheckpointNotFoundError("not found (no such object)", path=url)
        if info.get("partial") is False:  # the server said Accept-Ranges: none
            raise translate(ValueError("the server does not support range requests"), url)
        fs, path = filesystem(url)
        with _remote_errors(url):
            # The size already known: the file does not ask the store for it again.
            self._f: Any = fs.open(path, "rb", block_size=self._read_ahead, cache_type="none",
                                   size=int(info.get("size") or 0) or None)
            self.size = int(self._f.size)
        if not getattr(self._f, "seekable", lambda: True)() or type(self._f).__name__ == "HTTPStreamFile":
            # the server said Accept-Ranges: none, or gave no size: only a whole download would read it
            self._f.close()
            raise translate(ValueError("the server does not support range requests"), url)
        if 0 < self.size <= whole_below:
            self._windows[0] = _whole_file(url, self._f, self.size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}.get(whence)
        if base is None or base + offset < 0:
            raise OSError(22, "Invalid argument", self.url)
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _fetch(self, start: int, end: int) -> bytes:
        """The bytes [start, end), in one ranged request."""
        with _remote_errors(self.url):
            self._f.seek(start)
            data: bytes = self._f.read(end - start)
        return data

    def _held(self, pos: int) -> bytes:
        """What a kept window holds from ``pos`` on (b"" when none covers it)."""
        for start, data in reversed(self._windows.items()):
            if start <= pos < start + len(data):
                self._windows.move_to_end(start)
                return data[pos - start:]
        return b""

    def read(self, size: int | None = -1) -> bytes:
        pos = self._pos
        end = self.size if size is None or size < 0 else min(self.size, pos + size)
        if end <= pos:
            return b""
        held = self._held(pos)[: end - pos]
        start = pos + len(held)
        if start < end:
            if end - start <= self._read_ahead:
                # Up to the next kept window, whose bytes are not fetched again.
                stop = min(self.size, start + self._read_ahead)
                window = self._fetch(start, max(stop, end))
                self._windows[start] = window
                if len(self._windows) > _WINDOWS_KEPT:
                    self._windows.popitem(last=False)
                held += window[: end - start]
            else:
                held += self._fetch(start, end)
        self._pos = pos + len(held)
        return held

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._windows.clear()
            with contextlib.suppress(Exception):
                self._f.close()
        super().close()


def open_file(path: str, *, read_ahead: int = READ_AHEAD, whole_below: int = 0) -> RemoteFile:
    """A URL opened for ranged reading; a missing object raises FileNotFoundError (as ``open`` does), anything
    else the store refuses a typed error. An object of at most ``whole_below`` bytes is fetched whole."""
    try:
        return RemoteFile(path, read_ahead=read_ahead, whole_below=whole_below)
    except CheckpointNotFoundError:
        raise FileNotFoundError(2, "No such file or directory", path) from None
