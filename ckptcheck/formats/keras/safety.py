"""What a Keras loader would deserialize from a path, found the way the loaders find it, and scanned as JSON.

The safety warning must not be dodged by a file that is two formats at once or by a file whose other parts are
broken: Keras deserializes the config before it touches the weights. So the scan does not depend on how ckptcheck
reads the file. It looks at every config any loader would act on, each on its own, and whatever else fails:

* ``keras.saving.load_model`` (keras/src/saving/saving_api.py): a path named ``*.keras`` that ``zipfile`` sees as a
  zip is loaded as a ``.keras`` archive (``config.json``), wherever the zip starts; a directory holding
  ``config.json`` is loaded as the archive's unzipped form; a path named ``*.h5`` or ``*.hdf5`` is read by HDF5
  (``model_config`` and ``training_config``), which finds a superblock at offset 0, 512, 1024, 2048, ... (a file
  may carry a zip in its HDF5 user block).
* tf_keras (Keras 2) loads any file HDF5 recognises as HDF5, whatever its name.

A file that is valid as both a zip and HDF5 is named as such, and both configs are scanned.
"""

from __future__ import annotations

import zipfile
from typing import Any, NamedTuple

from ckptcheck.errors import CkptcheckError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import file_size, library_source, open_regular, read_capped
from ckptcheck.formats.keras.config import MAX_CONFIG_BYTES
from ckptcheck.records import SafetyFinding

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
CONFIG_MEMBER = "config.json"


class SafetyScan(NamedTuple):  # a NamedTuple: defined at every start, where a frozen dataclass takes ~1 ms
    """Every config a Keras loader would deserialize from one path, and what in them would run code."""

    path: str
    scanned: tuple[str, ...]  # which configs were read ("config.json of the zip", "model_config attribute", ...)
    findings: tuple[SafetyFinding, ...]
    notes: tuple[str, ...] = ()  # two formats at once; a config that could not be read
    # The file itself could not be opened (a truncated HDF5): said by the scan command, left to the error every
    # other command then gives about the same file.
    unopened: tuple[str, ...] = ()

    @property
    def unsafe(self) -> bool:
        return bool(self.findings)


def hdf5_offset(path: str) -> int | None:
    """Where HDF5 would find this file's superblock (0, 512, 1024, 2048, ...), or None when it is not HDF5."""
    try:
        with open_regular(path, whole_below=loc.WHOLE_BYTES) as f:
            size = file_size(f)
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return offset
                offset = 512 if offset == 0 else offset * 2
    except (OSError, CkptcheckError):
        return None
    return None


def is_zip(path: str) -> bool:
    """What ``zipfile.is_zipfile`` (and so Keras) says: an end-of-central-directory record near the end."""
    try:
        with open_regular(path, whole_below=loc.WHOLE_BYTES) as f:
            return zipfile.is_zipfile(f)
    except (OSError, CkptcheckError):
        return False


def loader_kind(path: str) -> str | None:
    """How keras.saving.load_model reads this file: "zip", "hdf5", or None when its name decides neither."""
    name = path.lower()
    if name.endswith(".keras") and is_zip(path):
        return "zip"
    if name.endswith((".h5", ".hdf5")) and hdf5_offset(path) is not None:
        return "hdf5"
    return None


def scan(path: str) -> SafetyScan | None:
    """The safety scan of ``path``: None when no Keras loader would deserialize a config from it."""
    from ckptcheck.formats.keras import config as keras_config

    if loc.is_url(path):
        # Over a URL only what a Keras loader would take by its name is fetched and scanned (not a prefix, nor
        # a store's "directory"); a store that refuses it is reported by the command itself, in one line.
        if not path.lower().endswith((".keras", ".h5", ".hdf5")):
            return None
        try:
            if not loc.isfile(path):
                return None
        except CkptcheckError:
            return None
    elif loc.isdir(path):
        config = loc.join(path, CONFIG_MEMBER)
        if not loc.isfile(config):
            return None
        findings: list[SafetyFinding] = []
        notes: list[str] = []
        _scan_json(lambda: _file_json(config), "config.json of the unzipped .keras directory", path, findings, notes,
                   keras_config.findings_of)
        return SafetyScan(path, ("config.json (keras.saving.load_model loads the directory)",), tuple(findings),
                          tuple(notes))
    if not loc.isfile(path):
        return None
    zipped, h5 = is_zip(path), hdf5_offset(path)
    if not zipped and h5 is None:
        return None
    findings = []
    notes = []
    scanned = []
    if zipped and h5 is not None:
        keras3 = {"zip": "the zip", "hdf5": "HDF5", None: "neither"}[loader_kind(path)]
        notes.append(
            "the file is both a zip archive and HDF5" + (f" (HDF5 at byte {h5})" if h5 else "")
            + f": keras.saving.load_model reads it as {keras3} (by its name), tf_keras as HDF5; both configs were "
            "scanned"
        )
    if zipped:
        scanned.append("config.json in the zip")
        _scan_json(lambda: _zip_json(path), "config.json in the zip", path, findings, notes, keras_config.findings_of)
    unopened = []
    if h5 is not None:
        scanned.append("model_config and training_config attributes (HDF5)")
        problem = _hdf5_open_problem(path)
        if problem is not None:
            unopened.append(f"it cannot be opened as HDF5, so its model_config and training_config were not scanned "
                            f"({problem})")
        else:
            for attribute in ("model_config", "training_config"):
                _scan_json(lambda a=attribute: _h5_json(path, a), f"the HDF5 {attribute} attribute", path, findings,
                           notes, keras_config.findings_of, where=attribute if attribute != "model_config" else "")
    return SafetyScan(path, tuple(scanned), tuple(dict.fromkeys(findings)), tuple(notes), tuple(unopened))


def _hdf5_open_problem(path: str) -> str | None:
    """Why HDF5 cannot open the file at all (truncated, damaged superblock), or None when it can."""
    import h5py

    try:
        with h5py.File(library_source(path, whole_below=loc.WHOLE_BYTES), "r"):
            return None
    except Exception as exc:  # whatever h5py raises for a damaged file
        return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def _scan_json(load: Any, what: str, path: str, findings: list[SafetyFinding], notes: list[str], findings_of: Any,
               where: str = "") -> None:
    try:
        config = load()
    except _Absent:
        return
    except Exception as exc:  # a scan never fails the command: what it could not read is noted
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        notes.append(f"{what} could not be read, so it was not scanned ({detail})")
        return
    try:
        findings += findings_of(config, path=path, where=where)
    except (CkptcheckError, RecursionError) as exc:
        notes.append(f"{what} could not be scanned ({getattr(exc, 'message', exc)})")


class _Absent(Exception):
    """The config is not there (a weights-only file): nothing a loader would deserialize."""


def _decode(raw: bytes | None, what: str) -> Any:
    if raw is None:
        raise ValueError(f"{what} is larger than the {MAX_CONFIG_BYTES >> 20} MiB ckptcheck reads")
    return jsonlimits.loads(raw, what=what, path=what)


def _file_json(config: str) -> Any:
    with open_regular(config) as f:
        return _decode(read_capped(f, MAX_CONFIG_BYTES), CONFIG_MEMBER)


def _zip_json(path: str) -> Any:
    with open_regular(path, whole_below=loc.WHOLE_BYTES) as f, zipfile.ZipFile(f) as zf:
        try:
            info = zf.getinfo(CONFIG_MEMBER)
        except KeyError:
            raise _Absent from None
        if info.file_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{CONFIG_MEMBER} claims {info.file_size} bytes")
        with zf.open(info) as member:
            raw = member.read(MAX_CONFIG_BYTES + 1)
        return _decode(raw if len(raw) <= MAX_CONFIG_BYTES else None, CONFIG_MEMBER)


def _h5_json(path: str, attribute: str) -> Any:
    import h5py
    import numpy as np

    with h5py.File(library_source(path, whole_below=loc.WHOLE_BYTES), "r") as h5:
        if attribute not in h5.attrs:
            raise _Absent
        aid = h5.attrs.get_id(attribute)
        size = aid.get_space().get_simple_extent_npoints() * aid.get_type().get_size()
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"the {attribute} attribute is {size} bytes")
        value = h5.attrs[attribute]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if not isinstance(value, (bytes, str)):  # bytes are parsed as they are, never decoded into a second copy
        raise ValueError(f"the {attribute} attribute is not text")
    return jsonlimits.loads(value, what=f"the {attribute} attribute", path=path)


def model_config(path: str) -> tuple[str, Any] | None:
    """The model config a Keras file records, and where (``config.json`` of a ``.keras``, the ``model_config``
    attribute of an HDF5 file), read within the same bounds as the scan; None when it records none (weights only).
    """
    from ckptcheck.errors import CorruptCheckpointError

    try:
        if is_zip(path):
            return "config.json", _zip_json(path)
        return "model_config attribute", _h5_json(path, "model_config")
    except _Absent:
        return None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CorruptCheckpointError(f"its model config cannot be read ({exc})", path=path) from None
