"""h5py's own view of Keras weights, the oracle the readers' tests compare with."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py


@contextmanager
def weights_h5(path: Path | str) -> Iterator[h5py.File]:
    """The weights file itself, or the model.weights.h5 inside a .keras archive, opened by h5py."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            data = z.read("model.weights.h5")
        with h5py.File(io.BytesIO(data), "r") as f:
            yield f
    else:
        with h5py.File(path, "r") as f:
            yield f
