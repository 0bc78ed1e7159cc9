"""Model files that fail, for restore-check's error reporting."""

from __future__ import annotations

from typing import Any


def raises() -> Any:
    values = [1, 2, 3]
    return values[10]


def returns_number() -> Any:
    return 42


def prints_and_builds() -> Any:
    import tensorflow as tf

    print("hello from the model file")
    module = tf.Module()
    module.w = tf.Variable([1.0, 2.0], name="w")
    return module
