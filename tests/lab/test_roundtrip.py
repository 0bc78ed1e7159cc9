"""`ckptcheck roundtrip`: every format restores bit for bit, and the facts match what TensorFlow and Keras write.

The facts are asserted against real files: the five formats are generated and round-tripped once per session.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app
from ckptcheck.lab.generate import GENERATE_FORMATS, TF2Model
from ckptcheck.lab.initializers import parse_plan
from ckptcheck.lab.reports import FACT_NAMES, GenerateOptions, RoundTripReport
from ckptcheck.lab.roundtrip import roundtrip, roundtrip_all
from ckptcheck.render.lab import roundtrip_dict, roundtrip_matrix

pytestmark = pytest.mark.tf  # every test here builds or restores models

runner = CliRunner()
TINY = ("--layers", "4,2", "--inputs", "3", "--train-steps", "2")
OPTIONS = GenerateOptions(format="tf1", layers=(4, 2), inputs=3, train_steps=2, optimizer="adam", seed=5,
                          init=parse_plan(["kernel=constant:0.5", "bias=zeros"]))


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(scope="session")
def reports() -> dict[str, RoundTripReport]:
    return {r.format: r for r in roundtrip_all(OPTIONS)}


@pytest.fixture(scope="session")
def facts(reports: dict[str, RoundTripReport]) -> dict[str, dict[str, Any]]:
    """The JSON each format's report renders to (what `roundtrip --json` prints), by format."""
    return {fmt: roundtrip_dict(r)["facts"] for fmt, r in reports.items()}


def recorded(facts: dict[str, dict[str, Any]], fact: str) -> set[str]:
    return {fmt for fmt, by_name in facts.items() if by_name[fact]["recorded"]}


# --- the experiment ---------------------------------------------------------------------------------------------


def test_every_format_restores_bit_for_bit(reports: dict[str, RoundTripReport]) -> None:
    assert set(reports) == set(GENERATE_FORMATS)
    for fmt, report in reports.items():
        assert report.ok, fmt
        assert report.generated and report.kept is None
        assert [r.label for r in report.runs] == ["sentinel", "reseeded"]
        for t in report.tensors:
            assert t.restored_exactly and t.problem is None, (fmt, t)
            assert t.max_abs_diff == (None if t.dtype == "string" else 0.0), (fmt, t)
        # The fresh models really held other values: the weights changed on restore in both of them.
        weights = [t for t in report.tensors if t.dtype == "float32" and len(t.shape) == 2]
        assert weights and all(t.differed_before == 2 for t in weights), fmt


def test_values_fact(facts: dict[str, dict[str, Any]]) -> None:
    assert recorded(facts, "values") == set(GENERATE_FORMATS)
    for by_name in facts.values():
        assert "restored bit for bit" in by_name["values"]["evidence"]
        assert "constant:-7.25" in by_name["values"]["evidence"]


def test_initializer_fact(facts: dict[str, dict[str, Any]]) -> None:
    assert recorded(facts, "initializer") == {"tf1", "keras", "keras-h5"}
    tf1 = facts["tf1"]["initializer"]
    assert all(w.startswith("model.ckpt-2.meta: ") for w in tf1["where"])
    assert "dense/kernel <- dense/kernel/Initializer/Const [Const 0.5 (all 12 elements)]" in tf1["evidence"]
    assert "dense/bias <- dense/bias/Initializer/zeros" in tf1["evidence"]
    assert "The bundle itself does not" in tf1["evidence"]
    assert "model.keras: config.json: dense.kernel_initializer" in facts["keras"]["initializer"]["where"]
    assert "dense.kernel_initializer = Constant(value=0.5)" in facts["keras"]["initializer"]["evidence"]
    assert "dense_1.bias_initializer = Zeros()" in facts["keras-h5"]["initializer"]["evidence"]
    assert "model.h5: model_config attribute: dense.kernel_initializer" in facts["keras-h5"]["initializer"]["where"]
    for fmt in ("tf2", "keras-weights"):
        fact = facts[fmt]["initializer"]
        assert fact["where"] == []
        assert "identical whatever the fresh model's initializer was" in fact["evidence"]


def test_optimizer_state_fact(facts: dict[str, dict[str, Any]]) -> None:
    assert recorded(facts, "optimizer_state") == set(GENERATE_FORMATS)  # Adam keeps m and v
    assert "dense/kernel/Adam" in facts["tf1"]["optimizer_state"]["where"]
    assert "ResourceApplyAdam" in facts["tf1"]["optimizer_state"]["evidence"]
    assert "optimizer/_momentums/0" in facts["tf2"]["optimizer_state"]["evidence"]
    assert "optimizer/vars/2" in facts["keras"]["optimizer_state"]["where"]
    assert "optimizer_weights/adam/sequential_dense_kernel_momentum" in facts["keras-h5"]["optimizer_state"]["where"]


def test_legacy_h5_optimizer_state_needs_more_than_load_weights(reports: dict[str, RoundTripReport]) -> None:
    """Keras's load_weights reads only model_weights from a legacy .h5; roundtrip measures it and says so."""
    notes = [n for r in reports["keras-h5"].runs for n in r.notes]
    assert notes and all("optimizer.set_weights()" in n for n in notes)
    assert all(not r.notes for fmt in ("keras", "keras-weights", "tf2", "tf1") for r in reports[fmt].runs)


def test_step_fact(facts: dict[str, dict[str, Any]]) -> None:
    assert recorded(facts, "step") == set(GENERATE_FORMATS)
    assert facts["tf1"]["step"]["where"] == ["global_step"]
    assert "global_step = 2" in facts["tf1"]["step"]["evidence"]
    assert "step/.ATTRIBUTES/VARIABLE_VALUE = 2" in facts["tf2"]["step"]["evidence"]
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE = 1" in facts["tf2"]["step"]["evidence"]
    assert "optimizer/vars/0 = 2" in facts["keras"]["step"]["evidence"]
    assert "optimizer_weights/adam/iteration = 2" in facts["keras-h5"]["step"]["evidence"]


def test_trainable_and_architecture_facts(facts: dict[str, dict[str, Any]]) -> None:
    with_config = {"tf1", "keras", "keras-h5"}
    assert recorded(facts, "trainable") == with_config
    assert recorded(facts, "architecture") == with_config
    assert "4 of 15 variables are marked trainable" in facts["tf1"]["trainable"]["evidence"]
    assert "Dense(units=4, activation=relu); Dense(units=2, activation=linear)" in (
        facts["keras"]["architecture"]["evidence"])
    assert "MatMul" in facts["tf1"]["architecture"]["evidence"]
    assert "model/layers/0/kernel [3, 4]" in facts["tf2"]["architecture"]["evidence"]


def test_code_is_never_recorded(facts: dict[str, dict[str, Any]]) -> None:
    assert recorded(facts, "code") == set()
    assert "no PyFunc" in facts["tf1"]["code"]["evidence"]


def test_facts_come_from_the_files(tmp_path: Path) -> None:
    """Without its .meta graph, a TF1 bundle records neither initializer nor trainable flags: the facts follow
    the files, not the format's name."""
    out = tmp_path / "tf1"
    assert run("generate", str(out), "--format", "tf1", "--optimizer", "sgd", *TINY).exit_code == 0
    (out / "model.ckpt-2.meta").unlink()
    report = roundtrip(replace(OPTIONS, format="tf1", optimizer="sgd"), source=str(out))
    assert report.ok and not report.generated
    assert not report.facts["initializer"].recorded
    assert "no .meta graph" in report.facts["initializer"].evidence
    assert not report.facts["trainable"].recorded
    assert not report.facts["architecture"].recorded
    assert not report.facts["optimizer_state"].recorded  # SGD keeps nothing: no slot names


# --- rendering and the command ----------------------------------------------------------------------------------


def test_json_shape(reports: dict[str, RoundTripReport]) -> None:
    data = roundtrip_dict(reports["tf2"])
    assert data["schema"] == "ckptcheck.roundtrip/1"
    assert data["format"] == "tf2" and data["ok"] is True
    assert set(data["facts"]) == set(FACT_NAMES)
    for fact in data["facts"].values():
        assert set(fact) == {"recorded", "where", "evidence"}
    assert set(data["tensors"][0]) >= {"name", "restored_exactly", "max_abs_diff"}
    json.dumps(data, allow_nan=False)


def test_matrix_text(reports: dict[str, RoundTripReport]) -> None:
    text = roundtrip_matrix(list(reports.values()))
    header, _rule, *rows = text.splitlines()[:7]
    assert header.split() == ["format", "restored", "exactly", *FACT_NAMES]
    assert rows[1].split() == ["tf2", "yes", "yes", "no", "yes", "yes", "no", "no", "no"]
    assert rows[3].split() == ["keras-weights", "yes", "yes", "no", "yes", "yes", "no", "no", "no"]
    assert rows[4].split() == ["keras-h5", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "no"]


def test_cli_one_format(tmp_path: Path) -> None:
    result = run("roundtrip", "--format", "tf2", *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "tf2" and data["ok"]
    text = run("roundtrip", "--format", "keras-weights", *TINY)
    assert text.exit_code == 0, text.stderr
    assert text.stdout.startswith("OK: all 14 tensors restored bit for bit")
    assert "initializer: not recorded" in text.stdout


def test_cli_from_and_keep(tmp_path: Path) -> None:
    out = tmp_path / "w.weights.h5"
    assert run("generate", str(out), "--format", "keras-weights", *TINY).exit_code == 0
    keep = tmp_path / "work"
    result = run("roundtrip", "--from", str(out), "--keep", str(keep), *TINY, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "keras-weights" and data["generated"] is False and data["source"] == str(out)
    assert data["kept"] == str((keep / "keras-weights").resolve())
    kept = sorted(p.name for p in (keep / "keras-weights").iterdir())
    assert kept == ["reseeded-after", "reseeded-before", "sentinel-after", "sentinel-before"]
    again = run("roundtrip", "--from", str(out), "--keep", str(keep), *TINY)  # never overwrites what is there
    assert again.exit_code == 2 and "already exists and is not empty" in again.stderr


def test_temporary_directory_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run("roundtrip", "--format", "tf2", *TINY, "--json").exit_code == 0
    assert list(tmp_path.iterdir()) == []


def test_a_restore_that_misses_values_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TF2Model, "restore", lambda self, location: ())  # "restores" nothing
    result = run("roundtrip", "--format", "tf2", *TINY, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["facts"]["values"]["recorded"] is False
    kernel = next(t for t in data["tensors"] if t["name"].endswith("_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"))
    assert kernel["restored_exactly"] is False and kernel["max_abs_diff"] > 0 and kernel["problem"] == "values differ"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "all", "--from", "x"), "--from takes one checkpoint"),
        (("--format", "tf2", "--init", "nope"), "unknown initializer 'nope'"),
        (("--from", "/nonexistent/ckpt"), "no such file or directory"),
    ],
)
def test_bad_input_exits_2(args: tuple[str, ...], message: str) -> None:
    result = run("roundtrip", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_from_with_other_options_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "tf1"
    assert run("generate", str(out), "--format", "tf1", "--optimizer", "sgd", *TINY).exit_code == 0
    result = run("roundtrip", "--from", str(out), "--optimizer", "sgd", "--layers", "4,3", "--inputs", "3")
    assert result.exit_code == 2
    assert "dense_1/bias is float32 [2] in the checkpoint, float32 [3] in the model" in result.stderr
    assert "--format tf1" in run("roundtrip", "--from", str(out), "--format", "tf2", *TINY).stderr
