"""`ckptcheck generate`: initializer specs, what gets written, and determinism (same seed, same bits)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import UsageError
from ckptcheck.lab.generate import GENERATE_FORMATS
from ckptcheck.lab.initializers import EXAMPLES, parse_plan, parse_spec
from ckptcheck.lab.roundtrip import same_bits

pytestmark = pytest.mark.tf  # every test here builds or restores models

runner = CliRunner()
TINY = ("--layers", "4,2", "--inputs", "3", "--train-steps", "2")


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def stored(location: str) -> dict[str, np.ndarray]:
    with ckptcheck.open_checkpoint(location) as reader:
        return {t.name: reader.read(t.name) for t in reader.tensors()}


def generate_json(out: Path, *args: str) -> dict[str, Any]:
    result = run("generate", str(out), *args, "--json")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


# --- initializer specs (no TensorFlow) ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [s.strip() for s in EXAMPLES.split(", ")])
def test_every_documented_spec_parses_and_prints_back(spec: str) -> None:
    parsed = parse_spec(spec)
    assert parse_spec(parsed.text()) == parsed


def test_spec_arguments_and_defaults() -> None:
    assert dict(parse_spec("constant:0.5").args) == {"value": 0.5}
    assert dict(parse_spec("truncated_normal:stddev=0.1").args) == {"mean": 0.0, "stddev": 0.1}
    assert dict(parse_spec("random_uniform:minval=-1,maxval=1").args) == {"minval": -1.0, "maxval": 1.0}
    assert parse_spec("glorot_uniform").args == ()


def test_plan_roles() -> None:
    plan = parse_plan(["kernel=random_normal:mean=0,stddev=0.05", "bias=constant:0.1"])
    assert plan.kernel.name == "random_normal" and dict(plan.bias.args) == {"value": 0.1}
    both = parse_plan(["ones"])
    assert both.kernel == both.bias == parse_spec("ones")
    assert parse_plan(["kernel=zeros"]).bias.name == "zeros"  # unset roles keep the default


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["bogus"], "unknown initializer 'bogus'"),
        (["constant:abc"], "value must be a number"),
        (["random_normal:sigma=1"], "random_normal takes mean, stddev, not 'sigma'"),
        (["random_uniform:minval=1,maxval=-1"], "minval must be below maxval"),
        (["identity"], "identity is defined only for matrices"),
        (["zeros", "ones"], "give one SPEC for all variables"),
        (["kernel=zeros", "kernel=ones"], "given twice"),
    ],
)
def test_bad_specs_are_usage_errors(specs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_plan(specs)


def test_cli_bad_init_exits_2_listing_the_valid_specs(tmp_path: Path) -> None:
    result = run("generate", str(tmp_path / "out"), "--format", "tf2", "--init", "glorot_unifrom")
    assert result.exit_code == 2
    assert "unknown initializer 'glorot_unifrom'" in result.stderr
    for name in ("constant:0.5", "glorot_uniform", "he_normal", "orthogonal", "identity"):
        assert name in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "tf3"), "cannot generate format 'tf3'"),
        (("--format", "tf2", "--optimizer", "rmsprop"), "unknown optimizer 'rmsprop'"),
        (("--format", "tf2", "--layers", "4,x"), "--layers '4,x'"),
        (("--format", "tf2", "--train-steps", "-1"), "--train-steps cannot be negative"),
    ],
)
def test_cli_bad_options_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run("generate", str(tmp_path / "out"), *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr


def test_missing_tensorflow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises ImportError
    result = run("generate", str(tmp_path / "out"), "--format", "tf1", *TINY)
    assert result.exit_code == 2
    assert "pip install 'ckptcheck[tf]'" in result.stderr


def test_reading_commands_never_import_tensorflow() -> None:
    code = ("import sys, ckptcheck.cli, ckptcheck.lab.generate, ckptcheck.lab.roundtrip, ckptcheck.lab.initializers; "
            "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- what generate writes -----------------------------------------------------------------------------------------


def test_generate_reports_files_and_tensors(tmp_path: Path) -> None:
    data = generate_json(tmp_path / "tf1", "--format", "tf1", "--optimizer", "sgd", *TINY)
    assert data["schema"] == "ckptcheck.generate/1"
    assert data["location"] == str(tmp_path / "tf1" / "model.ckpt-2")
    names = sorted(Path(f["path"]).name for f in data["files"])
    assert names == ["checkpoint", "model.ckpt-2.data-00000-of-00001", "model.ckpt-2.index", "model.ckpt-2.meta"]
    assert all(f["bytes"] == Path(f["path"]).stat().st_size for f in data["files"])
    assert {t["name"]: t["shape"] for t in data["tensors"]} == {
        "dense/kernel": [3, 4], "dense/bias": [4], "dense_1/kernel": [4, 2], "dense_1/bias": [2], "global_step": []}
    assert len(data["losses"]) == 2
    assert stored(data["location"])["global_step"] == 2
    # The model_dir works as Estimator's did: the state file names the checkpoint, relative to the directory.
    assert 'model_checkpoint_path: "model.ckpt-2"' in (tmp_path / "tf1" / "checkpoint").read_text()


def test_generate_text_output(tmp_path: Path) -> None:
    result = run("generate", str(tmp_path / "w.weights.h5"), "--format", "keras-weights", *TINY)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "w.weights.h5").is_file()  # a file name with the format's suffix is used as given
    assert "wrote keras-weights" in result.stdout
    assert "layers/dense/vars/0" in result.stdout
    assert "loss" in result.stdout


def test_train_steps_zero_saves_the_initializers_values(tmp_path: Path) -> None:
    data = generate_json(tmp_path / "k", "--format", "keras", "--layers", "3,3", "--inputs", "3",
                         "--train-steps", "0", "--init", "kernel=identity:gain=2", "--init", "bias=constant:0.25")
    values = stored(data["location"])
    assert np.array_equal(values["layers/dense/vars/0"], 2 * np.eye(3, dtype=np.float32))
    assert np.array_equal(values["layers/dense_1/vars/1"], np.full(3, 0.25, dtype=np.float32))
    assert data["losses"] == []


@pytest.mark.parametrize("fmt", GENERATE_FORMATS)
def test_same_seed_same_bits(tmp_path: Path, fmt: str) -> None:
    """A random initializer, a trained model and its optimizer state: twice the same seed gives the same bits."""
    args = ("--format", fmt, "--init", "kernel=glorot_uniform", "--init", "bias=random_normal:stddev=0.1",
            "--seed", "3", *TINY)
    first = stored(generate_json(tmp_path / "a", *args)["location"])
    second = stored(generate_json(tmp_path / "b", *args)["location"])
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert same_bits(value, second[name]), name
    kernels = [v for v in first.values() if v.ndim == 2]
    assert len({k.tobytes() for k in kernels}) == len(kernels)  # every variable drew its own values


def test_another_seed_other_values(tmp_path: Path) -> None:
    args = ("--format", "tf2", "--init", "kernel=he_normal", *TINY)
    a = stored(generate_json(tmp_path / "a", *args, "--seed", "1")["location"])
    b = stored(generate_json(tmp_path / "b", *args, "--seed", "2")["location"])
    kernel = "optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"
    assert not np.array_equal(a[kernel], b[kernel])


def test_tensorflow_start_up_lines_stay_off_stderr(tmp_path: Path) -> None:
    """TensorFlow writes its C++ start-up lines to file descriptor 2 before any log level applies; a fresh
    process running `generate` must show none of them (one real subprocess: the import happens once)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "ckptcheck", "generate", str(tmp_path / "out"), "--format", "tf2", "--layers", "2",
         "--inputs", "2", "--train-steps", "0"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "InitializeLog" not in proc.stderr and "oneDNN" not in proc.stderr, proc.stderr
