"""Keras 3 models for restore-check tests.

`saved` is the model the Keras files (and a TF2 checkpoint of a Keras model) are written from: Sequential 'seq'
of Dense 'dense' (3->4) and Dense 'dense_1' (4->2), compiled with Adam named "adam" (Keras numbers unnamed
optimizers per process, which would make the names depend on test order). Kernels start from glorot_uniform
draws, biases from zeros (Keras's defaults).
"""

from __future__ import annotations

import keras


def _model(layers: list[tuple[str, int]], *, inputs: bool = True) -> keras.Model:
    stack: list[keras.layers.Layer] = [keras.Input((3,))] if inputs else []
    stack += [keras.layers.Dense(units, name=name) for name, units in layers]
    model = keras.Sequential(stack, name="seq")
    model.compile(optimizer=keras.optimizers.Adam(0.01, name="adam"), loss="mse")
    return model


def saved() -> keras.Model:
    return _model([("dense", 4), ("dense_1", 2)])


def same() -> keras.Model:
    return saved()


def renamed() -> keras.Model:
    return _model([("dense", 4), ("head", 2)])


def added() -> keras.Model:
    return _model([("dense", 4), ("dense_1", 2), ("extra", 2)])


def removed() -> keras.Model:
    return _model([("dense", 4)])


def resized() -> keras.Model:
    return _model([("dense", 5), ("dense_1", 2)])


def constant_head() -> keras.Model:
    """A new layer 'head' whose kernel starts at Constant(0.5): what it keeps when unrestored is easy to name."""
    stack = [keras.Input((3,)), keras.layers.Dense(4, name="dense"), keras.layers.Dense(2, name="dense_1"),
             keras.layers.Dense(2, name="head", kernel_initializer=keras.initializers.Constant(0.5))]
    model = keras.Sequential(stack, name="seq")
    model.compile(optimizer=keras.optimizers.Adam(0.01, name="adam"), loss="mse")
    return model


def unbuilt() -> keras.Model:
    """No Input: Keras creates the variables on the first call."""
    return _model([("dense", 4), ("dense_1", 2)], inputs=False)


def uncompiled() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense"),
                             keras.layers.Dense(2, name="dense_1")], name="seq")
