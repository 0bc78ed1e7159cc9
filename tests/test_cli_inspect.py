"""`ckptcheck inspect` driven in-process through Typer's CliRunner; TensorFlow builds the inputs."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def demo_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tf.train.Checkpoint with a constant kernel, zero bias, a NaN/Inf tensor, a bool, a string and a step."""
    import tensorflow as tf

    prefix = str(tmp_path_factory.mktemp("demo") / "ckpt")
    ckpt = tf.train.Checkpoint(
        kernel=tf.Variable(tf.constant(0.5, shape=[4, 3])),
        bias=tf.Variable(tf.zeros([3])),
        odd=tf.Variable(np.array([1.0, np.nan, np.inf, -np.inf, 3.0], dtype=np.float32)),
        flags=tf.Variable([True, True]),
        words=tf.Variable(["héllo", ""]),
        step=tf.Variable(7, dtype=tf.int64),
    )
    return str(ckpt.write(prefix))


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ckptcheck {ckptcheck.__version__}"


def test_every_command_has_help_and_documentation() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert "inspect" in commands
    for name in commands:
        result = run(name, "--help")
        assert result.exit_code == 0, name
        if name != "manifest":  # its output is JSON (with a schema field) whatever is asked
            assert "--json" in result.stdout, f"{name} has no --json"
        assert f"### `ckptcheck {name}" in readme, f"{name} is not documented in README.md"


@pytest.mark.tf
def test_a_command_alone_parses_and_helps_as_the_whole_app(demo_ckpt: str) -> None:
    """main() builds only the command named (Typer builds every command's parameters at each start): its help, its
    errors and its output are the whole app's."""
    from ckptcheck.cli import _app_for

    commands = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    for name in commands:
        for args in ([name, "--help"], [name], [name, "--no-such-option"], [name, demo_ckpt, "--json"]):
            if name in ("generate", "roundtrip", "explain", "restore-check") and "-" not in args[-1][:1]:
                continue  # (these would train models)
            one, whole = runner.invoke(_app_for(args), args), runner.invoke(app, args)
            assert (one.exit_code, one.stdout, one.stderr) == (whole.exit_code, whole.stdout, whole.stderr), args
        assert len(_app_for([name]).registered_commands) == 1
    for args in ([], ["--help"], ["nonesuch"], ["--version"]):
        assert _app_for(args) is app


@pytest.mark.tf
def test_inspect_table_header_and_rows(demo_ckpt: str) -> None:
    result = run("inspect", demo_ckpt)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "format:   tf2" in out
    assert "shards:   1" in out
    assert "tensors:  7," in out
    # The variable column follows the key: TensorFlow names an unnamed tf.Variable "Variable".
    assert re.search(r"kernel/\.ATTRIBUTES/VARIABLE_VALUE +Variable +float32", out)
    assert "[4, 3]" in out and "48 B" in out


@pytest.mark.tf
def test_inspect_json_matches_library(demo_ckpt: str) -> None:
    data = run_json("inspect", demo_ckpt)
    assert data["schema"] == "ckptcheck.inspect/2"
    assert data["format"] == "tf2"
    listed = ckptcheck.list_tensors(demo_ckpt)
    assert [t["name"] for t in data["tensors"]] == [t.name for t in listed]
    by_name = {t["name"]: t for t in data["tensors"]}
    assert by_name["words/.ATTRIBUTES/VARIABLE_VALUE"]["dtype"] == "string"
    assert by_name["step/.ATTRIBUTES/VARIABLE_VALUE"]["shape"] == []
    assert by_name["kernel/.ATTRIBUTES/VARIABLE_VALUE"]["nbytes"] == 48
    assert data["total_bytes"] == sum(t["nbytes"] for t in data["tensors"])
    assert data["tensor_count"] == len(data["tensors"])


@pytest.mark.tf
def test_inspect_stats(demo_ckpt: str) -> None:
    data = run_json("inspect", demo_ckpt, "--stats")
    stats = {t["name"].split("/")[0]: t["stats"] for t in data["tensors"]}
    assert stats["kernel"]["note"] == "constant 0.5"
    assert stats["kernel"]["std"] == 0.0
    assert stats["bias"]["note"] == "all zeros"
    assert stats["flags"]["note"] == "all True"
    assert stats["step"]["note"] == "constant 7"
    odd = stats["odd"]
    assert (odd["nan"], odd["inf"], odd["count"]) == (1, 2, 5)
    assert (odd["min"], odd["max"], odd["mean"]) == (1.0, 3.0, 2.0)
    assert stats["words"]["min"] is None and stats["words"]["count"] == 2
    text = run("inspect", demo_ckpt, "--stats").stdout
    assert "constant 0.5" in text and "all zeros" in text


def test_inspect_stats_match_numpy_on_trained_model(tf1_model_dir: Path) -> None:
    data = run_json("inspect", str(tf1_model_dir), "--stats")
    with ckptcheck.open_checkpoint(str(tf1_model_dir)) as reader:
        for row in data["tensors"]:
            values = reader.read(row["name"])
            if values.dtype.kind != "f" or values.size == 0:
                continue
            wide = values.astype(np.float64)
            assert math.isclose(row["stats"]["mean"], wide.mean(), rel_tol=1e-9, abs_tol=1e-12), row["name"]
            assert math.isclose(row["stats"]["std"], wide.std(), rel_tol=1e-6, abs_tol=1e-12), row["name"]
            assert row["stats"]["min"] == wide.min() and row["stats"]["max"] == wide.max()


@pytest.mark.tf
def test_inspect_filter_glob_and_substring(demo_ckpt: str) -> None:
    names = [t["name"] for t in run_json("inspect", demo_ckpt, "--filter", "*kernel*")["tensors"]]
    assert names == ["kernel/.ATTRIBUTES/VARIABLE_VALUE"]
    names = [t["name"] for t in run_json("inspect", demo_ckpt, "--filter", "bia")["tensors"]]
    assert names == ["bias/.ATTRIBUTES/VARIABLE_VALUE"]
    result = run("inspect", demo_ckpt, "--filter", "nothing-like-this")
    assert result.exit_code == 0 and "(no tensors match)" in result.stdout


@pytest.mark.tf
def test_inspect_tensor_values(demo_ckpt: str) -> None:
    result = run("inspect", demo_ckpt, "--tensor", "kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert result.exit_code == 0
    assert result.stdout.startswith("kernel/.ATTRIBUTES/VARIABLE_VALUE: float32 [4, 3]")
    assert result.stdout.count("0.5") == 12
    data = run_json("inspect", demo_ckpt, "--tensor", "odd/.ATTRIBUTES/VARIABLE_VALUE")
    assert data["values"] == [1.0, "NaN", "Infinity", "-Infinity", 3.0]
    data = run_json("inspect", demo_ckpt, "--tensor", "words/.ATTRIBUTES/VARIABLE_VALUE")
    assert data["values"] == ["héllo", ""]


@pytest.mark.tf
def test_inspect_unknown_tensor_names_it(demo_ckpt: str) -> None:
    result = run("inspect", demo_ckpt, "--tensor", "kernel")
    assert result.exit_code == 2
    assert "tensor 'kernel'" in result.stderr and "did you mean kernel/.ATTRIBUTES/VARIABLE_VALUE" in result.stderr


def test_inspect_partitioned_variable_row(tf1_model_dir: Path) -> None:
    data = run_json("inspect", str(tf1_model_dir))
    assert data["format"] == "tf1"
    assert any(t["slices"] == 3 for t in data["tensors"])
    assert any(f.endswith(".meta") for f in data["files"])


def test_inspect_all_lists_state_file(manager_dir: Path) -> None:
    data = run_json("inspect", str(manager_dir), "--all")
    steps = [c["step"] for c in data["checkpoints"]]
    assert steps == sorted(steps) and len(steps) == 3
    assert [c["latest"] for c in data["checkpoints"]] == [False, False, True]
    assert all(c["exists"] for c in data["checkpoints"])
    assert "latest" in run("inspect", str(manager_dir), "--all").stdout


def test_inspect_objects_on_keras_checkpoint(keras_tf_checkpoint: str) -> None:
    data = run_json("inspect", keras_tf_checkpoint, "--objects")
    rows = [t for t in data["tensors"] if t["object_paths"]]
    assert rows, "no tensor has an object path"
    # Some stored tensor is reachable by more than one path: that is what --objects is for.
    assert any(len(t["object_paths"]) > 1 for t in rows)
    text = run("inspect", keras_tf_checkpoint, "--objects").stdout
    assert "object paths" in text


def test_inspect_objects_refused_for_tf1(tf1_model_dir: Path) -> None:
    result = run("inspect", str(tf1_model_dir), "--objects")
    assert result.exit_code == 2
    assert "--objects needs an object-based (TF2) checkpoint" in result.stderr


@pytest.mark.parametrize(
    ("make_path", "expected"),
    [
        (lambda tmp: tmp / "does-not-exist", "no such file or directory"),
        (lambda tmp: tmp, "no checkpoint in this directory"),
    ],
)
def test_inspect_bad_paths(tmp_path: Path, make_path: Any, expected: str) -> None:
    path = make_path(tmp_path)
    result = run("inspect", str(path))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.tf
def test_inspect_misuse_exits_2(demo_ckpt: str) -> None:
    assert run("inspect", demo_ckpt, "--all", "--stats").exit_code == 2
    assert run("inspect").exit_code == 2


def test_reading_commands_run_without_tensorflow(
    tf1_model_dir: Path, demo_ckpt: str, savedmodel_dir: Path, keras_files: dict[str, Path],
    tf1_v1_checkpoints: dict[str, Path], tmp_path: Path,
) -> None:
    """Reading commands (inspect, verify, manifest, diff, history, and export to safetensors and npz, whose
    outputs are read back the same way) never import TensorFlow or Keras: made to fail on import, they all still
    work (V1 checkpoints, single and sharded, included)."""
    paths = [str(tf1_model_dir), demo_ckpt, str(savedmodel_dir)] + [str(p) for p in keras_files.values()]
    paths += [str(tf1_v1_checkpoints["model_dir"]), str(tf1_v1_checkpoints["sharded"]),
              str(tf1_v1_checkpoints["dtypes"] / "model.ckpt")]
    assert str(keras_files["keras-npz"]) in paths  # a .keras whose weights are model.weights.npz
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})  # this tree's ckptcheck
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        sys.modules["keras"] = None
        from ckptcheck.cli import app
        def ok(args):
            try:
                code = app(args, standalone_mode=False)  # an error's exit code is returned, not raised
            except SystemExit as exc:
                code = exc.code
            assert not code, (args, code)
        def reads(path):
            for args in (["inspect", path], ["inspect", path, "--stats", "--json"], ["verify", path],
                         ["manifest", path], ["diff", path, path]):
                ok(args)
        for i, path in enumerate({paths!r}):
            reads(path)
            for suffix in (".safetensors", ".npz"):
                ok(["export", path, f"{tmp_path}/{{i}}{{suffix}}", "--names", "key", "--skip-unsupported"])
            reads(f"{tmp_path}/{{i}}.safetensors")
        ok(["history", {str(tf1_model_dir)!r}, "--json"])
        ok(["history", {str(tf1_model_dir)!r}, "--kind", "all", "--group", "--html", {os.devnull!r}])
        assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
        print("NO-TF-OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-TF-OK" in proc.stdout


def test_listing_and_verifying_bundles_import_no_numpy(
    tf1_model_dir: Path, demo_ckpt: str, savedmodel_dir: Path
) -> None:
    """numpy costs ~65 ms of start-up: `inspect` without --stats and `verify` without --against never need it (nor
    tabulate, ~25 ms, for tables of plain cells)."""
    paths = [str(tf1_model_dir), demo_ckpt, str(savedmodel_dir)]
    script = textwrap.dedent(
        f"""
        import sys
        from ckptcheck.cli import app
        for path in {paths!r}:
            for args in (["inspect", path], ["inspect", path, "--json"], ["verify", path]):
                try:
                    app(args, standalone_mode=False)
                except SystemExit as exc:
                    assert not exc.code, (args, exc.code)
        heavy = sorted(m for m in ("numpy", "h5py", "ml_dtypes", "rich", "tabulate") if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


@pytest.mark.tf
def test_python_m_entry_point(demo_ckpt: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "ckptcheck", "inspect", demo_ckpt, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "tf2"


def test_string_values_that_are_not_utf8(tmp_path: Path) -> None:
    """A literal backslash and a non-UTF-8 byte print differently: as Python literals in text ('a\\\\xea' against
    b'a\\xea'), and in JSON as a string against {"base64": ...}, which decodes to exactly the bytes TensorFlow
    reads."""
    import base64

    import tensorflow as tf

    stored = [b"a\\xea", b"a\xea", "héllo".encode(), b"\xff\x00"]
    prefix = tf.train.Checkpoint(texts=tf.Variable(stored)).write(str(tmp_path / "ckpt"))
    name = "texts/.ATTRIBUTES/VARIABLE_VALUE"
    text = run("inspect", prefix, "--tensor", name).stdout
    assert "['a\\\\xea', b'a\\xea', 'héllo', b'\\xff\\x00']" in text
    values = run_json("inspect", prefix, "--tensor", name)["values"]
    assert values == ["a\\xea", {"base64": "Yeo="}, "héllo", {"base64": "/wA="}]
    tf_values = list(tf.train.load_checkpoint(prefix).get_tensor(name))
    decoded = [base64.b64decode(v["base64"]) if isinstance(v, dict) else v.encode() for v in values]
    assert decoded == tf_values == stored


@pytest.mark.slow
def test_json_listing_of_100000_tensors_in_bounded_memory(tmp_path: Path) -> None:
    """`inspect --json` of a 100,000-entry index, piped: the rows are written as they are made and the names
    ordered a piece at a time (the whole text held, then copied to end it with a newline, and the order's split of
    every name at once, grew the process by ~114 MiB; ~67 MiB now). What it lists is what TensorFlow reads."""
    from index_writer import write_scalars
    from process_memory import peak_mib_above_start

    n = 100_000
    write_scalars(str(tmp_path / "many"), n)
    out = tmp_path / "listing.json"
    assert peak_mib_above_start(["inspect", str(tmp_path / "many"), "--json"], out) < 90  # (MiB)
    listing = json.loads(out.read_text(encoding="utf-8"))
    import tensorflow as tf

    shapes = tf.train.load_checkpoint(str(tmp_path / "many")).get_variable_to_shape_map()
    assert {t["name"]: t["shape"] for t in listing["tensors"]} == {k: list(v) for k, v in shapes.items()}
    assert [t["name"] for t in listing["tensors"][:12]] == (
        [f"layer_0/kernel_{i}" for i in range(10)] + ["layer_1/kernel_0", "layer_1/kernel_1"])
    assert listing["tensor_count"] == n and listing["summary"]["total"]["elements"] == n


def test_a_truncated_legacy_h5_is_one_error_not_notes_first(tmp_path: Path) -> None:
    """The safety scan runs before every command; a file HDF5 cannot open at all is the command's to report (once),
    not a note per config attribute first. `scan` names it unreadable."""
    import h5py

    source = Path(__file__).resolve().parents[1] / "fixtures" / "keras-h5" / "model.h5"
    cut = tmp_path / "cut.h5"
    cut.write_bytes(source.read_bytes()[:3000])
    with pytest.raises(OSError):
        h5py.File(cut, "r")  # the oracle: HDF5 itself cannot open it
    result = run("inspect", str(cut))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be opened as HDF5" in lines[0], lines
    scanned = run("scan", str(cut), "--json")
    assert scanned.exit_code == 2
    (entry,) = json.loads(scanned.stdout)["files"]
    assert entry["error"] and not entry["findings"]


@pytest.mark.tf
def test_inspect_objects_on_a_tf1_savedmodel_says_it_has_no_object_graph(tmp_path: Path) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    export = tmp_path / "export"
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        v1.get_variable("w", [2, 3], initializer=v1.ones_initializer())
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(export))
        builder.add_meta_graph_and_variables(session, ["serve"])
        builder.save()
    assert "w" in dict(tf.train.list_variables(str(export / "variables" / "variables")))  # TF1 keys: names
    result = run("inspect", str(export), "--objects")
    assert result.exit_code == 2
    assert "this SavedModel's variables have none" in result.stderr
    assert "this one is savedmodel" not in result.stderr
