"""`verify`: check everything a checkpoint format can check, report every problem, stream the data.

Tensor bundles: every index block checksum, the header's shard count, every shard present and long enough for
every entry, every entry's size against its dtype and shape, every entry's crc32c (numeric, string and sliced
tensors). V1 checkpoints: every block checksum of every shard, every shard the pattern names present, every slice
record decoded against its table of contents (V1 has no per-tensor checksum). Keras files: every HDF5 dataset
readable to the end; for .keras archives, every zip member's CRC. safetensors files: every rule of the header
(the format holds no checksum), and every tensor's bytes read. Damage found is a Problem (exit 1); a path that
names no checkpoint, or a file that is intact but not decodable here (unknown compression or format version), is
an error (exit 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError, NotRegularFileError, UnsupportedFormatError
from ckptcheck.formats import location as loc
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.resolve import BUNDLE, V1, resolve
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS, SAFETENSORS, TF1
from ckptcheck.selection import Selection
from ckptcheck.verify_scope import NonFinite, Scope

if TYPE_CHECKING:
    from ckptcheck.formats.tensorflow.bundle import BundleReader

# Problems are reported in the order found, each once: tuple(dict.fromkeys(problems)).
ProgressFn = Callable[[int, int], None]  # called with (bytes just checked, total bytes to check)


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found wrong; `file` and `tensor` name where."""

    kind: str  # "checksum", "truncated", "missing-file", "index", "structure", "unreadable"
    message: str
    file: str | None = None
    tensor: str | None = None
    variable: str | None = None  # the variable the tensor holds, where known (differences from a manifest)
    tensor_kind: str | None = None  # its kind: weights, optimizer, counters or bookkeeping

    def __str__(self) -> str:
        if self.tensor is not None:
            return f"{self.message} in `{self.tensor}`" + (f" ({self.file})" if self.file else "")
        return f"{self.file}: {self.message}" if self.file else self.message


@dataclass(frozen=True)
class VerifyReport:
    path: str
    format: str
    files: tuple[str, ...]
    tensors_checked: int
    bytes_checked: int
    problems: tuple[Problem, ...]
    against: str | None = None  # the manifest compared with, if any
    differences: tuple[Problem, ...] = ()  # differences from that manifest
    notes: tuple[str, ...] = ()  # what the check could and could not cover, for this format
    # --finite: the floating-point tensors counted (None: not asked) and those holding NaN or Inf
    finite_checked: int | None = None
    nonfinite: tuple[NonFinite, ...] = ()
    selection: Selection | None = None  # --kind / --exclude, when given

    @property
    def ok(self) -> bool:
        return not self.problems and not self.differences and not self.nonfinite


class MultipleProblems(Exception):
    def __init__(self, errors: list[CorruptCheckpointError]) -> None:
        super().__init__(f"{len(errors)} problems")
        self.errors = errors


def _kind_of(message: str) -> str:
    if "checksum" in message:
        return "checksum"
    if "past the end" in message or "truncated" in message or "short read" in message:
        return "truncated"
    if "missing" in message:
        return "missing-file"
    return "structure"


def problem_from(exc: CkptcheckError, kind: str | None = None) -> Problem:
    return Problem(kind or _kind_of(exc.message), exc.message, file=exc.path, tensor=exc.tensor)


def _all_problems(name: str, first: CorruptCheckpointError, check: Callable[[str], None] | None) -> list[Problem]:
    """The fingerprint pass stops at a tensor's first damaged part; look again part by part to name them all."""
    if check is None:
        return [problem_from(first)]
    try:
        check(name)
    except MultipleProblems as many:
        return [problem_from(exc) for exc in many.errors]
    except CorruptCheckpointError as exc:
        return [problem_from(exc)]
    return [problem_from(first)]


def _check_tensors(
    reader: CheckpointReader,
    problems: list[Problem],
    progress: ProgressFn | None,
    fingerprints: dict[str, Any] | None,
    skip: Callable[[str], bool] = lambda name: False,
    check: Callable[[str], None] | None = None,
    jobs: int | None = None,
    scope: Scope | None = None,
) -> tuple[int, int]:
    """Stream every tensor once (checksums are checked as the bytes pass); return (tensors, bytes) checked.
    ``jobs`` concurrent range reads fetch ahead where the reader can (None: prefetch.default_jobs). ``scope``:
    which tensors, and what to learn of them beyond checksums (verify_scope.py)."""
    checked = nbytes = 0
    todo = [t for t in reader.tensors() if not skip(t.name)]
    if scope is not None:
        todo = scope.select(reader, todo)
    # In C order of the whole, where values are looked at (digests, NaN counts); else slice by slice.
    streamed = fingerprints is not None or (scope is not None and scope.finite)
    total = sum(t.nbytes for t in todo)
    if jobs is None:
        from ckptcheck.formats.prefetch import default_jobs

        jobs = default_jobs(list(reader.info().files))
    # verify alone checks a partitioned variable slice by slice; with --against it is digested in C order
    reader.read_ahead([t.name for t in todo], jobs, slices=not streamed)
    for t in todo:
        found = len(problems)
        try:
            if fingerprints is not None:
                from ckptcheck.manifest import manifest_entry  # numpy, for the statistics: only with --against

                kind = scope.kinds.get(t.name) if scope is not None else None
                record = fingerprints[t.name] = manifest_entry(reader, t, kind)  # one pass checks the checksums
                if scope is not None:
                    scope.recorded(t, record)
            elif scope is None or not scope.counts(reader, t):
                if check is not None:
                    check(t.name)
                else:
                    for _chunk in reader.iter_chunks(t.name):
                        pass
        except MultipleProblems as many:
            problems += [problem_from(exc) for exc in many.errors]
        except CorruptCheckpointError as exc:
            problems += _all_problems(t.name, exc, check if streamed else None)
        except NotRegularFileError:
            raise  # a pipe or device in place of a data file: nothing of the checkpoint can be read through it
        except UnsupportedFormatError as exc:
            # One entry ckptcheck cannot decode (a dtype with no values on disk, an unknown one) is reported, and
            # every other tensor is still checked.
            problems.append(Problem("unreadable", exc.message, file=exc.path, tensor=exc.tensor or t.name))
        checked += 1
        if len(problems) == found:  # the bytes of a damaged tensor were not all there to check (a 48-byte shard
            nbytes += t.nbytes      # may claim 2**40): only what passed is counted
        if progress is not None:
            progress(t.nbytes, total)
    return checked, nbytes


# Missing data shards named one by one up to this many; past it, one problem for them all.
_MISSING_SHARDS_NAMED = 10


def _missing_shard_problems(reader: BundleReader, missing: list[int]) -> list[Problem]:
    """One problem per missing data shard; past _MISSING_SHARDS_NAMED, one for them all (a header claiming a
    million shards beside one file is one problem, not a million lines)."""
    if len(missing) <= _MISSING_SHARDS_NAMED:
        return [Problem("missing-file", "data shard is missing", file=reader.shard_path(i)) for i in missing]
    named = ", ".join(loc.basename(reader.shard_path(i)) for i in missing[:3])
    last = loc.basename(reader.shard_path(missing[-1]))
    return [Problem("missing-file", f"{len(missing):,} of the {reader.num_shards:,} data shards are missing: "
                                    f"{named}, ... {last}", file=reader.shard_path(missing[0]))]


def _verify_bundle(prefix: str, path: str, format_hint: str | None, progress: ProgressFn | None,
                   fingerprints: dict[str, Any] | None, jobs: int | None = None,
                   scope: Scope | None = None) -> VerifyReport:
    from ckptcheck.formats.tensorflow.bundle import BundleReader
    from ckptcheck.formats.tensorflow.sstable import SSTable

    index = prefix + ".index"
    problems: list[Problem] = []
    try:
        reader = BundleReader(prefix, path=path, format=format_hint, tolerant=True)
    except CorruptCheckpointError as exc:
        # The reader could not go on (no header, bad footer...): still name every damaged block.
        with contextlib.suppress(CorruptCheckpointError):
            problems += [Problem("index", b.message, file=index) for b in SSTable.open(index).scan_problems()]
        problems.append(problem_from(exc, "index"))
        return VerifyReport(path, format_hint or "tensor-bundle", (index,), 0, 0, tuple(dict.fromkeys(problems)))
    with reader:
        problems += [Problem("index", message, file=index) for message in reader.index_problems]
        missing_shards, notes = reader.absent_shards()
        problems += _missing_shard_problems(reader, missing_shards)
        info = reader.info()
        missing = set(missing_shards)

        def in_missing_shard(name: str) -> bool:
            t = reader.tensor_info(name)
            return t.nbytes > 0 and not t.slices and reader.entry(name).shard_id in missing

        def check_parts(name: str) -> None:
            # Each slice is checked on its own, so damage in one shard does not hide damage in another.
            errors = []
            for part in reader.parts(name):
                try:
                    reader.check_part(part, name)
                except CorruptCheckpointError as exc:
                    errors.append(exc)
            if errors:
                raise MultipleProblems(errors)

        checked, nbytes = _check_tensors(reader, problems, progress, fingerprints, skip=in_missing_shard,
                                         check=check_parts, jobs=jobs, scope=scope)
    return VerifyReport(path, info.format, info.files, checked, nbytes, tuple(dict.fromkeys(problems)), notes=notes)


V1_NOTE = ("V1 checkpoints store no per-tensor checksum: every table block's crc32c was checked and every value "
           "decoded against the table of contents")


def _verify_v1(location: str, path: str, progress: ProgressFn | None,
               fingerprints: dict[str, Any] | None, scope: Scope | None = None) -> VerifyReport:
    from ckptcheck.formats.tensorflow.sstable import SSTable
    from ckptcheck.formats.tensorflow.v1 import V1Reader, missing_shards, unused_records, v1_files

    files = v1_files(location)
    problems = [Problem("missing-file", "shard is missing", file=m) for m in missing_shards(location)]
    try:
        reader = V1Reader(location, path=path)
    except CorruptCheckpointError as exc:
        # A damaged block that held the table of contents is the one problem; the scan below names it.
        for f in files:
            with contextlib.suppress(CorruptCheckpointError):
                table = SSTable.open(f, in_memory=False)
                try:
                    problems += [Problem("index", b.message, file=f) for b in table.scan_problems()]
                finally:
                    table.close()
        if not any(p.kind == "index" for p in problems):
            problems.append(problem_from(exc, "structure"))
        return VerifyReport(path, TF1, tuple(files), 0, 0, tuple(dict.fromkeys(problems)), notes=(V1_NOTE,))
    with reader:
        info = reader.info()
        checked, nbytes = _check_tensors(reader, problems, progress, fingerprints, scope=scope)
        # Blocks no tensor read (the index and metaindex blocks, records nothing lists) are checked too; damage
        # already named with a tensor is not named again.
        named = {p.message for p in problems}
        for i, table in enumerate(reader.tables):
            keys, damaged = table.checked_keys()  # the blocks the tensors' reads did not reach, read once
            problems += [Problem("index", b.message, file=reader.files[i]) for b in damaged if b.message not in named]
            extra = unused_records(reader, i, keys)
            if extra:
                shown = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
                problems.append(Problem("structure", f"{len(extra)} record(s) that the table of contents does "
                                        f"not list: {shown}", file=reader.files[i]))
    return VerifyReport(path, info.format, info.files, checked, nbytes, tuple(dict.fromkeys(problems)),
                        notes=(V1_NOTE,))


def _verify_zip_members(archive: str, problems: list[Problem]) -> None:
    """Every member of a .keras archive read to its end, where zipfile checks its CRC (model.weights.npz's own
    members too): formats.keras.archive.damaged_members."""
    from ckptcheck.formats.keras.archive import damaged_members

    problems += [Problem(kind, message, file=archive) for kind, message in damaged_members(archive)]


def _verify_keras(kind: str, location: str, path: str, progress: ProgressFn | None,
                  fingerprints: dict[str, Any] | None, scope: Scope | None = None) -> VerifyReport:
    from ckptcheck.formats.keras.open import open_keras

    problems: list[Problem] = []
    if kind == KERAS:
        _verify_zip_members(location, problems)
        if any(p.kind == "structure" for p in problems):  # not a zip at all: the reader would only say so again
            return VerifyReport(path, kind, (location,), 0, 0, tuple(dict.fromkeys(problems)))
    try:
        reader = open_keras(kind, location, path=path)
    except (CorruptCheckpointError, UnsupportedFormatError) as exc:
        damaged = any(p.kind == "checksum" for p in problems)
        if isinstance(exc, UnsupportedFormatError) and not damaged:
            raise  # not damage: a file ckptcheck does not read
        if not (damaged and "CRC" in exc.message):  # a bad CRC is said already
            problems.append(problem_from(exc))
        return VerifyReport(path, kind, (location,), 0, 0, tuple(dict.fromkeys(problems)))
    from ckptcheck.formats.keras.archive import KerasArchiveReader

    if isinstance(reader, KerasArchiveReader):
        reader.crc_checked_elsewhere()  # every member's CRC was checked above
    with reader:
        info = reader.info()
        checked, nbytes = _check_tensors(reader, problems, progress, fingerprints, scope=scope)
    notes = (HDF5_NOTE,) if info.format in (KERAS_WEIGHTS, KERAS_H5) else ()
    return VerifyReport(path, info.format, info.files, checked, nbytes, tuple(dict.fromkeys(problems)),
                        notes=notes)


HDF5_NOTE = ("HDF5 stores no checksum of the values (Keras writes its datasets without HDF5's Fletcher-32 "
             "filter): the file's structure was checked and every dataset read to its end, but a changed value "
             "goes unseen; compare the values with a manifest: verify --against MANIFEST")
HDF5_AGAINST_NOTE = ("HDF5 stores no checksum of the values: the file's structure was checked, every dataset read "
                     "to its end, and the values compared with the manifest's digests")


SAFETENSORS_NOTE = ("safetensors stores no checksum: the header was checked as the safetensors library checks it "
                    "(its size, its JSON, every dtype, and every tensor's offsets: inside the file, each exactly its "
                    "dtype times its shape, contiguous, not overlapping, covering the data to the end of the file) "
                    "and every tensor's bytes were read to their end, but a changed value goes unseen; compare the "
                    "values with a manifest (verify --against MANIFEST) or with the checkpoint they came from "
                    "(ckptcheck diff)")
SAFETENSORS_AGAINST_NOTE = ("safetensors stores no checksum: the header was checked as the safetensors library "
                            "checks it and the values compared with the manifest's digests")


def _verify_safetensors(location: str, path: str, progress: ProgressFn | None,
                        fingerprints: dict[str, Any] | None, scope: Scope | None = None) -> VerifyReport:
    """Every rule of the header the library holds a file to (every broken one named, not only the first), then
    every tensor the header places inside the file read to its end."""
    from ckptcheck.formats.safetensors import SafetensorsReader

    try:
        reader = SafetensorsReader(location, path=path, tolerant=True)
    except CorruptCheckpointError as exc:  # no header to go by (its length, its JSON): the one problem
        return VerifyReport(path, SAFETENSORS, (location,), 0, 0, (problem_from(exc, "structure"),),
                            notes=(SAFETENSORS_NOTE,))
    with reader:
        problems = [problem_from(exc, "truncated" if "past the end" in exc.message else "structure")
                    for exc in reader.layout_problems]
        misplaced = {p.tensor for p in problems if p.tensor is not None}
        checked, nbytes = _check_tensors(reader, problems, progress, fingerprints, skip=misplaced.__contains__,
                                         scope=scope)
        info = reader.info()
    return VerifyReport(path, info.format, info.files, checked, nbytes, tuple(dict.fromkeys(problems)),
                        notes=(SAFETENSORS_NOTE,))


def archive_problems(archive: str) -> list[Problem]:
    """Every damaged member of a ``.keras`` archive (its CRC-32 fails, or it does not read), as verify finds
    them; for commands that read values from the archive without checking its CRCs (diff)."""
    problems: list[Problem] = []
    _verify_zip_members(archive, problems)
    return problems


def verify(
    path: str,
    against: str | None = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    progress: ProgressFn | None = None,
    jobs: int | None = None,
    selection: Selection | None = None,
    finite: bool = False,
) -> VerifyReport:
    """Check a checkpoint's integrity and, with ``against``, compare it with a committed manifest, pairing tensors
    by variable (manifest.compare_with). ``jobs``: how many range reads run at once ahead of the checks (bundles;
    None: 8 for a URL, else half the cores up to 4). ``selection``: only these tensors (--kind, --exclude).
    ``finite``: also count NaN and Inf in every floating-point tensor; any is a finding (exit 1)."""
    expected = None
    selections = [selection] if selection is not None and not selection.everything else []
    if against is not None:  # numpy (for the manifest's statistics) is imported only then
        from ckptcheck import manifest as manifest_mod

        expected = manifest_mod.load(against)  # a bad manifest is misuse: fail early
        recorded = Selection.recorded(expected.get("selection"))
        if not recorded.everything:  # written with --kind/--exclude: the checkpoint is narrowed alike
            selections.append(recorded)
    fingerprints: dict[str, Any] | None = {} if expected is not None else None
    scope = Scope(selections, finite) if expected is not None or finite or selections else None
    resolved = resolve(path)
    if resolved.kind == BUNDLE:
        report = _verify_bundle(resolved.location, path, resolved.format_hint, progress, fingerprints, jobs, scope)
    elif resolved.kind == V1:
        report = _verify_v1(resolved.location, path, progress, fingerprints, scope)
    elif resolved.kind == SAFETENSORS:
        report = _verify_safetensors(resolved.location, path, progress, fingerprints, scope)
    else:
        report = _verify_keras(resolved.kind, resolved.location, path, progress, fingerprints, scope)
    extra: dict[str, Any] = {"selection": selection if selection is not None and not selection.everything else None}
    if scope is not None and finite:
        extra.update(finite_checked=scope.finite_checked, nonfinite=tuple(scope.nonfinite))
    if expected is None or fingerprints is None:
        return dataclasses.replace(report, **extra)
    damaged = {p.tensor for p in report.problems if p.tensor}
    assert scope is not None
    held = Counter(scope.variables.values())  # a variable several tensors hold (unnamed "Variable") names none
    damaged_variables = {v for k in damaged if (v := scope.variables.get(k)) is not None and held[v] == 1}
    want = {k: v for k, v in expected["tensors"].items()
            if k not in damaged and v.get("variable") not in damaged_variables}
    actual = manifest_mod.assemble(report.format, fingerprints)
    comparison = manifest_mod.compare_with(actual, {**expected, "tensors": want}, atol, rtol,
                                           selections=[selection] if selection is not None else [],
                                           skipped=scope.skipped)
    against_notes = {HDF5_NOTE: HDF5_AGAINST_NOTE, SAFETENSORS_NOTE: SAFETENSORS_AGAINST_NOTE}
    notes = tuple(against_notes.get(n, n) for n in report.notes) + tuple(comparison.notes)
    return dataclasses.replace(
        report, against=against, notes=notes, **extra,
        differences=tuple(Problem(d.kind, d.message, tensor=d.tensor, variable=d.variable, tensor_kind=d.tensor_kind)
                          for d in comparison.differences),
    )
