"""`ckptcheck explain`: each question's verdict and figures come from real TensorFlow runs, asserted here; and
`inspect --stats` flags in any checkpoint the constant values and identical units those runs reveal.

`explain all` runs once per session (the `answers` fixture); the CLI tests reuse its answers where they can.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app
from ckptcheck.lab import explain as explain_module
from ckptcheck.lab.explain import QUESTIONS, explain, find_questions
from ckptcheck.lab.reports import VERDICTS, Answer, Evidence
from ckptcheck.render.lab import explain_dict, explain_text
from ckptcheck.stats import stats_of_chunks

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


# --- inspect --stats: identical columns and rows, streamed ------------------------------------------------------


def _expected_identical(a: np.ndarray) -> tuple[str, ...]:
    m = a.reshape(-1, a.shape[-1])
    found = []
    if m.shape[1] >= 2 and bool((m == m[:, :1]).all()):
        found.append("columns")
    if m.shape[0] >= 2 and bool((m == m[:1]).all()):
        found.append("rows")
    return tuple(found)


def _chunked(flat: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    edges = [0, *sorted(set(cuts)), flat.size]
    return [flat[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("seed", range(40))
def test_identical_columns_and_rows_whatever_the_chunking(seed: int) -> None:
    """Chunks cut anywhere (mid-row, several rows, empty) give numpy's answer on the whole matrix."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(2, 4))))
    kind = seed % 5
    if kind == 0:
        a = np.full(shape, 0.5, np.float32)
    elif kind in (1, 4):  # each row constant: identical columns (units)
        a = np.broadcast_to(rng.standard_normal((*shape[:-1], 1)), shape).astype(np.float32)
        if kind == 4 and a.size > 1:
            a.flat[int(rng.integers(a.size))] += 1.0  # one element off
    elif kind == 2:  # each column constant: identical rows
        a = np.broadcast_to(rng.standard_normal(shape[-1]), shape).astype(np.float32)
    else:
        a = rng.standard_normal(shape).astype(np.float32)
    flat = a.reshape(-1)
    cuts = [int(c) for c in rng.integers(0, flat.size + 1, size=int(rng.integers(0, 5)))]
    got = stats_of_chunks("t", "float32", _chunked(flat, cuts), a.shape).identical
    assert got == _expected_identical(a), (shape, cuts)


def test_identical_is_only_examined_for_float_matrices() -> None:
    ones = np.ones(6, np.float32)
    assert stats_of_chunks("t", "float32", [ones], (6,)).identical is None  # a vector has no units
    assert stats_of_chunks("t", "float32", [ones], None).identical is None  # no shape (manifest, slices)
    assert stats_of_chunks("t", "int32", [ones.astype(np.int32)], (2, 3)).identical is None
    nan = np.array([np.nan, np.nan, 1, 1], np.float32)
    assert stats_of_chunks("t", "float32", [nan], (2, 2)).identical == ()  # NaN equals nothing
    import ml_dtypes

    half = np.array([[1, 1], [2, 2]], ml_dtypes.bfloat16).reshape(-1)
    assert stats_of_chunks("t", "bfloat16", [half], (2, 2)).identical == ("columns",)


def test_inspect_stats_flags_identical_units(tmp_path: Path) -> None:
    import tensorflow as tf

    units = np.repeat(np.arange(1, 4, dtype=np.float32)[:, None], 5, axis=1)  # [3, 5]: 5 identical units
    ckpt = tf.train.Checkpoint(units=tf.Variable(units), inputs=tf.Variable(units.T.copy()),
                               const=tf.Variable(tf.fill([2, 2], 0.5)),
                               rand=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)))
    prefix = ckpt.write(str(tmp_path / "ckpt"))
    result = run("inspect", prefix, "--stats", "--json")
    assert result.exit_code == 0, result.stderr
    stats = {t["name"].split("/")[0]: t["stats"] for t in json.loads(result.stdout)["tensors"]}
    assert stats["units"]["identical"] == ["columns"]
    assert stats["inputs"]["identical"] == ["rows"]
    assert stats["const"]["identical"] == ["columns", "rows"] and stats["const"]["note"] == "constant 0.5"
    assert stats["rand"]["identical"] == []
    assert stats["_CHECKPOINTABLE_OBJECT_GRAPH"]["identical"] is None
    text = run("inspect", prefix, "--stats").stdout
    assert "all 5 columns (units) identical" in text
    assert "all 5 rows identical" in text
    line = next(row for row in text.splitlines() if row.startswith("const/"))
    assert line.rstrip().endswith("constant 0.5")  # one value: the note says it all


# --- the experiments, run once per session ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explain")


@pytest.fixture(scope="session")
def answers(kept: Path) -> dict[str, Answer]:
    """`explain all --keep DIR`, as the library runs it: every question's experiment, once."""
    return {a.question.slug: a for a in explain(QUESTIONS, keep=str(kept))}


def evidence(answer: Answer, title_start: str) -> Evidence:
    return next(e for e in answer.evidence if e.title.startswith(title_start))


@pytest.mark.tf
def test_every_question_is_answered_with_evidence(answers: dict[str, Answer], kept: Path) -> None:
    assert list(answers) == [q.slug for q in QUESTIONS]
    assert [q.number for q in QUESTIONS] == [1, 2, 3, 4, 5]
    for slug, a in answers.items():
        assert a.verdict in VERDICTS
        assert (a.depends_on is not None) == (a.verdict == "depends"), slug
        assert a.evidence and a.conclusion and a.seconds > 0
        assert a.kept == str(kept / slug)
        for e in a.evidence:
            for f in e.files:  # every file named as evidence was saved by the run, under the kept directory
                assert (kept / slug / f).is_file(), (slug, f)


def test_constants_train_but_never_break_symmetry(answers: dict[str, Answer], kept: Path) -> None:
    a = answers["constant-does-not-train"]
    assert a.verdict == "false"
    for optimizer in ("sgd", "adam"):
        fig = evidence(a, f"{optimizer}: train").figures
        assert fig["variables"] == fig["variables_changed"] == 4
        assert fig["elements"] == fig["elements_changed"] == 4 * 8 + 8 + 8 * 2 + 2
        assert isinstance(fig["max_abs_diff"], float) and fig["max_abs_diff"] > 0.01
        assert fig["steps"] == 20
        symmetry = evidence(a, "symmetry").figures
        assert symmetry[f"{optimizer}.constant.distinct_units_trained"] == 1
        assert symmetry[f"{optimizer}.constant.distinct_updates"] == 1
        assert symmetry[f"{optimizer}.random.distinct_units_trained"] == 8
        assert symmetry[f"{optimizer}.random.distinct_updates"] == 8
    rows = evidence(a, "symmetry").rows
    assert [r["stats_identical"] for r in rows if r["init"] == "constant:0.5"] == [["columns"], ["columns"]]
    assert all(r["stats_identical"] == [] for r in rows if r["init"] == "glorot_uniform")
    assert [r["bias_one_value"] for r in rows] == [True, False, True, False]  # and the hidden biases likewise
    assert "1 distinct unit of 8" in a.conclusion

    # TensorFlow, reading the kept checkpoints, agrees: the kernel moved and its 8 columns are one column.
    import tensorflow as tf

    root = kept / "constant-does-not-train" / "adam" / "constant"
    before = tf.train.load_checkpoint(str(root / "initial")).get_tensor("dense/kernel")
    after = tf.train.load_checkpoint(str(root / "trained")).get_tensor("dense/kernel")
    assert np.all(before == 0.5) and np.all(after != before)
    assert np.all(after == after[:, :1])
    random = tf.train.load_checkpoint(str(kept / "constant-does-not-train" / "adam" / "random" / "trained"))
    assert len({col.tobytes() for col in random.get_tensor("dense/kernel").T}) == 8


def test_constant_initialized_variables_restore_exactly(answers: dict[str, Answer], kept: Path) -> None:
    a = answers["cannot-restore-constant"]
    assert a.verdict == "false"
    for api in ("tf.train.Checkpoint", "tf.compat.v1.train.Saver"):
        e = evidence(a, api)
        assert e.figures == {"variables": 3, "restored_exactly": 3, "differed_before_restore": 3}
        by_name = {r["variable"]: r for r in e.rows}
        assert set(by_name) == {"constant", "random", "assigned"}
        for r in e.rows:
            assert r["after_restore"] == r["saved"] != r["before_restore"]
            assert r["stored_equals_saved"] is True
        assert by_name["constant"]["saved"] == [1.0, 2.0, 3.0]
        assert by_name["assigned"]["saved"] == [4.0, 5.0, 6.0]
        assert by_name["assigned"]["before_restore"] == [0.0, 0.0, 0.0]  # initialized exactly as the saved one was
        assert by_name["random"]["before_restore"] == [-7.25] * 3
    assert evidence(a, "what the checkpoints hold").figures["keys_naming_an_initializer"] == 0
    # TensorFlow reads the assigned value, not the zeros it was created with, from the kept bundle.
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(kept / "cannot-restore-constant" / "tf1"))
    assert reader.get_tensor("assigned").tolist() == [4.0, 5.0, 6.0]


def test_running_the_initializer_again_resets_and_restore_brings_back(answers: dict[str, Answer], kept: Path) -> None:
    a = answers["reinit-does-not-reset"]
    assert a.verdict == "false"
    (e,) = a.evidence
    fig = e.figures
    assert fig["variables"] == fig["moved_in_training"] == fig["restored_exactly"] == 15  # 4 weights, 8 slots, ...
    assert fig["kept_trained"] == 0 and fig["trained_after_restore_then_initializer"] == 0
    assert fig["back_to_initial"] == 13 and fig["new_values"] == 2
    assert fig["global_step"] == {"initial": 0, "trained": 5, "initializer again": 0, "restored": 5,
                                  "restored, then initializer": 0}
    new = {r["tensor"] for r in e.rows if r["after_initializer_again"] == "new values"}
    assert new == {"dense/kernel", "dense_1/kernel"}  # glorot_uniform: a new draw; constant:0.5 biases: the same
    draws = fig["new_draws"]
    assert isinstance(draws, dict) and set(draws) == new
    import tensorflow as tf

    root = kept / "reinit-does-not-reset"
    first, again, trained = (tf.train.load_checkpoint(str(root / d))
                             for d in ("1-initialized", "3-initializer-again", "2-trained"))
    assert np.array_equal(first.get_tensor("dense/bias"), again.get_tensor("dense/bias"))
    assert not np.array_equal(first.get_tensor("dense/bias"), trained.get_tensor("dense/bias"))
    assert not np.array_equal(first.get_tensor("dense/kernel"), again.get_tensor("dense/kernel"))


@pytest.mark.tf
def test_where_the_initializer_is_recorded(answers: dict[str, Answer], kept: Path) -> None:
    a = answers["records-initializer"]
    assert a.verdict == "depends"
    summary = a.evidence[0]
    assert summary.figures["recorded_in"] == ["tf1", "keras", "keras-h5"]
    assert summary.figures["not_recorded_in"] == ["tf2", "keras-weights", "tf1 bundle without .meta"]
    assert summary.figures["restored_exactly"] == 6
    where = {r["checkpoint"]: r["where"] for r in summary.rows}
    assert where["tf1"] == ["model.ckpt-2.meta"]
    assert where["keras"] == ["model.keras: config.json"]
    assert where["keras-h5"] == ["model.h5: model_config attribute"]
    assert where["tf2"] == where["keras-weights"] == where["tf1 bundle without .meta"] == []
    assert a.depends_on is not None and "not by tf2, keras-weights" in a.depends_on
    bundle = kept / "records-initializer" / "tf1-bundle-only"
    assert sorted(p.suffix for p in bundle.iterdir()) == [".data-00000-of-00001", ".index"]


def test_what_each_initializer_stores(answers: dict[str, Answer], kept: Path) -> None:
    from ckptcheck.lab.initializers import _KINDS

    a = answers["initializer-stats"]
    assert a.verdict == "depends" and a.depends_on == "the initializer"
    table = a.evidence[0]
    rows = {str(r["initializer"]).split(":")[0]: r for r in table.rows}
    assert set(rows) == set(_KINDS)  # every initializer generate supports
    assert table.figures["as_promised"] == len(_KINDS) and table.figures["not_as_promised"] == []
    assert rows["constant"]["stats_note"] == "constant 0.5" and rows["constant"]["std"] == 0.0
    assert rows["zeros"]["stats_note"] == "all zeros"
    assert rows["identity"]["measured"] == "32768 of 32768 elements equal gain * I"
    # Promises come from the definitions: he_normal's std is sqrt(2 / fan_in), glorot_uniform's bound
    # sqrt(6 / (fan_in + fan_out)); the stored statistics are within a few standard errors.
    assert abs(float(str(rows["he_normal"]["std"])) / math.sqrt(2 / 256) - 1) < 0.02
    assert float(str(rows["glorot_uniform"]["max"])) <= math.sqrt(6 / (256 + 128))
    trunc = evidence(a, "truncated normals").figures
    assert abs(float(str(trunc["ratio"])) - 0.8796) < 0.02
    # TensorFlow reads an orthogonal kernel from the kept checkpoint: K^T K = I.
    import tensorflow as tf

    k = tf.train.load_checkpoint(str(kept / "initializer-stats" / "orthogonal")).get_tensor("dense/kernel")
    assert np.allclose(k.T.astype(np.float64) @ k, np.eye(128), atol=1e-5)


@pytest.mark.tf
def test_verdicts_follow_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore that restored nothing would make the claim hold: the verdict comes from what was measured."""
    real = explain_module._restore_tf2

    def restores_nothing(tf: Any, directory: str) -> Any:
        saved, before, _after, location = real(tf, directory)
        return saved, before, before, location

    monkeypatch.setattr(explain_module, "_restore_tf2", restores_nothing)
    (a,) = explain(find_questions("2"))
    assert a.verdict == "depends" and a.depends_on == "the variable"
    assert evidence(a, "tf.train.Checkpoint").figures["restored_exactly"] == 0
    assert a.conclusion.startswith("3 of 6 variables restored bit for bit")
    assert explain_module._verdict(0, 3) == "false" and explain_module._verdict(3, 0) == "true"


# --- rendering and the command ----------------------------------------------------------------------------------


@pytest.mark.tf
def test_text_and_json(answers: dict[str, Answer]) -> None:
    text = explain_text(list(answers.values()))
    assert '1. "Variables initialized with a constant do not train."  (constant-does-not-train)' in text
    assert "   verdict: FALSE\n" in text
    assert "   verdict: DEPENDS on the format: recorded by tf1, keras, keras-h5" in text
    data = explain_dict(list(answers.values()))
    assert data["schema"] == "ckptcheck.explain/1"
    assert [x["verdict"] for x in data["answers"]] == ["false", "false", "false", "depends", "depends"]
    json.dumps(data, allow_nan=False)
    first = data["answers"][0]
    assert set(first) == {"number", "slug", "claim", "verdict", "depends_on", "conclusion", "evidence", "seconds",
                          "kept"}
    assert set(first["evidence"][0]) == {"title", "text", "figures", "rows", "files"}


@pytest.mark.tf
def test_cli_uses_the_library(answers: dict[str, Answer], monkeypatch: pytest.MonkeyPatch) -> None:
    """`explain all` prints what the library answered (reusing the session's answers, not running again)."""
    calls: list[tuple[str, ...]] = []

    def fake(questions: Any, *, keep: str | None = None, on_question: Any = None) -> tuple[Answer, ...]:
        calls.append(tuple(q.slug for q in questions))
        return tuple(answers[q.slug] for q in questions)

    monkeypatch.setattr(explain_module, "explain", fake)
    result = run("explain")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == explain_text(list(answers.values()))
    result = run("explain", "records-initializer", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == explain_dict([answers["records-initializer"]])
    assert calls == [tuple(answers), ("records-initializer",)]


@pytest.mark.tf
def test_cli_runs_a_question_for_real(tmp_path: Path) -> None:
    result = run("explain", "2", "--json", "--keep", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    (a,) = json.loads(result.stdout)["answers"]
    assert a["slug"] == "cannot-restore-constant" and a["verdict"] == "false"
    assert a["kept"] == str(tmp_path / "cannot-restore-constant")
    assert (tmp_path / "cannot-restore-constant" / "tf2" / "ckpt-1.index").is_file()
    again = run("explain", "2", "--keep", str(tmp_path))  # never mixes with what is there
    assert again.exit_code == 2 and "already exists and is not empty" in again.stderr


def test_cli_list_needs_no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    result = run("explain", "--list")
    assert result.exit_code == 0, result.stderr
    for q in QUESTIONS:
        assert q.slug in result.stdout and q.claim in result.stdout
    data = json.loads(run("explain", "--list", "--json").stdout)
    assert data["schema"] == "ckptcheck.questions/1"
    assert [q["slug"] for q in data["questions"]] == [q.slug for q in QUESTIONS]
    assert [q["slug"] for q in json.loads(run("explain", "4", "--list", "--json").stdout)["questions"]] == [
        "records-initializer"]
    missing = run("explain", "1")
    assert missing.exit_code == 2
    assert "needs TensorFlow" in missing.stderr and "pip install 'ckptcheck[tf]'" in missing.stderr


def test_cli_unknown_question_exits_2() -> None:
    result = run("explain", "9")
    assert result.exit_code == 2
    assert "no question '9'" in result.stderr and "constant-does-not-train" in result.stderr
