"""The one dispatch from a resolved path to the reader of its format."""

from __future__ import annotations

from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.resolve import BUNDLE, V1, Resolved
from ckptcheck.records import SAFETENSORS


def open_resolved(resolved: Resolved, *, path: str) -> CheckpointReader:
    """The reader for what ``resolve`` found; ``path`` is what the user typed (named in errors)."""
    if resolved.kind == BUNDLE:
        from ckptcheck.formats.tensorflow.bundle import BundleReader

        return BundleReader(resolved.location, path=path, format=resolved.format_hint)
    if resolved.kind == V1:
        from ckptcheck.formats.tensorflow.v1 import V1Reader

        return V1Reader(resolved.location, path=path)
    if resolved.kind == SAFETENSORS:
        from ckptcheck.formats.safetensors import SafetensorsReader

        return SafetensorsReader(resolved.location, path=path)
    from ckptcheck.formats.keras.open import open_keras

    return open_keras(resolved.kind, resolved.location, path=path)
