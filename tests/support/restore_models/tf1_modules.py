"""Models restored from a TF1 (name-based) checkpoint whose variables are dense/kernel, dense/bias,
dense_1/kernel and dense_1/bias (plus Adam's slots, beta powers and global_step): tf.Variables matched by name."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class Dense(tf.Module):
    """Variables named as tf.compat.v1.get_variable names them inside variable_scope(name)."""

    def __init__(self, fan_in: int, units: int, name: str) -> None:
        super().__init__(name=name)
        self.kernel = tf.Variable(tf.fill([fan_in, units], 0.5), name=f"{name}/kernel")
        self.bias = tf.Variable(tf.zeros([units]), name=f"{name}/bias")


class Layers(tf.Module):
    def __init__(self, spec: list[tuple[str, int, int]]) -> None:
        super().__init__(name="layers")
        for name, fan_in, units in spec:
            setattr(self, name, Dense(fan_in, units, name))


def same() -> Layers:
    return Layers([("dense", 3, 4), ("dense_1", 4, 2)])


def renamed() -> Layers:
    return Layers([("dense", 3, 4), ("head", 4, 2)])


def added() -> Layers:
    return Layers([("dense", 3, 4), ("dense_1", 4, 2), ("extra", 2, 2)])


def removed() -> Layers:
    return Layers([("dense", 3, 4)])


def resized() -> Layers:
    return Layers([("dense", 3, 5), ("dense_1", 5, 2)])


def keras_model() -> Any:
    """The same layers as a Keras 3 model: its variables are not tf.Variables, and name-based restore skips them."""
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense"),
                             keras.layers.Dense(2, name="dense_1")], name="seq")
