"""`ckptcheck restore-check`: models whose layers were renamed, added, removed or resized between save and restore,
for TF1, TF2 and Keras checkpoints, each with the exact report expected.

The checkpoints are written once per session from the models in tests/support/restore_models/ (every weight holding
distinct values, one optimizer step taken so its state is not all zeros); the models restored into are the
variants in the same files. Every check runs the CLI in-process and reads its JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

pytestmark = pytest.mark.tf  # every test here builds or restores models

runner = CliRunner()
MODELS = Path(__file__).parents[1] / "support" / "restore_models"
VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"restore_models_{name}", MODELS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _distinct(variables: list[Any], start: int) -> None:
    """Give every variable values no other holds, so a restored value names the stored value it came from."""
    for i, v in enumerate(variables):
        n = int(np.prod(v.shape))
        v.assign((np.arange(n, dtype=np.float32) + start + 100 * i).reshape(v.shape) / 64)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tf2: tf.train.Checkpoint(model=tf2_modules.saved(), optimizer=Adam) after one step (savedmodel: the same
    model saved by tf.saved_model.save); tf1: a graph-mode Saver
    checkpoint of dense/{kernel,bias} (3->4) and dense_1/{kernel,bias} (4->2) with Adam and global_step; keras,
    keras-weights, keras-h5: keras_models.saved() fitted one step, saved as .keras, .weights.h5 and legacy .h5;
    keras-tf2: the same Keras model in tf.train.Checkpoint(model=...)."""
    import keras
    import tensorflow as tf

    out = tmp_path_factory.mktemp("restore_check")
    paths: dict[str, str] = {}
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    y = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)

    mlp = _module("tf2_modules").saved()
    opt = tf.keras.optimizers.Adam(0.01, name="adam")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((mlp(x) - y) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, mlp.trainable_variables), mlp.trainable_variables, strict=True))
    _distinct(list(mlp.trainable_variables), 1)
    paths["tf2"] = tf.train.Checkpoint(model=mlp, optimizer=opt).save(str(out / "tf2" / "ckpt"))
    tf2_modules = _module("tf2_modules")
    v1_mlp = tf2_modules.saved()
    v1_adam = tf.compat.v1.train.AdamOptimizer(0.01)
    tf2_modules._v1_adam_step(v1_mlp, v1_adam, 1.0)
    _distinct(list(v1_mlp.trainable_variables), 7)
    paths["tf2-v1-adam"] = tf.train.Checkpoint(model=v1_mlp, optimizer=v1_adam).write(str(out / "tf2-v1" / "ckpt"))
    tf.saved_model.save(mlp, str(out / "savedmodel"))
    paths["savedmodel"] = str(out / "savedmodel")

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        h = tf.constant(x)
        for name, fan_in, units in (("dense", 3, 4), ("dense_1", 4, 2)):
            with v1.variable_scope(name):
                kernel = v1.get_variable("kernel", [fan_in, units], initializer=v1.constant_initializer(
                    np.arange(fan_in * units, dtype=np.float32).reshape(fan_in, units) / 8 + units))
                bias = v1.get_variable("bias", [units], initializer=v1.constant_initializer(
                    np.arange(units, dtype=np.float32) / 4 + 10 * units))
                h = tf.matmul(h, kernel) + bias
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.01).minimize(tf.reduce_mean((h - y) ** 2), global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            session.run(train)
            paths["tf1"] = saver.save(session, str(out / "tf1" / "model.ckpt"), global_step=step)
            v1_saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)  # the same values in a V1 checkpoint
            (out / "tf1-v1").mkdir()
            paths["tf1-v1"] = v1_saver.save(session, str(out / "tf1-v1" / "model.ckpt"), global_step=step)

    keras.utils.set_random_seed(3)
    model = _module("keras_models").saved()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    paths["keras"] = str(out / "model.keras")
    paths["keras-weights"] = str(out / "model.weights.h5")
    paths["keras-h5"] = str(out / "model.h5")
    model.save(paths["keras"])
    model.save_weights(paths["keras-weights"])
    model.save(paths["keras-h5"])
    paths["keras-tf2"] = tf.train.Checkpoint(model=model).write(str(out / "keras-tf2" / "ckpt"))
    return paths


def run(*args: str) -> Any:
    return runner.invoke(app, ["restore-check", *args])


def check(ckpt: str, model: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of `restore-check CKPT --model restore_models/MODEL ARGS --json`."""
    result = run(ckpt, "--model", str(MODELS / model), *args, "--json")
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.stdout)
    return result.exit_code, json.loads(result.stdout)


def short(key: str | None) -> str | None:
    return key[: -len(VALUE)] if key is not None and key.endswith(VALUE) else key


def statuses(data: dict[str, Any], kind: str = "weight") -> dict[str, tuple[str, str | None]]:
    """variable -> (status, the stored value it came from, or the name it is looked up by)."""
    return {v["variable"]: (v["status"], short(v["source"] if v["restored"] else v["key"]))
            for v in data["variables"] if v["kind"] == kind}


def used(data: dict[str, Any], kind: str = "weight") -> dict[str, list[str]]:
    return {s["label"]: s["used_by"] for s in data["stored_values"] if s["kind"] == kind}


def suggestions(data: dict[str, Any]) -> list[tuple[str, str | None, tuple[str, str]]]:
    return [(s["variable"], short(s["key"]), (s["rename"]["checkpoint"], s["rename"]["model"]))
            for s in data["suggestions"]]


def kept(data: dict[str, Any], variable: str) -> str:
    found = [v for v in data["variables"] if v["variable"] == variable]
    assert found and found[0]["kept"] is not None, variable
    return str(found[0]["kept"]["description"])


# --- TF2: tf.Module models, object-based restore ------------------------------------------------------------------

TF2_OPTIMIZER = ["optimizer/_iterations", "optimizer/_learning_rate"] + [f"optimizer/_variables/{i}"
                                                                         for i in range(2, 10)]


def test_tf2_same_model(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:same")
    assert statuses(data) == {
        "dense/kernel": ("restored", "model/dense/kernel"), "dense/bias": ("restored", "model/dense/bias"),
        "dense_1/kernel": ("restored", "model/dense_1/kernel"), "dense_1/bias": ("restored", "model/dense_1/bias")}
    assert all(v["values_equal"] for v in data["variables"])
    assert data["method"].startswith("tf.train.Checkpoint(model=<model>).restore() — object-based")
    # The optimizer's state has nowhere to go in a bare model: unused, which fails the check by default...
    assert code == 1 and not data["ok"]
    assert [short(k) for k in data["summary"]["unused"]] == TF2_OPTIMIZER
    assert used(data, "counter") == {"save_counter": ["save_counter (tf.train.Checkpoint's own counter)"]}
    # ...and passes it when optimizer state is left out, or unused values are allowed.
    assert check(ckpts["tf2"], "tf2_modules.py:same", "--ignore-optimizer")[0] == 0
    assert check(ckpts["tf2"], "tf2_modules.py:same", "--allow-unused")[0] == 0


def test_tf2_with_optimizer_builds_its_state_first(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:with_optimizer")
    assert code == 0 and data["ok"], data["summary"]
    assert data["built"] == ["built 'optimizer' (Adam) over 4 trainable variables, so its state exists before the "
                             "restore, as after a first training step"]
    assert data["method"].startswith("tf.train.Checkpoint(model=..., optimizer=...).restore()")
    assert statuses(data, "optimizer") == {
        "adam/iteration": ("restored", "optimizer/_iterations"),
        "adam/learning_rate": ("restored", "optimizer/_learning_rate"),
        **{f"optimizer/_variables/{i}": ("restored", f"optimizer/_variables/{i}") for i in range(2, 10)}}
    assert data["summary"]["unused"] == []


def test_tf2_slots_of_a_tf_optimizer_are_matched_and_checked(ckpts: dict[str, str]) -> None:
    """A tf.compat.v1 optimizer keeps m and v per variable, saved as <variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>
    and restored through the object graph's slot records, not as children: each is matched, restored and equal."""
    code, data = check(ckpts["tf2-v1-adam"], "tf2_modules.py:with_v1_adam")
    assert code == 0 and data["ok"], data["summary"]
    slots = {f"model/{layer}/{w}/.OPTIMIZER_SLOT/optimizer/{m}": ("restored", f"model/{layer}/{w}/.OPTIMIZER_SLOT/"
                                                                             f"optimizer/{m}")
             for layer in ("dense", "dense_1") for w in ("kernel", "bias") for m in ("m", "v")}
    assert statuses(data, "optimizer") == {
        "optimizer/beta1_power": ("restored", "optimizer/beta1_power"),
        "optimizer/beta2_power": ("restored", "optimizer/beta2_power"), **slots}
    assert all(v["values_equal"] for v in data["variables"])
    assert data["summary"]["unused"] == []
    # Before its first step the optimizer has no slots: the stored ones are unused now, and the report says
    # TensorFlow holds them until the slots are created (what TensorFlow does, checked in the test below).
    code, data = check(ckpts["tf2-v1-adam"], "tf2_modules.py:with_v1_adam_unstepped")
    assert code == 1
    notes = {s["label"]: s["note"] for s in data["stored_values"] if s["kind"] == "optimizer"}
    assert {k for k, n in notes.items() if n and "slot not created yet" in n} == set(slots)


def test_tf_restores_a_pending_slot_when_it_is_created(ckpts: dict[str, str]) -> None:
    import tensorflow as tf

    modules = _module("tf2_modules")
    parts = modules.with_v1_adam_unstepped()
    tf.train.Checkpoint(**parts).read(ckpts["tf2-v1-adam"]).expect_partial()
    kernel = parts["model"].dense.kernel
    parts["optimizer"]._create_slots([kernel])  # what its first apply_gradients does before updating
    stored = tf.train.load_checkpoint(ckpts["tf2-v1-adam"]).get_tensor(
        "model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m" + VALUE)
    assert np.array_equal(parts["optimizer"].get_slot(kernel, "m").numpy(), stored)


def test_tf2_renamed_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:renamed", "--ignore-optimizer")
    assert code == 1
    assert statuses(data) == {
        "dense/kernel": ("restored", "model/dense/kernel"), "dense/bias": ("restored", "model/dense/bias"),
        "head/kernel": ("missing", "model/head/kernel"), "head/bias": ("missing", "model/head/bias")}
    assert used(data) == {"model/dense/bias": ["dense/bias"], "model/dense/kernel": ["dense/kernel"],
                          "model/dense_1/bias": [], "model/dense_1/kernel": []}
    assert kept(data, "head/kernel") == "constant 0.5 (its initial value)"
    assert kept(data, "head/bias") == "all zeros (its initial value)"
    assert suggestions(data) == [("head/bias", "model/dense_1/bias", ("dense_1", "head")),
                                 ("head/kernel", "model/dense_1/kernel", ("dense_1", "head"))]
    assert data["summary"]["not_restored"] == ["head/kernel", "head/bias"]


@pytest.mark.slow
def test_tf2_added_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:added", "--ignore-optimizer")
    assert code == 1
    assert statuses(data) == {
        "dense/kernel": ("restored", "model/dense/kernel"), "dense/bias": ("restored", "model/dense/bias"),
        "dense_1/kernel": ("restored", "model/dense_1/kernel"), "dense_1/bias": ("restored", "model/dense_1/bias"),
        "extra/kernel": ("missing", "model/extra/kernel"), "extra/bias": ("missing", "model/extra/bias")}
    assert all(users for users in used(data).values())
    assert suggestions(data) == []  # nothing stored is left over for it


def test_tf2_removed_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:removed", "--ignore-optimizer")
    assert code == 1  # every variable restored, but two stored weights have no taker
    assert statuses(data) == {"dense/kernel": ("restored", "model/dense/kernel"),
                              "dense/bias": ("restored", "model/dense/bias")}
    assert [short(k) for k in data["summary"]["unused"]] == ["model/dense_1/bias", "model/dense_1/kernel"]
    assert check(ckpts["tf2"], "tf2_modules.py:removed", "--ignore-optimizer", "--allow-unused")[0] == 0


def test_tf2_resized_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:resized", "--ignore-optimizer")
    assert code == 1
    assert data["restore_error"] == ("ValueError: Received incompatible tensor with shape (4,) when attempting to "
                                     "restore variable with shape (5,) and name bias:0.")
    # Every mismatch is reported, not only the one TensorFlow stopped at; the bias that fits was not reached.
    assert statuses(data) == {
        "dense/kernel": ("mismatch", "model/dense/kernel"), "dense/bias": ("mismatch", "model/dense/bias"),
        "dense_1/kernel": ("mismatch", "model/dense_1/kernel"), "dense_1/bias": ("skipped", "model/dense_1/bias")}
    assert [(m["variable"], m["kinds"], m["shape"]) for m in data["mismatches"]] == [
        ("dense/kernel", ["shape"], {"model": [3, 5], "checkpoint": [3, 4]}),
        ("dense/bias", ["shape"], {"model": [5], "checkpoint": [4]}),
        ("dense_1/kernel", ["shape"], {"model": [5, 2], "checkpoint": [4, 2]})]
    notes = {s["label"]: s["note"] for s in data["stored_values"] if s["kind"] == "weight"}
    assert notes["model/dense/kernel"] == "dense/kernel looks for it, but is float32 [3, 5]"
    assert notes["model/dense_1/bias"] == "dense_1/bias looks for it, but the restore did not write it"


def test_tf2_dtype_mismatch(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf2"], "tf2_modules.py:float64", "--ignore-optimizer")
    assert code == 1
    assert data["restore_error"].startswith("InvalidArgumentError: tensor_name = model/dense_1/")
    assert [(m["variable"], m["kinds"], m["dtype"]) for m in data["mismatches"]] == [
        ("dense_1/kernel", ["dtype"], {"model": "float64", "checkpoint": "float32"}),
        ("dense_1/bias", ["dtype"], {"model": "float64", "checkpoint": "float32"})]


def test_savedmodel_is_restored_as_the_root(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["savedmodel"], "tf2_modules.py:renamed")
    assert code == 1
    assert data["format"] == "savedmodel"
    assert data["method"].startswith("tf.train.Checkpoint(root=<model>).restore()")
    assert statuses(data) == {"dense/kernel": ("restored", "dense/kernel"), "dense/bias": ("restored", "dense/bias"),
                              "head/kernel": ("missing", "head/kernel"), "head/bias": ("missing", "head/bias")}
    assert suggestions(data) == [("head/bias", "dense_1/bias", ("dense_1", "head")),
                                 ("head/kernel", "dense_1/kernel", ("dense_1", "head"))]
    assert data["notes"] == ["the checkpoint's root has no `model` child (it has order, dense, dense_1, signatures): "
                             "the model was restored as the root; return a dict from FUNCTION to name its objects "
                             "otherwise"]


def test_tf2_lazy_module_needs_an_input_shape(ckpts: dict[str, str]) -> None:
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:lazy"))
    assert result.exit_code == 2
    assert "has no variables yet: it creates them when first called" in result.stderr
    assert "--input-shape" in result.stderr and "Traceback" not in result.stderr
    code, data = check(ckpts["tf2"], "tf2_modules.py:lazy", "--input-shape", "3", "--ignore-optimizer")
    assert code == 0
    assert data["built"] == ["called the model once on zeros of shape (1, 3) (--input-shape) so that it creates "
                             "its variables"]
    assert set(statuses(data).values()) == {("restored", f"model/{n}") for n in
                                            ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias")}


def test_tf2_rename_map_written_reviewed_and_applied(ckpts: dict[str, str], tmp_path: Path) -> None:
    mapping = tmp_path / "renames.json"
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--ignore-optimizer",
                 "--rename-map", str(mapping))
    assert result.exit_code == 1
    assert f"wrote {mapping}: 2 renames to review" in result.stderr
    written = json.loads(mapping.read_text())
    assert written["schema"] == "ckptcheck.rename-map/1" and written["format"] == "tf2"
    assert [(r["variable"], r["key"], r["shape"]) for r in written["renames"]] == [
        ("head/bias", "model/dense_1/bias" + VALUE, [2]), ("head/kernel", "model/dense_1/kernel" + VALUE, [4, 2])]

    code, data = check(ckpts["tf2"], "tf2_modules.py:renamed", "--ignore-optimizer", "--apply-rename-map",
                       str(mapping))
    assert code == 0, data["summary"]
    assert statuses(data)["head/kernel"] == ("restored", "model/dense_1/kernel")
    assert {v["variable"]: v["via"] for v in data["variables"]} == {
        "dense/kernel": "restore", "dense/bias": "restore", "head/kernel": "rename map", "head/bias": "rename map"}
    assert data["options"]["apply_rename_map"] == str(mapping)


def test_apply_rename_map_in_user_code(ckpts: dict[str, str], tmp_path: Path) -> None:
    """What a user's script does: its own restore, then the reviewed map; values equal TensorFlow's reading."""
    import tensorflow as tf

    from ckptcheck.restore_check import apply_rename_map

    mapping = tmp_path / "renames.json"
    assert run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--rename-map",
               str(mapping)).exit_code == 1
    model = _module("tf2_modules").renamed()
    tf.train.Checkpoint(model=model).restore(ckpts["tf2"]).expect_partial()
    assert apply_rename_map(model, ckpts["tf2"], str(mapping)) == ("head/bias", "head/kernel")
    reader = tf.train.load_checkpoint(ckpts["tf2"])
    for name in ("kernel", "bias"):
        expected = reader.get_tensor(f"model/dense_1/{name}{VALUE}")
        assert np.array_equal(getattr(model.head, name).numpy(), expected)


def test_bad_rename_maps_are_input_errors(ckpts: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "ckptcheck.rename-map/1",
                               "renames": [{"variable": "head/kernal", "key": "model/dense_1/kernel" + VALUE}]}))
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--apply-rename-map", str(bad))
    assert result.exit_code == 2
    assert "the model has no variable 'head/kernal' (hint: did you mean head/kernel," in result.stderr
    bad.write_text(json.dumps({"schema": "ckptcheck.rename-map/1",
                               "renames": [{"variable": "head/kernel", "key": "model/dense/kernel" + VALUE}]}))
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--apply-rename-map", str(bad))
    assert result.exit_code == 2
    assert "head/kernel is float32 [4, 2] but model/dense/kernel" in result.stderr
    bad.write_text("[]")
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--apply-rename-map", str(bad))
    assert result.exit_code == 2 and "not a rename map" in result.stderr


def test_tf2_table(ckpts: dict[str, str]) -> None:
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == ("NOT RESTORED: 2 of 4 variables (they keep the values shown); 12 stored values unused")
    text = result.stdout
    # Problems first, counts for the rest: the restored variables are not listed without --verbose.
    assert "variables not restored: 2 (TF2 keys shown without /.ATTRIBUTES/VARIABLE_VALUE)" in text
    assert not any(line.startswith("dense/kernel ") for line in lines)
    assert lines[-4:] == ["model variables: 2 of 4 restored", "checkpoint weights: 2 of 4 used",
                          "checkpoint optimizer state and counters: 1 of 11 used",
                          "(--verbose lists every variable and stored value; --json has everything)"]
    result = run(ckpts["tf2"], "--model", str(MODELS / "tf2_modules.py:renamed"), "--verbose")
    lines = result.stdout.splitlines()
    text = result.stdout
    assert "model variables: 2 of 4 restored (TF2 keys shown without /.ATTRIBUTES/VARIABLE_VALUE)" in text
    assert any(line.startswith("dense/kernel ") for line in lines)
    row = next(line for line in lines if line.startswith("head/kernel "))
    assert row.split()[:5] == ["head/kernel", "float32", "[4,", "2]", "NO:"]
    assert "nothing stored at this object path" in row and "constant 0.5 (its initial value)" in row
    assert "checkpoint optimizer state and counters: 1 of 11 used" in text
    assert "renames: dense_1 -> head (2 values)" in text


# --- TF1: name-based restore ----------------------------------------------------------------------------------------

TF1_OPTIMIZER = sorted(["beta1_power", "beta2_power"] + [f"{layer}/{var}/{slot}" for layer in ("dense", "dense_1")
                                                         for var in ("bias", "kernel") for slot in ("Adam", "Adam_1")])


@pytest.mark.parametrize("which", ["tf1", "tf1-v1"])
def test_tf1_same_model(ckpts: dict[str, str], which: str) -> None:
    code, data = check(ckpts[which], "tf1_modules.py:same")
    assert code == 1  # Adam's slots and the global step are not in this model
    assert statuses(data) == {n: ("restored", n) for n in ("dense/kernel", "dense/bias", "dense_1/kernel",
                                                           "dense_1/bias")}
    assert data["method"].startswith("tf.train.Checkpoint(...).restore() — name-based")
    assert sorted(data["summary"]["unused"]) == sorted([*TF1_OPTIMIZER, "global_step"])
    assert used(data, "counter") == {"global_step": []}
    assert check(ckpts[which], "tf1_modules.py:same", "--ignore-optimizer")[0] == 0


def test_tf1_renamed_layer(ckpts: dict[str, str], tmp_path: Path) -> None:
    code, data = check(ckpts["tf1"], "tf1_modules.py:renamed", "--ignore-optimizer")
    assert code == 1
    assert statuses(data) == {"dense/kernel": ("restored", "dense/kernel"), "dense/bias": ("restored", "dense/bias"),
                              "head/kernel": ("missing", "head/kernel"), "head/bias": ("missing", "head/bias")}
    assert [v["reason"] for v in data["variables"] if v["status"] == "missing"] == [
        "nothing stored under this name"] * 2
    assert suggestions(data) == [("head/bias", "dense_1/bias", ("dense_1", "head")),
                                 ("head/kernel", "dense_1/kernel", ("dense_1", "head"))]
    mapping = tmp_path / "tf1.json"
    assert run(ckpts["tf1"], "--model", str(MODELS / "tf1_modules.py:renamed"), "--rename-map",
               str(mapping)).exit_code == 1
    assert check(ckpts["tf1"], "tf1_modules.py:renamed", "--ignore-optimizer", "--apply-rename-map",
                 str(mapping))[0] == 0


def test_tf1_added_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf1"], "tf1_modules.py:added", "--ignore-optimizer")
    assert code == 1
    assert statuses(data) == {**{n: ("restored", n) for n in ("dense/kernel", "dense/bias", "dense_1/kernel",
                                                             "dense_1/bias")},
                              "extra/kernel": ("missing", "extra/kernel"), "extra/bias": ("missing", "extra/bias")}
    assert suggestions(data) == []


def test_tf1_removed_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf1"], "tf1_modules.py:removed", "--ignore-optimizer")
    assert code == 1
    assert statuses(data) == {"dense/kernel": ("restored", "dense/kernel"), "dense/bias": ("restored", "dense/bias")}
    assert data["summary"]["unused"] == ["dense_1/bias", "dense_1/kernel"]


def test_tf1_resized_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["tf1"], "tf1_modules.py:resized", "--ignore-optimizer")
    assert code == 1
    assert data["restore_error"] == ("ValueError: Received incompatible tensor with shape (3, 4) when attempting to "
                                     "restore variable with shape (3, 5) and name dense/kernel.")
    assert statuses(data) == {"dense/kernel": ("mismatch", "dense/kernel"), "dense/bias": ("mismatch", "dense/bias"),
                              "dense_1/kernel": ("mismatch", "dense_1/kernel"),
                              "dense_1/bias": ("skipped", "dense_1/bias")}
    assert [m["variable"] for m in data["mismatches"]] == ["dense/kernel", "dense/bias", "dense_1/kernel"]


def test_tf1_into_a_keras_model_restores_nothing(ckpts: dict[str, str]) -> None:
    """The silent failure: TensorFlow's name-based restore skips Keras 3 variables, raising nothing."""
    code, data = check(ckpts["tf1"], "tf1_modules.py:keras_model", "--ignore-optimizer")
    assert code == 1 and data["restore_error"] is None
    assert statuses(data) == {f"seq/{n}": ("missing", f"seq/{n}") for n in ("dense/kernel", "dense/bias",
                                                                            "dense_1/kernel", "dense_1/bias")}
    assert kept(data, "seq/dense/kernel").startswith("glorot_uniform draw (min ")
    assert kept(data, "seq/dense/bias") == "all zeros (its initializer, Zeros())"
    assert any("does not restore Keras 3 variables (4 here)" in n for n in data["notes"])
    assert suggestions(data) == [(f"seq/{n}", n, ("", "seq")) for n in ("dense/bias", "dense/kernel",
                                                                                 "dense_1/bias", "dense_1/kernel")]


def test_tf1_into_a_tf_keras_model(ckpts: dict[str, str]) -> None:
    """tf_keras variables are tf.Variables named as the TF1 graph named them: the weights restore by name; Adam's
    state, stored as TF1 slots (dense/kernel/Adam), has other names in a Keras 2 optimizer (m/dense/kernel)."""
    pytest.importorskip("tf_keras")
    code, data = check(ckpts["tf1"], "tf_keras_models.py:functional")
    assert code == 1
    assert statuses(data) == {n: ("restored", n) for n in ("dense/kernel", "dense/bias", "dense_1/kernel",
                                                           "dense_1/bias")}
    assert data["built"] == ["built the model's optimizer (Adam) over 4 trainable variables, so its state exists "
                             "before the restore, as after a first training step"]
    assert statuses(data, "optimizer")["m/dense/kernel"] == ("missing", "m/dense/kernel")
    assert check(ckpts["tf1"], "tf_keras_models.py:functional", "--ignore-optimizer")[0] == 0


# --- Keras files: Model.load_weights ------------------------------------------------------------------------------

KERAS_OPTIMIZER = [f"optimizer/vars/{i}" for i in range(10)]


@pytest.mark.parametrize("fmt", ["keras", "keras-weights"])
def test_keras_same_model(ckpts: dict[str, str], fmt: str) -> None:
    code, data = check(ckpts[fmt], "keras_models.py:same")
    assert code == 0, data["summary"]
    assert statuses(data) == {"seq/dense/kernel": ("restored", "layers/dense/vars/0"),
                              "seq/dense/bias": ("restored", "layers/dense/vars/1"),
                              "seq/dense_1/kernel": ("restored", "layers/dense_1/vars/0"),
                              "seq/dense_1/bias": ("restored", "layers/dense_1/vars/1")}
    assert [v["source"] for v in data["variables"] if v["kind"] == "optimizer"] == KERAS_OPTIMIZER


def test_keras_renamed_layer_still_restores(ckpts: dict[str, str]) -> None:
    """Keras 3 keys layers by class and position: a renamed layer restores, from the key its old name had."""
    code, data = check(ckpts["keras"], "keras_models.py:renamed")
    assert code == 0
    assert statuses(data) == {"seq/dense/kernel": ("restored", "layers/dense/vars/0"),
                              "seq/dense/bias": ("restored", "layers/dense/vars/1"),
                              "seq/head/kernel": ("restored", "layers/dense_1/vars/0"),
                              "seq/head/bias": ("restored", "layers/dense_1/vars/1")}
    assert "layers are keyed by class and position" in data["method"]


@pytest.mark.slow
def test_keras_added_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["keras"], "keras_models.py:added")
    assert code == 1
    assert data["restore_error"].startswith("ValueError: A total of 1 objects could not be loaded. Example error "
                                            "message for object <Dense name=extra, built=True>:")
    assert statuses(data) == {"seq/dense/kernel": ("restored", "layers/dense/vars/0"),
                              "seq/dense/bias": ("restored", "layers/dense/vars/1"),
                              "seq/dense_1/kernel": ("restored", "layers/dense_1/vars/0"),
                              "seq/dense_1/bias": ("restored", "layers/dense_1/vars/1"),
                              "seq/extra/kernel": ("missing", "layers/dense_2/vars/0"),
                              "seq/extra/bias": ("missing", "layers/dense_2/vars/1")}
    # Keras also leaves the whole optimizer alone (14 variables now, 10 saved), and says so only as a warning:
    # every optimizer variable is skipped, for that reason, none is a per-slot mismatch.
    opt = [v for v in data["variables"] if v["kind"] == "optimizer"]
    assert len(opt) == 14 and {v["status"] for v in opt} == {"skipped"}
    assert {v["reason"] for v in opt} == {"Keras skipped the whole optimizer: Skipping variable loading for optimizer "
                                          "'adam', because it has 14 variables whereas the saved optimizer has 10 "
                                          "variables."}
    assert not [m for m in data["mismatches"] if not m["variable"].startswith("seq/")]
    assert ("the restore warned: Skipping variable loading for optimizer 'adam', because it has 14 variables whereas "
            "the saved optimizer has 10 variables.") in data["notes"]
    assert kept(data, "seq/extra/kernel").startswith("glorot_uniform draw (min ")


def test_keras_added_layer_with_known_initializer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["keras-weights"], "keras_models.py:constant_head", "--ignore-optimizer")
    assert code == 1
    assert statuses(data)["seq/head/kernel"] == ("missing", "layers/dense_2/vars/0")
    assert kept(data, "seq/head/kernel") == "constant 0.5 (its initializer, Constant(value=0.5))"
    assert kept(data, "seq/head/bias") == "all zeros (its initializer, Zeros())"


def test_keras_removed_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["keras"], "keras_models.py:removed")
    assert code == 1
    assert data["restore_error"] is None
    assert statuses(data) == {"seq/dense/kernel": ("restored", "layers/dense/vars/0"),
                              "seq/dense/bias": ("restored", "layers/dense/vars/1")}
    assert used(data) == {"layers/dense/vars/0": ["seq/dense/kernel"], "layers/dense/vars/1": ["seq/dense/bias"],
                          "layers/dense_1/vars/0": [], "layers/dense_1/vars/1": []}
    # The optimizer was silently not restored (a warning only): every one of its variables is reported.
    assert {s for s, _ in statuses(data, "optimizer").values()} == {"skipped"}
    assert [(v, k) for v, k, _ in suggestions(data)][:2] == [("adam/iteration", "optimizer/vars/0"),
                                                             ("adam/learning_rate", "optimizer/vars/1")]
    code, data = check(ckpts["keras"], "keras_models.py:removed", "--ignore-optimizer", "--allow-unused")
    assert code == 0


def test_keras_resized_layer(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["keras"], "keras_models.py:resized", "--ignore-optimizer")
    assert code == 1
    assert data["restore_error"].startswith("ValueError: A total of 3 objects could not be loaded.")
    assert statuses(data) == {"seq/dense/kernel": ("mismatch", "layers/dense/vars/0"),
                              "seq/dense/bias": ("mismatch", "layers/dense/vars/1"),
                              "seq/dense_1/kernel": ("mismatch", "layers/dense_1/vars/0"),
                              "seq/dense_1/bias": ("skipped", "layers/dense_1/vars/1")}
    weights = [m for m in data["mismatches"] if m["variable"].startswith("seq/")]
    assert [(m["variable"], m["shape"]["checkpoint"]) for m in weights] == [
        ("seq/dense/kernel", [3, 4]), ("seq/dense/bias", [4]), ("seq/dense_1/kernel", [4, 2])]


def test_legacy_h5_renamed_and_added(ckpts: dict[str, str]) -> None:
    code, data = check(ckpts["keras-h5"], "keras_models.py:renamed")
    assert code == 1  # the weights restore by position; the optimizer's state is not read by load_weights
    assert statuses(data) == {"seq/dense/kernel": ("restored", "dense/seq/dense/kernel"),
                              "seq/dense/bias": ("restored", "dense/seq/dense/bias"),
                              "seq/head/kernel": ("restored", "dense_1/seq/dense_1/kernel"),
                              "seq/head/bias": ("restored", "dense_1/seq/dense_1/bias")}
    assert {v["reason"] for v in data["variables"] if v["kind"] == "optimizer"} == {
        "load_weights does not read a legacy .h5's optimizer_weights"}
    assert ("keras.Model.load_weights reads only a legacy .h5's model_weights: its optimizer_weights are left "
            "behind") in data["notes"]
    assert check(ckpts["keras-h5"], "keras_models.py:renamed", "--ignore-optimizer")[0] == 0

    code, data = check(ckpts["keras-h5"], "keras_models.py:added", "--ignore-optimizer")
    assert code == 1
    assert data["restore_error"] == ("ValueError: Layer count mismatch when loading weights from file. Model expected "
                                     "3 layers, found 2 saved layers.")
    assert statuses(data) == {"seq/dense/kernel": ("skipped", "dense/seq/dense/kernel"),
                              "seq/dense/bias": ("skipped", "dense/seq/dense/bias"),
                              "seq/dense_1/kernel": ("skipped", "dense_1/seq/dense_1/kernel"),
                              "seq/dense_1/bias": ("skipped", "dense_1/seq/dense_1/bias"),
                              "seq/extra/kernel": ("missing", None), "seq/extra/bias": ("missing", None)}


def test_keras_unbuilt_model(ckpts: dict[str, str]) -> None:
    # A .keras file records its input shape: the model is called on zeros of that shape.
    code, data = check(ckpts["keras"], "keras_models.py:unbuilt")
    assert code == 0
    assert data["built"][0] == ("called the model once on zeros of shape (1, 3) (the input shape the checkpoint's "
                                "config records) so that it creates its variables")
    # A .weights.h5 does not.
    result = run(ckpts["keras-weights"], "--model", str(MODELS / "keras_models.py:unbuilt"))
    assert result.exit_code == 2
    assert "has no variables yet: Keras creates a layer's variables on its first call" in result.stderr
    assert check(ckpts["keras-weights"], "keras_models.py:unbuilt", "--input-shape", "3")[0] == 0


def test_model_from_a_keras_file(ckpts: dict[str, str]) -> None:
    result = run(ckpts["keras-weights"], "--model", ckpts["keras"], "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["built"][0] == ("built from model.keras's config.json with fresh initial values (its weights are not "
                                "loaded)")
    assert data["model_kind"] == "keras Sequential 'seq'"
    assert len(data["variables"]) == 14 and all(v["restored"] and v["values_equal"] for v in data["variables"])


def test_keras_model_in_a_tf2_checkpoint(ckpts: dict[str, str]) -> None:
    """Keras 3 in tf.train.Checkpoint: the weights are stored under the optimizer's list that reached them first,
    and labelled by their path through the model."""
    code, data = check(ckpts["keras-tf2"], "keras_models.py:same")
    assert code == 0
    assert statuses(data)["seq/dense/kernel"] == ("restored", "model/optimizer/_trainable_variables/0")
    assert used(data)["model/_functional/_operations/1/_kernel"] == ["seq/dense/kernel"]


@pytest.mark.parametrize("fmt", ["keras", "keras-weights", "keras-tf2"])
def test_stored_values_carry_the_variable_they_were_saved_from(ckpts: dict[str, str], fmt: str) -> None:
    """Restored into the same model, each stored weight goes into the variable Keras names as it did on saving."""
    code, data = check(ckpts[fmt], "keras_models.py:same")
    assert code == 0
    weights = [s for s in data["stored_values"] if s["kind"] == "weight"]
    assert weights and all(s["used_by"] == [s["variable"]] for s in weights)
    table = run(ckpts[fmt], "--model", str(MODELS / "keras_models.py:same"), "--verbose")
    assert "seq/dense/kernel" in table.stdout


def test_a_keras_file_needs_a_keras_model(ckpts: dict[str, str]) -> None:
    result = run(ckpts["keras"], "--model", str(MODELS / "tf2_modules.py:same"))
    assert result.exit_code == 2
    assert "a Keras file is restored with Model.load_weights; the model is a MLP 'mlp'" in result.stderr


# --- the model file's own errors ----------------------------------------------------------------------------------


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptcheck: "), result.stderr
    return str(lines[0])


def test_model_file_errors_are_the_users_own(ckpts: dict[str, str], tmp_path: Path) -> None:
    broken = MODELS / "broken.py"
    line = one_line_error(run(ckpts["tf2"], "--model", f"{broken}:raises"))
    assert line == (f"ckptcheck: {broken}:10: IndexError: list index out of range "
                    f"(hint: raised while calling raises())")
    line = one_line_error(run(ckpts["tf2"], "--model", str(MODELS / "import_error.py:build")))
    assert line == (f"ckptcheck: {MODELS / 'import_error.py'}:5: ModuleNotFoundError: No module named "
                    f"'a_module_that_does_not_exist' (hint: raised while importing import_error.py)")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("import os\n\ndef build(:\n    pass\n")
    line = one_line_error(run(ckpts["tf2"], "--model", f"{syntax}:build"))
    assert line.startswith(f"ckptcheck: {syntax}:3: SyntaxError: ")
    line = one_line_error(run(ckpts["tf2"], "--model", f"{broken}:nothing_here"))
    assert line == (f"ckptcheck: {broken}: defines no function 'nothing_here' (hint: functions it defines: "
                    f"prints_and_builds, raises, returns_number)")
    line = one_line_error(run(ckpts["tf2"], "--model", f"{broken}:returns_number"))
    assert "the model function returned an object of type int, which TensorFlow cannot restore into" in line
    assert "expected FILE.py:FUNCTION" in one_line_error(run(ckpts["tf2"], "--model", str(broken)))
    assert "no such model file" in one_line_error(run(ckpts["tf2"], "--model", str(tmp_path / "gone.py:f")))
    assert "--input-shape 'x'" in one_line_error(run(ckpts["tf2"], "--model", f"{broken}:raises", "--input-shape",
                                                     "x"))


def test_model_output_stays_off_stdout(ckpts: dict[str, str]) -> None:
    """A model file that prints must not spoil --json: its output goes to stderr."""
    result = run(ckpts["tf2"], "--model", str(MODELS / "broken.py:prints_and_builds"), "--json")
    assert result.exit_code == 1
    assert "hello from the model file" in result.stderr
    data = json.loads(result.stdout)
    assert [(v["variable"], v["status"], v["key"]) for v in data["variables"]] == [("w", "missing", "model/w" + VALUE)]


def test_missing_tensorflow_is_exit_2(ckpts: dict[str, str]) -> None:
    code = ("import sys; sys.modules['tensorflow'] = None; sys.argv = ['ckptcheck', 'restore-check', "
            f"{ckpts['tf2']!r}, '--model', {str(MODELS / 'tf2_modules.py:same')!r}]; "
            "from ckptcheck.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "this command needs TensorFlow" in proc.stderr and "Traceback" not in proc.stderr


# --- a checkpoint at a URL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "model"), [("tf2", "tf2_modules.py:same"), ("keras", "keras_models.py:same")])
def test_checkpoint_at_a_url_checks_as_the_local_one(ckpts: dict[str, str], name: str, model: str) -> None:
    """ckptcheck reads the stored values over HTTP; TensorFlow's (Keras's) restore gets a local copy, removed
    afterwards. The report is the local one's, with the URL for the path."""
    from remote_servers import http_server

    root = Path(ckpts["keras"]).parent
    with http_server(root) as (base, _counter):
        url = ckpts[name].replace(str(root), base)
        remote = run(url, "--model", str(MODELS / model), "--json")
    here = run(ckpts[name], "--model", str(MODELS / model), "--json")
    assert here.exit_code in (0, 1)
    assert (remote.exit_code, remote.stdout.replace(base, str(root))) == (here.exit_code, here.stdout)
