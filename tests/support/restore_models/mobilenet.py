"""A real architecture for restore-check tests: MobileNetV2 (alpha 0.35, 32x32 inputs: 262 weights, builds in about
a second offline). `saved` is what the checkpoints are written from (100 classes, Adam named "adam"); the others
are what a user restores them into: a resized head (transfer learning), another optimizer, a layer added."""

from __future__ import annotations

from typing import Any

import keras


def _base(classes: int) -> keras.Model:
    return keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=classes)


def _compiled(model: keras.Model, optimizer: str = "adam") -> keras.Model:
    opt = (keras.optimizers.Adam(0.01, name="adam") if optimizer == "adam"
           else keras.optimizers.SGD(0.01, momentum=0.9, name="sgd"))
    model.compile(optimizer=opt, loss="mse")
    return model


def saved() -> keras.Model:
    return _compiled(_base(100))


def resized() -> keras.Model:
    return _compiled(_base(10))


def sgd() -> keras.Model:
    return _compiled(_base(100), "sgd")


def added() -> keras.Model:
    base = _base(100)
    out = keras.layers.Dense(10, name="extra")(base.output)
    return _compiled(keras.Model(base.inputs, out, name="mobilenet_extra"))


def as_dict() -> dict[str, Any]:
    model = saved()
    return {"model": model, "optimizer": model.optimizer}
