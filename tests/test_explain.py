"""`ckptcheck explain`: each question's verdict and figures come from real TensorFlow runs, asserted here; and
`inspect --stats` flags in any checkpoint the constant values and identical units those runs reveal.

`explain all` runs once per session (the `answers` fixture); the CLI tests reuse its answers where they can.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app
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
