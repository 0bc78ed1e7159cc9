"""The committed fixtures are what `ckptcheck generate` makes today, bit for bit.

Each `ckptcheck generate` line of fixtures/regenerate.sh is run again (in-process, into a temporary directory)
and every tensor is compared with the committed file's. When a TensorFlow or Keras upgrade changes what is
written, this is where it shows: compare the two with `ckptcheck diff`, then rerun fixtures/regenerate.sh.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.lab.generate import GENERATE_FORMATS
from ckptcheck.lab.roundtrip import same_bits

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


# Adam's moment updates (m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g*g) are computed by the CPU's vector kernels,
# which fuse multiply-adds differently on different processors (AVX2 and AVX-512 machines here gave 1-4 ULP
# apart in the second moments after 2 steps, with every weight still equal bit for bit). Those values are allowed
# that much drift; everything else must be identical.
MAX_KERNEL_ULP = 8


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int | None:
    """Largest distance in units in the last place between two float arrays of one dtype and shape, or None
    when they cannot be compared that way (another dtype, shape or kind, or NaN in one and not the other)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
        return None
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return None
    ints = np.dtype(f"i{a.dtype.itemsize}")
    # Map the sign-magnitude float bits onto a monotonic integer line, so the distance crosses zero correctly.
    ia, ib = (np.where(x.view(ints) < 0, np.iinfo(ints).min - x.view(ints), x.view(ints)).astype(object)
              for x in (a, b))
    return int(max((abs(p - q) for p, q in zip(ia.ravel(), ib.ravel(), strict=True)), default=0))


def test_ulp_distance() -> None:
    one = np.array([1.0], dtype=np.float32)
    assert ulp_distance(one, one) == 0
    assert ulp_distance(one, np.nextafter(one, np.float32(2))) == 1
    tiny = np.array([np.float32(1e-45)], dtype=np.float32)
    assert ulp_distance(tiny, -tiny) == 2  # across zero
    assert ulp_distance(one, one.astype(np.float64)) is None


@pytest.mark.tf
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
        changed = {n: ulp_distance(committed.read(n), fresh.read(n)) for n in names
                   if not same_bits(committed.read(n), fresh.read(n))}
    # Only Adam's moments may drift (their names differ per format: Adam_1, momentum/velocity, optimizer vars).
    optimizer_state = {n for n in changed if "Adam" in n or "optimizer" in n}
    too_far = {n: d for n, d in changed.items() if n not in optimizer_state or d is None or d > MAX_KERNEL_ULP}
    assert not too_far, (f"regenerated {fmt} differs from fixtures/{fmt} in {too_far} (ULP); if TensorFlow or "
                         f"Keras changed, rerun fixtures/regenerate.sh and commit")
    manifest = json.loads(runner.invoke(app, ["manifest", str(fresh_path)]).stdout)
    golden = json.loads((FIXTURES / f"{fmt}.manifest.json").read_text())
    for name in changed:  # their digests and statistics moved with them; the rest must be the committed text
        del manifest["tensors"][name], golden["tensors"][name]
    assert manifest == golden


@pytest.mark.parametrize("fmt", GENERATE_FORMATS)
def test_committed_fixture_verifies_against_its_manifest(fmt: str) -> None:
    """The CI guard the README recommends, on our own committed fixtures."""
    result = runner.invoke(app, ["verify", str(FIXTURES / fmt), "--against", str(FIXTURES / f"{fmt}.manifest.json")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"OK: {FIXTURES / fmt} ({fmt})")
