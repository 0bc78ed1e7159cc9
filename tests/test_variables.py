"""`variable`: the name the model knows each tensor by, the same in every format, and what uses it (inspect,
--filter, --tensor, read_tensor, cross-format diff).

The oracle is Keras itself: ``[v.path for v in model.weights]`` and the optimizer's ``variables``, with their
values; TensorFlow's own tf.train.list_variables for name-based checkpoints. Every file is written once per
session.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.diff import diff_readers
from ckptcheck.formats.tensorflow.object_graph import saved_names, variable_saved_names

pytestmark = pytest.mark.tf  # every test here builds or restores models

runner = CliRunner()
POSITIONAL = re.compile(r"/vars/\d+$")


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


@dataclass
class Saved:
    """One model saved several ways, with what Keras says it holds."""

    files: dict[str, Path]
    weights: dict[str, np.ndarray]  # v.path -> value, for v in model.weights
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)  # v.path -> value, the optimizer's variables


def _keras() -> Any:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    return keras


def _build(keras: Any) -> Any:
    """Conv2D, BatchNormalization, Dense, Embedding, LayerNormalization, MultiHeadAttention and a nested
    Functional model, with two inputs."""
    img = keras.Input((8, 8, 3), name="img")
    tok = keras.Input((5,), dtype="int32", name="tok")
    x = keras.layers.Conv2D(4, 3, name="conv1")(img)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="features")(x)
    t = keras.layers.Embedding(20, 8, name="embed")(tok)
    t = keras.layers.LayerNormalization(name="ln")(t)
    t = keras.layers.MultiHeadAttention(2, 4, name="mha")(t, t)
    t = keras.layers.GlobalAveragePooling1D()(t)
    sub_in = keras.Input((14,))
    s = keras.layers.Dense(5, name="sub_dense")(sub_in)
    s = keras.layers.BatchNormalization()(s)
    head = keras.Model(sub_in, keras.layers.Dense(3, name="sub_out")(s), name="head")
    out = keras.layers.Dense(1, name="out")(head(keras.layers.Concatenate()([x, t])))
    return keras.Model([img, tok], out, name="net")


def _data() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    return ([rng.standard_normal((4, 8, 8, 3)).astype(np.float32), rng.integers(0, 20, (4, 5)).astype(np.int32)],
            np.ones((4, 1), dtype=np.float32))


def _values(variables: Any) -> dict[str, np.ndarray]:
    return {v.path: np.array(v.numpy()) for v in variables}


def _save_all(model: Any, out: Path, *, optimizer: bool) -> dict[str, Path]:
    import tensorflow as tf

    out.mkdir(parents=True)
    files = {"keras": out / "m.keras", "keras-weights": out / "m.weights.h5", "keras-h5": out / "m.h5",
             "keras-sharded": out / "sharded" / "m.weights.json", "tf2": out / "tf2" / "ckpt",
             "savedmodel": out / "savedmodel"}
    model.save(files["keras"])
    model.save_weights(files["keras-weights"])
    model.save(files["keras-h5"])
    files["keras-sharded"].parent.mkdir()
    model.save_weights(files["keras-sharded"], max_shard_size=2e-6)
    if optimizer:
        files["tf2"] = Path(tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(files["tf2"])))
        # Rooted at the model rather than at Checkpoint(model=...): other keys, the same variables.
        files["tf2-root"] = Path(tf.train.Checkpoint(model).write(str(out / "tf2-root" / "ckpt")))
    else:
        files["tf2"] = Path(tf.train.Checkpoint(model=model).write(str(files["tf2"])))
    tf.saved_model.save(model, str(files["savedmodel"]))
    return files


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Saved, Saved]:
    """The model compiled with Adam and fitted one step, saved every way; then fitted one more step and saved
    again as .keras and TF2 checkpoint."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    model = _build(keras)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    root = tmp_path_factory.mktemp("names")
    first = Saved(_save_all(model, root / "step1", optimizer=True), _values(model.weights),
                  _values(model.optimizer.variables))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    import tensorflow as tf

    (root / "step2").mkdir()
    model.save(root / "step2" / "m.keras")
    tf2 = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(root / "step2" / "tf2" / "ckpt"))
    second = Saved({"keras": root / "step2" / "m.keras", "tf2": Path(tf2)}, _values(model.weights),
                   _values(model.optimizer.variables))
    return first, second


@pytest.fixture(scope="session")
def plain(trained: tuple[Saved, Saved], tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """The same weights in a model without optimizer state, saved five ways (and sharded)."""
    keras = _keras()
    model = _build(keras)
    model.set_weights(list(trained[0].weights.values()))  # model.weights order
    import tensorflow as tf

    root = tmp_path_factory.mktemp("plain")
    files = _save_all(model, root / "m", optimizer=False)
    # Checkpoint.save (not write) adds its own save_counter.
    files["tf2-counted"] = Path(tf.train.Checkpoint(model=model).save(str(root / "counted" / "ckpt")))
    return Saved(files, _values(model.weights))


@pytest.fixture(scope="session")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """A real architecture: MobileNetV2 (alpha 0.35, random weights) as .keras, bare .weights.h5 and TF2
    checkpoint."""
    keras = _keras()
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10)
    out = tmp_path_factory.mktemp("mobilenet")
    model.save(out / "m.keras")
    model.save_weights(out / "m.weights.h5")
    tf2 = tf.train.Checkpoint(model=model).write(str(out / "tf2" / "ckpt"))
    files = {"keras": out / "m.keras", "keras-weights": out / "m.weights.h5", "tf2": Path(tf2)}
    return Saved(files, _values(model.weights))


def _by_variable(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in ckptcheck.list_tensors(str(path)):
        assert t.variable is not None, t.name
        out.setdefault(t.variable, []).append(t.name)
    return out


def _check_values(path: Path, expected: dict[str, np.ndarray]) -> None:
    """Each variable, read by its name, holds Keras's value (read_tensor accepts a variable)."""
    with ckptcheck.open_checkpoint(str(path)) as reader:
        for name, value in expected.items():
            got = np.asarray(reader.read(name))
            assert got.dtype == value.dtype and np.array_equal(got, value), name


# --- variable, per format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["keras", "keras-h5", "tf2", "tf2-root", "savedmodel"])
def test_every_variable_is_named_as_keras_names_it(trained: tuple[Saved, Saved], kind: str) -> None:
    saved = trained[0]
    expected = {**saved.weights, **saved.optimizer}
    names = _by_variable(saved.files[kind])
    model_variables = {v for v in names if not v.startswith("(")}
    assert model_variables == set(expected)
    assert all(len(keys) == 1 for keys in names.values())
    _check_values(saved.files[kind], expected)


@pytest.mark.parametrize("kind", ["keras-weights", "keras-sharded"])
def test_weights_files_name_the_model_and_leave_undetermined_optimizer_state_positional(
    trained: tuple[Saved, Saved], kind: str
) -> None:
    """A weights file has no config.json: the model's variables are named from the layout; the optimizer's
    per-variable state cannot be paired with its variable (the layer order is not recorded) and is named by
    position, never by a wrong name."""
    saved = trained[0]
    names = _by_variable(saved.files[kind])
    assert set(saved.weights) <= set(names)
    others = set(names) - set(saved.weights)
    optimizer = set(saved.optimizer)
    prefix = next(iter(saved.optimizer)).split("/")[0]  # "adam", or "adam_2" when other Adams came first
    assert {f"{prefix}/iteration", f"{prefix}/learning_rate"} <= others
    assert all(v in optimizer or POSITIONAL.search(v) for v in others)
    assert len(others) == len(optimizer)
    _check_values(saved.files[kind], saved.weights)


def test_tf2_bookkeeping_says_what_it_is(trained: tuple[Saved, Saved]) -> None:
    tensors = {t.name: t for t in ckptcheck.list_tensors(str(trained[0].files["tf2"]))}
    assert tensors["_CHECKPOINTABLE_OBJECT_GRAPH"].variable == "(object graph)"


def test_tf2_variables_are_the_object_graphs_saved_names(trained: tuple[Saved, Saved]) -> None:
    """Against TensorFlow's own reading of the graph: tf.train.load_checkpoint's object graph proto."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    path = str(trained[0].files["tf2"])
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    full_names = {a.checkpoint_key: a.full_name for node in graph.nodes for a in node.attributes}
    tensors = {t.name: t.variable for t in ckptcheck.list_tensors(path) if t.name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert tensors == {k: full_names[k] for k in tensors}


def test_tf1_variable_is_the_key(tf1_model_dir: Path) -> None:
    import tensorflow as tf

    listed = {t.name: t.variable for t in ckptcheck.list_tensors(str(tf1_model_dir))}
    assert set(listed) == {name for name, _ in tf.train.list_variables(str(tf1_model_dir))}
    assert all(k == v for k, v in listed.items())


def test_legacy_keras2_h5_names_drop_the_output_index(keras_build: Any, keras_files: dict[str, Path]) -> None:
    if "keras2-h5" not in keras_files:
        pytest.skip("tf_keras is not installed")
    import h5py

    with h5py.File(keras_files["keras2-h5"]) as f:
        written = [n.decode() if isinstance(n, bytes) else str(n)
                   for layer in f["model_weights"].attrs["layer_names"]
                   for n in f["model_weights"][layer.decode() if isinstance(layer, bytes) else layer]
                   .attrs["weight_names"]]
    names = _by_variable(keras_files["keras2-h5"])
    assert {w.rsplit(":", 1)[0] for w in written} <= set(names)
    assert not any(":" in v for v in names)


def test_mobilenet_keras_and_weights_name_every_variable(mobilenet: Saved) -> None:
    for kind in ("keras", "keras-weights", "tf2"):
        names = _by_variable(mobilenet.files[kind])
        assert {v for v in names if not v.startswith("(")} == set(mobilenet.weights), kind
    _check_values(mobilenet.files["keras-weights"], dict(itertools.islice(mobilenet.weights.items(), 20)))


# --- the object graph's fast path ----------------------------------------------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 0x80
    return bytes([number << 3 | 2, len(payload)]) + payload


def _node(attributes: list[tuple[str, str]]) -> bytes:
    body = b"".join(_field(2, _field(1, b"VARIABLE_VALUE") + _field(2, full.encode()) + _field(3, key.encode()))
                    for full, key in attributes)
    return _field(1, body)


def test_saved_names_fast_path_agrees_and_refuses_what_it_cannot_prove() -> None:
    graph = _node([]) + _node([("dense/kernel", "k/.ATTRIBUTES/VARIABLE_VALUE")]) + _node(
        [("dense/bias", "b/.ATTRIBUTES/VARIABLE_VALUE")])
    assert variable_saved_names(graph) == saved_names(graph) == {"k/.ATTRIBUTES/VARIABLE_VALUE": "dense/kernel",
                                                                 "b/.ATTRIBUTES/VARIABLE_VALUE": "dense/bias"}
    # A saved name holding the very bytes the fast path splits at: it cannot prove its finds, the decoder can.
    tricky = "x\n\x0eVARIABLE_VALUE\x12y"
    graph = _node([(tricky, "t/.ATTRIBUTES/VARIABLE_VALUE")])
    assert variable_saved_names(graph) is None
    assert saved_names(graph) == {"t/.ATTRIBUTES/VARIABLE_VALUE": tricky}


# --- inspect --------------------------------------------------------------------------------------------------


def test_inspect_filter_matches_variables(trained: tuple[Saved, Saved]) -> None:
    path = str(trained[0].files["keras"])
    result = run("inspect", path, "--filter", "conv1", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["tensors"]
    expected = {v for v in {**trained[0].weights, **trained[0].optimizer} if "conv1" in v}
    assert {r["variable"] for r in rows} == expected
    table = run("inspect", path, "--filter", "stem_bn/*")
    assert table.exit_code == 0
    assert "stem_bn/moving_variance" in table.stdout


def test_inspect_tensor_by_variable(trained: tuple[Saved, Saved]) -> None:
    result = run("inspect", str(trained[0].files["tf2"]), "--tensor", "mha/query/bias", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["variable"] == "mha/query/bias"
    assert np.allclose(np.array(data["values"]), trained[0].weights["mha/query/bias"])
    missing = run("inspect", str(trained[0].files["tf2"]), "--tensor", "mha/nothing")
    assert missing.exit_code == 2


# --- diff -----------------------------------------------------------------------------------------------------


PLAIN_KINDS = ["keras", "keras-weights", "keras-h5", "tf2", "savedmodel", "keras-sharded"]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(PLAIN_KINDS, 2)))
def test_the_same_weights_diff_as_the_same_in_every_pair_of_formats(plain: Saved, a: str, b: str) -> None:
    result = run("diff", str(plain.files[a]), str(plain.files[b]), "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["same"]
    assert len(report["unchanged"]) == len(plain.weights)
    assert sorted(report["unchanged"]) == sorted(plain.weights)  # listed by Keras's own variable paths
    for t in report["bookkeeping"]:
        assert (t["name"], t["variable"], t["kind"]) == ("_CHECKPOINTABLE_OBJECT_GRAPH", None, "bookkeeping")


@pytest.mark.parametrize(("a", "b"), [("keras", "tf2"), ("keras", "keras-h5"), ("tf2", "savedmodel"),
                                      ("tf2", "tf2-root"), ("keras-h5", "savedmodel")])
def test_optimizer_state_pairs_across_formats(trained: tuple[Saved, Saved], a: str, b: str) -> None:
    saved = trained[0]
    with ckptcheck.open_checkpoint(str(saved.files[a])) as ra, ckptcheck.open_checkpoint(str(saved.files[b])) as rb:
        report = diff_readers(ra, rb)
    assert report.same, report.note
    assert len(report.unchanged) == len(saved.weights) + len(saved.optimizer)


def test_weights_file_against_checkpoint_says_why_optimizer_state_does_not_pair(trained: tuple[Saved, Saved]) -> None:
    saved = trained[0]
    result = run("diff", str(saved.files["keras-weights"]), str(saved.files["tf2"]))
    assert result.exit_code == 1
    unpaired = len(saved.optimizer) - 2  # iteration and learning_rate pair
    assert f"{len(saved.weights) + 2} of A's" in result.stdout
    assert f"{unpaired} of A's unmatched tensors are named by position" in result.stdout


@pytest.mark.parametrize(("a", "b"), [("keras", "tf2"), ("tf2", "keras"), ("keras", "keras")])
def test_two_steps_of_training_name_what_changed(trained: tuple[Saved, Saved], a: str, b: str) -> None:
    first, second = trained
    before = {**first.weights, **first.optimizer}
    after = {**second.weights, **second.optimizer}
    moved = {name for name in before if not np.array_equal(before[name], after[name])}
    assert moved  # the oracle: what Keras's own variables say moved
    result = run("diff", str(first.files[a]), str(second.files[b]), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {c["variable"] for c in report["changed"]} == moved
    assert not report["added"] and not report["removed"]


def test_mobilenet_keras_against_tf2_checkpoint(mobilenet: Saved) -> None:
    result = run("diff", str(mobilenet.files["keras"]), str(mobilenet.files["tf2"]))
    assert result.exit_code == 0, result.stdout
    assert f"{len(mobilenet.weights)} unchanged" in result.stdout
    data = json.loads(run("diff", str(mobilenet.files["keras"]), str(mobilenet.files["tf2"]), "--json").stdout)
    assert data["matching"] == "variables" and sorted(data["unchanged"]) == sorted(mobilenet.weights)


def test_a_save_counter_only_one_side_keeps_is_bookkeeping(plain: Saved) -> None:
    path = str(plain.files["tf2-counted"])
    counters = [t for t in ckptcheck.list_tensors(path) if t.name.startswith("save_counter/")]
    assert [t.variable for t in counters] == ["(save counter)"]
    result = run("diff", str(plain.files["keras"]), path, "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert {(t["name"], t["kind"]) for t in report["bookkeeping"]} == {
        ("_CHECKPOINTABLE_OBJECT_GRAPH", "bookkeeping"), ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", "bookkeeping")}
    assert len(report["unchanged"]) == len(plain.weights)
    text = run("diff", path, str(plain.files["savedmodel"]))
    assert text.exit_code == 0 and "not compared (format bookkeeping" in text.stdout


def test_two_models_in_one_format_pair_only_their_common_variables(
    trained: tuple[Saved, Saved], mobilenet: Saved
) -> None:
    """Two different models in .keras: equal keys (layers/dense/vars/0 is a position) no longer pair different
    variables; what is removed and added is each model's own variables, as Keras names them."""
    with ckptcheck.open_checkpoint(str(trained[0].files["keras"])) as ra, \
            ckptcheck.open_checkpoint(str(mobilenet.files["keras"])) as rb:
        report = diff_readers(ra, rb)
    assert not report.same
    assert all(c.variable == c.variable_b for c in report.changed)
    a_vars = {*trained[0].weights, *trained[0].optimizer}
    b_vars = {*mobilenet.weights, *mobilenet.optimizer}
    common = a_vars & b_vars
    assert {t.variable for t in report.removed} == a_vars - common
    assert {t.variable for t in report.added} <= b_vars - common
    assert {c.variable for c in report.changed} | set(report.unchanged_names) <= common


def test_without_the_layers_names_tensors_keep_their_keys_or_take_the_configs(
    trained: tuple[Saved, Saved], tmp_path: Path
) -> None:
    """Keras 3 versions before the `name` attribute: a bare weights file cannot name its layers, a .keras archive
    names them from config.json."""
    import shutil
    import zipfile

    import h5py

    def strip(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            groups: list[Any] = []
            f.visititems(lambda _n, o: groups.append(o) if isinstance(o, h5py.Group) and "name" in o.attrs else None)
            for group in groups:
                del group.attrs["name"]

    weights = tmp_path / "m.weights.h5"
    shutil.copy(trained[0].files["keras-weights"], weights)
    strip(weights)
    tensors = [t for t in ckptcheck.list_tensors(str(weights)) if t.name.startswith("layers/")]
    assert tensors and all(t.variable == t.name for t in tensors)

    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(trained[0].files["keras"]) as src:
        src.extract("model.weights.h5", tmp_path / "x")
        strip(tmp_path / "x" / "model.weights.h5")
        with zipfile.ZipFile(archive, "w") as dst:
            for info in src.infolist():
                data = (tmp_path / "x" / "model.weights.h5").read_bytes() if info.filename == "model.weights.h5" \
                    else src.read(info)
                dst.writestr(info, data)
    names = _by_variable(archive)
    assert set(trained[0].weights) <= set(names)


def test_a_variable_several_tensors_hold_is_no_tensor_name(tmp_path: Path) -> None:
    """TensorFlow names every unnamed tf.Variable "Variable": --tensor Variable must not pick one."""
    import tensorflow as tf

    prefix = tf.train.Checkpoint(a=tf.Variable([1.0]), b=tf.Variable([2.0])).write(str(tmp_path / "ckpt"))
    result = run("inspect", prefix, "--tensor", "Variable")
    assert result.exit_code == 2
    assert "2 tensors hold the variable 'Variable'" in result.stderr
    assert "a/.ATTRIBUTES/VARIABLE_VALUE" in result.stderr
    assert ckptcheck.read_tensor(prefix, "b/.ATTRIBUTES/VARIABLE_VALUE").tolist() == [2.0]


# --- more architectures: names against Keras, wherever the file determines them -------------------------------


def _more_models(keras: Any) -> dict[str, tuple[Any, Any]]:
    """name -> (model, optimizer): a Sequential built lazily inside a Functional model (its layers are named
    within it), Bidirectional LSTM and GRU with a frozen Dense, a Sequential of separable and depthwise
    convolutions with BatchNormalization(center=False) and LayerNormalization(scale=False), a custom layer."""
    inp = keras.Input((4,))
    lazy = keras.Sequential([keras.layers.Dense(3, name="sd"), keras.layers.Dense(2, name="sd2")], name="seq")
    out: dict[str, tuple[Any, Any]] = {"lazy-sequential": (keras.Model(inp, lazy(inp)),
                                                           keras.optimizers.SGD(0.1, momentum=0.9))}
    inp = keras.Input((5, 3))
    x = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))(inp)
    x = keras.layers.GRU(3)(x)
    frozen = keras.layers.Dense(2, name="frozen")
    frozen.trainable = False
    out["rnn"] = (keras.Model(inp, keras.layers.Dense(1)(frozen(x))), keras.optimizers.RMSprop(0.01))
    convs = keras.Sequential([keras.layers.SeparableConv2D(4, 3), keras.layers.DepthwiseConv2D(3, use_bias=False),
                              keras.layers.BatchNormalization(center=False),
                              keras.layers.LayerNormalization(scale=False), keras.layers.Flatten(),
                              keras.layers.Dense(1)])
    convs.build((None, 8, 8, 3))
    out["convs"] = (convs, keras.optimizers.Adam(0.01))

    class Scale(keras.layers.Layer):  # type: ignore[misc]
        def build(self, shape: Any) -> None:
            self.w = self.add_weight(shape=(shape[-1],), name="w")

        def call(self, x: Any) -> Any:
            return x * self.w

    inp = keras.Input((4,))
    out["custom"] = (keras.Model(inp, keras.layers.Dense(1)(Scale(name="scale")(inp))),
                     keras.optimizers.AdamW(0.01))
    # A layer of Keras's own that keras.applications models hold: Normalization (every EfficientNet: statistics,
    # none trainable, an int64 count).
    inp = keras.Input((4,))
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.arange(12, dtype=np.float32).reshape(3, 4))
    out["applications-layers"] = (keras.Model(inp, keras.layers.Dense(1)(norm(inp))), keras.optimizers.Adam(0.01))
    # ConvNeXt's LayerScale: a Keras class, but its weight's name is numbered across the process (variable,
    # variable_1, ...), so it stays positional, and so do its optimizer slots; the rest is named.
    from keras.src.applications.convnext import LayerScale

    inp = keras.Input((4,))
    x = keras.layers.Dense(4, name="before")(inp)
    out["layer-scale"] = (keras.Model(inp, keras.layers.Dense(1, name="after")(LayerScale(0.5, 4, name="ls")(x))),
                          keras.optimizers.Adam(0.01))
    return out


@pytest.fixture(scope="session")
def more(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    keras = _keras()
    keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("more")
    saved = {}
    rng = np.random.default_rng(2)
    for name, (model, optimizer) in _more_models(keras).items():
        model.compile(optimizer=optimizer, loss="mse")
        inputs = [rng.standard_normal((2, *i.shape[1:])).astype(np.float32) for i in model.inputs]
        x = inputs[0] if len(inputs) == 1 else inputs
        y = model.predict(x, verbose=0)
        model.fit(x, rng.standard_normal(y.shape).astype(np.float32), verbose=0)
        files = {"keras": root / f"{name}.keras", "keras-weights": root / f"{name}.weights.h5"}
        model.save(files["keras"])
        model.save_weights(files["keras-weights"])
        saved[name] = Saved(files, _values(model.weights), _values(model.optimizer.variables))
    return saved


# The models holding a layer whose variables the file cannot name: that layer's name.
UNKNOWN_LAYER = {"custom": "scale", "layer-scale": "ls"}


@pytest.mark.parametrize("name", ["lazy-sequential", "rnn", "convs", "custom", "applications-layers", "layer-scale"])
@pytest.mark.parametrize("kind", ["keras", "keras-weights"])
def test_more_architectures(more: dict[str, Saved], name: str, kind: str) -> None:
    """Every tensor is named as Keras names it, or by position where the file does not say (the custom layer's
    class; without config.json, the optimizer's per-variable state; with it, for a layer class whose variable
    order ckptcheck does not know): never by a wrong name."""
    saved = more[name]
    expected = {**saved.weights, **saved.optimizer}
    names = _by_variable(saved.files[kind])
    assert all(v in expected or POSITIONAL.search(v) for v in names), sorted(set(names) - set(expected))
    assert len(names) == len(expected)
    known = {v: expected[v] for v in names if v in expected}
    _check_values(saved.files[kind], known)
    if kind == "keras" and name not in UNKNOWN_LAYER:
        assert set(names) == set(expected)
    elif kind == "keras":  # only the unknown layer's weight and its two optimizer slots are positional
        layer = UNKNOWN_LAYER[name]
        positional = sorted(v for v in names if POSITIONAL.search(v))
        assert len(positional) == 3 and positional[-1] == f"{layer}/vars/0", positional
        unnamed = set(expected) - set(names)
        assert len(unnamed) == 3 and all(v.startswith(f"{layer}/") or f"/{layer}_" in v for v in unnamed), unnamed
    elif name == "convs":  # without config.json, 3 BatchNormalization variables (or 1 of LayerNormalization)
        ambiguous = {v for v in saved.weights if re.search(r"normalization(_\d+)?/", v)}  # gamma or beta?
        assert set(saved.weights) - ambiguous <= set(names)
        assert not ambiguous & set(names)
    elif name not in UNKNOWN_LAYER:
        assert set(saved.weights) <= set(names)


def test_keras_parameter_count_is_count_params(more: dict[str, Saved]) -> None:
    """inspect's count of a Keras file's model weights is model.count_params() (Normalization's int64 count
    included, as Keras counts it); its optimizer state is the optimizer's variables."""
    saved = more["applications-layers"]
    for kind in ("keras", "keras-weights"):
        summary = json.loads(run("inspect", str(saved.files[kind]), "--json").stdout)["summary"]
        assert summary["weights"]["elements"] == sum(v.size for v in saved.weights.values()), kind
        assert summary["weights"]["tensors"] == len(saved.weights), kind
        assert summary["optimizer"]["tensors"] == len(saved.optimizer), kind
        assert summary["other"]["tensors"] == 0, kind



@pytest.fixture(scope="session")
def efficientnet(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """A real architecture holding a Normalization layer: EfficientNetB0 (random weights, 32x32) after one Adam
    step, as .keras and as a TF2 checkpoint of model and optimizer."""
    keras = _keras()
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype(np.float32)
    with tf.GradientTape() as tape:  # one eager step: fit would trace the whole graph first (~30 s)
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    model.optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables,
                                        strict=True))
    out = tmp_path_factory.mktemp("efficientnet")
    model.save(out / "m.keras")
    tf2 = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(out / "tf2" / "ckpt"))
    return Saved({"keras": out / "m.keras", "tf2": Path(tf2)}, _values(model.weights),
                 _values(model.optimizer.variables))


def test_efficientnet_keras_names_every_variable_and_pairs_with_its_checkpoint(efficientnet: Saved) -> None:
    """Every tensor of the .keras, optimizer state included, is named as Keras names it, and holds its value;
    against the TF2 checkpoint of the same model and optimizer, diff pairs every tensor (it reported 429 removed
    and 429 added while Normalization was an unknown class)."""
    expected = {**efficientnet.weights, **efficientnet.optimizer}
    names = _by_variable(efficientnet.files["keras"])
    assert set(names) == set(expected)
    _check_values(efficientnet.files["keras"], {v: expected[v] for v in itertools.islice(expected, 0, None, 25)})
    report = json.loads(run("diff", str(efficientnet.files["keras"]), str(efficientnet.files["tf2"]),
                            "--json").stdout)
    assert not report["added"] and not report["removed"] and not report["changed"]
    assert len(report["unchanged"]) == len(expected)
    # Both count the model's weights as Keras does (model.count_params(): Normalization's int64 count included).
    for kind in ("keras", "tf2"):
        summary = json.loads(run("inspect", str(efficientnet.files[kind]), "--json").stdout)["summary"]
        assert summary["weights"]["elements"] == sum(v.size for v in efficientnet.weights.values()), kind
