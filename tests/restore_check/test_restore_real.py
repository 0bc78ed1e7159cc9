"""`restore-check` on a real architecture (MobileNetV2), measured against what TensorFlow and Keras do.

Every test here fills each variable of a fresh model with a marker, runs the format's own restore (and, where the
report offers one, its recipe or the rename map), and compares each variable with the value stored under its own
saved name — read by TensorFlow's reader and the object graph's saved names (TF2), or taken from the model that was
saved (Keras files) — never with ckptcheck's own report.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

pytestmark = pytest.mark.tf  # every test here builds or restores models

runner = CliRunner()
MODELS = Path(__file__).parents[1] / "support" / "restore_models"
MOBILENET = str(MODELS / "mobilenet.py")
MARKER = -7.25


def _mobilenet() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("restore_models_mobilenet", MODELS / "mobilenet.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_variables(model: Any) -> list[Any]:
    return list(model.weights) + list(model.optimizer.variables)


def _fresh(build: Callable[[], Any]) -> Any:
    """The model a user restores into, its optimizer built, every variable holding the marker."""
    model = build()
    model.optimizer.build(model.trainable_variables)
    for v in _all_variables(model):
        v.assign(np.full(v.shape, MARKER if "float" in str(v.dtype) else -7, dtype=str(v.dtype)))
    return model


def _marked(v: Any) -> bool:
    return bool(np.all(v.numpy() == (MARKER if "float" in str(v.dtype) else -7)))


@pytest.fixture(scope="module")
def exported(saved: dict[str, Any]) -> str:
    """The saved model's `model.export()` SavedModel (weights only; it stores each variable twice)."""
    import keras

    model = keras.saving.load_model(saved["keras"], compile=False)
    path = str(saved["dir"] / "exported")
    model.export(path, verbose=False)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MobileNetV2 (100 classes, Adam) with every variable distinct, saved as a TF2 checkpoint and a .keras file;
    `values`: each variable's saved value by its path (what each stored value must equal)."""
    import tensorflow as tf

    out = tmp_path_factory.mktemp("mobilenet")
    model = _mobilenet().saved()
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    for v in _all_variables(model):
        dtype = str(v.dtype)
        v.assign(rng.standard_normal(v.shape).astype(dtype) if "float" in dtype else np.array(3, dtype=dtype))
    tf2 = tf.train.Checkpoint(model=model).save(str(out / "tf2" / "ckpt"))
    model.save(str(out / "model.keras"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras calls the HDF5 format legacy
        model.save(str(out / "model.h5"))
    values = {v.path: v.numpy() for v in _all_variables(model)}
    return {"tf2": tf2, "keras": str(out / "model.keras"), "h5": str(out / "model.h5"), "values": values, "dir": out}


def _saved_names(prefix: str) -> dict[str, str]:
    """checkpoint key -> the saved name (full_name) TensorFlow's object graph records for it."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {a.checkpoint_key: a.full_name for node in graph.nodes for a in node.attributes}


def check(ckpt: str, model: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["restore-check", ckpt, "--model", model, *args, "--json"])
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.stdout)
    return result.exit_code, json.loads(result.stdout)


def _tf2_truth(prefix: str, model: Any) -> dict[str, str]:
    """variable path -> "own" (holds the value saved under its own name), "marker" (not written) or "OTHER"."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    key_of = {name: key for key, name in _saved_names(prefix).items()}
    out = {}
    for v in _all_variables(model):
        if _marked(v):
            out[v.path] = "marker"
        elif v.path in key_of and np.array_equal(v.numpy(), reader.get_tensor(key_of[v.path])):
            out[v.path] = "own"
        else:
            out[v.path] = "OTHER"
    return out


# --- TF2 checkpoint, head resized (100 -> 10 classes) -----------------------------------------------------------



def _skip_mismatch_recipe(path: Any, data: dict[str, Any], values: dict[str, Any]) -> tuple[dict[str, str], Any]:
    """Run the skip_mismatch recipe the report prints on a fresh resized model; what each variable then holds."""
    assert any(r.startswith("model.load_weights(PATH, skip_mismatch=True)") for r in data["recipes"])
    model = _fresh(_mobilenet().resized)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(path, skip_mismatch=True)
    return _keras_truth(model, values), model

@pytest.mark.slow
def test_tf2_resized_head_stops_suggests_only_own_names_and_the_map_restores_them(saved: dict[str, Any],
                                                                                   tmp_path: Path) -> None:
    import tensorflow as tf

    from ckptcheck.restore_check import apply_rename_map

    prefix = saved["tf2"]
    mapping = tmp_path / "renames.json"
    code, data = check(prefix, f"{MOBILENET}:resized", "--rename-map", str(mapping))
    assert code == 1

    # What TensorFlow itself does: restore into a marked model; it raises at the head and leaves the rest behind.
    model = _fresh(_mobilenet().resized)
    with pytest.raises(ValueError, match="predictions/kernel"):
        tf.train.Checkpoint(model=model).restore(prefix)
    truth = _tf2_truth(prefix, model)
    assert "OTHER" not in truth.values()
    names = _saved_names(prefix)
    stored_shape = {names[k]: tuple(s) for k, s in tf.train.load_checkpoint(prefix).get_variable_to_shape_map().items()
                    if k in names}
    left = {p for p, t in truth.items() if t == "marker" and stored_shape.get(p) == tuple(
        next(v for v in _all_variables(model) if v.path == p).shape)}
    assert left, "TensorFlow left nothing behind: the test no longer measures a stop"

    # The report: where it stopped, and exactly the variables TensorFlow left behind.
    assert data["stopped"]["variable"] == "predictions/kernel"
    assert set(data["stopped"]["left_behind"]) == left
    restored = {v["variable"] for v in data["variables"] if v["restored"]}
    assert restored == {p for p, t in truth.items() if t == "own"}

    # Every suggestion pairs a variable with the value saved under its own name, and covers all left behind.
    assert data["suggestions"]
    assert all(names[s["key"]] == s["variable"] for s in data["suggestions"])
    assert {s["variable"] for s in data["suggestions"]} == left
    written = json.loads(mapping.read_text())
    assert all(names[r["key"]] == r["variable"] for r in written["renames"])

    # The map applied after TensorFlow's restore: each variable holds its own saved value or is the head.
    assert set(apply_rename_map(model, prefix, str(mapping))) == left
    after = _tf2_truth(prefix, model)
    assert "OTHER" not in after.values()
    assert {p for p, t in after.items() if t == "marker"} == {p for p in after if "predictions" in p}

    # The same through the CLI: with the new head allowed to be missing, everything else restored is exit 0.
    code, data = check(prefix, f"{MOBILENET}:resized", "--apply-rename-map", str(mapping), "--allow-missing",
                       "*predictions*")
    assert code == 0, data["summary"]
    assert set(data["summary"]["allowed_missing"]) == {p for p in after if "predictions" in p}
    assert check(prefix, f"{MOBILENET}:resized", "--apply-rename-map", str(mapping))[0] == 1


def test_tf2_resized_head_recipes_work(saved: dict[str, Any]) -> None:
    """Each recipe the report prints, run as printed: it restores every layer but the head, from its own values."""
    import keras
    import tensorflow as tf

    prefix = saved["tf2"]
    _, data = check(prefix, f"{MOBILENET}:resized")
    backbone_recipe = next(r for r in data["recipes"] if "backbone = keras.Model(" in r)
    last = re.search(r"model\.layers\[(-?\d+)\]", backbone_recipe)
    assert last is not None
    model = _fresh(_mobilenet().resized)
    backbone = keras.Model(model.inputs, model.layers[int(last.group(1))].output)
    tf.train.Checkpoint(model=backbone).restore(prefix).expect_partial()
    truth = _tf2_truth(prefix, model)
    assert "OTHER" not in truth.values()
    assert {p for p in truth if truth[p] == "marker" and not p.startswith("adam/")} == {
        "predictions/kernel", "predictions/bias"}
    assert any("apply_rename_map" in r for r in data["recipes"])


@pytest.mark.slow
def test_tf2_added_layer(saved: dict[str, Any]) -> None:
    import tensorflow as tf

    prefix = saved["tf2"]
    code, data = check(prefix, f"{MOBILENET}:added")
    model = _fresh(_mobilenet().added)
    status = tf.train.Checkpoint(model=model).restore(prefix)
    status.expect_partial()
    truth = _tf2_truth(prefix, model)
    assert "OTHER" not in truth.values()
    assert code == 1
    assert {v["variable"] for v in data["variables"] if v["restored"]} == {p for p, t in truth.items() if t == "own"}
    names = _saved_names(prefix)
    assert all(names[s["key"]] == s["variable"] for s in data["suggestions"])


# --- .keras -----------------------------------------------------------------------------------------------------


def _keras_truth(model: Any, values: dict[str, np.ndarray]) -> dict[str, str]:
    return {v.path: "marker" if _marked(v) else "own" if v.path in values and np.array_equal(v.numpy(), values[
        v.path]) else "OTHER" for v in _all_variables(model)}


def _keras_stored(path: str, key: str) -> np.ndarray:
    import h5py

    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
        return np.asarray(h5[key])


@pytest.mark.slow
def test_keras_resized_head(saved: dict[str, Any]) -> None:
    path, values = saved["keras"], saved["values"]
    code, data = check(path, f"{MOBILENET}:resized")
    assert code == 1
    model = _fresh(_mobilenet().resized)
    with warnings.catch_warnings(), pytest.raises(ValueError):
        warnings.simplefilter("ignore")
        model.load_weights(path)
    truth = _keras_truth(model, values)
    assert "OTHER" not in truth.values()
    assert {v["variable"] for v in data["variables"] if v["restored"]} == {p for p, t in truth.items() if t == "own"}
    for s in data["suggestions"]:  # the stored value is the one saved from the variable of that name
        assert np.array_equal(_keras_stored(path, s["key"]), values[s["variable"]]), s

    # The recipe, as printed: skip_mismatch loads every layer but the head.
    truth, model = _skip_mismatch_recipe(path, data, values)
    assert "OTHER" not in truth.values()
    assert {p for p in truth if truth[p] == "marker" and p in {w.path for w in model.weights}} == {
        "predictions/kernel", "predictions/bias"}


@pytest.mark.slow
def test_keras_adam_to_sgd_skips_the_whole_optimizer(saved: dict[str, Any]) -> None:
    path, values = saved["keras"], saved["values"]
    code, data = check(path, f"{MOBILENET}:sgd")
    model = _fresh(_mobilenet().sgd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_weights(path)
    truth = _keras_truth(model, values)
    assert {p for p, t in truth.items() if t != "own"} == {v.path for v in model.optimizer.variables}
    assert code == 1
    optimizer = [v for v in data["variables"] if v["kind"] == "optimizer"]
    assert len(optimizer) == len(model.optimizer.variables)
    assert {v["status"] for v in optimizer} == {"skipped"}
    assert all(v["reason"].startswith("Keras skipped the whole optimizer: Skipping variable loading for optimizer "
                                      "'sgd'") for v in optimizer)
    assert not [m for m in data["mismatches"] if m["variable"].startswith("sgd/")]
    # No SGD variable is offered Adam's state: nothing is stored under an SGD variable's name.
    assert data["suggestions"] == []
    assert check(path, f"{MOBILENET}:sgd", "--ignore-optimizer", "--allow-unused")[0] == 0


def test_keras_file_without_an_optimizer_in_its_config(saved: dict[str, Any], tmp_path: Path) -> None:
    """Keras may save compile_config without an optimizer: build none, and say what the file stores."""
    source = saved["keras"]
    edited = tmp_path / "no_optimizer.keras"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(edited, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                del config["compile_config"]["optimizer"]
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    code, data = check(str(edited), str(edited), "--allow-unused")
    assert not [v for v in data["variables"] if v["kind"] == "optimizer"]
    assert code == 0, data["summary"]
    note = next(n for n in data["built"] if n.startswith("not compiled"))
    assert "compile_config names no optimizer, so no optimizer was built" in note
    assert "the file stores 318 optimizer values its config does not name" in note
    assert not any("compiled as its config.json records" in n for n in data["built"])
    inspected = runner.invoke(app, ["inspect", str(edited)])
    assert inspected.exit_code == 0
    assert ("optimizer_state: 318 values stored, but config.json's compile_config names no optimizer"
            in inspected.stdout.splitlines())


def test_dict_names_the_optimizer_it_holds(saved: dict[str, Any]) -> None:
    _, data = check(saved["tf2"], f"{MOBILENET}:as_dict")
    assert [b for b in data["built"] if b.startswith("built ")] == [
        "built 'optimizer' (Adam) over 158 trainable variables, so its state exists before the restore, as after a "
        "first training step"]


@pytest.mark.slow
def test_text_puts_the_stop_and_problems_first_and_counts_the_rest(saved: dict[str, Any]) -> None:
    result = runner.invoke(app, ["restore-check", saved["tf2"], "--model", f"{MOBILENET}:resized"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NOT RESTORED: ")
    stop = next(i for i, line in enumerate(lines) if line.startswith("STOPPED:    the restore stopped at "
                                                                     "predictions/kernel"))
    assert stop < 8 and len(lines) < 80  # not one line per variable of a 262-weight model
    assert lines[-1] == "(--verbose lists every variable and stored value; --json has everything)"
    verbose = runner.invoke(app, ["restore-check", saved["tf2"], "--model", f"{MOBILENET}:resized", "--verbose"])
    assert len(verbose.stdout.splitlines()) > 580 + 581  # every variable and every stored value

    well = runner.invoke(app, ["restore-check", saved["tf2"], "--model", f"{MOBILENET}:saved"])
    assert well.exit_code == 0, well.stdout
    assert len(well.stdout.splitlines()) <= 12


@pytest.mark.slow
def test_legacy_h5_resized_head_loads_the_layers_before_it(saved: dict[str, Any]) -> None:
    """Keras reads a legacy .h5 layer by layer and raises at the resized one: the layers before it are loaded (the
    README's table says so from this measurement); skip_mismatch=True loads every layer that fits."""
    path, values = saved["h5"], saved["values"]
    code, data = check(path, f"{MOBILENET}:resized")
    assert code == 1 and data["format"] == "keras-h5"
    model = _fresh(_mobilenet().resized)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="predictions"):
        warnings.simplefilter("ignore")
        model.load_weights(path)
    truth = _keras_truth(model, values)
    assert "OTHER" not in truth.values()
    weights = {w.path for w in model.weights}
    assert {p for p in weights if truth[p] == "marker"} == {"predictions/kernel", "predictions/bias"}
    assert {v["variable"] for v in data["variables"] if v["restored"]} == {p for p, t in truth.items() if t == "own"}

    truth, model = _skip_mismatch_recipe(path, data, values)
    assert {p for p in weights if truth[p] != "own"} == {"predictions/kernel", "predictions/bias"}


def test_exported_savedmodel_suggests_each_variable_its_own_value(saved: dict[str, Any], exported: str,
                                                                  tmp_path: Path) -> None:
    """A Keras model restores nothing from `model.export()`'s SavedModel (its object graph is not the model's): each
    variable is suggested the value saved under its own name, and the map restores all but the resized head."""
    from ckptcheck.restore_check import apply_rename_map

    mapping = tmp_path / "renames.json"
    code, data = check(exported, f"{MOBILENET}:resized", "--ignore-optimizer", "--rename-map", str(mapping))
    assert code == 1 and data["format"] == "savedmodel"
    names = _saved_names(exported + "/variables/variables")
    assert len(data["suggestions"]) == 260
    assert all(names[s["key"]] == s["variable"] for s in data["suggestions"])
    model = _fresh(_mobilenet().resized)
    apply_rename_map(model, exported, str(mapping))
    truth = _keras_truth(model, saved["values"])
    assert "OTHER" not in truth.values()
    assert {p for p in (w.path for w in model.weights) if truth[p] != "own"} == {"predictions/kernel",
                                                                                 "predictions/bias"}


def test_tf2_adam_to_sgd(saved: dict[str, Any]) -> None:
    """TensorFlow binds optimizer state by object path: whatever SGD variables it writes, the report says which
    stored value each came from and under what name it was saved; nothing is suggested across optimizers."""
    import tensorflow as tf

    prefix = saved["tf2"]
    code, data = check(prefix, f"{MOBILENET}:sgd")
    model = _fresh(_mobilenet().sgd)
    with contextlib.suppress(ValueError):  # whatever TensorFlow does is what is measured
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    reader = tf.train.load_checkpoint(prefix)
    names = _saved_names(prefix)
    by_variable = {v["variable"]: v for v in data["variables"]}
    for v in _all_variables(model):
        report = by_variable[v.path]
        assert report["restored"] == (not _marked(v)), v.path
        if report["restored"]:  # the value it holds is the stored value the report names, saved under that name
            assert np.array_equal(v.numpy(), reader.get_tensor(report["source"])), v.path
            assert report["source_variable"] == names[report["source"]]
    assert all(not s["variable"].startswith("sgd/") for s in data["suggestions"])
    assert code == 1 or all(v["restored"] for v in data["variables"])


@pytest.mark.slow
def test_keras_added_layer(saved: dict[str, Any]) -> None:
    path, values = saved["keras"], saved["values"]
    code, data = check(path, f"{MOBILENET}:added")
    assert code == 1
    model = _fresh(_mobilenet().added)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(ValueError):
            model.load_weights(path)
    truth = _keras_truth(model, values)
    assert "OTHER" not in truth.values()
    assert {v["variable"] for v in data["variables"] if v["restored"]} == {p for p, t in truth.items() if t == "own"}
    assert {"extra/kernel", "extra/bias"} <= set(data["summary"]["not_restored"])
    for s in data["suggestions"]:
        assert np.array_equal(_keras_stored(path, s["key"]), values[s["variable"]]), s
