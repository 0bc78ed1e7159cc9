"""A tf_keras (Keras 2) model: its variables are tf.Variables named dense/kernel..., as a TF1 graph named them."""

from __future__ import annotations

from typing import Any

import tf_keras


def functional() -> Any:
    inputs = tf_keras.Input((3,))
    hidden = tf_keras.layers.Dense(4, name="dense")(inputs)
    outputs = tf_keras.layers.Dense(2, name="dense_1")(hidden)
    model = tf_keras.Model(inputs, outputs, name="func")
    model.compile(optimizer=tf_keras.optimizers.Adam(0.01), loss="mse")
    return model
