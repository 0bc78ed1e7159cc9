"""The committed fixtures are what `ckptcheck generate` makes today, bit for bit.

Each `ckptcheck generate` line of fixtures/regenerate.sh is run again (in-process, into a temporary directory)
and every tensor is compared with the committed file's. When a TensorFlow or Keras upgrade changes what is
written, this is where it shows: compare the two with `ckptcheck diff`, then rerun fixtures/regenerate.sh.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.generate import GENERATE_FORMATS
from ckptcheck.roundtrip import same_bits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCRIPT = FIXTURES / "regenerate.sh"
runner = CliRunner()


def generate_lines() -> dict[str, list[str]]:
    """format -> the arguments after `ckptcheck`, with "$OUT" still in them."""
    lines = {}
    for line in SCRIPT.read_text().splitlines():
        if line.startswith("ckptcheck generate "):
            args = shlex.split(line)[1:]
            lines[args[args.index("--format") + 1]] = args
    return lines


def test_script_makes_every_format() -> None:
    lines = generate_lines()
    assert sorted(lines) == sorted(GENERATE_FORMATS)
    for fmt, args in lines.items():
        assert args[1] == f"$OUT/{fmt}"
        assert "--seed" in args and any(a.startswith("constant:") for a in args)


@pytest.mark.parametrize("fmt", GENERATE_FORMATS)
def test_fixture_is_small(fmt: str) -> None:
    files = [p for p in (FIXTURES / fmt).rglob("*") if p.is_file()]
    assert files, f"fixtures/{fmt} is empty: run fixtures/regenerate.sh"
    assert sum(p.stat().st_size for p in files) < 64 * 1024


@pytest.mark.parametrize("fmt", GENERATE_FORMATS)
def test_regenerated_values_equal_committed(fmt: str, tmp_path: Path) -> None:
    args = [a.replace("$OUT", str(tmp_path)) for a in generate_lines()[fmt]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    committed_path = FIXTURES / fmt
    fresh_path = tmp_path / fmt
    if fmt not in ("tf1", "tf2"):  # a Keras file, not a directory
        committed_path = next(p for p in committed_path.iterdir() if p.is_file())
        fresh_path = fresh_path / committed_path.name
    with ckptcheck.open_checkpoint(str(committed_path)) as committed, \
            ckptcheck.open_checkpoint(str(fresh_path)) as fresh:
        assert committed.format == fresh.format == fmt
        names = [t.name for t in committed.tensors()]
        assert names == [t.name for t in fresh.tensors()]
        changed = [n for n in names if not same_bits(committed.read(n), fresh.read(n))]
    assert not changed, (f"regenerated {fmt} differs from fixtures/{fmt} in {changed}; if TensorFlow or Keras "
                         f"changed, rerun fixtures/regenerate.sh and commit")
    manifest = runner.invoke(app, ["manifest", str(fresh_path)])
    assert manifest.stdout == (FIXTURES / f"{fmt}.manifest.json").read_text()


@pytest.mark.parametrize("fmt", GENERATE_FORMATS)
def test_committed_fixture_verifies_against_its_manifest(fmt: str) -> None:
    """The CI guard the README recommends, on our own committed fixtures."""
    result = runner.invoke(app, ["verify", str(FIXTURES / fmt), "--against", str(FIXTURES / f"{fmt}.manifest.json")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {FIXTURES / fmt} ({fmt})")
