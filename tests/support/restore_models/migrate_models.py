"""Keras 3 models that old checkpoints migrate into (tests/restore_check/test_migrate.py).

- `tf1_functional`, `tf1_sequential`: the TF1 graph model written by tf.compat.v1.train.Saver, rebuilt with the
  same layer names: conv1 (Conv2D), bn1 (BatchNormalization), dw (DepthwiseConv2D), ln (LayerNormalization),
  logits (Dense). The TF1 checkpoint spells dw's kernel `depthwise_weights`, ln's variables under `LayerNorm/` and
  logits' `weights` and `biases`.
- `mobilenet`, `attention`: the Keras 2 (tf_keras) models of the same test, written with Keras 3, compiled with
  the same optimizer (`attention` adds with a layer where tf_keras recorded a TFOpLambda).
"""

from __future__ import annotations

from typing import Any

import keras


def _tf1_layers() -> list[Any]:
    return [keras.layers.Conv2D(4, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(epsilon=1e-3, name="bn1"),
            keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.LayerNormalization(epsilon=1e-3, name="ln"),
            keras.layers.Dense(5, name="logits")]


def tf1_functional() -> Any:
    inputs = keras.Input((8, 8, 3))
    h = inputs
    for layer in _tf1_layers():
        h = layer(h)
    return keras.Model(inputs, h, name="net")


def tf1_sequential() -> Any:
    return keras.Sequential([keras.Input((8, 8, 3)), *_tf1_layers()], name="seq")


def mobilenet() -> Any:
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def attention() -> Any:
    inputs = keras.Input((6, 16))
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(inputs, inputs)
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Add(name="add")([a, inputs]))
    h = keras.layers.Dense(16, activation="relu", name="ffn")(h)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    model = keras.Model(inputs, outputs, name="attention")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def attention_plain() -> Any:
    """The same, not compiled: a weights-only Keras 3 file."""
    model = attention()
    return keras.Model(model.inputs, model.outputs, name="attention")


def mobilenet_plain() -> Any:
    """MobileNetV2 as above, not compiled: a weights-only Keras 3 file."""
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
