"""The one door to TensorFlow and Keras: every command that builds or restores a model imports them here, quietly,
and a missing install becomes one line naming the extra to install. The reading side never comes through it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ckptcheck.errors import MissingDependencyError, UsageError


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a moment.

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()...", oneDNN, CUDA probes)
    are written before its logging reads TF_CPP_MIN_LOG_LEVEL, straight to the descriptor; Python exceptions
    are unaffected, they are raised, not printed.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter off stderr
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        if "tensorflow" in sys.modules:
            import tensorflow as tf
        else:
            with _stderr_fd_silenced():
                import tensorflow as tf
    except ImportError as exc:
        raise MissingDependencyError(f"this command needs TensorFlow ({exc})",
                                     hint="pip install 'ckptcheck[tf]'") from None
    return tf


def import_keras() -> Any:
    import_tensorflow()
    try:
        import keras
    except ImportError as exc:
        raise MissingDependencyError(f"this command needs Keras ({exc})", hint="pip install 'ckptcheck[tf]'") from None
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"Keras runs on the {keras.backend.backend()} backend; ckptcheck needs tensorflow",
                         hint="set KERAS_BACKEND=tensorflow")
    return keras


def import_keras_module(name: str) -> Any:
    """A module of the installed Keras (``keras.src.legacy.saving.saving_utils``), through the gate: Keras imported
    quietly first, and a Keras without it one line (a UsageError naming the module)."""
    import importlib

    keras = import_keras()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UsageError(f"this Keras ({getattr(keras, '__version__', '?')}) has no {name} ({exc})",
                         hint="the command needs Keras 3") from None
