"""Session-scoped fixtures that build Keras files (see conftest.py).

Keras (and tf_keras, for Keras 2 files) is imported inside the fixtures only, with the TensorFlow backend, and
every model is built once per session from fixed seeds and fixed data.

``keras_files`` maps a name to a file:

=====================  =============================================================================================
``keras``              Keras 3 ``.keras``: Sequential 'seq' of Dense 'dense' (4->3, Constant(0.5) kernel, relu),
                       Dense 'half' (3->2, dtype bfloat16) and Dense 'out' (2->1); compiled with Adam and fitted
                       two steps, so optimizer variables exist
``keras-weights``      the same model's ``save_weights("model.weights.h5")``
``keras-h5``           the same model's legacy ``model.save("model.h5")``
``keras-sharded``      the same model's sharded ``save_weights("sharded/model.weights.json", max_shard_size=...)``,
                       small enough shards that the optimizer's variables span several
``keras-npz-seq``      the same model saved with ``weights_format="npz"`` (``model.weights.npz`` in the archive)
``keras-npz``          Keras 3 ``.keras`` with ``weights_format="npz"``: Sequential 'convnet' of Conv2D,
                       BatchNormalization, Flatten and Dense; Adam, fitted one step
``keras-npz-h5``       the same model's ``model.save("x.keras")`` (h5 weights)
``keras-lambda``       Keras 3 ``.keras`` of a Functional model with a nested Sequential 'inner' and a Lambda 'lam'
``keras-os``           ``keras`` with config.json edited so Dense 'dense' has activation ``os.system``
``keras-split-h5``     legacy weights-only ``.h5`` whose ``layer_names`` and one ``weight_names`` exceed 64 KB and are
                       split by Keras's own attribute writer into ``layer_names0``, ``layer_names1``, ...
``keras2-h5``          (tf_keras) Keras 2 full-model ``.h5``: Functional 'func' with Dense 'dense' (Constant(0.5)),
                       nested Sequential 'inner' and Dense 'out'; Adam, fitted two steps
``keras2-weights-h5``  (tf_keras) the same model's weights-only ``save_weights("x.h5")``
``keras2-lambda-h5``   (tf_keras) Keras 2 full-model ``.h5`` with a Lambda layer 'lam'
=====================  =============================================================================================

The ``keras2-*`` files exist only when tf_keras is installed. ``keras_build`` also carries what the models hold
(``get_weights()`` and optimizer variables, in order) for bit-for-bit comparison, and the split file's names.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["KerasBuild", "keras_build", "keras_files"]

# Long layer names so that a few hundred of them pass Keras's 64 KB attribute limit.
SPLIT_LAYERS = 400
SPLIT_WEIGHTS = 350


@dataclass
class KerasBuild:
    files: dict[str, Path]
    # key of `files` -> the model's get_weights() (model variables, in model.weights order)
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # key of `files` -> the model's variables' paths ([v.path for v in model.weights]), in the order of `weights`
    paths: dict[str, list[str]] = field(default_factory=dict)
    # key of `files` -> the optimizer's variables, in the optimizer's order
    optimizer: dict[str, list[np.ndarray]] = field(default_factory=dict)
    # the split file: (layer name, [(weight name, value)]) in order
    split_layout: list[tuple[str, list[tuple[str, np.ndarray]]]] = field(default_factory=list)
    has_tf_keras: bool = False


def _keras() -> Any:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 4)).astype(np.float32), np.ones((8, 1), dtype=np.float32)


def _numpy(variables: Any) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def _build_keras3(out: Path, build: KerasBuild) -> None:
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="relu", kernel_initializer=keras.initializers.Constant(0.5),
                               name="dense"),
            keras.layers.Dense(2, dtype="bfloat16", name="half"),
            keras.layers.Dense(1, name="out"),
        ],
        name="seq",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # two steps: the optimizer's variables hold values
    files = {"keras": out / "model.keras", "keras-weights": out / "model.weights.h5", "keras-h5": out / "model.h5"}
    model.save(files["keras"])
    model.save_weights(files["keras-weights"])
    model.save(files["keras-h5"])
    files["keras-npz-seq"] = out / "seq_npz.keras"
    _save_npz(model, files["keras-npz-seq"])
    # ~64 bytes a shard (max_shard_size is in GB; the largest variable is 48 bytes): a variable or two a shard.
    files["keras-sharded"] = out / "sharded" / "model.weights.json"
    files["keras-sharded"].parent.mkdir()
    model.save_weights(files["keras-sharded"], max_shard_size=6e-8)
    for key in files:
        build.weights[key] = model.get_weights()
        build.paths[key] = [v.path for v in model.weights]
        build.optimizer[key] = _numpy(model.optimizer.variables)
    build.files.update(files)

    # The same archive, with config.json naming os.system as an activation (what CVE-2025-1550 is about).
    crafted = out / "os.keras"
    with zipfile.ZipFile(files["keras"]) as src, zipfile.ZipFile(crafted, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["config"].get("name") == "dense":
                        layer["config"]["activation"] = {"module": "os", "class_name": "function",
                                                         "config": "system", "registered_name": None}
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    build.files["keras-os"] = crafted


def _save_npz(model: Any, path: Path) -> None:
    # Keras 3.15 has no public way to ask for npz weights: model.save() and keras.saving.save_model() always
    # write model.weights.h5.
    from keras.src.saving import saving_lib

    saving_lib.save_model(model, str(path), weights_format="npz")


def _build_keras3_npz(out: Path, build: KerasBuild) -> None:
    keras = _keras()
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, name="head"),
        ],
        name="convnet",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 6, 2)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # one step
    files = {"keras-npz": out / "convnet_npz.keras", "keras-npz-h5": out / "convnet_h5.keras"}
    _save_npz(model, files["keras-npz"])
    model.save(files["keras-npz-h5"])
    for key in files:
        build.weights[key] = model.get_weights()
        build.optimizer[key] = _numpy(model.optimizer.variables)
    build.files.update(files)


def _build_keras3_lambda(out: Path, build: KerasBuild) -> None:
    keras = _keras()
    keras.utils.set_random_seed(1)
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="in_d")], name="inner")
    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="dense")(inputs)
    h = inner(h)
    outputs = keras.layers.Lambda(lambda t: t * 2.0, name="lam")(h)
    model = keras.Model(inputs, outputs, name="func")
    path = out / "lambda.keras"
    model.save(path)
    build.files["keras-lambda"] = path
    build.weights["keras-lambda"] = model.get_weights()


def _build_split(out: Path, build: KerasBuild) -> None:
    """A weights-only legacy file laid out as Keras lays it out, with name lists too long for one attribute;
    Keras's own attribute writer does the splitting."""
    import h5py

    _keras()
    from keras.src.legacy.saving.legacy_h5_format import save_attributes_to_hdf5_group

    rng = np.random.default_rng(2)
    layout: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    for i in range(SPLIT_LAYERS):
        name = f"layer_{i:04d}_" + "x" * 180
        count = SPLIT_WEIGHTS if i == 1 else (1 if i % 50 == 0 else 0)
        weights = [(f"{name[:12]}/w{j}_" + "y" * 180 + ":0", rng.standard_normal(2).astype(np.float32))
                   for j in range(count)]
        layout.append((name, weights))
    path = out / "split.h5"
    with h5py.File(path, "w") as f:
        save_attributes_to_hdf5_group(f, "layer_names", [n.encode() for n, _ in layout])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for name, weights in sorted(layout):
            group = f.create_group(name)
            save_attributes_to_hdf5_group(group, "weight_names", [w.encode() for w, _ in weights])
            for wname, value in weights:
                group.create_dataset(wname, data=value)
    build.files["keras-split-h5"] = path
    build.split_layout = layout


def _build_keras2(out: Path, build: KerasBuild) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tf_keras as k2
    except ImportError:
        return
    build.has_tf_keras = True
    k2.utils.set_random_seed(0)
    inner = k2.Sequential([k2.layers.Dense(2, name="in_d", input_shape=(3,))], name="inner")
    inputs = k2.Input((4,))
    h = k2.layers.Dense(3, kernel_initializer=k2.initializers.Constant(0.5), name="dense")(inputs)
    h = inner(h)
    outputs = k2.layers.Dense(1, name="out")(h)
    model = k2.Model(inputs, outputs, name="func")
    model.compile(optimizer=k2.optimizers.Adam(0.01), loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    files = {"keras2-h5": out / "k2.h5", "keras2-weights-h5": out / "k2_weights.h5"}
    model.save(files["keras2-h5"])
    model.save_weights(files["keras2-weights-h5"])
    for key in files:
        build.weights[key] = model.get_weights()
    build.optimizer["keras2-h5"] = _numpy(model.optimizer.variables)
    build.files.update(files)

    inputs = k2.Input((4,))
    outputs = k2.layers.Lambda(lambda t: t * 2.0, name="lam")(k2.layers.Dense(2, name="dense")(inputs))
    lam = k2.Model(inputs, outputs, name="lam_model")
    lam.save(out / "k2_lambda.h5")
    build.files["keras2-lambda-h5"] = out / "k2_lambda.h5"


@pytest.fixture(scope="session")
def keras_build(tmp_path_factory: pytest.TempPathFactory) -> KerasBuild:
    """Every Keras file of the session, with what the models held (see the module docstring)."""
    import warnings

    out = tmp_path_factory.mktemp("keras")
    build = KerasBuild(files={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns about lambdas and the legacy .h5 format, as it should
        _build_keras3(out, build)
        _build_keras3_npz(out, build)
        _build_keras3_lambda(out, build)
        _build_split(out, build)
        _build_keras2(out, build)
    return build


@pytest.fixture(scope="session")
def keras_files(keras_build: KerasBuild) -> dict[str, Path]:
    """Name -> Keras file (see the module docstring for what each holds)."""
    return keras_build.files
