"""`inspect`'s parameter summary and `--group`: counted from the file, checked against what Keras and TensorFlow
say the model and the optimizer hold."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

runner = CliRunner()


def inspect_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def counts(arrays: list[np.ndarray]) -> dict[str, int]:
    return {"tensors": len(arrays), "elements": sum(int(a.size) for a in arrays),
            "bytes": sum(int(a.nbytes) for a in arrays)}


@pytest.mark.parametrize("key", ["keras", "keras-weights", "keras-h5", "keras-sharded", "keras-npz-seq",
                                 "keras-npz", "keras2-h5"])
def test_keras_files_count_what_the_model_and_optimizer_held(keras_build: Any, key: str) -> None:
    if key not in keras_build.files:
        pytest.skip(f"{key} not built (tf_keras missing)")
    summary = inspect_json(str(keras_build.files[key]))["summary"]
    assert summary["weights"] == counts(keras_build.weights[key])
    assert summary["optimizer"] == counts(keras_build.optimizer[key])
    assert summary["other"] == {"tensors": 0, "elements": 0, "bytes": 0}
    assert summary["total"]["elements"] == summary["weights"]["elements"] + summary["optimizer"]["elements"]


def test_tf2_checkpoint_of_a_keras_model(keras_tf_checkpoint: str) -> None:
    """A Keras optimizer tracks the model's own variables (optimizer/_trainable_variables/0 is a kernel): they
    count as weights, once. The oracle: the same model and optimizer built again, counted by Keras."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    summary = inspect_json(keras_tf_checkpoint)["summary"]
    assert summary["weights"]["elements"] == model.count_params()
    assert summary["weights"]["tensors"] == len(model.weights)
    assert summary["optimizer"]["elements"] == sum(math.prod(v.shape) for v in optimizer.variables)
    assert summary["optimizer"]["tensors"] == len(optimizer.variables)
    assert summary["other"]["tensors"] == 1  # the object graph (Checkpoint.write keeps no save_counter)
    # --objects reads the object graph too: the same counts either way.
    assert inspect_json(keras_tf_checkpoint, "--objects")["summary"] == summary


def test_tf1_counts_follow_the_meta_graph(tf1_model_dir: Path) -> None:
    """Oracle: the graph in the .meta file: trainable_variables are weights, global_step a counter, every other
    global variable (Adam's slots and beta powers) optimizer state."""
    import tensorflow as tf

    prefix = str(tf1_model_dir / "model.ckpt-6")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        trainable = {v.op.name: v.shape.num_elements() for v in tf.compat.v1.trainable_variables()}
        step = {v.op.name: v.shape.num_elements() for v in graph.get_collection("global_step")}
        every = {v.op.name: v.shape.num_elements() for v in tf.compat.v1.global_variables()}
    # A partitioned variable is one stored tensor (embedding), its parts three graph variables.
    def elements(names: dict[str, int]) -> int:
        return sum(names.values())

    summary = inspect_json(prefix)["summary"]
    assert summary["weights"]["elements"] == elements(trainable)
    assert summary["other"]["elements"] == elements(step) == 1
    optimizer = {n: e for n, e in every.items() if n not in trainable and n not in step}
    assert summary["optimizer"]["elements"] == elements(optimizer)
    assert any(n.endswith("/Adam_1") for n in optimizer) and "beta1_power" in optimizer


def test_groups_partition_the_tensors(keras_build: Any) -> None:
    path = str(keras_build.files["keras-weights"])
    data = inspect_json(path, "--group")
    rows = data["groups"]
    for kind in ("weights", "optimizer", "counters", "bookkeeping"):
        mine = [r for r in rows if r["kind"] == kind]
        assert sum(r["elements"] for r in mine) == data["summary"][kind]["elements"]
        assert sum(r["tensors"] for r in mine) == data["summary"][kind]["tensors"]
    # Grouped by the layer part of the variable: Sequential 'seq', Dense 'dense' (seq/dense/kernel, seq/dense/bias)
    dense = next(r for r in rows if r["group"] == "seq/dense")
    kernel, bias = keras_build.weights["keras-weights"][:2]  # Dense 'dense': 4x3 kernel, 3 biases
    assert (dense["kind"], dense["tensors"], dense["elements"]) == ("weights", 2, kernel.size + bias.size)
    text = runner.invoke(app, ["inspect", path, "--group"]).stdout
    assert "layer or object" in text and "seq/dense " in text and "layers/dense/vars/0" not in text
    by_size = inspect_json(path, "--group", "--sort", "size")["groups"]
    assert [r["bytes"] for r in by_size] == sorted((r["bytes"] for r in rows), reverse=True)


def test_text_summary_and_misuse(tf1_model_dir: Path) -> None:
    text = runner.invoke(app, ["inspect", str(tf1_model_dir)]).stdout
    assert "model weights" in text and "optimizer state" in text and "counters and other" in text
    filtered = runner.invoke(app, ["inspect", str(tf1_model_dir), "--filter", "dense"]).stdout
    assert "parameters (of the" in filtered
    result = runner.invoke(app, ["inspect", str(tf1_model_dir), "--group", "--stats"])
    assert result.exit_code == 2 and "--group" in result.stderr


def test_checkpoint_without_optimizer(tmp_path: Path) -> None:
    """No optimizer anywhere (the one-pass count): float variables are weights; an integer step, a string and the
    object graph are counters and other. The oracle: the variables themselves."""
    import tensorflow as tf

    weights = {f"w_{i}": tf.Variable(tf.zeros([i + 1, 3])) for i in range(12)}
    others = {"step": tf.Variable(5, dtype=tf.int64), "label": tf.Variable("text")}
    prefix = tf.train.Checkpoint(**weights, **others).write(str(tmp_path / "ckpt"))
    summary = inspect_json(prefix)["summary"]
    assert summary["weights"] == {"tensors": 12, "elements": sum(int(tf.size(v)) for v in weights.values()),
                                  "bytes": sum(int(tf.size(v)) * 4 for v in weights.values())}
    assert summary["optimizer"]["tensors"] == 0
    assert summary["other"]["tensors"] == 3  # step, label and the object graph
    assert summary["total"]["bytes"] == inspect_json(prefix)["total_bytes"]


@pytest.mark.slow
def test_tf1_optimizer_state_is_what_the_optimizer_created(tmp_path: Path) -> None:
    """A name-based checkpoint of 300 layers and Adam (1,800+ values), written by TensorFlow's own Saver: the
    values inspect counts as optimizer state, and restore-check names as such, are exactly the variables
    AdamOptimizer created (its slots and beta powers, read from the optimizer itself); global_step is a counter;
    the rest are the layers' weights."""
    import tensorflow as tf

    import ckptcheck
    from ckptcheck.restore_check.report import COUNTER, OPTIMIZER, WEIGHT
    from ckptcheck.restore_check.stored import stored_kinds
    from ckptcheck.summary import summarize

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(np.ones([2, 3], dtype=np.float32))
        for i in range(300):
            with v1.variable_scope(f"layer_{i}"):
                w = v1.get_variable("kernel", [3, 3], initializer=v1.constant_initializer(0.1))
                b = v1.get_variable("bias", [3], initializer=v1.zeros_initializer())
            x = tf.tanh(tf.matmul(x, w) + b)
        step = v1.train.get_or_create_global_step()
        optimizer = v1.train.AdamOptimizer(0.01)
        train = optimizer.minimize(tf.reduce_sum(x * x), global_step=step)
        created = {v.op.name for v in optimizer.variables()}
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            session.run(train)
            prefix = v1.train.Saver().save(session, str(tmp_path / "model.ckpt"), global_step=step)
    assert len(created) == 2 * 600 + 2
    with ckptcheck.open_checkpoint(prefix) as reader:
        tensors = reader.tensors()
        kinds = stored_kinds(reader, tensors, None)
        summary = summarize(reader, tensors)
    expected = {t.name: OPTIMIZER if t.name in created else COUNTER if t.name == "global_step" else WEIGHT
                for t in tensors}
    assert len(tensors) == 600 + len(created) + 1 and kinds == expected
    optimizer_elements = sum(math.prod(t.shape) for t in tensors if t.name in created)
    assert summary.kinds["optimizer"].elements == optimizer_elements == 2 * 300 * (9 + 3) + 2
    assert summary.kinds["weights"].elements == 300 * (9 + 3)
