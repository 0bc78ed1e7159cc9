"""`export SRC OUT`: a checkpoint's variables written to a ``.safetensors`` or ``.npz`` file, streamed, named by
variable, without TensorFlow.

In order:

1. **Select.** What is exported is the checkpoint's variables: every tensor whose kind (``summary.classify``:
   ``weights``, ``optimizer``, ``counters``; format ``bookkeeping``, the TF2 object graph and save counter, only
   when ``--kind bookkeeping`` asks for it) is among those asked for, that ``--filter`` matches and no
   ``--exclude`` matches (each a glob or a substring of its key or its variable, as in ``inspect``).
2. **Check dtypes.** A dtype the target cannot hold (strings, variants, int4, complex and bfloat16 in npz, ...)
   is refused, naming the tensors, or left out with ``skip_unsupported``: never converted.
3. **Name.** Each tensor by its ``variable`` (``names="key"``: by its storage key; a tensor without a variable,
   or bookkeeping, by its key), then through a rename map. A name two tensors would share is refused, naming them.
4. **Write.** Into a temporary file beside OUT, each tensor read through the reader's C-order stream (checksums
   checked as the bytes pass; partitioned variables assembled from their slices block by block) and written as
   it comes, so memory stays flat; the file is renamed to OUT only once every tensor was written. A damaged source
   or an interruption leaves no OUT, and OUT is never overwritten without ``force``.

The safetensors header records in ``__metadata__`` where the values came from (``ckptcheck.source``,
``ckptcheck.source_format``, ``ckptcheck.version``) and each tensor's key and variable (``ckptcheck.keys``,
``ckptcheck.variables``: JSON objects by name), so that ``ckptcheck diff SRC OUT`` pairs them and proves the
export exact. An npz has no place for metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, UnsupportedFormatError, UsageError
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.records import TensorInfo

EXPORT_SCHEMA = "ckptcheck.export/1"
SAFETENSORS_OUT, NPZ_OUT = "safetensors", "npz"
_SUFFIXES = {".safetensors": SAFETENSORS_OUT, ".npz": NPZ_OUT}
WEIGHTS, OPTIMIZER, COUNTERS, BOOKKEEPING = "weights", "optimizer", "counters", "bookkeeping"
KINDS = (WEIGHTS, OPTIMIZER, COUNTERS, BOOKKEEPING)
DEFAULT_KINDS = (WEIGHTS, OPTIMIZER, COUNTERS)
NAME_BY = ("variable", "key")
# Why a tensor was left out (LeftOut.reason).
NOT_KIND, FILTERED, EXCLUDED, UNSUPPORTED = "kind", "filter", "exclude", "unsupported dtype"
# numpy's own format holds these without pickling (bfloat16, float8 and int4 come from ml_dtypes, which a .npy
# header cannot name: numpy would load them as raw void bytes).
NPZ_DTYPES = frozenset({"float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
                        "uint16", "uint8", "bool", "complex64", "complex128"})
ProgressFn = Callable[[int, int], None]  # (bytes just written, total bytes to write)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # npz members are dated so that an unchanged export gives identical bytes


@dataclass(frozen=True)
class ExportedTensor:
    name: str  # in OUT
    key: str  # in the source checkpoint
    variable: str | None
    kind: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class LeftOut:
    key: str
    variable: str | None
    kind: str
    dtype: str
    shape: tuple[int, ...]
    reason: str  # NOT_KIND, FILTERED, EXCLUDED or UNSUPPORTED


@dataclass(frozen=True)
class ExportReport:
    source: str  # as given
    source_format: str
    out: str
    out_format: str  # "safetensors" or "npz"
    names: str  # "variable" or "key"
    kinds: tuple[str, ...]
    filter: str | None
    exclude: tuple[str, ...]
    rename_map: str | None
    tensors: tuple[ExportedTensor, ...]  # in the order written
    left_out: tuple[LeftOut, ...]  # in the source's order
    renamed: int  # tensors the rename map named
    bytes_written: int  # OUT's size

    @property
    def skipped(self) -> tuple[LeftOut, ...]:
        """Left out for their dtype (skip_unsupported)."""
        return tuple(t for t in self.left_out if t.reason == UNSUPPORTED)


# --- selecting ------------------------------------------------------------------------------------------------------


def tensor_kinds(reader: CheckpointReader, tensors: Sequence[TensorInfo]) -> list[str]:
    """Each tensor's kind, as every command tells it (summary.classify_kinds): weights, optimizer, counters
    (global_step, an optimizer-less step, strings and other values that are no parameters) or bookkeeping (the TF2
    object graph, a save counter)."""
    from ckptcheck.summary import classify_kinds

    return classify_kinds(reader, tensors)


def _matches(match: Callable[[str], bool], t: TensorInfo) -> bool:
    return match(t.name) or (t.variable is not None and match(t.variable))


def _unsupported(dtype: str, out_format: str) -> bool:
    if out_format == NPZ_OUT:
        return dtype not in NPZ_DTYPES
    from ckptcheck.formats.safetensors import WRITABLE

    return dtype not in WRITABLE


def _shown(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


# --- naming ---------------------------------------------------------------------------------------------------------


def _own_name(t: TensorInfo, names: str) -> str:
    """A tensor's name in OUT before any rename: its variable, or its key (names="key"; a tensor without a
    variable; bookkeeping, whose "variable" is a label in parentheses)."""
    if names == "variable" and t.variable is not None and not t.variable.startswith("("):
        return t.variable
    return t.name


def read_renames(path: str, reader: CheckpointReader) -> dict[str, str]:
    """A rename map as {key in the checkpoint: name in OUT}: restore-check's ``ckptcheck.rename-map/1`` (each
    entry's ``key`` exported as its ``variable``) or a plain JSON object {old: new}, where old is a tensor's key or
    its variable. Every entry must name a tensor of the checkpoint, and no tensor twice."""
    from ckptcheck.formats.jsonlimits import loads

    if not os.path.isfile(path):
        raise UsageError("no such rename map file", path=path)
    if os.path.getsize(path) > 64 << 20:
        raise UsageError("too large for a rename map", path=path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = loads(raw, what="the rename map", path=path)
    except CkptcheckError as exc:
        raise UsageError(exc.message, path=path) from None
    if isinstance(data, dict) and "schema" in data:
        from ckptcheck.renames import load_rename_map

        try:  # restore-check's map: each entry's checkpoint key is exported as its model variable
            pairs = [(key, variable) for variable, key in load_rename_map(data)]
        except UsageError as exc:
            raise UsageError(exc.message, path=path, hint=exc.hint) from None
    elif isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        pairs = list(data.items())
    else:
        raise UsageError("not a rename map: expected restore-check's map (schema ckptcheck.rename-map/1) or a JSON "
                         'object of names, {"old": "new"}', path=path)
    out: dict[str, str] = {}
    for old, new in pairs:
        if not new:
            raise UsageError(f"the rename map gives {old!r} an empty name", path=path)
        try:
            key = reader.key_of(old)
        except CkptcheckError as exc:
            hint = exc.hint if isinstance(exc, UsageError) else "names are a tensor's key or its variable"
            raise UsageError(f"the rename map names {old!r}, which the checkpoint does not store as one tensor",
                             path=path, hint=hint) from None
        if key in out:
            raise UsageError(f"the rename map names the tensor {key!r} twice", path=path)
        out[key] = new
    return out


def _check_name(name: str, key: str, out_format: str, out: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the name {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8, which {out_format} "
                         "names must be", path=out, tensor=key, hint="give it a name with --rename-map") from None
    if out_format == SAFETENSORS_OUT and name == "__metadata__":
        raise UsageError("the name __metadata__ is reserved in safetensors", path=out, tensor=key,
                         hint="give it another name with --rename-map")
    if out_format == NPZ_OUT and (not name or "\x00" in name or name.startswith("/")
                                  or ".." in name.split("/")):
        raise UsageError(f"{name!r} cannot name a member of an npz (a zip): empty, absolute, '..' or NUL",
                         path=out, tensor=key, hint="give it another name with --rename-map")


# --- planning -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    """What export would write (in order) and what it leaves out, with why."""

    tensors: tuple[ExportedTensor, ...]  # in the order they will be written
    left_out: tuple[LeftOut, ...]
    renamed: int


def plan_export(reader: CheckpointReader, *, out: str, out_format: str, names: str = "variable",
                kinds: Sequence[str] | None = None, filter: str | None = None, exclude: Sequence[str] = (),
                renames: dict[str, str] | None = None, skip_unsupported: bool = False) -> ExportPlan:
    """What would be written, and why the rest is not (see the module's steps 1-3); reads no values."""
    wanted = tuple(kinds) if kinds else DEFAULT_KINDS
    tensors = reader.tensors()
    kind_of = dict(zip((t.name for t in tensors), tensor_kinds(reader, tensors), strict=True))
    from ckptcheck.listing import name_matcher

    include = name_matcher(filter) if filter else None
    excludes = [name_matcher(p) for p in exclude]
    chosen: list[TensorInfo] = []
    left: list[LeftOut] = []

    def leave(t: TensorInfo, reason: str) -> None:
        left.append(LeftOut(t.name, t.variable, kind_of[t.name], t.dtype, t.shape, reason))

    for t in tensors:
        if kind_of[t.name] not in wanted:
            leave(t, NOT_KIND)
        elif include is not None and not _matches(include, t):
            leave(t, FILTERED)
        elif any(_matches(m, t) for m in excludes):
            leave(t, EXCLUDED)
        else:
            chosen.append(t)
    unsupported = [t for t in chosen if _unsupported(t.dtype, out_format)]
    if unsupported and not skip_unsupported:
        listed = [f"{t.variable if t.variable and not t.variable.startswith('(') else t.name} ({t.dtype})"
                  for t in unsupported]
        raise UnsupportedFormatError(
            f"{len(unsupported)} tensor(s) of a dtype {out_format} cannot hold: {_shown(listed)}", path=out,
            hint="--skip-unsupported leaves them out and lists them; --kind, --filter and --exclude choose what "
                 "is exported" + ("; safetensors holds bfloat16 and float8" if out_format == NPZ_OUT else ""))
    for t in unsupported:
        leave(t, UNSUPPORTED)
    skipped = {t.name for t in unsupported}
    chosen = [t for t in chosen if t.name not in skipped]
    renames = renames or {}
    by_name: dict[str, list[str]] = {}
    planned = []
    for t in chosen:
        name = renames.get(t.name) or _own_name(t, names)
        _check_name(name, t.name, out_format, out)
        by_name.setdefault(name, []).append(t.name)
        planned.append(ExportedTensor(name, t.name, t.variable, kind_of[t.name], t.dtype, t.shape,
                                      _value_bytes(t)))
    if not planned:
        reasons = sorted({lo.reason for lo in left})
        raise UsageError(f"nothing to export: all {len(tensors)} tensors are left out ({', '.join(reasons)})",
                         path=out, hint="`ckptcheck inspect` lists the tensors, their variables and kinds")
    shared = {n: keys for n, keys in by_name.items() if len(keys) > 1}
    if shared:
        first, keys = next(iter(shared.items()))
        more = f" (and {len(shared) - 1} more shared name(s))" if len(shared) > 1 else ""
        raise UsageError(f"{len(keys)} tensors would be named {first!r}: {_shown(keys)}{more}", path=out,
                         hint="--names key names each by its storage key; --rename-map gives them names, "
                              "--exclude leaves some out")
    position = {t.name: i for i, t in enumerate(tensors)}
    left.sort(key=lambda lo: position[lo.key])  # in the source's order, the skipped ones among the rest
    return ExportPlan(tuple(_write_order(planned, out_format)), tuple(left),
                 sum(1 for t in planned if t.key in renames))


def _value_bytes(t: TensorInfo) -> int:
    """The bytes a numeric tensor's values take in C order (for a partitioned variable, the whole's)."""
    from ckptcheck.formats.tensorflow.dtypes import BY_NAME

    dtype = BY_NAME.get(t.dtype)
    return t.size * dtype.itemsize if dtype is not None and dtype.itemsize else t.nbytes


def _write_order(tensors: list[ExportedTensor], out_format: str) -> list[ExportedTensor]:
    if out_format == SAFETENSORS_OUT:
        # As the safetensors library orders them: the widest dtypes first, then by name; with the header padded to
        # 8 bytes, every tensor then starts on a multiple of its element size (a memory map can view it in place).
        from ckptcheck.formats.tensorflow.dtypes import BY_NAME

        return sorted(tensors, key=lambda t: (-BY_NAME[t.dtype].itemsize, t.name))
    from ckptcheck.order import natural_sorted

    return natural_sorted(tensors, lambda t: t.name)


# --- writing --------------------------------------------------------------------------------------------------------


def _little_endian_bytes(chunk: Any) -> memoryview:
    import numpy as np

    if chunk.dtype.byteorder == ">" or (chunk.dtype.byteorder == "=" and sys.byteorder == "big"):
        chunk = chunk.astype(chunk.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(chunk).view(np.uint8).data)


def _copy_values(reader: CheckpointReader, t: ExportedTensor, write: Callable[[Any], object],
                 progress: ProgressFn | None, total: int) -> None:
    """Stream one tensor's values in C order of the whole into ``write``; the bytes must be exactly its size."""
    done = 0
    for chunk in reader.iter_c_order(t.key):
        if chunk.dtype == object:  # a string or variant tensor: not one _unsupported lets through
            raise UnsupportedFormatError(f"the reader gave {t.dtype} elements as objects", tensor=t.key)
        data = _little_endian_bytes(chunk)
        write(data)
        done += len(data)
        if progress is not None:
            progress(len(data), total)
    if done != t.nbytes:
        raise CorruptCheckpointError(f"the values came to {done:,} bytes where shape {list(t.shape)} of {t.dtype} "
                                     f"takes {t.nbytes:,}", path=reader.path, tensor=t.key)


def _metadata(reader: CheckpointReader, tensors: Sequence[ExportedTensor]) -> dict[str, str]:
    from ckptcheck import __version__
    from ckptcheck.formats import location as loc
    from ckptcheck.formats.safetensors import KEYS_METADATA, VARIABLES_METADATA

    where = reader.info().location
    source = where if loc.is_url(where) else os.path.abspath(where)
    # ensure_ascii: a key that is not UTF-8 (its bytes held as lone surrogates) is written as \udcXX escapes.
    return {
        "ckptcheck.version": __version__,
        "ckptcheck.source": source.encode("utf-8", "backslashreplace").decode("utf-8"),
        "ckptcheck.source_format": reader.info().format,
        KEYS_METADATA: json.dumps({t.name: t.key for t in tensors}, sort_keys=True),
        VARIABLES_METADATA: json.dumps({t.name: t.variable for t in tensors if t.variable is not None},
                                       sort_keys=True),
    }


def _write_safetensors(f: IO[bytes], reader: CheckpointReader, tensors: Sequence[ExportedTensor],
                       progress: ProgressFn | None) -> None:
    from ckptcheck.formats.safetensors import WRITABLE, encode_header

    entries = []
    at = 0
    for t in tensors:
        entries.append((t.name, WRITABLE[t.dtype], t.shape, at, at + t.nbytes))
        at += t.nbytes
    f.write(encode_header(entries, _metadata(reader, tensors)))
    for t in tensors:
        _copy_values(reader, t, f.write, progress, at)


def _write_npz(f: IO[bytes], reader: CheckpointReader, tensors: Sequence[ExportedTensor],
               progress: ProgressFn | None) -> None:
    """numpy's own npz: a zip of stored (uncompressed) ``NAME.npy`` members, each a .npy header and the values,
    written as they stream (zipfile computes each member's CRC-32 on the way)."""
    import io
    import zipfile

    from numpy.lib import format as npy

    from ckptcheck.formats.tensorflow.dtypes import numpy_dtype

    total = sum(t.nbytes for t in tensors)
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for t in tensors:
            head = io.BytesIO()
            described = {"descr": npy.dtype_to_descr(numpy_dtype(t.dtype).newbyteorder("<")),
                         "fortran_order": False, "shape": t.shape}
            try:
                npy.write_array_header_1_0(head, described)
            except ValueError:  # a header past 64 KiB (a rank in the thousands): format 2.0 holds it
                head = io.BytesIO()
                npy.write_array_header_2_0(head, described)
            info = zipfile.ZipInfo(t.name + ".npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(head.getvalue()) + t.nbytes  # zipfile decides on ZIP64 from it
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as member:
                member.write(head.getvalue())
                _copy_values(reader, t, member.write, progress, total)


_WRITEBACK_BYTES = 64 << 20


class _Writeback:
    """Starts the kernel writing each 64 MiB written out to disk while the export goes on
    (posix_fadvise(DONTNEED) on a range starts its writeback), so that the fsync at the end, which makes the
    rename durable, waits for the last range only, and dirty pages do not pile up over a large export (1 GiB:
    the final fsync took ~0.4 s without this, ~0.03 s with it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.pending = 0
        self.start = 0
        self.enabled = hasattr(os, "posix_fadvise")

    def advance(self, nbytes: int, _total: int = 0) -> None:
        self.pending += nbytes
        if not self.enabled or self.pending < _WRITEBACK_BYTES:
            return
        self.f.flush()
        end = self.f.tell()
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.f.fileno(), self.start, end - self.start, os.POSIX_FADV_DONTNEED)
        self.start, self.pending = end, 0


@contextlib.contextmanager
def _temporary_beside(out: str) -> Iterator[tuple[IO[bytes], str]]:
    """A new file in OUT's directory (so that the rename is atomic), removed unless the caller renamed it."""
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".ckptcheck-partial", dir=directory)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # as open() would create OUT, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _place(tmp: str, out: str, force: bool) -> None:
    """Move the finished file to OUT: over an existing OUT only with ``force``; without it, a file that appeared
    at OUT while the export ran is not replaced (a hard link fails where a name exists)."""
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise UsageError("exists (it appeared while exporting); nothing was overwritten", path=out,
                         hint="--force replaces it") from None
    except OSError:  # a filesystem without hard links
        if os.path.lexists(out):
            raise UsageError("exists; nothing was overwritten", path=out, hint="--force replaces it") from None
        os.replace(tmp, out)
        return
    os.unlink(tmp)


def out_format_of(out: str) -> str:
    found = next((fmt for suffix, fmt in _SUFFIXES.items() if out.lower().endswith(suffix)), None)
    if found is None:
        raise UsageError("OUT's suffix picks the format: .safetensors or .npz", path=out)
    return found


def _check_out(out: str, force: bool) -> None:
    from ckptcheck.formats import location as loc

    if loc.is_url(out):
        raise UsageError("export writes a local file; OUT cannot be a URL", path=out,
                         hint="export here, then copy it to the store")
    if os.path.isdir(out):
        raise UsageError("is a directory; OUT names the file to write", path=out)
    if os.path.lexists(out) and not force:
        raise UsageError("exists; nothing was overwritten", path=out, hint="--force replaces it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError("its directory does not exist", path=out)


def export_checkpoint(
    source: str | CheckpointReader,
    out: str,
    *,
    names: str = "variable",
    kinds: Sequence[str] | None = None,
    filter: str | None = None,
    exclude: Sequence[str] = (),
    rename_map: str | None = None,
    skip_unsupported: bool = False,
    force: bool = False,
    progress: ProgressFn | None = None,
    jobs: int | None = None,
) -> ExportReport:
    """Export ``source`` (a path, a URL, or an open reader) to ``out`` (``.safetensors`` or ``.npz``); see the
    module's docstring. ``progress`` is called with (bytes just written, total); ``jobs``: range reads in flight
    ahead of the writer (None: the default for where the files are)."""
    out = os.fspath(out)
    out_format = out_format_of(out)
    if names not in NAME_BY:
        raise UsageError(f"--names is variable or key, not {names!r}")
    bad_kinds = [k for k in kinds or () if k not in KINDS]
    if bad_kinds:
        raise UsageError(f"unknown kind {bad_kinds[0]!r}: kinds are {', '.join(KINDS)}")
    _check_out(out, force)
    if isinstance(source, CheckpointReader):
        return _export(source, source.path, out, out_format, names, kinds, filter, exclude, rename_map,
                       skip_unsupported, force, progress, jobs)
    from ckptcheck import open_checkpoint

    with open_checkpoint(source) as reader:
        return _export(reader, source, out, out_format, names, kinds, filter, exclude, rename_map,
                       skip_unsupported, force, progress, jobs)


def _export(reader: CheckpointReader, source: str, out: str, out_format: str, names: str,
            kinds: Sequence[str] | None, filter: str | None, exclude: Sequence[str], rename_map: str | None,
            skip_unsupported: bool, force: bool, progress: ProgressFn | None, jobs: int | None) -> ExportReport:
    info = reader.info()
    target = os.path.realpath(out)
    if any(os.path.realpath(f) == target for f in info.files if "://" not in f):
        raise UsageError("refusing to write over one of the checkpoint's own files", path=out)
    renames = read_renames(rename_map, reader) if rename_map is not None else None
    plan = plan_export(reader, out=out, out_format=out_format, names=names, kinds=kinds, filter=filter,
                       exclude=exclude, renames=renames, skip_unsupported=skip_unsupported)
    if jobs is None:
        from ckptcheck.formats.prefetch import default_jobs

        jobs = default_jobs(list(info.files))
    reader.read_ahead([t.key for t in plan.tensors], jobs, slices=False)  # read in this order, C order of each
    write = _write_safetensors if out_format == SAFETENSORS_OUT else _write_npz
    with _temporary_beside(out) as (f, tmp):
        writeback = _Writeback(f)

        def written(nbytes: int, total: int) -> None:
            writeback.advance(nbytes)
            if progress is not None:
                progress(nbytes, total)

        write(f, reader, plan.tensors, written)
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
        f.close()
        _place(tmp, out, force)
    return ExportReport(
        source=source, source_format=info.format, out=out, out_format=out_format, names=names,
        kinds=tuple(kinds) if kinds else DEFAULT_KINDS, filter=filter, exclude=tuple(exclude),
        rename_map=rename_map, tensors=plan.tensors, left_out=plan.left_out, renamed=plan.renamed,
        bytes_written=size)
