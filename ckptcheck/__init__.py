"""ckptcheck: see exactly what a machine-learning checkpoint does and does not record.

The reading API never imports TensorFlow::

    import ckptcheck
    with ckptcheck.open_checkpoint("model_dir") as ckpt:
        for t in ckptcheck.list_tensors(ckpt):
            print(t.name, t.variable, t.dtype, t.shape)
        kernel = ckpt.read("dense/kernel")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ckptcheck.errors import (
    CheckpointNotFoundError,
    CkptcheckError,
    CorruptCheckpointError,
    TensorNotFoundError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from ckptcheck.formats.interface import CheckpointReader
    from ckptcheck.model import CheckpointInfo, TensorInfo

__version__ = "0.1.0"

_LAZY = {
    "CheckpointReader": "ckptcheck.formats.interface",
    "CheckpointInfo": "ckptcheck.model",
    "TensorInfo": "ckptcheck.model",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so `ckptcheck --version` and `--help` do not pay for the data model.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptcheck' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

__all__ = [
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointReader",
    "CkptcheckError",
    "CorruptCheckpointError",
    "TensorInfo",
    "TensorNotFoundError",
    "UnsupportedFormatError",
    "__version__",
    "list_tensors",
    "open_checkpoint",
    "read_tensor",
]


def open_checkpoint(path: str) -> CheckpointReader:
    """Open any checkpoint ckptcheck reads; the format is detected from the path and the files' bytes."""
    from ckptcheck.formats.resolve import resolve

    resolved = resolve(str(path))
    if resolved.kind == "bundle":
        from ckptcheck.formats.bundle import BundleReader

        return BundleReader(resolved.location, path=str(path), format=resolved.format_hint)
    if resolved.kind == "v1":
        from ckptcheck.formats.v1 import V1Reader

        return V1Reader(resolved.location, path=str(path))
    from ckptcheck.formats.keras import open_keras

    return open_keras(resolved.kind, resolved.location, path=str(path))


def list_tensors(checkpoint: str | CheckpointReader) -> tuple[TensorInfo, ...]:
    """Names, dtypes, shapes and sizes of every stored tensor (reads no values)."""
    from ckptcheck.formats.interface import CheckpointReader

    if isinstance(checkpoint, CheckpointReader):
        return checkpoint.tensors()
    with open_checkpoint(checkpoint) as reader:
        return reader.tensors()


def read_tensor(checkpoint: str | CheckpointReader, name: str):  # type: ignore[no-untyped-def]
    """One tensor's values as a numpy array, checked against its stored checksum. ``name`` is the tensor's key or
    its variable (TensorInfo.variable: ``stem_bn/gamma`` in any format)."""
    from ckptcheck.formats.interface import CheckpointReader

    if isinstance(checkpoint, CheckpointReader):
        return checkpoint.read(name)
    with open_checkpoint(checkpoint) as reader:
        return reader.read(name)
