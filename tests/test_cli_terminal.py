"""The command line at a terminal and in pipes: closed pipes, help, sorting, summaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def many_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Keras 3 .weights.h5 of 3,000 small datasets: listings far larger than a pipe's buffer."""
    path = str(tmp_path_factory.mktemp("many") / "many.weights.h5")
    with h5py.File(path, "w") as f:
        for i in range(3000):
            f.create_dataset(f"layers/dense_{i}/vars/0", data=np.full((2, 3), i, dtype=np.float32))
    return path


def _read_a_little_then_close(*args: str) -> tuple[bytes, int, bytes]:
    """Run `python -m ckptcheck ARGS` with stdout a real pipe, read its first bytes and close the pipe, as `head`
    does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ckptcheck", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(20)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return first, proc.wait(timeout=120), err


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


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
def test_manifest_and_diff_into_a_closed_pipe(many_weights: str) -> None:
    for args in (["manifest", many_weights],):
        _first, code, err = _read_a_little_then_close(*args)
        assert (err, code) == (b"", -signal.SIGPIPE), args
