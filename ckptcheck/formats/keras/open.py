"""The reader for a Keras file, from what it looked like from outside (a zip, or HDF5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckptcheck.errors import UnsupportedFormatError
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.keras.archive import NPZ_WEIGHTS_MEMBER, Archive, KerasArchiveReader
from ckptcheck.formats.keras.npz import KerasNpzArchiveReader
from ckptcheck.formats.keras.weights import KerasHDF5Reader, KerasShardedWeightsReader
from ckptcheck.formats.resolve import SHARD_MAP_SUFFIX
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS

if TYPE_CHECKING:
    pass


def open_keras(kind: str, location: str, *, path: str) -> CheckpointReader:
    """Open a Keras file. ``kind`` is what the file looked like from outside (records.KERAS for a zip,
    KERAS_WEIGHTS or KERAS_H5 for HDF5); for HDF5 the layout inside decides the format reported."""
    if kind == KERAS:
        return _open_archive(location, path)
    if kind == KERAS_WEIGHTS and location.endswith(SHARD_MAP_SUFFIX):
        return KerasShardedWeightsReader(location, path=path)
    if kind in (KERAS_WEIGHTS, KERAS_H5):
        return KerasHDF5Reader(location, path=path, named_as=kind)
    raise UnsupportedFormatError(f"not a Keras format: {kind!r}", path=path)


def _open_archive(location: str, path: str) -> CheckpointReader:
    """The reader for the weights member the archive holds (h5, or npz)."""
    archive = Archive(location)
    try:
        member = archive.weights_member()
        if member.filename == NPZ_WEIGHTS_MEMBER:
            return KerasNpzArchiveReader(archive, member, path=path)
        return KerasArchiveReader(location, path=path, archive=archive)
    except BaseException:
        archive.close()
        raise

