"""ckptcheck: see exactly what a machine-learning checkpoint does and does not record.

The reading API never imports TensorFlow::

    import ckptcheck
    with ckptcheck.open_checkpoint("model_dir") as ckpt:
        for t in ckptcheck.list_tensors(ckpt):
            print(t.name, t.variable, t.dtype, t.shape)
        kernel = ckpt.read("dense/kernel")
    report = ckptcheck.verify_checkpoint("model_dir")                # VerifyReport: .ok, .problems
    changes = ckptcheck.diff_checkpoints("run/ckpt-1", "run/ckpt-9")  # DiffReport: .same, .changed, ...
    golden = ckptcheck.checkpoint_manifest("model_dir")              # what `ckptcheck manifest` writes

(Named apart from the submodules ckptcheck.verify, ckptcheck.diff and ckptcheck.manifest, whose import would
otherwise replace them.)

Everything is imported on first use, so `ckptcheck --version` pays for none of it.
"""

import typing as _typing

from ckptcheck.errors import (
    CheckpointNotFoundError,
    CkptcheckError,
    CkptcheckWarning,
    CorruptCheckpointError,
    RelocatedCheckpointWarning,
    RemoteError,
    TensorNotFoundError,
    UnsupportedFormatError,
)

if _typing.TYPE_CHECKING:
    import numpy as np

    from ckptcheck.diff import DiffReport
    from ckptcheck.formats.interface import CheckpointReader
    from ckptcheck.records import CheckpointInfo, TensorInfo
    from ckptcheck.verify import VerifyReport

__version__ = "0.1.0"

_LAZY = {
    "CheckpointReader": "ckptcheck.formats.interface",
    "CheckpointInfo": "ckptcheck.records",
    "TensorInfo": "ckptcheck.records",
    "VerifyReport": "ckptcheck.verify",
    "DiffReport": "ckptcheck.diff",
}

__all__ = [
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointReader",
    "CkptcheckError",
    "CkptcheckWarning",
    "CorruptCheckpointError",
    "DiffReport",
    "RelocatedCheckpointWarning",
    "RemoteError",
    "TensorInfo",
    "TensorNotFoundError",
    "UnsupportedFormatError",
    "VerifyReport",
    "__version__",
    "checkpoint_manifest",
    "diff_checkpoints",
    "list_tensors",
    "open_checkpoint",
    "read_tensor",
    "verify_checkpoint",
]


def __getattr__(name: str) -> _typing.Any:
    # The data model's classes, imported on first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptcheck' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


def open_checkpoint(path: str) -> "CheckpointReader":
    """Open any checkpoint ckptcheck reads; the format is detected from the path and the files' bytes. Use it as a
    context manager (it holds files open)."""
    from ckptcheck.formats.open import open_resolved
    from ckptcheck.formats.resolve import resolve

    return open_resolved(resolve(str(path)), path=str(path))


def list_tensors(checkpoint: "str | CheckpointReader") -> "tuple[TensorInfo, ...]":
    """Names, variables, dtypes, shapes and sizes of every stored tensor (reads no values)."""
    from ckptcheck.formats.interface import CheckpointReader

    if isinstance(checkpoint, CheckpointReader):
        return checkpoint.tensors()
    with open_checkpoint(checkpoint) as reader:
        return reader.tensors()


def read_tensor(checkpoint: "str | CheckpointReader", name: str) -> "np.ndarray":
    """One tensor's values as a numpy array, checked against its stored checksum. ``name`` is the tensor's key or
    its variable (TensorInfo.variable: ``stem_bn/gamma`` in any format)."""
    from ckptcheck.formats.interface import CheckpointReader

    if isinstance(checkpoint, CheckpointReader):
        return checkpoint.read(name)
    with open_checkpoint(checkpoint) as reader:
        return reader.read(name)


def _selection(kinds: "_typing.Sequence[str] | None", exclude: "_typing.Sequence[str] | None") -> _typing.Any:
    from ckptcheck.selection import Selection

    return Selection.of(None, exclude, kinds)


def verify_checkpoint(path: str, *, against: str | None = None, atol: float = 0.0, rtol: float = 0.0,
                      jobs: int | None = None, finite: bool = False, kinds: "_typing.Sequence[str] | None" = None,
                      exclude: "_typing.Sequence[str] | None" = None) -> "VerifyReport":
    """Check everything the format can check (``ckptcheck verify``): ``.ok``, and every problem found. With
    ``against``, also compare with a manifest file (tensors paired by variable). ``jobs``: range reads in flight at
    once (``--jobs``); ``finite``: NaN and Inf in a floating-point tensor are findings (``--finite``); ``kinds``,
    ``exclude``: ``--kind``, ``--exclude``."""
    from ckptcheck.verify import verify as run

    return run(str(path), against=against, atol=atol, rtol=rtol, jobs=jobs, finite=finite,
               selection=_selection(kinds, exclude))


def diff_checkpoints(a: str, b: str, *, atol: float = 0.0, rtol: float = 0.0,
                     kinds: "_typing.Sequence[str] | None" = None,
                     exclude: "_typing.Sequence[str] | None" = None) -> "DiffReport":
    """Tensors added, removed and changed from ``a`` to ``b`` (``ckptcheck diff``): ``.same``, ``.changed``, ...,
    paired by variable; ``kinds``, ``exclude``: ``--kind``, ``--exclude``."""
    from ckptcheck.diff import diff_readers as run

    with open_checkpoint(a) as ra, open_checkpoint(b) as rb:
        return run(ra, rb, atol, rtol, selection=_selection(kinds, exclude))


def checkpoint_manifest(path: str, *, kinds: "_typing.Sequence[str] | None" = None,
                        exclude: "_typing.Sequence[str] | None" = None) -> dict[str, _typing.Any]:
    """The manifest ``ckptcheck manifest`` writes, as a dict (``ckptcheck.manifest.dumps`` gives its exact text)."""
    from ckptcheck.manifest import build_manifest

    with open_checkpoint(path) as reader:
        return build_manifest(reader, selection=_selection(kinds, exclude))
