"""Real servers on loopback for the remote-reading tests (and bench/run.py): an HTTP server answering Range
requests that counts the bytes it sends, and moto's S3-compatible server.

The HTTP server serves a directory. Paths under a few prefixes misbehave on purpose: ``/forbidden/`` answers 403,
``/norange/`` ignores Range (200 with the whole file, as some static servers do), ``/slow/`` waits longer than any
test's timeout before answering, ``/broken/`` answers 500 to every read that does not start at byte 0 (a store
failing mid-read).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
SLOW_SECONDS = 30.0


class ByteCounter:
    """Body bytes the server sent, in total and per request (method, path, range asked)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.requests: list[tuple[str, str, str | None, int]] = []

    def add(self, method: str, path: str, asked: str | None, sent: int) -> None:
        with self.lock:
            self.total += sent
            self.requests.append((method, path, asked, sent))

    def reset(self) -> None:
        with self.lock:
            self.total = 0
            self.requests = []


def _handler(root: Path, counter: ByteCounter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: fsspec's client reuses its connections

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _file(self) -> tuple[Path | None, str]:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            mode = ""
            for prefix in ("/forbidden/", "/norange/", "/slow/", "/broken/"):
                if path.startswith(prefix):
                    mode, path = prefix.strip("/"), "/" + path[len(prefix):]
            target = (root / path.lstrip("/")).resolve()
            if root.resolve() not in target.parents and target != root.resolve():
                return None, mode
            return (target if target.is_file() else None), mode

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            target, mode = self._file()
            if mode == "slow":
                time.sleep(SLOW_SECONDS)
            if mode == "forbidden":
                return self._empty(403)
            if target is None:
                return self._empty(404)
            size = target.stat().st_size
            start, end = 0, size  # [start, end)
            asked = self.headers.get("Range")
            partial = False
            if asked and mode != "norange":
                m = _RANGE.match(asked.strip())
                if m is None or (not m.group(1) and not m.group(2)):
                    return self._empty(416)
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:  # a suffix: the last N bytes
                    start = max(0, size - int(m.group(2)))
                if start >= size or start >= end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                partial = True
            if mode == "broken" and body and start > 0:
                return self._empty(500)
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            if mode != "norange":
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                counter.add("HEAD", self.path, asked, 0)
                return None
            sent = 0
            with contextlib.suppress(ConnectionError), open(target, "rb") as f:
                # sendfile: the server must not be the bottleneck of the throughput it is used to measure
                while sent < end - start:
                    n = self.connection.sendfile(f, start + sent, end - start - sent)
                    if n == 0:
                        break
                    sent += n
            counter.add("GET", self.path, asked, sent)
            return None

    return Handler


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[tuple[str, ByteCounter]]:
    """Serve ``root`` on a free loopback port; yields the base URL (no trailing slash) and the byte counter."""
    counter = ByteCounter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(root, counter))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def upload_tree(endpoint: str, bucket: str, root: Path, prefix: str = "") -> None:
    """Put every file under ``root`` into the bucket (created), keyed by its path relative to ``root``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = (prefix + "/" if prefix else "") + path.relative_to(root).as_posix()
            s3.upload_file(str(path), bucket, key)


def env_for_s3(endpoint: str) -> dict[str, str]:
    return {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint}
