"""tf.Module models for restore-check tests: an MLP whose layers are attributes, so object paths carry their names.

`saved` is the model the TF2 checkpoint is written from (layers `dense` 3->4 and `dense_1` 4->2); the others are
what a user might restore it into after changing the code.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


class Dense(tf.Module):
    def __init__(self, fan_in: int, units: int, name: str, dtype: tf.DType = tf.float32) -> None:
        super().__init__(name=name)
        self.kernel = tf.Variable(tf.fill([fan_in, units], tf.constant(0.5, dtype)), name="kernel")
        self.bias = tf.Variable(tf.zeros([units], dtype), name="bias")

    def __call__(self, x: Any) -> Any:
        return tf.matmul(x, self.kernel) + self.bias


class MLP(tf.Module):
    def __init__(self, layers: list[tuple[str, int, int]]) -> None:
        super().__init__(name="mlp")
        self.order = [name for name, _, _ in layers]
        for name, fan_in, units in layers:
            setattr(self, name, Dense(fan_in, units, name))

    def __call__(self, x: Any) -> Any:
        for name in self.order:
            x = getattr(self, name)(x)
        return x


def saved() -> MLP:
    return MLP([("dense", 3, 4), ("dense_1", 4, 2)])


def same() -> MLP:
    return saved()


def with_optimizer() -> dict[str, Any]:
    """As saved, with an optimizer that has not taken a step (restore-check builds its state first)."""
    return {"model": saved(), "optimizer": tf.keras.optimizers.Adam(0.01, name="adam")}


def renamed() -> MLP:
    return MLP([("dense", 3, 4), ("head", 4, 2)])


def added() -> MLP:
    return MLP([("dense", 3, 4), ("dense_1", 4, 2), ("extra", 2, 2)])


def removed() -> MLP:
    return MLP([("dense", 3, 4)])


def resized() -> MLP:
    return MLP([("dense", 3, 5), ("dense_1", 5, 2)])


def float64() -> MLP:
    """As saved, but the second layer in float64."""
    model = saved()
    model.dense_1 = Dense(4, 2, "dense_1", tf.float64)
    return model


class LazyDense(tf.Module):
    """Creates its variables on first call, from the input's width (as Sonnet's Linear does)."""

    def __init__(self, units: int, name: str) -> None:
        super().__init__(name=name)
        self.units = units
        self.kernel: tf.Variable | None = None
        self.bias: tf.Variable | None = None

    def __call__(self, x: Any) -> Any:
        if self.kernel is None:
            self.kernel = tf.Variable(tf.fill([x.shape[-1], self.units], 0.5), name="kernel")
            self.bias = tf.Variable(tf.zeros([self.units]), name="bias")
        return tf.matmul(x, self.kernel) + self.bias


class LazyMLP(tf.Module):
    def __init__(self) -> None:
        super().__init__(name="mlp")
        self.dense = LazyDense(4, "dense")
        self.dense_1 = LazyDense(2, "dense_1")

    def __call__(self, x: Any) -> Any:
        return self.dense_1(self.dense(x))


def lazy() -> LazyMLP:
    return LazyMLP()


def _v1_adam_step(model: MLP, opt: Any, scale: float) -> None:
    x = tf.constant([[1.0, -2.0, 0.5]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x)) * scale
    variables = list(model.trainable_variables)
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


def with_v1_adam() -> dict[str, Any]:
    """As saved, with a tf.compat.v1 Adam that has taken a step, so its m and v slots (kept per variable, not as
    trackable children) exist before the restore."""
    model = saved()
    opt = tf.compat.v1.train.AdamOptimizer(0.01)
    _v1_adam_step(model, opt, 0.0)
    return {"model": model, "optimizer": opt}


def with_v1_adam_unstepped() -> dict[str, Any]:
    """As saved, with a tf.compat.v1 Adam that has taken no step: its slots do not exist yet."""
    return {"model": saved(), "optimizer": tf.compat.v1.train.AdamOptimizer(0.01)}
