"""``ckptcheck scan``: what loading each model file would do beyond computing, found without loading it.

For each path (a directory is searched for model files): every Keras config a loader would deserialize (callables
outside Keras's modeling APIs, Lambda bytecode, modules from outside Keras, files and URLs a layer reads), every
HDF5 dataset or link that points at another file, duplicate zip members and pickles in a ``.keras`` archive, and
every op of a SavedModel's graphs that touches files, the network or other processes, with when it runs (at load,
or when called). Nothing is run, unpickled, imported or fetched: the files are read as bytes, JSON, HDF5
structure and protobuf.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ckptcheck.errors import CkptcheckError
from ckptcheck.records import SafetyFinding

SCHEMA = "ckptcheck.scan/1"
SAVED_MODEL_PB = "saved_model.pb"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TF_SUFFIXES = (".meta", ".index")  # a TF1 checkpoint's MetaGraphDef; a tensor bundle's table
MAX_SAVED_MODEL_BYTES = 1 << 31  # protobuf's limit on one message


@dataclass(frozen=True)
class FileScan:
    """One model file (or SavedModel / unzipped .keras directory) and what the scan found in it."""

    path: str
    kind: str  # "keras" (zip), "hdf5", "keras-directory", "savedmodel", or "unreadable"
    scanned: tuple[str, ...] = ()  # what was read: "config.json in the zip", "HDF5 links and storage", ...
    findings: tuple[SafetyFinding, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None  # why the file could not be scanned (exit 2)

    @property
    def warnings(self) -> tuple[SafetyFinding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


@dataclass(frozen=True)
class ScanReport:
    files: tuple[FileScan, ...] = field(default_factory=tuple)

    @property
    def warnings(self) -> int:
        return sum(len(f.warnings) for f in self.files)

    @property
    def unreadable(self) -> int:
        return sum(1 for f in self.files if f.error is not None)

    @property
    def exit_code(self) -> int:
        """1 when anything would act beyond the model; else 2 when a file could not be read; else 0."""
        if self.warnings:
            return 1
        return 2 if self.unreadable or not self.files else 0


def scan_paths(paths: Sequence[str]) -> ScanReport:
    """Scan each path: a model file, a SavedModel or unzipped ``.keras`` directory, or a directory of them."""
    files: list[FileScan] = []
    for path in paths:
        files += scan_path(path)
    return ScanReport(tuple(files))


def scan_path(path: str) -> list[FileScan]:
    from ckptcheck.formats import location as loc

    if loc.is_url(path):
        return [FileScan(path, "unreadable", error="scan reads local files and directories; download it first")]
    if os.path.isdir(path):
        if _model_directory(path) is not None:
            return [scan_file(path)]
        found = list(model_files(path))
        if not found:
            return [FileScan(path, "unreadable", error="no model files (.keras, .h5, .hdf5, SavedModel, unzipped "
                                                       ".keras directory, TF checkpoint) in this directory")]
        return [scan_file(p) for p in found]
    if not os.path.exists(path):
        return [FileScan(path, "unreadable", error="no such file or directory")]
    if not os.path.isfile(path):
        return [FileScan(path, "unreadable", error="not a regular file (a pipe, device or socket is never read)")]
    return [scan_file(path)]


def model_files(directory: str) -> Iterable[str]:
    """Model files and directories under ``directory``, in sorted order, without following symbolic links: a
    SavedModel or unzipped ``.keras`` directory counts as one (and is not searched further)."""
    from ckptcheck.formats.keras.safety import HDF5_SIGNATURE

    for root, dirs, names in os.walk(directory):
        dirs.sort()
        names.sort()
        kept = []
        for d in dirs:
            full = os.path.join(root, d)
            if os.path.islink(full):
                continue
            if _model_directory(full) is not None:
                yield full
            else:
                kept.append(d)
        dirs[:] = kept
        for name in names:
            full = os.path.join(root, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            if name.lower().endswith(KERAS_SUFFIXES + TF_SUFFIXES):
                yield full
                continue
            try:
                with open(full, "rb") as f:
                    if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:  # tf_keras loads HDF5 by its content
                        yield full
            except OSError:
                continue


def _model_directory(path: str) -> str | None:
    if os.path.isfile(os.path.join(path, SAVED_MODEL_PB)):
        return "savedmodel"
    if os.path.isfile(os.path.join(path, "config.json")) and any(
            os.path.exists(os.path.join(path, n)) for n in ("metadata.json", "model.weights.h5",
                                                            "model.weights.npz")):
        return "keras-directory"
    return None


def scan_file(path: str) -> FileScan:
    """Scan one model file or model directory. Never raises for bad input: the error is in the result."""
    try:
        return _scan(path)
    except CkptcheckError as exc:
        return FileScan(path, "unreadable", error=exc.message)
    except MemoryError:
        return FileScan(path, "unreadable", error="out of memory while scanning")
    except (OSError, ValueError, RuntimeError, RecursionError) as exc:
        return FileScan(path, "unreadable", error=str(exc) or type(exc).__name__)


def _scan(path: str) -> FileScan:
    from ckptcheck.formats.keras import safety

    if os.path.isdir(path):
        kind = _model_directory(path)
        if kind == "savedmodel":
            return _saved_model(path, os.path.join(path, SAVED_MODEL_PB))
        if kind == "keras-directory":
            return _keras_directory(path)
        return FileScan(path, "unreadable", error="not a SavedModel or unzipped .keras directory")
    if os.path.basename(path) == SAVED_MODEL_PB:
        return _saved_model(os.path.dirname(path) or ".", path)
    if path.endswith(".meta"):
        return _saved_model(path, path, meta_graph_only=True)
    if path.endswith(".index"):
        return FileScan(path, "tensor-bundle", ("the bundle's table: it holds tensor values only, nothing in it "
                                                "runs",))
    zipped, h5 = safety.is_zip(path), safety.hdf5_offset(path)
    if not zipped and h5 is None:
        return FileScan(path, "unreadable", error="neither a zip (.keras) nor HDF5 (.h5, .weights.h5): not a model "
                                                  "file ckptcheck scans")
    findings: list[SafetyFinding] = []
    notes: list[str] = []
    scanned: list[str] = []
    errors: list[str] = []
    configs = safety.scan(path)
    if configs is not None:
        findings += configs.findings
        notes += configs.notes + configs.unopened
        scanned += configs.scanned
    if zipped:
        from ckptcheck.formats.keras.archive_scan import scan_archive

        found, more, errors = scan_archive(path)
        findings += found
        notes += more
        scanned.append("zip members (duplicates, pickles, HDF5 members' links and storage)")
    if h5 is not None:
        from ckptcheck.formats.keras.hdf5_links import outside_references

        try:
            found, more = outside_references(path)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            if not zipped:
                raise CkptcheckError(f"HDF5 cannot open it ({str(exc).strip() or type(exc).__name__})",
                                     path=path) from None
            notes.append(f"the HDF5 part could not be opened, so its links were not checked ({exc})")
        else:
            findings += found
            notes += more
            scanned.append("HDF5 links and dataset storage")
    return FileScan(path, "keras" if zipped else "hdf5", tuple(scanned), tuple(dict.fromkeys(findings)),
                    tuple(notes), "; ".join(errors) if errors else None)


def _keras_directory(path: str) -> FileScan:
    from ckptcheck.formats.keras import safety
    from ckptcheck.formats.keras.hdf5_links import outside_references

    configs = safety.scan(path)
    findings = list(configs.findings) if configs else []
    notes = [*configs.notes, *configs.unopened] if configs else []
    scanned = list(configs.scanned) if configs else []
    weights = os.path.join(path, "model.weights.h5")
    if os.path.isfile(weights):
        try:
            found, more = outside_references(weights, where="model.weights.h5")
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            notes.append(f"model.weights.h5 could not be opened as HDF5, so its links were not checked ({exc})")
        else:
            findings += found
            notes += more
            scanned.append("model.weights.h5: HDF5 links and dataset storage")
    return FileScan(path, "keras-directory", tuple(scanned), tuple(dict.fromkeys(findings)), tuple(notes))


def _saved_model(directory: str, pb: str, *, meta_graph_only: bool = False) -> FileScan:
    from ckptcheck.formats.files import open_regular, read_capped
    from ckptcheck.formats.tensorflow.savedmodel_scan import scan_saved_model

    with open_regular(pb) as f:
        data = read_capped(f, MAX_SAVED_MODEL_BYTES)
    if data is None:
        raise CkptcheckError(f"{SAVED_MODEL_PB} is larger than the 2 GiB a protobuf message can be", path=pb)
    findings, notes = scan_saved_model(pb, data, meta_graph_only=meta_graph_only)
    what = "the MetaGraphDef" if meta_graph_only else "saved_model.pb"
    return FileScan(directory, "meta-graph" if meta_graph_only else "savedmodel",
                    (f"{what}: every graph node and library function",), tuple(findings), tuple(notes))
