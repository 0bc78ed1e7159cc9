"""`ckptcheck history`: runs made for real (a Keras 3 model saved by tf.train.CheckpointManager with a frozen layer
and an Inf assigned at a known step; a TF1 Saver model_dir; Keras ModelCheckpoint weights files), every finding
checked against what the test did, every norm and change against numpy on tf.train.load_checkpoint's values."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app

runner = CliRunner()

SAVE_EVERY = 3  # optimizer steps between saves
SAVES = 5  # steps 3, 6, 9, 12, 15; the manager names them ckpt-1 ... ckpt-5
INF_STEP = 9  # an Inf is assigned to out/kernel right before this step's save
FROZEN = "frozen"  # the layer made trainable=False


@dataclass
class Run:
    directory: Path
    steps: list[int]  # the optimizer's iterations at each save, in order
    prefixes: list[str]
    keys: list[dict[str, str]] = field(default_factory=list)  # per checkpoint: variable (full_name) -> key
    # The optimizer's name: Keras numbers optimizers across a process (adam, adam_1, ...), so it depends on what
    # the session built before.
    optimizer: str = "adam"


def history(*args: str) -> Any:
    return runner.invoke(app, ["history", *args])


def history_json(*args: str, code: int = 0) -> dict[str, Any]:
    result = history(*args, "--json")
    assert result.exit_code == code, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _variable_keys(prefix: str) -> dict[str, str]:
    """full_name -> checkpoint key, as TensorFlow's own object graph records them."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes
            if a.name == "VARIABLE_VALUE" and a.full_name}


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Keras 3 Sequential (hidden -> frozen -> out, Dense), Adam, a train step at a time; CheckpointManager saves
    every SAVE_EVERY steps (keeping all); out/kernel[0, 0] set to Inf right before the save at INF_STEP."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    directory = tmp_path_factory.mktemp("keras_run")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="hidden"),
                              keras.layers.Dense(5, name=FROZEN), keras.layers.Dense(1, name="out")], name="seq")
    model.get_layer(FROZEN).trainable = False
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer=optimizer, loss="mse")
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), str(directory),
                                         max_to_keep=None)
    rng = np.random.RandomState(0)
    x = rng.rand(16, 4).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    run = Run(directory, [], [])
    for step in range(1, SAVE_EVERY * SAVES + 1):
        model.train_on_batch(x, y)
        if step % SAVE_EVERY:
            continue
        if step == INF_STEP:
            kernel = model.get_layer("out").kernel
            value = kernel.numpy()
            value[0, 0] = np.inf
            kernel.assign(value)
        run.prefixes.append(manager.save())
        run.steps.append(int(optimizer.iterations.numpy()))
    run.keys = [_variable_keys(p) for p in run.prefixes]
    run.optimizer = optimizer.name
    return run


@pytest.fixture(scope="module")
def tf1_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A tf.compat.v1 graph: dense/kernel and dense/bias trained by Adam with a global step, `unused` outside the
    loss; a Saver writes model.ckpt-STEP at steps 2, 4 and 6."""
    import tensorflow as tf

    v1 = tf.compat.v1
    directory = tmp_path_factory.mktemp("tf1_run")
    graph = tf.Graph()
    run = Run(directory, [], [])
    with graph.as_default():
        v1.set_random_seed(0)
        x = tf.constant(np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3))
        with v1.variable_scope("dense"):
            kernel = v1.get_variable("kernel", [3, 2], initializer=v1.random_normal_initializer(seed=1))
            bias = v1.get_variable("bias", [2], initializer=v1.zeros_initializer())
        v1.get_variable("unused", [3], initializer=v1.ones_initializer())
        loss = tf.reduce_mean((tf.matmul(x, kernel) + bias - 1.0) ** 2)
        global_step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.05).minimize(loss, global_step=global_step)
        saver = v1.train.Saver()  # keeps the last 5, all named by the state file
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            for step in range(1, 7):
                session.run(train)
                if step % 2 == 0:
                    run.prefixes.append(saver.save(session, str(directory / "model.ckpt"), global_step=global_step))
                    run.steps.append(step)
    run.keys = [{name: name for name, _shape in tf.train.list_variables(p)} for p in run.prefixes]
    return run


def _values(prefix: str, key: str) -> np.ndarray:
    import tensorflow as tf

    return np.asarray(tf.train.load_checkpoint(prefix).get_tensor(key))


def _norm(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)].astype(np.float64)
    return float(np.linalg.norm(finite))


def _oracle(run: Run, variable: str) -> tuple[list[float], list[float | None], list[int]]:
    """Norm, relative change and NaN+Inf count of a variable at each checkpoint, from TensorFlow's reads."""
    arrays = [_values(p, keys[variable]) for p, keys in zip(run.prefixes, run.keys, strict=True)]
    norms = [_norm(a) for a in arrays]
    relative: list[float | None] = [None]
    for before, now in itertools.pairwise(arrays):
        if before.tobytes() == now.tobytes():  # the same bits (NaN included): no change
            relative.append(0.0)
            continue
        delta = now.astype(np.float64) - before.astype(np.float64)
        delta = delta[np.isfinite(delta)]
        d = float(np.linalg.norm(delta))
        w = _norm(now)
        # No element finite on both sides: nothing to measure.
        relative.append(None if not delta.size else 0.0 if d == 0 else d / w if w > 0 else None)
    return norms, relative, [int((~np.isfinite(a)).sum()) for a in arrays]


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9,
                                                                                         abs_tol=1e-12))


# --- a Keras 3 run saved by CheckpointManager ------------------------------------------------------------------


@pytest.mark.tf
def test_keras_run_steps_norms_and_changes_match_tensorflow(keras_run: Run) -> None:
    data = history_json(str(keras_run.directory), code=1)
    assert data["schema"] == "ckptcheck.history/1"
    cps = data["checkpoints"]
    # The optimizer's iterations, read from each file: 3, 6, ... (the manager named them ckpt-1 ... ckpt-5).
    assert [c["step"] for c in cps] == keras_run.steps == [SAVE_EVERY * (i + 1) for i in range(SAVES)]
    assert {c["step_source"] for c in cps} == {"iterations"}
    assert [c["name"] for c in cps] == [os.path.basename(p) for p in keras_run.prefixes]
    assert [c["counters"]["save_counter"] for c in cps] == list(range(1, SAVES + 1))
    names = {s["name"] for s in data["variables"]}
    # The model's weights and nothing else: TensorFlow's object graph names them seq/<layer>/<kernel|bias>.
    assert names == {f"seq/{layer}/{w}" for layer in ("hidden", FROZEN, "out") for w in ("kernel", "bias")}
    assert names <= set(keras_run.keys[0])
    for s in data["variables"]:
        norms, relative, bad = _oracle(keras_run, s["name"])
        assert all(_close(a, b) for a, b in zip(s["norm"], norms, strict=True)), (s["name"], s["norm"], norms)
        assert all(_close(a, b) for a, b in zip(s["relative"], relative, strict=True)), (s["name"], s["relative"])
        assert [n + i for n, i in zip(s["nan"], s["inf"], strict=True)] == bad


@pytest.mark.tf
def test_keras_run_findings_say_what_the_test_did(keras_run: Run) -> None:
    data = history_json(str(keras_run.directory), code=1)
    found = {f["kind"]: f for f in data["findings"]}
    # The frozen layer's kernel and bias, and only they, never changed: TensorFlow's values agree.
    frozen = found["never-changed"]
    assert set(frozen["names"]) == {f"seq/{FROZEN}/kernel", f"seq/{FROZEN}/bias"}
    for name in frozen["names"]:
        first = _values(keras_run.prefixes[0], keras_run.keys[0][name])
        assert all(np.array_equal(first, _values(p, k[name])) for p, k in zip(keras_run.prefixes, keras_run.keys,
                                                                               strict=True))
    assert not found["never-changed"]["problem"]
    # NaN/Inf first at the save of INF_STEP, in out/kernel alone (one Inf: the one assigned).
    nonfinite = [f for f in data["findings"] if f["kind"] == "nonfinite"]
    assert nonfinite[0]["step"] == INF_STEP and nonfinite[0]["names"] == ["seq/out/kernel"] and nonfinite[0]["problem"]
    assert "1 Inf" in nonfinite[0]["message"] and f"step {INF_STEP}" in nonfinite[0]["message"]
    # Every variable's first NaN/Inf is where TensorFlow's values first hold one.
    by_name = {s["name"]: s for s in data["variables"]}
    for f in nonfinite:
        for name in f["names"]:
            _norms, _relative, bad = _oracle(keras_run, name)
            first = next(i for i, n in enumerate(bad) if n)
            assert data["checkpoints"][first]["step"] == f["step"] == data["checkpoints"][
                by_name[name]["first_nonfinite"]]["step"]
    assert data["exit_code"] == 1
    # Findings come first in the text, problems marked.
    text = history(str(keras_run.directory)).stdout
    assert text.index("findings:") < text.index("checkpoint ")
    assert f"! NaN/Inf first appear at step {INF_STEP} (ckpt-{INF_STEP // SAVE_EVERY}), in seq/out/kernel" in text


def _copy_prefixes(prefixes: list[str], directory: Path) -> Path:
    directory.mkdir()
    for p in prefixes:
        for f in Path(p).parent.glob(os.path.basename(p) + ".*"):
            shutil.copy(f, directory / f.name)
    return directory


@pytest.mark.tf
def test_keras_run_norm_growth_names_the_largest_ratios(keras_run: Run, tmp_path: Path) -> None:
    """The first three checkpoints alone (before NaN spread): the norms that grew and shrank most are those numpy
    finds from TensorFlow's values, first to last; out/kernel, Inf at the last, is left to its own finding."""
    data = history_json(str(_copy_prefixes(keras_run.prefixes[:3], tmp_path / "early")), code=1)
    ratios = {}
    for s in data["variables"]:
        norms, _relative, bad = _oracle(keras_run, s["name"])
        if norms[0] > 0 and not (bad[0] or bad[2]) and norms[2] != norms[0]:
            ratios[s["name"]] = norms[2] / norms[0]
    assert "seq/out/kernel" not in ratios and f"seq/{FROZEN}/kernel" not in ratios and len(ratios) >= 2
    found = {f["kind"]: f for f in data["findings"]}
    grew = [n for n, r in sorted(ratios.items(), key=lambda kv: -kv[1]) if r > 1][:3]
    shrank = [n for n, r in sorted(ratios.items(), key=lambda kv: kv[1]) if r < 1][:3]
    assert grew or shrank
    assert found.get("grew", {}).get("names", []) == grew
    assert found.get("shrank", {}).get("names", []) == shrank


@pytest.mark.tf
def test_keras_run_by_layer(keras_run: Run) -> None:
    data = history_json(str(keras_run.directory), "--group", code=1)
    layers = {s["name"]: s for s in data["layers"]}
    assert set(layers) == {"seq/hidden", f"seq/{FROZEN}", "seq/out"}
    for layer, s in layers.items():
        norms = [math.hypot(*(n for n in ns)) for ns in zip(*(_oracle(keras_run, f"{layer}/{w}")[0]
                                                                for w in ("kernel", "bias")), strict=True)]
        assert all(_close(a, b) for a, b in zip(s["norm"], norms, strict=True))
    found = {f["kind"]: f for f in data["findings"]}
    assert found["never-changed"]["names"] == [f"seq/{FROZEN}"]
    assert next(f["names"] for f in data["findings"] if f["kind"] == "nonfinite") == ["seq/out"]


@pytest.mark.tf
def test_keras_run_optimizer_state(keras_run: Run) -> None:
    data = history_json(str(keras_run.directory), "--kind", "optimizer", code=1)
    names = {s["name"] for s in data["variables"]}
    # Adam's moments of the trainable variables (none for the frozen layer), the iteration and learning rate.
    expected = {v for v in keras_run.keys[-1] if v.startswith(keras_run.optimizer + "/")}
    assert names == expected and any("momentum" in n for n in names)
    assert not any(FROZEN in n for n in names)
    for name in (f"{keras_run.optimizer}/seq_hidden_kernel_{moment}" for moment in ("momentum", "velocity")):
        norms, _relative, _bad = _oracle(keras_run, name)
        series = next(s for s in data["variables"] if s["name"] == name)
        assert all(_close(a, b) for a, b in zip(series["norm"], norms, strict=True))
    both = history_json(str(keras_run.directory), "--kind", "weights", "--kind", "optimizer", code=1)
    assert {s["name"] for s in both["variables"]} == names | {s["name"] for s in history_json(
        str(keras_run.directory), code=1)["variables"]}


@pytest.mark.tf
def test_state_file_left_out_and_all(keras_run: Run, tmp_path: Path) -> None:
    """A state file that names only the first two checkpoints (written by TensorFlow's update_checkpoint_state):
    the others are left out, said in a finding (exit 0: the Inf is in those), and --all reads them."""
    import tensorflow as tf

    directory = tmp_path / "run"
    shutil.copytree(keras_run.directory, directory)
    named = [str(directory / os.path.basename(p)) for p in keras_run.prefixes[:2]]
    tf.compat.v1.train.update_checkpoint_state(str(directory), named[-1], all_model_checkpoint_paths=named)
    data = history_json(str(directory))
    assert [c["name"] for c in data["checkpoints"]] == [os.path.basename(p) for p in named]
    left = next(f for f in data["findings"] if f["kind"] == "left-out")
    assert left["names"] == [os.path.basename(p) for p in keras_run.prefixes[2:]] and not left["problem"]
    every = history_json(str(directory), "--all", code=1)
    assert [c["step"] for c in every["checkpoints"]] == keras_run.steps
    assert [c["named"] for c in every["checkpoints"]] == [True, True] + [False] * (SAVES - 2)
    assert not any(f["kind"] == "left-out" for f in every["findings"])
    # A checkpoint the state file names, gone from disk: named as unreadable, after the one before it; exit 1.
    for f in directory.glob(os.path.basename(named[1]) + ".*"):
        f.unlink()
    gone = history_json(str(directory), code=1)
    assert [(c["name"], c["error"]) for c in gone["checkpoints"]] == [
        (os.path.basename(named[0]), None), (os.path.basename(named[1]), "named by the state file, and not on disk")]
    assert [f["kind"] for f in gone["findings"] if f["problem"]] == ["unreadable"]


@pytest.mark.tf
def test_plain_directory_of_prefixes(keras_run: Run, tmp_path: Path) -> None:
    directory = _copy_prefixes(keras_run.prefixes[:3], tmp_path / "prefixes")
    data = history_json(str(directory), code=1)
    assert not data["state_file"] and [c["named"] for c in data["checkpoints"]] == [None] * 3
    assert [c["step"] for c in data["checkpoints"]] == keras_run.steps[:3]


@pytest.mark.tf
def test_damaged_and_unreadable_checkpoints_are_named_and_the_rest_read(keras_run: Run, tmp_path: Path) -> None:
    import tensorflow as tf

    directory = tmp_path / "run"
    shutil.copytree(keras_run.directory, directory)
    prefixes = [str(directory / os.path.basename(p)) for p in keras_run.prefixes]
    # ckpt-2: the bytes of seq/hidden/kernel overwritten (its checksum fails); ckpt-4: its index is garbage.
    key = keras_run.keys[1]["seq/hidden/kernel"]
    reader = tf.train.load_checkpoint(prefixes[1])
    raw = reader.get_tensor(key).tobytes()
    data_file = Path(prefixes[1] + ".data-00000-of-00001")
    blob = data_file.read_bytes()
    at = blob.index(raw)
    data_file.write_bytes(blob[:at] + bytes(len(raw)) + blob[at + len(raw):])
    Path(prefixes[3] + ".index").write_bytes(b"not an index" * 10)
    with pytest.raises(Exception, match=r"(?i)checksum|corrupt|data loss"):
        tf.train.load_checkpoint(prefixes[1]).get_tensor(key)
    with pytest.raises(Exception):  # noqa: B017 - TensorFlow's own error type varies; it must fail
        tf.train.load_checkpoint(prefixes[3])
    result = history(str(directory), "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    cps = data["checkpoints"]
    assert cps[1]["damaged"][0]["variable"] == "seq/hidden/kernel" and cps[1]["error"] is None
    assert cps[3]["error"] is not None and cps[3]["format"] is None
    found = [f for f in data["findings"] if f["kind"] in ("damaged", "unreadable")]
    assert [(f["kind"], f["checkpoint"]) for f in found] == [("damaged", "ckpt-2"), ("unreadable", "ckpt-4")]
    assert all(f["problem"] for f in found)
    # The others were read: ckpt-5's change is measured from ckpt-3 (the last readable), as numpy finds.
    kernel = next(s for s in data["variables"] if s["name"] == "seq/out/bias")
    assert kernel["norm"][3] is None and kernel["norm"][4] is not None
    before, now = (_values(p, k["seq/out/bias"]) for p, k in ((keras_run.prefixes[2], keras_run.keys[2]),
                                                              (keras_run.prefixes[4], keras_run.keys[4])))
    delta = (now.astype(np.float64) - before)[np.isfinite(now - before)]
    assert _close(kernel["change"][4], float(np.linalg.norm(delta)) if delta.size else None)
    hidden = next(s for s in data["variables"] if s["name"] == "seq/hidden/kernel")
    assert hidden["norm"][1] is None and _close(hidden["norm"][2], _oracle(keras_run, "seq/hidden/kernel")[0][2])
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "ckpt-4" in errors[0] and "ckpt-2" in errors[1] and "Traceback" not in result.output


@pytest.mark.tf
def test_streamed_in_small_chunks_the_same_as_numpy(keras_run: Run) -> None:
    """Chunks of 64 bytes: every tensor streamed side by side with its previous checkpoint's, cut at other places
    than its 2 MiB chunks; the norms and changes are still numpy's."""
    from ckptcheck.history import find_run, read_history

    report = read_history(find_run(str(keras_run.directory)), chunk_bytes=64)
    assert len(report.variables) == 6
    for s in report.variables:
        norms, relative, _bad = _oracle(keras_run, s.name)
        assert all(_close(a, b) for a, b in zip(s.norm, norms, strict=True)), s.name
        assert all(_close(a, b) for a, b in zip(s.relative, relative, strict=True)), s.name


def test_a_filter_that_matches_nothing_says_so(tmp_path: Path) -> None:
    from ckptcheck.history import find_run, read_history

    fixture = Path(__file__).parents[1] / "fixtures" / "tf1"
    report = read_history(find_run(str(fixture)), filter_="no-such-layer")
    assert report.variables == () and report.exit_code == 0
    assert [f.kind for f in report.findings][:1] == ["empty"] and "'no-such-layer'" in report.findings[0].message


@pytest.mark.tf
def test_partitioned_variable_of_a_tf1_model_dir(tf1_model_dir: Path) -> None:
    """The [10, 4] embedding stored as 3 slices: its norm is that of the variable TensorFlow assembles."""
    import tensorflow as tf

    data = history_json(str(tf1_model_dir))
    embedding = next(s for s in data["variables"] if s["name"] == "embedding")
    prefixes = [str(tf1_model_dir / os.path.basename(c["path"])) for c in data["checkpoints"]]
    assert len(prefixes) == 2
    values = [tf.train.load_checkpoint(p).get_tensor("embedding") for p in prefixes]
    assert values[0].shape == (10, 4) and embedding["shape"] == [10, 4]
    assert all(_close(a, _norm(v)) for a, v in zip(embedding["norm"], values, strict=True))
    change = np.linalg.norm(values[1].astype(np.float64) - values[0])
    assert _close(embedding["change"][1], float(change)) and change > 0


# --- a TF1 Saver model_dir ---------------------------------------------------------------------------------------


@pytest.mark.tf
def test_tf1_model_dir(tf1_run: Run) -> None:
    data = history_json(str(tf1_run.directory))
    cps = data["checkpoints"]
    assert [c["step"] for c in cps] == tf1_run.steps == [2, 4, 6]
    assert {c["step_source"] for c in cps} == {"global_step"}
    assert [c["counters"]["global_step"] for c in cps] == [int(_values(p, "global_step")) for p in tf1_run.prefixes]
    assert {s["name"] for s in data["variables"]} == {"dense/kernel", "dense/bias", "unused"}
    for s in data["variables"]:
        norms, relative, _bad = _oracle(tf1_run, s["name"])
        assert all(_close(a, b) for a, b in zip(s["norm"], norms, strict=True))
        assert all(_close(a, b) for a, b in zip(s["relative"], relative, strict=True))
    found = {f["kind"]: f for f in data["findings"]}
    assert found["never-changed"]["names"] == ["unused"]  # outside the loss: Adam never touched it
    assert "nonfinite" not in found and data["exit_code"] == 0
    optimizer = history_json(str(tf1_run.directory), "--kind", "optimizer")
    assert {s["name"] for s in optimizer["variables"]} == {
        n for n in tf1_run.keys[0] if "Adam" in n or n.startswith("beta")}
    text = history(str(tf1_run.directory))
    assert text.exit_code == 0 and "unused" in text.stdout.split("\n\n")[1]


# --- Keras ModelCheckpoint files ----------------------------------------------------------------------------------


@pytest.mark.tf
def test_keras_weights_files_from_model_checkpoint(tmp_path: Path) -> None:
    """model.fit with ModelCheckpoint(save_weights_only) writes w-01.weights.h5 ...: each holds the optimizer's
    iterations, the step; the norms are those of the weights Keras held at each epoch's end. Weights saved without
    an optimizer take the number in their name."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
    model.compile(optimizer="sgd", loss="mse")
    held: list[dict[str, np.ndarray]] = []
    steps: list[int] = []

    def keep(epoch: int, logs: Any) -> None:
        held.append({v.path: v.numpy() for v in model.weights})
        steps.append(int(model.optimizer.iterations.numpy()))

    fitted = tmp_path / "fitted"
    save = keras.callbacks.ModelCheckpoint(str(fitted / "w-{epoch:02d}.weights.h5"), save_weights_only=True)
    x = np.random.RandomState(1).rand(8, 3).astype("float32")
    model.fit(x, x[:, :2], epochs=3, batch_size=4, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=keep), save])
    data = history_json(str(fitted))
    assert [c["step"] for c in data["checkpoints"]] == steps == [2, 4, 6]
    assert {c["step_source"] for c in data["checkpoints"]} == {"iterations"}
    assert {c["format"] for c in data["checkpoints"]} == {"keras-weights"}
    assert {s["name"] for s in data["variables"]} == set(held[0])
    for s in data["variables"]:
        assert all(_close(a, _norm(h[s["name"]])) for a, h in zip(s["norm"], held, strict=True)), s["name"]
    bare = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
    (tmp_path / "bare").mkdir()
    for n in (10, 5):
        bare.save_weights(str(tmp_path / "bare" / f"a-{n}.weights.h5"))
    data = history_json(str(tmp_path / "bare"))
    assert [(c["name"], c["step"], c["step_source"]) for c in data["checkpoints"]] == [
        ("a-5.weights.h5", 5, "name"), ("a-10.weights.h5", 10, "name")]
    assert next(f for f in data["findings"] if f["kind"] == "never-changed")["names"] == ["m/d/bias", "m/d/kernel"]


# --- misuse ---------------------------------------------------------------------------------------------------------


def test_not_a_directory_and_empty_directory_exit_2(tmp_path: Path) -> None:
    missing = history(str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "no such directory" in missing.stderr
    f = tmp_path / "file"
    f.write_text("x")
    assert history(str(f)).exit_code == 2
    empty = history(str(tmp_path))
    assert empty.exit_code == 2 and "no checkpoint in this directory" in empty.stderr
    assert "Traceback" not in empty.output


def test_unknown_kind_exits_2() -> None:
    result = history(str(Path(__file__).parents[1] / "fixtures" / "tf1"), "--kind", "gradients")
    assert result.exit_code == 2 and "'gradients' is not one of" in result.output


@pytest.mark.tf
def test_jobs_give_the_same_report(keras_run: Run) -> None:
    one = history_json(str(keras_run.directory), "--jobs", "1", code=1)
    three = history_json(str(keras_run.directory), "--jobs", "3", code=1)
    assert one == three


# --- the page, drawn by a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    dom: str
    console: list[str]  # the page's console messages (errors among them)
    requests: list[str]  # URLs the page asked the network for


def _page_requests(netlog: Path) -> list[str]:
    """The URLs a page requested, from Chromium's own network log: requests a page starts carry its origin as
    initiator ("null" for a file: page); the browser's own (time, components, accounts) carry "not an origin"."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    """Headless Chromium: the page's DOM after its scripts ran, its console, and what it asked the network for
    (through a proxy that refuses every connection: nothing leaves the machine)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page is not rendered")
    runs = iter(range(100))

    def render(page: Path, *extra: str) -> Rendered:
        n = next(runs)
        netlog = tmp_path / f"net{n}.json"
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             f"--user-data-dir={tmp_path / f'profile{n}'}", "--proxy-server=http://127.0.0.1:1",
             f"--log-net-log={netlog}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
             *(extra or ("--dump-dom",)), page.as_uri()],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
        return Rendered(done.stdout, console, _page_requests(netlog))

    return render


@pytest.mark.tf
def test_page_draws_the_heatmap_and_markers_offline(keras_run: Run, tmp_path: Path, browser: Any) -> None:
    page = tmp_path / "run.html"
    result = history(str(keras_run.directory), "--html", str(page))
    assert result.exit_code == 1 and page.is_file()
    # The instruments work: a page loading an outside image and stylesheet and failing a script is seen doing so.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png"><link rel="stylesheet" '
                       'href="https://fonts.example.invalid/css"><script>nosuch();</script></body></html>')
    seen = browser(control)
    assert sorted(seen.requests) == ["http://example.invalid/x.png", "https://fonts.example.invalid/css"]
    assert any("nosuch is not defined" in line for line in seen.console)
    drawn = browser(page)
    assert drawn.requests == []  # no request left the page
    assert drawn.console == []  # no error, no warning (a blocked request would be one)
    dom = drawn.dom
    assert 'data-ready="1"' in dom  # its script ran to the end
    heatmap = dom[dom.index('id="heatmap"'):dom.index("</svg>", dom.index('id="heatmap"'))]
    # Layers x checkpoints cells; the frozen layer's row grey after the first checkpoint and marked; a cross where
    # NaN/Inf began, in out's row at INF_STEP's column.
    assert heatmap.count('class="cell') == 3 * SAVES
    rows = {name: heatmap[heatmap.index(f'data-name="{name}"'):] for name in ("seq/frozen", "seq/out")}
    rows = {name: row[:row.index("</g>")] for name, row in rows.items()}
    assert "frozen-mark" in rows["seq/frozen"] and rows["seq/frozen"].count('fill="#d9dde3"') == SAVES - 1
    assert "frozen-mark" not in rows["seq/out"] and rows["seq/out"].count("nan-start") == 1
    before_cross = rows["seq/out"][:rows["seq/out"].index("nan-start")]
    assert before_cross.rfind('data-col="') == before_cross.rfind(f'data-col="{INF_STEP // SAVE_EVERY - 1}"')
    for chart in ("norms", "norms-relative"):  # a line per layer, the frozen one grey; a red line where NaN began
        svg = dom[dom.index(f'id="{chart}"'):dom.index("</svg>", dom.index(f'id="{chart}"'))]
        assert svg.count('<g class="line') == 3 and svg.count('<g class="line frozen"') == 1 and "nan-line" in svg
    assert f"NaN/Inf first appear at step {INF_STEP}" in dom
    shot = tmp_path / "shot.png"
    taken = browser(page, f"--screenshot={shot}", "--window-size=1100,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and taken.requests == []


@pytest.mark.tf
def test_a_variable_name_two_tensors_hold_follows_each_by_its_key() -> None:
    """fixtures/tf2 holds two Dense layers whose variables are both saved as `kernel` and `bias`: each of the four
    weights is followed (by its key), none dropped, each norm as TensorFlow reads the values."""
    import tensorflow as tf

    fixture = Path(__file__).parents[1] / "fixtures" / "tf2"
    data = history_json(str(fixture))
    prefix = tf.train.latest_checkpoint(str(fixture))
    reader = tf.train.load_checkpoint(prefix)
    weights = {k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_trainable_variables/")}
    assert len(weights) == 4
    follows = {s["name"]: s for s in data["variables"]}
    assert set(follows) == weights
    for key in weights:
        assert math.isclose(follows[key]["norm"][0], float(np.linalg.norm(reader.get_tensor(key))), rel_tol=1e-6)
