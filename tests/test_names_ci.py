"""CI and debugging answers in the model's names (issue 22).

Each regression is made for real on a small BERT-like Keras 3 model (Embedding, MultiHeadAttention,
LayerNormalization, Dense) trained a few steps and saved the way most training loops save today,
``tf.train.CheckpointManager(tf.train.Checkpoint(model=..., optimizer=...))``: a layer frozen by mistake, a NaN
(and an Inf) in a weight, the head built in float16, Adam swapped for SGD, a resized layer. Every variable
`verify --against` and `diff` report is checked against what Keras said the model and the optimizer held when
they were saved ([v.path for v in model.weights], the optimizer's variables, their values), and every key they
name against what TensorFlow reads there. ResNet50 (weights=None, a small input) checks `--group` in every format.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

pytestmark = pytest.mark.tf  # every test here trains, saves or restores Keras models

runner = CliRunner()

VOCAB, SEQ, HIDDEN, INTER = 200, 8, 64, 128
SEVERITY = ["missing", "extra", "dtype", "shape", "non-finite", "values"]


@dataclass
class Run:
    """One training run, saved twice by a CheckpointManager: before training (ckpt-1) and after (ckpt-2)."""

    before: str  # prefix of ckpt-1
    after: str  # prefix of ckpt-2
    weights: dict[str, np.ndarray]  # v.path -> value at the second save, for v in model.weights
    optimizer: dict[str, np.ndarray]  # v.path -> value at the second save, the optimizer's variables
    untrained: dict[str, np.ndarray]  # v.path -> value at the first save
    trainable: list[str] = field(default_factory=list)  # model.trainable_weights' paths

    @property
    def variables(self) -> dict[str, np.ndarray]:
        return {**self.weights, **self.optimizer}


def _keras() -> Any:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    return keras


def _bert(k: Any, *, inter: int = INTER, head_dtype: str | None = None) -> Any:
    ids = k.Input((SEQ,), dtype="int32", name="ids")
    x = k.layers.Embedding(VOCAB, HIDDEN, name="embeddings")(ids)
    attention = k.layers.MultiHeadAttention(2, HIDDEN // 2, name="layer_0_attention")(x, x)
    x = k.layers.LayerNormalization(name="layer_0_attention_norm")(x + attention)
    h = k.layers.Dense(inter, activation="gelu", name="layer_0_intermediate")(x)
    h = k.layers.Dense(HIDDEN, name="layer_0_output")(h)
    x = k.layers.LayerNormalization(name="layer_0_output_norm")(x + h)
    x = k.layers.GlobalAveragePooling1D(name="pool")(x)
    x = k.layers.Dense(HIDDEN, activation="tanh", name="pooler", dtype=head_dtype)(x)
    out = k.layers.Dense(2, name="classifier", dtype=head_dtype)(x)
    return k.Model(ids, out, name="bert_tiny")


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, VOCAB, (16, SEQ)).astype("int32"), rng.integers(0, 2, (16,)).astype("int32"))


def _values(variables: Any) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in variables}


def _train_and_save(root: Path, name: str, *, frozen: str | None = None, head_dtype: str | None = None,
                    inter: int = INTER, optimizer: str = "adam", poison: bool = False) -> Run:
    import tensorflow as tf

    keras = _keras()
    keras.backend.clear_session()  # names as a fresh process makes them (adam, not adam_3)
    keras.utils.set_random_seed(0)
    model = _bert(keras, inter=inter, head_dtype=head_dtype)
    if frozen is not None:
        model.get_layer(frozen).trainable = False
    opt = keras.optimizers.Adam(1e-3) if optimizer == "adam" else keras.optimizers.SGD(1e-2)
    model.compile(optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=opt), str(root / name),
                                         max_to_keep=None)
    before = manager.save()
    untrained = _values(model.weights)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    if poison:  # one NaN in one weight, one Inf in another
        for layer, index, value in (("layer_0_output", (3, 5), np.nan), ("pooler", (7,), np.inf)):
            variable = model.get_layer(layer).kernel if len(index) == 2 else model.get_layer(layer).bias
            array = variable.numpy()
            array[index] = value
            variable.assign(array)
    after = manager.save()
    return Run(str(before), str(after), _values(model.weights), _values(opt.variables), untrained,
               [v.path for v in model.trainable_weights])


@pytest.fixture(scope="session")
def bert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("bert")
    return {
        "golden": _train_and_save(root, "golden"),
        "frozen": _train_and_save(root, "frozen", frozen="layer_0_intermediate"),
        "poisoned": _train_and_save(root, "poisoned", poison=True),
        "float16": _train_and_save(root, "float16", head_dtype="float16"),
        "sgd": _train_and_save(root, "sgd", optimizer="sgd"),
        "resized": _train_and_save(root, "resized", inter=INTER + 32),
    }


@pytest.fixture(scope="session")
def golden_manifest(bert: dict[str, Run], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("manifests") / "golden.manifest.json"
    result = runner.invoke(app, ["manifest", bert["golden"].after, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def run_json(*args: str, code: int | None = None) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code in ((0, 1) if code is None else (code,)), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def changed_by_keras(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> set[str]:
    """Variables both hold, whose dtype, shape or bits differ (NaN equal to NaN): the oracle for "changed"."""
    return {v for v in a.keys() & b.keys()
            if a[v].dtype != b[v].dtype or a[v].shape != b[v].shape or a[v].tobytes() != b[v].tobytes()}


def tf_value(prefix: str, key: str) -> np.ndarray:
    import tensorflow as tf

    return np.array(tf.train.load_checkpoint(prefix).get_tensor(key))


def model_differences(data: dict[str, Any]) -> list[dict[str, Any]]:
    """verify --against's differences about the model and its training (bookkeeping, the object graph, aside)."""
    return [d for d in data["differences"] if d["tensor_kind"] != "bookkeeping"]


# --- what every tensor is ---------------------------------------------------------------------------------------


def test_every_tensor_is_the_variable_and_kind_keras_says(bert: dict[str, Run], golden_manifest: Path) -> None:
    golden = bert["golden"]
    listing = run_json("inspect", golden.after, code=0)
    assert listing["schema"] == "ckptcheck.inspect/2"
    by_kind: dict[str, set[str]] = {}
    for t in listing["tensors"]:
        by_kind.setdefault(t["kind"], set()).add(t["variable"])
        if t["variable"] is not None:  # the key holds that variable's value, as TensorFlow reads it
            np.testing.assert_array_equal(tf_value(golden.after, t["name"]), golden.variables[t["variable"]])
    assert by_kind["weights"] == set(golden.weights)
    assert by_kind["optimizer"] == set(golden.optimizer)
    assert by_kind["bookkeeping"] == {None}  # the object graph and the save counter: no names
    assert set(by_kind) == {"weights", "optimizer", "bookkeeping"}
    manifest = json.loads(golden_manifest.read_text())
    assert manifest["schema"] == "ckptcheck.manifest/2"
    records = {r["variable"]: r for r in manifest["tensors"].values() if r["variable"] is not None}
    assert set(records) == set(golden.variables)
    for variable, record in records.items():
        value = golden.variables[variable]
        assert record["sha256"] == hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(), variable
        assert record["kind"] == ("weights" if variable in golden.weights else "optimizer")


def test_a_rerun_of_the_same_training_verifies(bert: dict[str, Run], golden_manifest: Path,
                                               tmp_path: Path) -> None:
    """Built again in this process (clear_session gives the same names), trained alike: bit for bit the same."""
    again = _train_and_save(tmp_path, "again")
    assert not changed_by_keras(bert["golden"].variables, again.variables)  # the oracle: Keras's own values
    result = runner.invoke(app, ["verify", again.after, "--against", str(golden_manifest)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["diff", bert["golden"].after, again.after]).exit_code == 0


# --- the regressions --------------------------------------------------------------------------------------------


def test_a_frozen_layer_reads_as_what_happened(bert: dict[str, Run], golden_manifest: Path) -> None:
    """Its optimizer slots are missing, values differ (that layer never trained); nothing changed shape, nothing
    else is missing or extra, although most variables are stored under other keys."""
    golden, frozen = bert["golden"], bert["frozen"]
    slots = set(golden.optimizer) - set(frozen.optimizer)
    assert slots and all("layer_0_intermediate" in s for s in slots)  # the oracle: Keras's optimizer variables
    assert not set(frozen.variables) - set(golden.variables)
    changed = changed_by_keras(golden.variables, frozen.variables)
    data = run_json("verify", frozen.after, "--against", str(golden_manifest), code=1)
    found = model_differences(data)
    assert {d["variable"] for d in found if d["kind"] == "missing"} == slots
    assert all(d["tensor_kind"] == "optimizer" for d in found if d["kind"] == "missing")
    assert {d["kind"] for d in found} == {"missing", "values"}
    assert {d["variable"] for d in found if d["kind"] == "values"} == changed
    for d in found:  # each difference's key is where TensorFlow reads that variable's value
        if d["kind"] == "values":
            np.testing.assert_array_equal(tf_value(frozen.after, d["key"]), frozen.variables[d["variable"]])
    assert [SEVERITY.index(d["kind"]) for d in data["differences"]] == sorted(
        SEVERITY.index(d["kind"]) for d in data["differences"])
    assert any("stored under other keys" in n for n in data["notes"])

    report = run_json("diff", golden.after, frozen.after, code=1)
    assert report["schema"] == "ckptcheck.diff/2"
    assert {t["variable"] for t in report["removed"]} == slots and report["added"] == []
    assert {c["variable"] for c in report["changed"]} == changed
    assert all(c["changes"] == ["values"] and c["variable"] == c["variable_b"] for c in report["changed"])
    assert report["moved"]  # freezing one layer moved the later variables' keys
    for m in report["moved"]:
        np.testing.assert_array_equal(tf_value(golden.after, m["key_a"]), golden.variables[m["variable"]])
        np.testing.assert_array_equal(tf_value(frozen.after, m["key_b"]), frozen.variables[m["variable"]])
    text = runner.invoke(app, ["diff", golden.after, frozen.after]).stdout
    assert "shape [" not in text and f"{len(slots)} removed ({len(slots)} optimizer)" in text  # no "shape A -> B"


def test_which_layers_did_not_train(bert: dict[str, Run]) -> None:
    """README's promise for diff --unchanged: the frozen layer's variables, by name."""
    frozen = bert["frozen"]
    still = {v for v in frozen.weights if np.array_equal(frozen.untrained[v], frozen.weights[v])}
    assert still == {"layer_0_intermediate/kernel", "layer_0_intermediate/bias"}  # the oracle
    report = run_json("diff", frozen.before, frozen.after, "--kind", "weights", code=1)
    assert set(report["unchanged"]) == still
    assert {c["variable"] for c in report["changed"]} == set(frozen.weights) - still
    assert not report["added"] and not report["removed"]
    text = runner.invoke(app, ["diff", frozen.before, frozen.after, "--kind", "weights", "--unchanged"]).stdout
    listed = text.split("unchanged (", 1)[1].splitlines()[2:]
    assert sorted(listed) == sorted(still)


def test_a_nan_and_an_inf_are_named(bert: dict[str, Run], golden_manifest: Path) -> None:
    golden, poisoned = bert["golden"], bert["poisoned"]
    counts = {v: (int(np.isnan(a).sum()), int(np.isinf(a).sum())) for v, a in poisoned.weights.items()
              if np.isnan(a).any() or np.isinf(a).any()}
    assert counts == {"layer_0_output/kernel": (1, 0), "pooler/bias": (0, 1)}  # the oracle
    kernel = poisoned.weights["layer_0_output/kernel"].size
    bias = poisoned.weights["pooler/bias"].size

    data = run_json("verify", poisoned.after, "--against", str(golden_manifest), code=1)
    assert [(d["kind"], d["variable"], d["message"]) for d in model_differences(data)] == [
        ("non-finite", "layer_0_output/kernel", f"NaN appeared (0 -> 1 of {kernel})"),
        ("non-finite", "pooler/bias", f"Inf appeared (0 -> 1 of {bias})")]

    report = run_json("diff", golden.after, poisoned.after, code=1)
    changes = {c["variable"]: c for c in report["changed"]}
    assert set(changes) == set(counts) == changed_by_keras(golden.variables, poisoned.variables)
    assert changes["layer_0_output/kernel"]["nan"] == [0, 1] and changes["pooler/bias"]["inf"] == [0, 1]
    text = runner.invoke(app, ["diff", golden.after, poisoned.after]).stdout
    assert f"NaN appeared (0 -> 1 of {kernel})" in text and f"Inf appeared (0 -> 1 of {bias})" in text

    finite = run_json("verify", poisoned.after, "--finite", code=1)
    assert {(n["variable"], n["nan"], n["inf"], n["count"]) for n in finite["finite"]["nonfinite"]} == {
        ("layer_0_output/kernel", 1, 0, kernel), ("pooler/bias", 0, 1, bias)}
    floating = [v for v in poisoned.variables.values() if v.dtype.kind == "f"]
    assert finite["finite"]["checked"] == len(floating)
    text = runner.invoke(app, ["verify", poisoned.after, "--finite"]).stdout
    assert text.startswith("NON-FINITE VALUES") and "layer_0_output/kernel (weights): 1 NaN of" in text
    clean = runner.invoke(app, ["verify", golden.after, "--finite"])
    assert clean.exit_code == 0 and "hold only finite values" in clean.stdout


def test_a_head_built_in_float16_is_dtype_changes_first(bert: dict[str, Run], golden_manifest: Path) -> None:
    golden, half = bert["golden"], bert["float16"]
    retyped = {v for v in golden.variables.keys() & half.variables.keys()
               if golden.variables[v].dtype != half.variables[v].dtype}
    assert retyped and all(v.startswith(("pooler/", "classifier/", "adam/pooler", "adam/classifier"))
                           for v in retyped)
    data = run_json("verify", half.after, "--against", str(golden_manifest), code=1)
    found = model_differences(data)
    assert {d["variable"] for d in found if d["kind"] == "dtype"} == retyped
    assert [d["kind"] for d in found[:len(retyped)]] == ["dtype"] * len(retyped)  # before every values line
    assert {d["kind"] for d in found} == {"dtype", "values"}
    report = run_json("diff", golden.after, half.after, "--sort", "change", code=1)
    assert {c["variable"] for c in report["changed"][:len(retyped)]} == retyped
    assert not report["removed"] and not report["added"]


def test_adam_swapped_for_sgd_says_the_optimizer_changed(bert: dict[str, Run], golden_manifest: Path) -> None:
    golden, sgd = bert["golden"], bert["sgd"]
    data = run_json("verify", sgd.after, "--against", str(golden_manifest), code=1)
    found = model_differences(data)
    assert {d["variable"] for d in found if d["kind"] == "missing"} == set(golden.optimizer)
    assert {d["variable"] for d in found if d["kind"] == "extra"} == set(sgd.optimizer)
    assert {d["variable"] for d in found if d["kind"] == "values"} == changed_by_keras(golden.weights, sgd.weights)
    assert {d["kind"] for d in found} == {"missing", "extra", "values"}
    assert any("optimizer: adam in the manifest, sgd in the checkpoint" in n for n in data["notes"])
    report = run_json("diff", golden.after, sgd.after, code=1)
    assert report["optimizers"] == {"a": ["adam"], "b": ["sgd"]}
    assert all(t["kind"] == "optimizer" for t in report["removed"] + report["added"])
    # Without optimizer state, the weights alone:
    weights = run_json("verify", sgd.after, "--against", str(golden_manifest), "--exclude", "adam/*",
                       "--exclude", "sgd/*", code=1)
    assert {d["kind"] for d in model_differences(weights)} == {"values"}


def test_a_resized_layer_is_shape_changes(bert: dict[str, Run], golden_manifest: Path) -> None:
    golden, resized = bert["golden"], bert["resized"]
    reshaped = {v for v in golden.variables.keys() & resized.variables.keys()
                if golden.variables[v].shape != resized.variables[v].shape}
    assert {"layer_0_intermediate/kernel", "layer_0_output/kernel"} <= reshaped
    assert set(golden.variables) == set(resized.variables)
    data = run_json("verify", resized.after, "--against", str(golden_manifest), code=1)
    found = model_differences(data)
    assert {d["variable"] for d in found if d["kind"] == "shape"} == reshaped
    assert {d["kind"] for d in found} == {"shape", "values"}


@pytest.mark.parametrize("variant", ["frozen", "poisoned", "float16", "sgd", "resized"])
def test_no_false_claims(bert: dict[str, Run], variant: str) -> None:
    """Whatever changed, diff claims a variable removed, added, retyped or reshaped only where Keras says so."""
    a, b = bert["golden"].variables, bert[variant].variables
    report = run_json("diff", bert["golden"].after, bert[variant].after, code=1)
    assert {t["variable"] for t in report["removed"]} == set(a) - set(b)
    assert {t["variable"] for t in report["added"]} == set(b) - set(a)
    assert {c["variable"] for c in report["changed"]} == changed_by_keras(a, b)
    for c in report["changed"]:
        v = c["variable"]
        assert ("dtype" in c["changes"]) == (a[v].dtype != b[v].dtype)
        assert ("shape" in c["changes"]) == (a[v].shape != b[v].shape)
        assert c["variable_b"] == v


# --- Keras 2 against Keras 3 ------------------------------------------------------------------------------------


def test_keras2_h5_and_keras3_archive_of_the_same_weights(tmp_path: Path) -> None:
    tf_keras = pytest.importorskip("tf_keras")
    keras = _keras()
    tf_keras.utils.set_random_seed(0)
    old = _bert(tf_keras)
    old.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    old.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=2, verbose=0)
    old.save(tmp_path / "keras2.h5")
    keras.backend.clear_session()
    new = _bert(keras)
    new.set_weights(old.get_weights())
    new.save(tmp_path / "keras3.keras")
    same = runner.invoke(app, ["diff", str(tmp_path / "keras2.h5"), str(tmp_path / "keras3.keras"), "--kind",
                               "weights", "--json"])
    assert same.exit_code == 0, same.output
    report = json.loads(same.stdout)
    assert report["same"] and sorted(report["unchanged"]) == sorted(v.path for v in new.weights)
    whole = run_json("diff", str(tmp_path / "keras2.h5"), str(tmp_path / "keras3.keras"), code=1)
    assert not whole["added"] and all(t["kind"] == "optimizer" for t in whole["removed"])
    assert len(whole["removed"]) == len(old.optimizer.variables())


# --- --group by layer -------------------------------------------------------------------------------------------


@dataclass
class ResNet:
    files: dict[str, str]
    weights: dict[str, tuple[int, ...]]  # v.path -> shape
    trainable: list[str]
    optimizer_count: int


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> ResNet:
    import tensorflow as tf

    keras = _keras()
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("resnet")
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    opt = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    opt.build(model.trainable_variables)  # its state, as after a first step (tracing a training step: 30 s more)
    tf2 = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=opt), str(root / "tf2"),
                                     max_to_keep=1).save()
    tf.saved_model.save(model, str(root / "savedmodel"))
    model.save(root / "model.keras")
    return ResNet({"tf2": str(tf2), "savedmodel": str(root / "savedmodel"), "keras": str(root / "model.keras")},
                  {v.path: tuple(v.shape) for v in model.weights}, [v.path for v in model.trainable_weights],
                  len(opt.variables))


@pytest.mark.parametrize("fmt", ["tf2", "savedmodel", "keras"])
def test_resnet50_groups_by_layer_in_every_format(resnet: ResNet, fmt: str) -> None:
    def layer(path: str) -> str:
        return path.rsplit("/", 1)[0]

    groups = run_json("inspect", resnet.files[fmt], "--group", code=0)["groups"]
    weights = {g["group"]: (g["tensors"], g["elements"]) for g in groups if g["kind"] == "weights"}
    expected: dict[str, tuple[int, int]] = {}
    for path, shape in resnet.weights.items():
        n, e = expected.get(layer(path), (0, 0))
        expected[layer(path)] = (n + 1, e + math.prod(shape))
    assert weights == expected and "conv1_conv" in weights
    slots = {g["group"]: g["tensors"] for g in groups if g["kind"] == "optimizer"}
    if fmt != "savedmodel" or slots:
        # Adam keeps two slots per trainable variable, counted with its layer; its own values under its name.
        per_layer = Counter(layer(p) for p in resnet.trainable for _ in range(2))
        assert {k: v for k, v in slots.items() if k != "adam"} == dict(per_layer)
        assert slots["adam"] == resnet.optimizer_count - 2 * len(resnet.trainable)
    kinds = [g["kind"] for g in groups]
    assert kinds == sorted(kinds, key=["weights", "optimizer", "counters", "bookkeeping"].index)  # apart


# --- help says how tensors are paired ---------------------------------------------------------------------------


def test_help_says_how_tensors_are_paired() -> None:
    diff_help = " ".join(runner.invoke(app, ["diff", "--help"]).stdout.split())
    assert "paired by variable" in diff_help and "keys pair only" in diff_help
    verify_help = " ".join(runner.invoke(app, ["verify", "--help"]).stdout.split())
    assert "paired by variable" in verify_help and "non-finite" in verify_help and "--finite" in verify_help
