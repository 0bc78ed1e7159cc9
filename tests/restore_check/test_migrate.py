"""Migrations, from diagnosis to a working restore, measured against TensorFlow, tf_keras and Keras.

- TF1 -> Keras 3: a graph model written by tf.compat.v1.train.Saver (get_variable names, a slim-style
  `logits/weights` and `logits/biases`, a depthwise `depthwise_weights`, a `LayerNorm/` scope), restored into the
  Keras 3 model rebuilt with the same layer names. Every suggestion is checked against the value TensorFlow's
  reader returns for its key, and the rename map restores every variable to it.
- Keras 2 -> Keras 3: files written by tf_keras (MobileNetV2 alpha 0.35; a model with MultiHeadAttention and a
  TFOpLambda) against Keras 3 files holding the same weights (loaded by Keras's own load_weights): `diff` pairs
  every weight, the renamed ones as renamed; `keras3-check` names exactly the layers Keras fails to deserialize
  (asked again here, layer by layer), and its fixes keep the layers' outputs; the optimizer state carried over by
  the rename map gives the next training step tf_keras takes.
- restore-check's arguments are checked before TensorFlow is imported (a subprocess with TensorFlow blocked).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

runner = CliRunner()
MODELS = Path(__file__).parents[1] / "support" / "restore_models"
MIGRATE = MODELS / "migrate_models.py"

# The Keras 3 variable (tf1_functional's layer names) -> the name the TF1 graph saved it under.
TF1_NAMES = {
    "conv1/kernel": "conv1/kernel", "conv1/bias": "conv1/bias",
    "bn1/gamma": "bn1/gamma", "bn1/beta": "bn1/beta", "bn1/moving_mean": "bn1/moving_mean",
    "bn1/moving_variance": "bn1/moving_variance",
    "dw/kernel": "dw/depthwise_weights",
    "ln/gamma": "ln/LayerNorm/gamma", "ln/beta": "ln/LayerNorm/beta",
    "logits/kernel": "logits/weights", "logits/bias": "logits/biases",
}


def _json(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.stdout[-2000:])
    return result.exit_code, json.loads(result.stdout)


def _module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("restore_models_migrate", MIGRATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- TF1 -> Keras 3 -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A TF1 graph trained one Adam step (BN statistics updated too) and saved by tf.compat.v1.train.Saver;
    `values`: each TF1 variable's value in the session when it was saved."""
    import tensorflow as tf

    v1 = tf.compat.v1
    out = tmp_path_factory.mktemp("tf1")
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(rng.rand(2, 8, 8, 3).astype(np.float32))
        with v1.variable_scope("conv1"):
            kernel = v1.get_variable("kernel", [3, 3, 3, 4])
            bias = v1.get_variable("bias", [4], initializer=v1.constant_initializer(0.1))
        h = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
        with v1.variable_scope("bn1"):
            gamma = v1.get_variable("gamma", [4], initializer=v1.ones_initializer())
            beta = v1.get_variable("beta", [4], initializer=v1.zeros_initializer())
            mean = v1.get_variable("moving_mean", [4], initializer=v1.zeros_initializer(), trainable=False)
            var = v1.get_variable("moving_variance", [4], initializer=v1.ones_initializer(), trainable=False)
        h, batch_mean, batch_var = v1.nn.fused_batch_norm(h, gamma, beta, epsilon=1e-3)
        updates = [v1.assign(mean, 0.9 * mean + 0.1 * batch_mean), v1.assign(var, 0.9 * var + 0.1 * batch_var)]
        with v1.variable_scope("dw"):  # slim's depthwise spelling
            depthwise = v1.get_variable("depthwise_weights", [3, 3, 4, 1])
        h = tf.reduce_mean(tf.nn.depthwise_conv2d(h, depthwise, [1, 1, 1, 1], "SAME"), axis=[1, 2])
        with v1.variable_scope("ln/LayerNorm"):  # tf.contrib.layers.layer_norm's scope
            ln_gamma = v1.get_variable("gamma", [4], initializer=v1.ones_initializer())
            ln_beta = v1.get_variable("beta", [4], initializer=v1.zeros_initializer())
        m, s = tf.nn.moments(h, [1], keepdims=True)
        h = (h - m) / tf.sqrt(s + 1e-3) * ln_gamma + ln_beta
        with v1.variable_scope("logits"):  # slim's fully_connected spelling
            weights = v1.get_variable("weights", [4, 5])
            biases = v1.get_variable("biases", [5], initializer=v1.constant_initializer(0.2))
        logits = tf.matmul(h, weights) + biases
        step = v1.train.get_or_create_global_step()
        with tf.control_dependencies(updates):
            train = v1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean(logits ** 2), global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            session.run(train)
            path = saver.save(session, str(out / "model.ckpt"), global_step=step)
            values = dict(zip(TF1_NAMES.values(), session.run(
                [kernel, bias, gamma, beta, mean, var, depthwise, ln_gamma, ln_beta, weights, biases]), strict=True))
    return {"path": path, "values": values, "dir": out}


@pytest.mark.tf
@pytest.mark.parametrize(("function", "scope"), [("tf1_functional", ""), ("tf1_sequential", "seq/")])
def test_tf1_every_suggestion_is_the_value_tensorflow_stores(tf1: dict[str, Any], tmp_path: Path, function: str,
                                                            scope: str) -> None:
    import tensorflow as tf

    mapping = tmp_path / "renames.json"
    code, data = _json("restore-check", tf1["path"], "--model", f"{MIGRATE}:{function}", "--ignore-optimizer",
                       "--rename-map", str(mapping))
    assert code == 1  # TensorFlow's name-based restore writes no Keras 3 variable
    assert not any(v["restored"] for v in data["variables"])
    stored = tf.train.load_checkpoint(tf1["path"])
    suggested = {s["variable"]: s for s in data["suggestions"]}
    assert sorted(suggested) == sorted(scope + name for name in TF1_NAMES)
    for name, tf1_name in TF1_NAMES.items():
        s = suggested[scope + name]
        # TensorFlow's reader: the value under the suggested key is the one the graph saved for this variable.
        assert np.array_equal(stored.get_tensor(s["key"]), tf1["values"][tf1_name]), name
        assert s["key"] == tf1_name
    for name in ("logits/kernel", "logits/bias", "dw/kernel"):
        evidence = suggested[scope + name]["evidence"]
        assert evidence.startswith("the only unused float32 ") and "for its only variable without one" in evidence
    assert suggested[scope + "logits/kernel"]["evidence"].endswith(
        "weights -> kernel (TF1 get_variable/slim spelling)")
    assert [(e["variable"], e["key"]) for e in json.loads(mapping.read_text())["renames"]] == [
        (s["variable"], s["key"]) for s in data["suggestions"]]


@pytest.mark.tf
def test_tf1_rename_map_restores_every_variable(tf1: dict[str, Any], tmp_path: Path) -> None:
    import tensorflow as tf

    from ckptcheck.restore_check import apply_rename_map

    mapping = tmp_path / "renames.json"
    runner.invoke(app, ["restore-check", tf1["path"], "--model", f"{MIGRATE}:tf1_functional", "--rename-map",
                        str(mapping)])
    result = runner.invoke(app, ["restore-check", tf1["path"], "--model", f"{MIGRATE}:tf1_functional",
                                 "--ignore-optimizer", "--apply-rename-map", str(mapping)])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("OK: all 11 variables restored")
    assert ("restored by the rename map: 11 variables, 5 of them from a value saved under another name: "
            "dw/kernel <- dw/depthwise_weights") in result.stdout
    assert "by path or position" not in result.stdout
    # In the user's own code: the map assigns each variable the value TensorFlow's reader returns.
    model = _module().tf1_functional()
    assigned = apply_rename_map(model, tf1["path"], str(mapping))
    assert sorted(assigned) == sorted(TF1_NAMES)
    stored = tf.train.load_checkpoint(tf1["path"])
    for v in model.weights:
        assert np.array_equal(v.numpy(), stored.get_tensor(TF1_NAMES[v.path])), v.path
    # The migrated model, saved by Keras 3, checked file against file with the same map.
    keras_file = tmp_path / "migrated.keras"
    model.save(keras_file)
    code, data = _json("diff", tf1["path"], str(keras_file), "--rename-map", str(mapping))
    assert code == 1  # Adam's state and the step are only in A
    renamed = {r["name"]: r["variable_b"] for r in data["renamed"]}
    assert renamed == {tf1_name: name for name, tf1_name in TF1_NAMES.items() if name != tf1_name}
    assert data["changed"] == [] and data["added"] == []
    assert sorted(t["name"] for t in data["removed"]) == sorted(
        k for k in stored.get_variable_to_shape_map() if k not in TF1_NAMES.values())  # Adam's state, the step


# --- suggestions on evidence only (no TensorFlow) ---------------------------------------------------------------


def _var(name: str, shape: tuple[int, ...], kind: str = "weight") -> Any:
    from ckptcheck.restore_check.report import VariableCheck

    return VariableCheck(name, kind, "float32", shape, "missing", name, name=name)


def _value(name: str, shape: tuple[int, ...], kind: str = "weight") -> Any:
    from ckptcheck.restore_check.report import StoredValueUse

    return StoredValueUse(name, name, kind, "float32", shape, (), variable=name)


def test_leaf_rename_needs_the_only_fit_on_both_sides() -> None:
    from ckptcheck.restore_check import suggest

    found = suggest([_var("logits/kernel", (4, 5)), _var("logits/bias", (5,))],
                    [_value("logits/weights", (4, 5)), _value("logits/biases", (5,))])
    assert [(s.variable, s.key, s.rename) for s in found] == [("logits/bias", "logits/biases", ("biases", "bias")),
                                                              ("logits/kernel", "logits/weights",
                                                               ("weights", "kernel"))]
    # A tie is no suggestion: two unused values of the shape under the layer.
    assert suggest([_var("logits/kernel", (4, 5))],
                   [_value("logits/weights", (4, 5)), _value("logits/weights_ema", (4, 5))]) == ()
    # Nor two variables without one.
    assert suggest([_var("logits/kernel", (4, 5)), _var("logits/kernel_2", (4, 5))],
                   [_value("logits/weights", (4, 5))]) == ()
    # Another layer is no evidence, whatever the names.
    assert suggest([_var("head/kernel", (4, 5))], [_value("logits/weights", (4, 5))]) == ()
    # Optimizer state is never paired by its leaf.
    assert suggest([_var("opt/kernel", (4, 5), "optimizer")], [_value("opt/weights", (4, 5), "optimizer")]) == ()


def test_leaf_pairs_for_diff() -> None:
    """diff's candidates (values are compared after): same layer, one fit each way, leaves differing."""
    from ckptcheck.renames import LeafCandidate, leaf_pairs

    def c(name: str, shape: tuple[int, ...] = (3,)) -> LeafCandidate:
        return LeafCandidate(name, name, "float32", shape)

    assert [(o.name, n.name) for o, n in leaf_pairs([c("b1/depthwise_kernel"), c("b2/depthwise_kernel")],
                                                    [c("b2/kernel"), c("b1/kernel")])] == [
        ("b1/depthwise_kernel", "b1/kernel"), ("b2/depthwise_kernel", "b2/kernel")]
    assert leaf_pairs([c("b1/x"), c("b1/y")], [c("b1/kernel")]) == []  # a tie
    assert leaf_pairs([c("b1/kernel")], [c("b1/kernel")]) == []  # the same leaf: not a rename
    assert leaf_pairs([c("b1/x")], [c("b1/kernel", (4,))]) == []  # another shape
    assert leaf_pairs([c("x")], [c("kernel")]) == []  # no layer to share


# --- restore-check fails fast -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "checkpoint", "expected"), [
    ("{dir}/gone.py:build", "{ckpt}", "{dir}/gone.py: no such model file"),
    ("{models}/broken.py:nothing_here", "{ckpt}", "{models}/broken.py: defines no function 'nothing_here' (hint: "
                                                  "functions it defines: prints_and_builds, raises, returns_number)"),
    ("{dir}/syntax.py:build", "{ckpt}", "{dir}/syntax.py:3: SyntaxError: "),
    ("{models}/broken.py:raises", "{dir}/no-such-checkpoint", "{dir}/no-such-checkpoint: "),
])
def test_arguments_are_checked_before_tensorflow(tmp_path: Path, model: str, checkpoint: str, expected: str) -> None:
    """With TensorFlow unimportable, each mistake is still its own one-line error: nothing imported TensorFlow
    before the arguments were checked."""
    (tmp_path / "syntax.py").write_text("import os\n\ndef build(:\n    pass\n")
    ckpt = tmp_path / "w.weights.h5"
    import h5py

    with h5py.File(ckpt, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros(2, np.float32))
    names = {"dir": str(tmp_path), "models": str(MODELS), "ckpt": str(ckpt)}
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; sys.argv = ['ckptcheck', "
            f"'restore-check', {checkpoint.format(**names)!r}, '--model', {model.format(**names)!r}]; "
            "from ckptcheck.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("ckptcheck: " + expected.format(**names)), proc.stderr
    assert "TensorFlow" not in proc.stderr and "Traceback" not in proc.stderr


# --- the report: short, and counting what it says ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fine_tune(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Keras 3 model with a Normalization layer (its `count` an integer scalar), saved after one Adam step by
    tf.train.Checkpoint(model=..., optimizer=...); the model restored into has a new layer on top (new_head)."""
    import tensorflow as tf

    out = tmp_path_factory.mktemp("fine_tune")
    model_file = out / "models.py"
    model_file.write_text(
        "import keras\n\n"
        "def _build(new_head):\n"
        "    inputs = keras.Input((3,))\n"
        "    norm = keras.layers.Normalization(name='norm')\n"
        "    norm.adapt(keras.ops.convert_to_tensor([[0.0, 1, 2], [2, 3, 4]]))\n"
        "    h = keras.layers.Dense(4, name='dense')(norm(inputs))\n"
        "    h = keras.layers.Dense(2, name='head')(h)\n"
        "    if new_head:\n"
        "        h = keras.layers.Dense(2, name='new_head')(h)\n"
        "    model = keras.Model(inputs, h, name='net')\n"
        "    model.compile(optimizer=keras.optimizers.Adam(0.01), loss='mse')\n"
        "    return model\n\n"
        "def saved():\n    return _build(False)\n\n"
        "def new_head():\n    return _build(True)\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("fine_tune_models", model_file)
    assert spec is not None and spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    model = models.saved()
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    model.fit(x, np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(out / "ckpt"))
    fresh = models.new_head()
    weights = len(fresh.weights)
    return {"path": path, "model": str(model_file), "weights": weights}


@pytest.mark.tf
def test_headline_and_footer_count_the_same_variables(fine_tune: dict[str, Any]) -> None:
    args = ["restore-check", fine_tune["path"], "--model", f"{fine_tune['model']}:new_head", "--allow-missing",
            "new_head/*", "--allow-unused"]
    result = runner.invoke(app, [*args, "--ignore-optimizer"])
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    n = fine_tune["weights"]  # Keras's count: norm's mean, variance and count; kernel and bias of 3 Dense layers
    assert n == 9
    assert lines[0].startswith(f"OK: {n - 2} of {n} variables restored, values equal to the checkpoint's; ")
    assert f"model variables: {n - 2} of {n} restored (2 allowed to be missing)" in lines
    # Without --ignore-optimizer, the optimizer's variables left unrestored (new_head's slots) are one line, not
    # one row each; --verbose lists them.
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.stdout
    rows = re.compile(r"^adam\S*/new_head_\S+ +float32 ", re.MULTILINE)
    assert not rows.findall(result.stdout)
    assert re.search(r"^  adam\S*: 4 optimizer variables — 4 missing \(nothing stored at this object path\)",
                     result.stdout, re.MULTILINE), result.stdout
    assert len(rows.findall(runner.invoke(app, [*args, "--verbose"]).stdout)) >= 4


# --- Keras 2 -> Keras 3 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """tf_keras models trained one Adam step and saved as legacy .h5: MobileNetV2 (alpha 0.35, 32x32, 10 classes)
    and an attention model (MultiHeadAttention, a `+` tf_keras records as a TFOpLambda, LayerNormalization); for
    the attention model also its weights after one more training step (`next_step`) on (`x2`, `y2`). Keras 3
    files of the same weights: the Keras 3 models of migrate_models.py, uncompiled, given the .h5's weights by
    Keras's own load_weights."""
    tf_keras = pytest.importorskip("tf_keras")
    out = tmp_path_factory.mktemp("keras2")
    tf_keras.utils.set_random_seed(1)
    rng = np.random.RandomState(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy format's warning
        mobilenet = tf_keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                                      classes=10)
        mobilenet.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        mobilenet.fit(rng.rand(4, 32, 32, 3).astype(np.float32), np.arange(4), epochs=1, verbose=0)
        mobilenet.save(out / "mobilenet.h5")
        x_image = rng.rand(2, 32, 32, 3).astype(np.float32)
        mobilenet_out = mobilenet.predict(x_image, verbose=0)

        inputs = tf_keras.Input((6, 16))
        mha = tf_keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")
        h = tf_keras.layers.LayerNormalization(name="ln")(mha(inputs, inputs) + inputs)
        h = tf_keras.layers.Dense(16, activation="relu", name="ffn")(h)
        outputs = tf_keras.layers.Dense(3, name="out")(tf_keras.layers.GlobalAveragePooling1D(name="pool")(h))
        attention = tf_keras.Model(inputs, outputs, name="attention")
        attention.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                          loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        attention.fit(rng.rand(4, 6, 16).astype(np.float32), np.arange(4) % 3, epochs=1, verbose=0)
        attention.save(out / "attention.h5")
        x_seq = rng.rand(2, 6, 16).astype(np.float32)
        mha_out = mha(x_seq, x_seq).numpy()
        mha_weights = [w.numpy() for w in mha.weights]
        x2, y2 = rng.rand(4, 6, 16).astype(np.float32), np.array([2, 0, 1, 1])
        attention.train_on_batch(x2, y2)
        next_step = {w.name.split(":")[0]: w.numpy() for w in attention.weights}
    module = _module()
    for name, build in (("mobilenet", module.mobilenet_plain), ("attention", module.attention_plain)):
        model = build()
        model.load_weights(out / f"{name}.h5")
        model.save(out / f"{name}.keras")
    return {"dir": out, "mobilenet": str(out / "mobilenet.h5"), "attention": str(out / "attention.h5"),
            "x_image": x_image, "mobilenet_out": mobilenet_out, "x_seq": x_seq, "mha_out": mha_out,
            "mha_weights": mha_weights, "x2": x2, "y2": y2, "next_step": next_step}


def _h5_datasets(path: str) -> dict[str, np.ndarray]:
    """Every model weight of a legacy .h5, by its key, read with h5py."""
    import h5py

    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(
            lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet", "attention"])
def test_diff_pairs_every_keras2_weight_with_its_keras3_one(keras2: dict[str, Any], name: str) -> None:
    import keras

    keras_file = str(keras2["dir"] / f"{name}.keras")
    code, data = _json("diff", keras2[name], keras_file)
    assert code == 1  # the optimizer's state is only in A
    model = keras.saving.load_model(keras_file, compile=False)
    stored = _h5_datasets(keras2[name])
    renamed = {r["name"]: r for r in data["renamed"]}
    expected_renamed = set()
    for v in model.weights:
        value = v.numpy()
        holders = [k for k, a in stored.items() if a.shape == value.shape and np.array_equal(a, value)]
        assert len(holders) == 1, (v.path, holders)  # Keras's load_weights put this one stored value here
        key = holders[0]
        assert key in data["unchanged_keys"], (v.path, key)  # paired, and equal
        stored_leaf = key.split("/")[-1].split(":")[0]
        if stored_leaf != v.path.split("/")[-1]:
            expected_renamed.add(key)
            assert renamed[key]["variable_b"] == v.path
    assert set(renamed) == expected_renamed
    assert len(expected_renamed) == (17 if name == "mobilenet" else 0)  # every depthwise kernel
    assert data["added"] == [] and data["changed"] == []
    assert all(t["name"].startswith("optimizer_weights/") for t in data["removed"])


def _keras_fails_on(path: str) -> set[str]:
    """The layers of a legacy .h5's config the installed Keras cannot deserialize, asked here, one by one, with
    the call its load_model makes for an .h5."""
    import h5py
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    failing = set()
    for layer in config["config"]["layers"]:
        try:
            with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
                saving_utils.model_from_config(copy.deepcopy({"class_name": layer["class_name"],
                                                              "config": layer["config"]}))
        except Exception:
            failing.add(layer["config"]["name"])
    return failing


@pytest.mark.tf
@pytest.mark.slow
def test_keras3_blockers_of_mobilenet_and_the_fixed_file(keras2: dict[str, Any], tmp_path: Path) -> None:
    import h5py
    import keras

    fixed = tmp_path / "fixed.h5"
    code, data = _json("keras3-check", keras2["mobilenet"], "--write-fixed", str(fixed))
    assert code == 1
    failing = {c["layer"] for c in data["failing"]}
    assert failing == _keras_fails_on(keras2["mobilenet"])
    assert len(failing) == 17
    assert {(c["class_name"], c["error"], tuple(f["drop"] for f in c["fixes"]), c["fixed_ok"])
            for c in data["failing"]} == {
        ("DepthwiseConv2D", "TypeError: Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}",
         ("groups",), True)}
    # The fixed copy loads with Keras 3 and computes what tf_keras computed.
    model = keras.saving.load_model(fixed)
    np.testing.assert_allclose(model.predict(keras2["x_image"], verbose=0), keras2["mobilenet_out"], atol=1e-5)
    # What became of the optimizer state, as Keras left it.
    load = data["load"]
    with h5py.File(keras2["mobilenet"], "r") as f:
        stored = []
        f["optimizer_weights"].visititems(
            lambda _n, obj: stored.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    held = [v.path.split("/", 1)[1] for v in model.optimizer.variables
            if any(np.shape(s) == tuple(v.shape) and np.array_equal(s, v.numpy()) for s in stored)]
    # (Keras numbers the optimizer of each model it loads: adam_6/iteration, adam_7/iteration.)
    assert (load["optimizer"], load["optimizer_variables"], [p.split("/", 1)[1] for p in load["optimizer_loaded"]]
            ) == (type(model.optimizer).__name__, len(model.optimizer.variables), held)
    assert load["stored_optimizer_values"] == len(stored) == 317
    assert load["weights_equal"] == load["weights"] == len(model.weights)


@pytest.mark.tf
@pytest.mark.slow
def test_keras3_blockers_of_attention_and_the_fix_keeps_its_output(keras2: dict[str, Any]) -> None:
    import h5py
    import keras

    code, data = _json("keras3-check", keras2["attention"])
    assert code == 1
    assert {c["layer"] for c in data["failing"]} == _keras_fails_on(keras2["attention"]) == {
        "mha", "tf.__operators__.add"}
    by_layer = {c["layer"]: c for c in data["failing"]}
    assert by_layer["tf.__operators__.add"]["fixes"] == [] and "build the model in code" in by_layer[
        "tf.__operators__.add"]["advice"]
    assert data["load"] is None  # not every layer has a fix: the model is not loaded
    # The fix offered for MultiHeadAttention, applied here: Keras 3's layer computes what tf_keras's did.
    with h5py.File(keras2["attention"], "r") as f:
        config = json.loads(f.attrs["model_config"])
    layer_config = next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "mha")["config"]
    for fix in by_layer["mha"]["fixes"]:
        layer_config.pop(fix["drop"])
    layer = keras.layers.MultiHeadAttention.from_config(layer_config)
    x = keras2["x_seq"]
    layer(x, x)
    layer.set_weights(keras2["mha_weights"])
    np.testing.assert_allclose(layer(x, x).numpy(), keras2["mha_out"], atol=1e-5)


@pytest.mark.tf
@pytest.mark.slow
def test_keras2_optimizer_state_carries_over(keras2: dict[str, Any], tmp_path: Path) -> None:
    """The rename map pairs each Keras 2 slot with its Keras 3 variable; with it, Keras 3's next training step is
    the one tf_keras took from the same file (to float rounding: 1.1e-6 here). Without it, it is not (0.017 apart)."""
    from ckptcheck.restore_check import apply_rename_map

    mapping = tmp_path / "renames.json"
    result = runner.invoke(app, ["restore-check", keras2["attention"], "--model", f"{MIGRATE}:attention",
                                 "--rename-map", str(mapping)])
    assert result.exit_code == 1
    assert "its optimizer state carries over to a Keras 3 optimizer of the same algorithm" in result.stdout
    assert "KERAS 3 FAILS on 2 of 7 layers" in result.stdout
    entries = json.loads(mapping.read_text())["renames"]
    assert {e["key"].split("/", 1)[0] for e in entries} == {"optimizer_weights"}
    code, data = _json("restore-check", keras2["attention"], "--model", f"{MIGRATE}:attention", "--apply-rename-map",
                       str(mapping))
    assert code == 1
    left = [v["variable"].split("/", 1)[1] for v in data["variables"] if not v["restored"]]
    assert left == ["learning_rate"]  # a Keras 2 .h5 stores none: it is in the training config
    for carry in (True, False):
        model = _module().attention()
        model.optimizer.build(model.trainable_variables)
        model.load_weights(keras2["attention"])
        if carry:
            assert len(apply_rename_map(model, keras2["attention"], str(mapping))) == len(entries)
        model.train_on_batch(keras2["x2"], keras2["y2"])
        worst = max(float(np.max(np.abs(v.numpy() - keras2["next_step"][v.path]))) for v in model.weights)
        if carry:  # float rounding apart (tf_keras's and Keras 3's layers order their operations differently)
            assert worst < 1e-5, worst
        else:  # Adam's first step from fresh moments moves each weight by about the learning rate
            assert worst > 1e-3, worst
