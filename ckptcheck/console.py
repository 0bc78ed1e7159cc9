"""Everything the command line prints and how: stdout and stderr, pipes that close, JSON, progress bars, warnings,
and the exit codes errors map to. The only module that writes to the terminal; cli.py lists the commands.

Exit codes: 0 ok; 1 the check found a problem (mismatch, corruption, difference); 2 the input could not be read
or the command was misused.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

import typer

from ckptcheck.errors import CkptcheckError
from ckptcheck.numbers import nonfinite_as_strings

EXIT_OK, EXIT_PROBLEM, EXIT_INPUT = 0, 1, 2
T = TypeVar("T")


def warnings_to_stderr() -> None:
    """The library's warnings (CkptcheckWarning) as one ``ckptcheck: warning:`` line each; others as Python
    shows them."""
    import warnings

    from ckptcheck.errors import CkptcheckWarning

    previous = warnings.showwarning
    if getattr(previous, "ckptcheck", False):  # installed by an earlier command in this process
        return

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, CkptcheckWarning):
            typer.echo(f"ckptcheck: warning: {message}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    show.ckptcheck = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def fit_tables_to_terminal() -> None:
    """Tables printed to a terminal are fitted to its width (long cells elided in the middle); piped output stays
    whole for tools."""
    if sys.stdout.isatty():
        import shutil

        from ckptcheck.render import tables

        tables.fit_width = shutil.get_terminal_size().columns


def escape_undecodable() -> None:
    """Names and paths that are not UTF-8 carry their bytes as lone surrogates (surrogateescape), so two keys that
    differ in such a byte stay two names. Printed, each such byte shows as ``\\udcXX`` (never as the text ``\\xNN``
    a name could hold, and never a UnicodeEncodeError on a strict terminal)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(Exception):
                reconfigure(errors="backslashreplace")


class OutputClosed(Exception):
    """The reader of stdout went away (`ckptcheck inspect X | head`)."""


SPOOL_BYTES = 32 << 20
OUT_PIECE = 1 << 16


def emit(text: str = "", *, nl: bool = True, raw: bool = False) -> None:
    """Print to stdout (``raw``: as it is, without click's ANSI stripping, for large JSON)."""
    emit_pieces((text,), nl=nl, raw=raw)


def emit_pieces(texts: Iterable[str], *, nl: bool = True, raw: bool = False) -> None:
    """Print each text as it comes (a large listing is written as it is made). A closed pipe raises OutputClosed,
    which unwinds every open reader and temporary directory before main() stops quietly.

    Written in pieces: a single large write to a pipe closed midway returns short without an error, and the
    rest would be dropped silently; the next piece's write reports the closed pipe.
    """
    write = sys.stdout.write if raw else partial(typer.echo, nl=False)
    try:
        for text in texts:
            for start in range(0, len(text), OUT_PIECE):
                write(text[start:start + OUT_PIECE])
        if nl:
            write("\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed from None


def stop_like_a_closed_pipe() -> None:
    """Stop as `ls | head` does: no message, killed by SIGPIPE (a shell shows 141); exit 1 where there is no
    SIGPIPE, as Python's documentation suggests. Nothing more reaches the pipe: stdout goes to /dev/null, so the
    interpreter's last flush of it cannot fail again."""
    import signal

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sigpipe = getattr(signal, "SIGPIPE", None)
    if sigpipe is not None:
        signal.signal(sigpipe, signal.SIG_DFL)
        os.kill(os.getpid(), sigpipe)
    sys.exit(EXIT_PROBLEM)


def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    typer.echo(f"ckptcheck: {message}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Typed errors become one line on stderr and their exit code; nothing else leaks a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except CkptcheckError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except MemoryError:
        raise fail("out of memory while reading the checkpoint") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except Exception as exc:
        # A store's client failing where no reader wrapped it (inside a library that read through a URL's file):
        # still one line naming what failed, never a traceback.
        library = type(exc).__module__.split(".")[0]
        if library not in _REMOTE_LIBRARIES or "ckptcheck.formats.location" not in sys.modules:
            raise
        from ckptcheck.formats.location import translate

        error = translate(exc, str(getattr(exc, "url", "") or getattr(exc, "filename", "") or ""))
        raise fail(str(error), error.exit_code) from None


_REMOTE_LIBRARIES = {"fsspec", "aiohttp", "botocore", "aiobotocore", "s3fs", "gcsfs", "google", "huggingface_hub",
                     "asyncio", "yarl"}


def warn_unsafe(*paths: str) -> None:
    """Before a command reads anything: one stderr line per thing a Keras loader would run from each path (and a
    note where a file is two formats at once, or a config could not be scanned). Printed first, so the warning
    stays even when the command then fails on another part of the file."""
    from ckptcheck.formats.keras.safety import scan

    for path in paths:
        result = scan(path)
        if result is None:
            continue
        for f in result.findings:
            if f.severity == "note":  # a registered custom class: true, and no loading attack
                typer.echo(f"ckptcheck: note: {path}: {f.location}: {f.message}", err=True)
                continue
            typer.echo(f"ckptcheck: warning: {path}: loading it with Keras would run code or import modules outside "
                       f"Keras: {f.location}: {f.message}", err=True)
        for note in result.notes:
            typer.echo(f"ckptcheck: note: {path}: {note}", err=True)


def emit_json(data: Any) -> None:
    # Indented for a person at a terminal; compact when piped, which also lets json use its C encoder (the
    # indenting encoder is pure Python and dominated `inspect --json` on 20,000 tensors).
    # A name or path that is not UTF-8 (its bytes held as lone surrogates) is written as \\udcXX escapes.
    from ckptcheck.formats.interface import paused_gc
    from ckptcheck.render.jsontext import escape_surrogates

    indent = 2 if sys.stdout.isatty() else None
    with paused_gc():
        try:
            text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
        except ValueError:  # a NaN or Infinity somewhere (a crafted config): written as the strings --tensor uses
            data = nonfinite_as_strings(data)
            text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    emit(escape_surrogates(text))


def show_progress(json_output: bool) -> bool:
    return not json_output and sys.stderr.isatty()


def progress_over(items: Sequence[T], label: str, enabled: bool) -> Iterator[T]:
    """Yield items, drawing a progress bar on stderr when enabled (a terminal, and not --json)."""
    if not enabled or len(items) < 2:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        for item in items:
            yield item
            progress.advance(task)


def byte_columns(label: str) -> tuple[Any, ...]:
    """The transfer bar's columns, counting KiB/MiB/GiB as the results do (rich counts kB/MB by default)."""
    from rich.progress import BarColumn, DownloadColumn, ProgressColumn, Task, TextColumn
    from rich.text import Text

    from ckptcheck.render.tables import human_bytes

    class BinarySpeedColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_bytes(int(speed))}/s", style="progress.data.speed")

    return (TextColumn(label), BarColumn(), DownloadColumn(binary_units=True), BinarySpeedColumn())


@contextlib.contextmanager
def byte_progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback (bytes done, total) drawing a transfer bar on stderr, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*byte_columns(label), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, total=total, advance=done)

        yield advance


def bytes_ticker(reader: Any, progress: Callable[[int, int], None] | None) -> Callable[[str], None] | None:
    """An on_tensor callback advancing a byte progress bar by each tensor's size as its turn comes."""
    if progress is None:
        return None
    sizes = {t.name: t.nbytes for t in reader.tensors()}
    total = sum(sizes.values())
    return lambda name: progress(sizes.get(name, 0), total)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[str], None]]:
    """A callback that advances a bar on stderr by one and shows what is being done; a no-op when disabled."""
    if not enabled or total < 1:
        yield lambda _what: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(what: str) -> None:
            bar.update(task, description=f"{label}: {what}", advance=1)

        yield advance


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler's stop) unwinds like Ctrl-C, so that what a command cleans up on the way out (an
    export's temporary file) is cleaned up."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
