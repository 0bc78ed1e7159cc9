"""What a ``.keras`` zip hides from a scan that reads it the way one loader does.

* Duplicate member names: Python's ``zipfile`` (and so Keras) takes the last entry of a name, other readers the
  first; a published proof of concept holds two ``model.weights.npz``, the last a 37-byte pickle calling
  ``os.system``. Every copy is examined.
* Pickles: ``model.weights.npz`` is read by Keras with ``numpy.load(..., allow_pickle=False)``, which refuses
  them; ``numpy.load(..., allow_pickle=True)`` (or an older or patched loader) would run one. A pickle anywhere in
  the archive whose opcodes name a callable outside numpy's array reconstruction is a finding.
* HDF5 members pointing outside themselves (external storage, external links, virtual datasets).

Nothing is extracted to disk but a compressed HDF5 member, which h5py needs seekable (the reader's own spool).
"""

from __future__ import annotations

import zipfile
from collections import Counter
from typing import IO

from ckptcheck.errors import CkptcheckError, CorruptCheckpointError
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import open_regular
from ckptcheck.formats.keras import pickle_scan
from ckptcheck.records import SafetyFinding

_NUMPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_NAMES = (".npz", ".npy", ".pkl", ".pickle", ".joblib")
_HDF5_NAMES = (".h5", ".hdf5")
_MAX_INNER = 100_000  # members of an inner .npz looked at


def scan_archive(path: str) -> tuple[list[SafetyFinding], list[str], list[str]]:
    """Findings, notes, and the members that could not be read (which Keras could not load either), for the zip
    at ``path`` (a ``.keras`` file). Raises CorruptCheckpointError when no zip reader can list it."""
    findings: list[SafetyFinding] = []
    notes: list[str] = []
    errors: list[str] = []
    try:
        with open_regular(path, whole_below=loc.WHOLE_BYTES) as f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            findings += _duplicates(zf, infos)
            for info in infos:
                _member(path, zf, info, findings, notes, errors)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        # A name that is not UTF-8 under the UTF-8 flag is a UnicodeDecodeError (a ValueError): Keras fails too.
        raise CorruptCheckpointError(f"not a readable zip archive ({str(exc).strip() or type(exc).__name__})",
                                     path=path) from None
    return findings, notes, errors


def _duplicates(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> list[SafetyFinding]:
    out = []
    for name, count in Counter(i.filename for i in infos).items():
        if count < 2:
            continue
        offsets = [i.header_offset for i in infos if i.filename == name]
        taken = zf.getinfo(name).header_offset
        out.append(SafetyFinding(
            name, f"the archive holds {count} members named '{name}' (at bytes {', '.join(map(str, offsets))}): "
                  f"Python's zipfile, and so Keras, reads the one at byte {taken}; other zip readers and scanners "
                  "may read another", "zip-duplicate"))
    return out


def _member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, findings: list[SafetyFinding],
            notes: list[str], errors: list[str]) -> None:
    name = info.filename
    lower = name.lower()
    if info.is_dir() or info.flag_bits & 0x1:
        return
    if lower.endswith(_HDF5_NAMES):
        _hdf5_member(path, info, findings, notes, errors)
        return
    try:
        with zf.open(info) as member:
            head = member.read(8)
            if not (lower.endswith(_PICKLE_NAMES) or pickle_scan.looks_like_pickle(head)):
                return
            if head.startswith(_ZIP_MAGIC):  # an .npz: its members' headers are read, values only past a pickle
                member.seek(0)
                _npz(name, member, findings, notes)
            elif head.startswith(_NUMPY_MAGIC):
                member.seek(0)
                _npy(name, member, findings)
            else:
                _pickle(name, head + member.read(pickle_scan.MAX_PICKLE_BYTES), findings, notes, raw=True)
    except Exception as exc:  # a damaged or exotic member: Keras cannot read it either
        errors.append(f"archive member {name} cannot be read ({str(exc).strip() or type(exc).__name__})")


def _npz(name: str, member: IO[bytes], findings: list[SafetyFinding], notes: list[str]) -> None:
    try:
        npz = zipfile.ZipFile(member)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        notes.append(f"archive member {name} is not a readable .npz, so it was not scanned ({exc})")
        return
    with npz:
        infos = npz.infolist()
        findings += [SafetyFinding(f"{name}/{f.location}", f.message, f.rule) for f in _duplicates(npz, infos)]
        for inner in infos[:_MAX_INNER]:
            where = f"{name}/{inner.filename}"
            with npz.open(inner) as m:
                head = m.read(8)
                if head.startswith(_NUMPY_MAGIC):
                    m.seek(0)
                    _npy(where, m, findings)
                elif pickle_scan.looks_like_pickle(head):
                    _pickle(where, head + m.read(pickle_scan.MAX_PICKLE_BYTES), findings, notes, raw=True)


def _npy(where: str, stream: IO[bytes], findings: list[SafetyFinding]) -> None:
    pickled = pickle_scan.npy_pickle(stream)
    if pickled is not None:
        _pickle(where, pickled, findings, [], raw=False)


def _pickle(where: str, data: bytes, findings: list[SafetyFinding], notes: list[str], *,
            raw: bool) -> None:
    found, problem = pickle_scan.callables(data)
    what = "is a pickle" if raw else "holds an array of Python objects, pickled,"
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        findings.append(SafetyFinding(
            where, f"{where} {what} that calls {shown} when unpickled: numpy.load(..., allow_pickle=True) would run "
                   "it (Keras loads weights with allow_pickle=False and refuses it)", "pickle-callable"))
    elif problem is not None and raw and pickle_scan.looks_like_pickle(data[:2]):
        notes.append(f"{where} starts as a pickle whose opcodes could not be read to the end ({problem})")


def _hdf5_member(path: str, info: zipfile.ZipInfo, findings: list[SafetyFinding], notes: list[str],
                 errors: list[str]) -> None:
    from ckptcheck.formats.keras.archive import Archive
    from ckptcheck.formats.keras.hdf5_links import outside_references

    try:
        archive = Archive(path)
        try:
            with archive.open_member(info) as member:
                found, more = outside_references(member, where=info.filename)  # type: ignore[arg-type]
        finally:
            archive.zip.close()
    except (CkptcheckError, OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        errors.append(f"archive member {info.filename} cannot be read as HDF5, so its links were not checked "
                      f"({getattr(exc, 'message', None) or exc})")
        return
    findings += found
    notes += more
