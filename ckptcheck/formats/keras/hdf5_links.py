"""What in an HDF5 file points outside it: external storage, external links, virtual datasets.

h5py reads each of them from another file when a dataset is read, and Keras before 3.12.1 / 3.13.2 read such weights
files without looking (CVE-2026-1669: a dataset with external storage naming ``/etc/passwd`` puts the host file's
bytes into the model's weights). Found here with h5py's low-level API, without following anything: links are
listed, not traversed (H5Lvisit descends hard links only), and each dataset's creation property list is read from
its header with an access list that points external files and virtual sources at a directory that does not exist.
"""

from __future__ import annotations

from typing import IO, Any

from ckptcheck.records import SafetyFinding

# A crafted file with millions of links would take long to list; far above any Keras file (a 300-layer model has
# a few thousand), and what was listed is reported.
MAX_LINKS = 1_000_000
_NOWHERE = b"/nonexistent-ckptcheck-no-such-directory/"
_CVE = "Keras < 3.12.1 / 3.13.2 reads it into the weights (CVE-2026-1669)"


class TooManyLinks(Exception):
    """The file has more links than MAX_LINKS."""


def outside_references(source: str | IO[bytes], *, where: str = "") -> tuple[list[SafetyFinding], list[str]]:
    """Findings for every way the HDF5 file ``source`` reads another file, and notes. ``where`` prefixes the
    locations (an archive member's name). Raises OSError/ValueError when HDF5 cannot open it."""
    import h5py

    findings: list[SafetyFinding] = []
    notes: list[str] = []
    prefix = f"{where}:" if where else ""
    with h5py.File(source, "r") as f:
        fid = f.id
        datasets: list[bytes] = []
        count = 0

        def link(name: bytes, info: Any) -> None:
            nonlocal count
            count += 1
            if count > MAX_LINKS:
                raise TooManyLinks
            if info.type == h5py.h5l.TYPE_EXTERNAL:
                target = fid.links.get_val(name)
                file, obj = (_text(target[0]), _text(target[1])) if isinstance(target, tuple) else ("?", "?")
                findings.append(SafetyFinding(
                    f"{prefix}/{_text(name)}",
                    f"HDF5 external link to '{obj}' in the file '{file}': reading it reads that file; {_CVE}",
                    "hdf5-outside"))
            elif info.type == h5py.h5l.TYPE_HARD:
                datasets.append(name)

        try:
            fid.links.visit(link, info=True)
        except TooManyLinks:
            notes.append(f"{prefix or 'the file'} has more than {MAX_LINKS} HDF5 links; only the first were checked")
        seen: set[tuple[int, int]] = set()
        dapl = _access_list(h5py)
        for name in datasets:
            try:
                info = h5py.h5o.get_info(fid, name)
                if info.type != h5py.h5o.TYPE_DATASET:
                    continue
                key = (info.fileno, info.addr)
                if key in seen:
                    continue
                seen.add(key)
                dsid = h5py.h5d.open(fid, name, dapl=dapl)
                dcpl = dsid.get_create_plist()
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                notes.append(f"{prefix}/{_text(name)}: the dataset's header could not be read ({exc})")
                continue
            findings += _storage(dcpl, f"{prefix}/{_text(name)}", h5py)
    return findings, notes


def _storage(dcpl: Any, location: str, h5py: Any) -> list[SafetyFinding]:
    out: list[SafetyFinding] = []
    for i in range(dcpl.get_external_count()):
        file, offset, size = dcpl.get_external(i)
        out.append(SafetyFinding(
            location, f"dataset keeps its values in the host file '{_text(file)}' (external storage, {size} bytes "
                      f"from byte {offset}): {_CVE}", "hdf5-outside"))
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        for i in range(dcpl.get_virtual_count()):
            out.append(SafetyFinding(
                location, f"virtual dataset: its values come from '{_text(dcpl.get_virtual_dsetname(i))}' in the "
                          f"file '{_text(dcpl.get_virtual_filename(i))}'; {_CVE}", "hdf5-outside"))
    return out


def _access_list(h5py: Any) -> Any:
    """A dataset access list under which opening a dataset finds no external file or virtual source."""
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    for setter, value in (("set_efile_prefix", _NOWHERE), ("set_virtual_prefix", _NOWHERE)):
        if hasattr(dapl, setter):
            getattr(dapl, setter)(value)
    if hasattr(dapl, "set_virtual_view"):
        dapl.set_virtual_view(h5py.h5d.VDS_FIRST_MISSING)
    return dapl


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)
