"""The command line at a terminal and in pipes: closed pipes, help, sorting, summaries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ckptcheck.cli import app

runner = CliRunner()
REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def many_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Keras 3 .weights.h5 of 6,000 small datasets: every listing (even of names alone, ~150 KB) far larger than
    a pipe's buffer (64 KiB)."""
    path = str(tmp_path_factory.mktemp("many") / "many.weights.h5")
    with h5py.File(path, "w") as f:
        for i in range(6000):
            f.create_dataset(f"layers/dense_{i}/vars/0", data=np.full((2, 3), i, dtype=np.float32))
    return path


def _read_a_little_then_close(*args: str) -> tuple[bytes, int, bytes]:
    """Run `python -m ckptcheck ARGS` with stdout a real pipe, read its first bytes and close the pipe, as `head`
    does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ckptcheck", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, bufsize=0)  # unbuffered: read 20 bytes, no more
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(20)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return first, proc.wait(timeout=120), err


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
@pytest.mark.parametrize("extra", [[], ["--json"], ["--stats"]])
def test_pipe_closed_early_stops_quietly_like_ls(many_weights: str, extra: list[str]) -> None:
    """`ckptcheck inspect X | head`: no message, and the process ends as `ls | head` ends, by SIGPIPE."""
    first, code, err = _read_a_little_then_close("inspect", many_weights, *extra)
    assert first  # it did write
    assert err == b""
    assert code == -signal.SIGPIPE
    ls = subprocess.Popen(["ls", "-laR", "/usr"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert ls.stdout is not None
    ls.stdout.read(20)
    ls.stdout.close()
    assert ls.wait(timeout=120) == code


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
def test_manifest_and_diff_into_a_closed_pipe(many_weights: str) -> None:
    for args in (["manifest", many_weights], ["diff", many_weights, many_weights, "--unchanged"]):
        _first, code, err = _read_a_little_then_close(*args)
        assert (err, code) == (b"", -signal.SIGPIPE), args


# --- help and completion ----------------------------------------------------------------------------------------


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    return dict(group.commands)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_parameter_shows_the_help_written_for_it() -> None:
    """Arguments and options alike: the help text given in cli.py is in `COMMAND --help`."""
    commands = _commands()
    assert "inspect" in commands
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        shown = _words(result.stdout)
        for param in command.params:
            help_text = getattr(param, "help", None)
            if not help_text or getattr(param, "hidden", False):
                continue
            assert _words(help_text) in shown, (name, param.name)
    arguments = _words(runner.invoke(app, ["inspect", "--help"]).stdout)
    assert "PATH Checkpoint prefix, .index/.data file, model_dir" in arguments


def test_dash_h_is_help_everywhere() -> None:
    assert runner.invoke(app, ["-h"]).stdout == runner.invoke(app, ["--help"]).stdout
    for name in _commands():
        short, long = runner.invoke(app, [name, "-h"]), runner.invoke(app, [name, "--help"])
        assert (short.exit_code, short.stdout) == (0, long.stdout), name
        assert "-h, --help" in long.stdout, name


def test_manifest_json_option_is_gone_from_help_but_still_accepted(tmp_path: Path) -> None:
    assert "--json" not in runner.invoke(app, ["manifest", "--help"]).stdout
    fixture = str(REPO / "fixtures" / "tf2")
    plain, with_json = (runner.invoke(app, ["manifest", fixture, *extra]) for extra in ([], ["--json"]))
    assert plain.exit_code == with_json.exit_code == 0
    assert plain.stdout == with_json.stdout
    assert json.loads(plain.stdout)["schema"] == "ckptcheck.manifest/2"


@pytest.mark.parametrize("schema", [None, "ckptcheck.manifest/1"])
def test_manifest_without_schema_still_loads(tmp_path: Path, schema: str | None) -> None:
    """Manifests written before the schema field (manifest_version only), and manifest/1 ones (no variables),
    verify as before: paired by key, with a note saying so."""
    golden = json.loads((REPO / "fixtures" / "keras.manifest.json").read_text())
    assert golden.pop("schema") == "ckptcheck.manifest/2"
    golden["manifest_version"] = 1
    for record in golden["tensors"].values():
        del record["variable"], record["kind"]
    if schema is not None:
        golden["schema"] = schema
    old = tmp_path / "old.manifest.json"
    old.write_text(json.dumps(golden))
    result = runner.invoke(app, ["verify", str(REPO / "fixtures" / "keras"), "--against", str(old)])
    assert result.exit_code == 0, result.output
    assert f"matches {old}" in result.stdout and "paired by key" in result.stdout


def test_other_ckptcheck_json_is_not_taken_for_a_manifest(tmp_path: Path) -> None:
    listing = tmp_path / "listing.json"
    listing.write_text(runner.invoke(app, ["inspect", str(REPO / "fixtures" / "tf2"), "--json"]).stdout)
    result = runner.invoke(app, ["verify", str(REPO / "fixtures" / "tf2"), "--against", str(listing)])
    assert result.exit_code == 2
    assert "this is ckptcheck.inspect/2 output, not a manifest" in result.stderr


def test_verify_tolerances_speak_of_the_manifest() -> None:
    text = _words(runner.invoke(app, ["verify", "--help"]).stdout)
    assert "B's" not in text
    assert "relative tolerance, of the manifest's value" in text


def test_shell_completion_is_offered_and_completes() -> None:
    """`--install-completion`/`--show-completion` exist; the shell's completion request answers with options."""
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout
    env = {**os.environ, "PYTHONPATH": str(REPO), "_CKPTCHECK_COMPLETE": "complete_bash",
           "COMP_WORDS": "ckptcheck inspect --st", "COMP_CWORD": "2"}
    script = "import sys; sys.argv[0] = 'ckptcheck'; from ckptcheck.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--stats"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "ckptcheck re", "1"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split() == ["restore-check"]


# --- order and sorting ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbered_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A TF2 checkpoint whose keys sort dense_1, dense_10, dense_2 byte by byte (as TensorFlow lists them)."""
    import tensorflow as tf

    variables = {f"dense_{i}": tf.Variable(tf.zeros([i + 1])) for i in (1, 2, 10)}
    return str(tf.train.Checkpoint(**variables).write(str(tmp_path_factory.mktemp("numbered") / "ckpt")))


def _table_names(text: str, first_header: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header)) + 2
    names = []
    for line in lines[start:]:
        if not line.strip():
            break
        names.append(line.split()[0])
    return names


def test_inspect_lists_in_natural_order_or_by_size(numbered_bundle: str) -> None:
    import tensorflow as tf

    tf_order = [name for name, _ in tf.train.list_variables(numbered_bundle)]
    assert tf_order.index("dense_10/.ATTRIBUTES/VARIABLE_VALUE") < tf_order.index("dense_2/.ATTRIBUTES/VARIABLE_VALUE")
    natural = ["_CHECKPOINTABLE_OBJECT_GRAPH", "dense_1/.ATTRIBUTES/VARIABLE_VALUE",
               "dense_2/.ATTRIBUTES/VARIABLE_VALUE", "dense_10/.ATTRIBUTES/VARIABLE_VALUE"]
    assert sorted(tf_order) == sorted(natural)
    text = runner.invoke(app, ["inspect", numbered_bundle]).stdout
    assert _table_names(text, "name") == natural
    data = json.loads(runner.invoke(app, ["inspect", numbered_bundle, "--json"]).stdout)
    assert [t["name"] for t in data["tensors"]] == natural
    by_size = json.loads(runner.invoke(app, ["inspect", numbered_bundle, "--json", "--sort", "size"]).stdout)
    sizes = [t["nbytes"] for t in by_size["tensors"]]
    assert sizes == sorted(sizes, reverse=True) and by_size["tensors"][1]["name"].startswith("dense_10/")
    assert runner.invoke(app, ["inspect", numbered_bundle, "--sort", "bogus"]).exit_code == 2


@pytest.fixture(scope="module")
def weights_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, float]]:
    """Two .weights.h5 files: dense_1, dense_2, dense_10 changed by different amounts, dense_3 and dense_20 equal,
    and the largest absolute difference of each changed tensor as numpy computes it."""
    base = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(0)
    a = {i: rng.standard_normal((3, 4)).astype(np.float32) for i in (1, 2, 3, 10, 20)}
    b = dict(a)
    b[1] = a[1] + np.float32(0.01)
    b[2] = a[2] * np.float32(3.0)
    b[10] = a[10].copy()
    b[10][0, 0] += np.float32(0.5)
    paths = []
    for label, values in (("a", a), ("b", b)):
        path = str(base / f"{label}.weights.h5")
        with h5py.File(path, "w") as f:
            for i, v in values.items():
                f.create_dataset(f"layers/dense_{i}/vars/0", data=v)
        paths.append(path)
    largest = {f"layers/dense_{i}/vars/0": float(np.abs(b[i].astype(np.float64) - a[i]).max()) for i in (1, 2, 10)}
    return paths[0], paths[1], largest


def test_diff_natural_order_and_largest_change_first(weights_pair: tuple[str, str, dict[str, float]]) -> None:
    a, b, largest = weights_pair
    text = runner.invoke(app, ["diff", a, b]).stdout
    assert _table_names(text, "changed") == ["layers/dense_1/vars/0", "layers/dense_2/vars/0", "layers/dense_10/vars/0"]
    by_change = runner.invoke(app, ["diff", a, b, "--sort", "change", "--json"])
    assert by_change.exit_code == 1
    names = [c["name"] for c in json.loads(by_change.stdout)["changed"]]
    assert names == sorted(largest, key=lambda n: -largest[n])
    assert _table_names(runner.invoke(app, ["diff", a, b, "--sort", "change"]).stdout, "changed") == names


def test_diff_names_the_unchanged(weights_pair: tuple[str, str, dict[str, float]]) -> None:
    a, b, _ = weights_pair
    text = runner.invoke(app, ["diff", a, b]).stdout
    assert "unchanged: 2 tensors, equal in A and B (--unchanged lists them)" in text
    listed = runner.invoke(app, ["diff", a, b, "--unchanged"]).stdout
    assert _table_names(listed, "unchanged") == ["layers/dense_3/vars/0", "layers/dense_20/vars/0"]
    same = runner.invoke(app, ["diff", a, a, "--unchanged"])
    assert same.exit_code == 0 and _table_names(same.stdout, "unchanged")[-1] == "layers/dense_20/vars/0"


# --- consistency ------------------------------------------------------------------------------------------------


def _header_columns(text: str) -> set[int]:
    """Where the value starts on each `key: value` line of the header (up to the first blank line)."""
    starts = set()
    for line in text.split("\n\n", 1)[0].splitlines():
        if not line.startswith(" "):
            key, _, rest = line.partition(":")
            starts.add(len(key) + 1 + len(rest) - len(rest.lstrip(" ")))
    return starts


@pytest.mark.parametrize("key", ["keras-h5", "keras-sharded", "keras"])
def test_header_values_share_one_column(keras_files: dict[str, Path], key: str) -> None:
    text = runner.invoke(app, ["inspect", str(keras_files[key])]).stdout
    long_keys = [line.split(":")[0] for line in text.split("\n\n", 1)[0].splitlines()
                 if not line.startswith(" ") and len(line.split(":")[0]) > 8]
    assert long_keys or key == "keras", text  # optimizer:, declared_total_size:
    assert len(_header_columns(text)) == 1, text


def test_progress_bar_counts_binary_units() -> None:
    """The verify bar says MiB, as the result line does (rich says MB unless told)."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from ckptcheck.console import byte_columns

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with Progress(*byte_columns("verify"), console=console, auto_refresh=False) as bar:
        task = bar.add_task("verify", total=3 << 20)
        bar.update(task, completed=3 << 19)
        bar.refresh()
    shown = buffer.getvalue()
    assert "1.5/3.0 MiB" in shown and " MB" not in shown


_FLOAT_TYPES = ["float16", "bfloat16", "float32", "float64"]


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=-6e4, max_value=6e4, allow_nan=False, allow_subnormal=False),
       dtype=st.sampled_from(_FLOAT_TYPES))
def test_constant_note_prints_the_value_as_the_columns_do(value: float, dtype: str) -> None:
    import ml_dtypes

    from ckptcheck.render.tables import number
    from ckptcheck.stats import stats_of_chunks

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    stored = np.full(6, value, dtype=np.float64).astype(np_dtype)
    chunk = stored.astype(np.float32) if dtype == "bfloat16" else stored
    s = stats_of_chunks("t", dtype, [chunk])
    if s.min == 0:
        assert s.note == "all zeros"
    else:
        assert s.note == f"constant {number(s.min)}" == f"constant {number(s.max)}"


def test_tolerance_messages_print_what_tells_values_apart(tmp_path: Path) -> None:
    """verify --against with a tolerance: a drifted statistic prints with the digits that tell it apart and the
    allowed difference, not 17-digit floats."""
    manifest = json.loads((REPO / "fixtures" / "keras.manifest.json").read_text())
    name = "layers/dense/vars/0"
    stats = manifest["tensors"][name]["stats"]
    stats["mean"] = stats["mean"] * (1 + 1e-7)
    manifest["tensors"][name]["sha256"] = "0" * 64
    drifted = tmp_path / "drifted.manifest.json"
    drifted.write_text(json.dumps(manifest))
    result = runner.invoke(app, ["verify", str(REPO / "fixtures" / "keras"), "--against", str(drifted),
                                 "--atol", "1e-12"])
    assert result.exit_code == 1, result.output
    variable = manifest["tensors"][name]["variable"]  # the line names the variable, not the key
    line = next(line for line in result.stdout.splitlines() if variable in line)
    assert "values changed beyond tolerance: mean" in line and "allowed 1e-12" in line
    assert not re.search(r"\d\.\d{15,}", line), line
    before, after = re.search(r"mean (\S+) -> (\S+)", line).groups()  # type: ignore[union-attr]
    assert before != after and float(before) > float(after)  # the manifest (expected) first


# --- the architecture table and inspect --all -------------------------------------------------------------------


def _architecture_lines(text: str) -> list[str]:
    block = next(b for b in text.split("\n\n") if b.startswith("architecture ("))
    return block.splitlines()


def _config_layers(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    return [layer["config"]["name"] for layer in config["config"]["layers"]]


def test_architecture_follows_filter_and_can_be_turned_off(keras_files: dict[str, Path]) -> None:
    path = str(keras_files["keras"])
    everything = _config_layers(keras_files["keras"])
    assert "half" in everything and len(everything) > 2
    lines = _architecture_lines(runner.invoke(app, ["inspect", path, "--filter", "half"]).stdout)
    assert f"(1 of {len(everything)} layers shown)" in lines[0]
    assert [line.split()[0] for line in lines[3:] if not line.startswith("(")] == ["half"]
    # A legacy .h5 names tensors by layer: a pattern matching only tensor names selects the layers holding them.
    legacy = str(keras_files["keras-h5"])
    lines = _architecture_lines(runner.invoke(app, ["inspect", legacy, "--filter", "out/*"]).stdout)
    assert [line.split()[0] for line in lines[3:] if not line.startswith("(")] == ["out"]
    off = runner.invoke(app, ["inspect", path, "--no-config"]).stdout
    assert "architecture (" not in off and "layers/dense/vars/0" in off
    assert inspect_json_arch(path) == inspect_json_arch(path, "--no-config")  # JSON keeps it whole


def inspect_json_arch(*args: str) -> object:
    return json.loads(runner.invoke(app, ["inspect", *args, "--json"]).stdout)["architecture"]


@pytest.mark.parametrize("key", ["keras", "keras-h5", "keras-lambda", "keras-npz"])
def test_architecture_table_stays_narrow_and_cuts_configs(keras_files: dict[str, Path], key: str) -> None:
    from ckptcheck.render.inspect import ARCHITECTURE_WIDTH

    path = str(keras_files[key])
    lines = _architecture_lines(runner.invoke(app, ["inspect", path]).stdout)
    table_lines = [line for line in lines[1:] if not line.startswith(("(", "WARNING", "  - "))]
    assert max(len(line) for line in table_lines) <= ARCHITECTURE_WIDTH, "\n".join(lines)
    whole = {layer["name"]: ", ".join(f"{k}={v}" for k, v in layer["config"].items())
             for layer in inspect_json_arch(path)["layers"]}  # type: ignore[index]
    start = table_lines[0].index("config")
    for line in table_lines[2:]:
        name, shown = line.split()[0], line[start:]
        if shown.endswith(" ..."):
            assert whole[name].startswith(shown[:-4]) and len(whole[name]) > len(shown) - 4
        else:
            assert shown == whole[name]


def test_inspect_all_names_every_column(manager_dir: Path) -> None:
    lines = runner.invoke(app, ["inspect", str(manager_dir), "--all"]).stdout.splitlines()
    header, rule = lines[0], lines[1]
    columns = [len(dashes) for dashes in rule.split("  ")]
    cells, at = [], 0
    for width in columns:
        cells.append(header[at:at + width].strip())
        at += width + 2
    assert all(cells) and cells == ["step", "checkpoint", "present", "latest", "state file"]
    assert lines[-1].rstrip().endswith("yes") and "latest" not in "\n".join(lines[2:])
