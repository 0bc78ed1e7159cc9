"""A ``.keras`` archive: a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5`` (or
``model.weights.npz``, see ckptcheck.formats.keras.npz), read in memory, never extracted; and its reader when the
weights are HDF5.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import lzma
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import library_source, open_regular
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES
from ckptcheck.formats.keras import config as keras_config
from ckptcheck.formats.keras.config import MAX_CONFIG_BYTES
from ckptcheck.formats.keras.h5 import open_h5, read_guard
from ckptcheck.formats.keras.layout import compile_summary, layout_of, with_orphan_optimizer
from ckptcheck.formats.keras.weights import H5Values
from ckptcheck.records import KERAS, KERAS_WEIGHTS, CheckpointInfo, TensorInfo

if TYPE_CHECKING:
    pass


WEIGHTS_MEMBER = "model.weights.h5"

NPZ_WEIGHTS_MEMBER = "model.weights.npz"  # weights_format="npz"

CONFIG_MEMBER = "config.json"

METADATA_MEMBER = "metadata.json"

# Members read whole into memory are refused above these sizes (a zip entry can claim any size).

MAX_METADATA_BYTES = 1 << 20

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version..sizes), name length, extra length

LOCAL_MAGIC = b"PK\x03\x04"

# Deflate cannot expand its input more than ~1032 times; a member declaring more is refused before it is read.
_DEFLATE_MAX_RATIO = 1032


class StoredMember(io.RawIOBase):
    """A read-only window onto an uncompressed zip member: seeks are free, where ZipExtFile (before Python 3.12)
    re-reads the member from its start on every backward seek, and h5py seeks back and forth."""

    def __init__(self, archive: str, start: int, size: int) -> None:
        super().__init__()
        self._f = open_regular(archive, whole_below=loc.WHOLE_BYTES)  # closed in close()
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


# Compression methods zipfile reads: stored, deflate, bzip2, LZMA.
READABLE_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def check_member_readable(info: zipfile.ZipInfo, *, path: str) -> None:
    """An encrypted member, or one compressed by a method zipfile cannot undo (deflate64 is 9), cannot be read by
    ckptcheck nor by Keras, which opens members with zipfile: one clear error (exit 2), not damage."""
    if info.flag_bits & 0x1:
        raise UnsupportedFormatError(f"archive member {info.filename} is encrypted", path=path,
                                     hint="Keras cannot load an encrypted .keras either")
    if info.compress_type not in READABLE_ZIP_METHODS:
        raise UnsupportedFormatError(
            f"archive member {info.filename} uses compression method {info.compress_type}, which Python's zipfile "
            "(and so Keras) cannot read", path=path, hint="recompress the archive with deflate, or store it")


class Archive:
    """The zip of a ``.keras`` file: its members opened by name, JSON members read within size limits, nothing
    extracted."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.config: Any = None  # config.json, once info() has read it
        try:
            self.zip = zipfile.ZipFile(library_source(location, whole_below=loc.WHOLE_BYTES))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise CorruptCheckpointError(
                f"not a readable zip archive ({str(exc).strip() or type(exc).__name__})", path=location,
                hint="a .keras file is a zip archive; this one may be truncated or damaged",
            ) from None

    def weights_member(self) -> zipfile.ZipInfo:
        """model.weights.h5, or model.weights.npz when that is what the archive holds."""
        for name in (WEIGHTS_MEMBER, NPZ_WEIGHTS_MEMBER):
            with contextlib.suppress(KeyError):
                return self.zip.getinfo(name)
        raise CorruptCheckpointError(
            f"the archive has neither {WEIGHTS_MEMBER} nor {NPZ_WEIGHTS_MEMBER}", path=self.location,
            hint=f"a .keras archive holds {CONFIG_MEMBER}, {METADATA_MEMBER} and {WEIGHTS_MEMBER} (or, saved with "
                 f"weights_format='npz', {NPZ_WEIGHTS_MEMBER})",
        )

    def json_member(self, name: str, limit: int, *, required: bool) -> Any:
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            if not required:
                return None
            raise CorruptCheckpointError(f"the archive has no {name}", path=self.location,
                                         hint=f"a .keras archive holds {CONFIG_MEMBER} and {WEIGHTS_MEMBER}") from None
        check_member_readable(info, path=self.location)
        if info.file_size > limit:
            raise CorruptCheckpointError(f"{name} claims {info.file_size} bytes, more than the {limit} ckptcheck "
                                         "reads", path=self.location, hint="the archive may be crafted or damaged")
        with read_guard(f"cannot read {name} from the archive", path=self.location), self.zip.open(info) as f:
            data = f.read(limit + 1)  # the size a member claims is not to be trusted
        if len(data) > limit:
            raise CorruptCheckpointError(f"{name} is larger than the {limit} bytes ckptcheck reads",
                                         path=self.location)
        return jsonlimits.loads(data, what=f"{name} in the archive", path=self.location)

    def open_member(self, info: zipfile.ZipInfo) -> io.IOBase:
        """A seekable reader of the member: a free-seeking window when it is stored, else zipfile's stream."""
        check_member_readable(info, path=self.location)
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:  # stored, not encrypted
            archive_size = loc.getsize(self.location)
            with open_regular(self.location, whole_below=loc.WHOLE_BYTES) as f:
                f.seek(info.header_offset)
                header = f.read(LOCAL_HEADER.size)
            if len(header) < LOCAL_HEADER.size or header[:4] != LOCAL_MAGIC:
                raise CorruptCheckpointError(f"bad local header for {info.filename} in the archive",
                                             path=self.location)
            _magic, name_len, extra_len = LOCAL_HEADER.unpack(header)
            start = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
            if info.compress_size != info.file_size or start + info.file_size > archive_size:
                raise CorruptCheckpointError(
                    f"{info.filename} claims {info.file_size} bytes, past the end of the archive",
                    path=self.location, hint="the archive is truncated or damaged",
                )
            return StoredMember(self.location, start, info.file_size)
        return self._spooled(info)

    def _spooled(self, info: zipfile.ZipInfo) -> io.IOBase:
        """A compressed member, decompressed once into an anonymous temporary file (deleted when closed).

        h5py seeks back and forth; on zipfile's stream every backward seek decompresses the member again from its
        start (a 500 MB deflated weights member took 66 s to list). Its CRC is checked as it is copied. A member
        declaring more than deflate can expand to, or more than the temporary directory can hold, is refused.
        """
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + (1 << 20):
            raise CorruptCheckpointError(
                f"{info.filename} declares {info.file_size} bytes from {info.compress_size} compressed, more than "
                "any deflate stream expands to", path=self.location, hint="the archive is crafted or damaged")
        spool = tempfile.TemporaryFile(prefix="ckptcheck-")  # noqa: SIM115 - returned open, closed by the reader
        try:
            free = shutil.disk_usage(tempfile.gettempdir()).free
            if info.file_size > free:
                raise CorruptCheckpointError(
                    f"{info.filename} is compressed; decompressing its {info.file_size} bytes needs more than the "
                    f"{free} bytes free in the temporary directory", path=self.location,
                    hint="set TMPDIR to a directory with room, or store the archive's weights uncompressed")
            with read_guard(f"cannot read {info.filename} from the archive", path=self.location,
                        hint="the archive may be truncated or damaged"), self.zip.open(info) as member:
                copied = 0
                while chunk := member.read(1 << 20):
                    copied += len(chunk)
                    if copied > info.file_size:
                        raise CorruptCheckpointError(f"{info.filename} expands past the {info.file_size} bytes it "
                                                     "declares", path=self.location)
                    spool.write(chunk)
            spool.seek(0)
            return spool
        except BaseException:
            spool.close()
            raise

    def info(self, *, path: str, tensors: tuple[TensorInfo, ...]) -> CheckpointInfo:
        """The archive's CheckpointInfo: config.json's architecture and compile settings, metadata.json's
        version."""
        config = self.config = self.json_member(CONFIG_MEMBER, MAX_CONFIG_BYTES, required=True)
        meta = self.json_member(METADATA_MEMBER, MAX_METADATA_BYTES, required=False)
        metadata: dict[str, str] = {}
        version = None
        if isinstance(config, dict):
            metadata.update(compile_summary(config.get("compile_config"), "optimizer"))
        if isinstance(meta, dict):
            for key, value in meta.items():
                if key == "keras_version":
                    version = str(value)
                elif isinstance(value, (str, int, float, bool)):
                    metadata[str(key)] = str(value)
        return CheckpointInfo(
            format=KERAS,
            path=path,
            location=self.location,
            files=(self.location,),
            tensors=tensors,
            writer=f"Keras {version}" if version else None,
            metadata=metadata,
            architecture=keras_config.architecture(config, keras_config.SOURCE_CONFIG_JSON, path=self.location),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.zip.close()


class KerasArchiveReader(H5Values):
    """A Keras 3 ``.keras`` zip: config.json and metadata.json read in memory within size limits, the weights read
    from model.weights.h5 inside the archive; nothing is extracted."""

    format = KERAS

    def __init__(self, location: str, *, path: str | None = None, archive: Archive | None = None) -> None:
        self._archive = archive
        self._member: io.IOBase | None = None
        self._start(location, path)

    def _open(self, location: str) -> None:
        if self._archive is None:
            self._archive = Archive(location)
        archive = self._archive
        info = archive.weights_member()
        if info.filename != WEIGHTS_MEMBER:
            raise UnsupportedFormatError(f"the archive holds {info.filename}; open it with open_checkpoint",
                                         path=location)
        summary = archive.info(path=self.path, tensors=())  # config.json is checked before the weights
        self._member = archive.open_member(info)
        h5 = open_h5(self._member, path=location, what=f"{WEIGHTS_MEMBER} in the archive")
        self._sources = [(h5, location)]
        with read_guard(f"cannot read the HDF5 structure of {WEIGHTS_MEMBER}", path=location):
            layout = layout_of(h5, path=location, allow_empty=True)
        if layout.format != KERAS_WEIGHTS:
            raise UnsupportedFormatError(f"{WEIGHTS_MEMBER} in the archive has the legacy .h5 layout", path=location)
        self._load(layout, WEIGHTS_MEMBER)
        self._name_variables(layout, archive.config)
        self._info = with_orphan_optimizer(
            dataclasses.replace(summary, tensors=tuple(e.info for e in self._entries.values())), archive.config)
        self._weights_info = info
        self._crc_checked = not isinstance(self._member, StoredMember)  # a spooled member was checked on the way

    def _check_crc(self) -> None:
        """Before the first value is read: the weights member's CRC, which reading it in place would not check
        (a flipped byte would pass manifest and --stats silently). One streamed pass, once."""
        if self._crc_checked:
            return
        member = self._member
        assert isinstance(member, StoredMember)
        crc = 0
        member.seek(0)
        buf = bytearray(1 << 20)
        while n := member.readinto(buf):
            crc = zlib.crc32(memoryview(buf)[:n], crc)
        if crc != self._weights_info.CRC:
            raise CorruptCheckpointError(
                f"archive member {WEIGHTS_MEMBER} fails its CRC (stored {self._weights_info.CRC:#010x}, calculated "
                f"{crc:#010x}): its values are damaged", path=self.location, hint="run ckptcheck verify")
        self._crc_checked = True

    def crc_checked_elsewhere(self) -> None:
        """verify reads every member of the archive itself and reports a failed CRC once: do not check again per
        tensor."""
        self._crc_checked = True

    def read(self, name: str) -> np.ndarray:
        self._check_crc()
        return super().read(name)

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        self._check_crc()
        yield from super().iter_chunks(name, chunk_bytes)

    def close(self) -> None:
        super().close()
        if self._member is not None:
            with contextlib.suppress(Exception):
                self._member.close()
        if self._archive is not None:
            self._archive.close()
        self._member = None
        self._archive = None


# --- integrity of the members (verify) --------------------------------------------------------------------------

_MEMBER_READ = 1 << 20


def damaged_members(archive: str) -> list[tuple[str, str]]:
    """Every member of a ``.keras`` archive read to its end, where zipfile checks its CRC-32; a
    ``model.weights.npz`` member is a zip too, and each of its members is read to its end as well (npz and .npy
    carry no checksum of their own beyond these CRCs). What is damaged, as (problem kind, message): "checksum" for
    a member that fails, "structure" for an archive that is not a readable zip. An encrypted member, or one in a
    method zipfile lacks, raises UnsupportedFormatError (check_member_readable)."""
    found: list[tuple[str, str]] = []
    try:
        with zipfile.ZipFile(library_source(archive, whole_below=loc.WHOLE_BYTES)) as zf:
            for member in zf.infolist():
                check_member_readable(member, path=archive)
                damage = _read_to_end(zf, member)
                if damage is not None:
                    found.append(("checksum", f"archive member {member.filename} is damaged: {damage}"))
                    continue
                if member.filename == NPZ_WEIGHTS_MEMBER:
                    found += _damaged_npz_members(zf, member)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:  # a name that is not UTF-8 under the UTF-8 flag
        found.append(("structure", f"not a readable zip archive: {exc}"))
    return found


def _read_to_end(zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> str | None:
    """Read a member to its end (zipfile checks its CRC there); what went wrong, or None."""
    try:
        with zf.open(member) as f:
            while f.read(_MEMBER_READ):
                pass
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError,
            RuntimeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _damaged_npz_members(zf: zipfile.ZipFile, member: zipfile.ZipInfo) -> list[tuple[str, str]]:
    where = member.filename
    found: list[tuple[str, str]] = []
    try:
        with zf.open(member) as outer, zipfile.ZipFile(outer) as npz:
            for inner in npz.infolist():
                damage = _read_to_end(npz, inner)
                if damage is not None:
                    found.append(("checksum", f"{where} member {inner.filename} is damaged: {damage}"))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, NotImplementedError) as exc:
        found.append(("structure", f"{where} is not a readable zip: {exc}"))
    return found
