"""The command line at a terminal and in pipes: closed pipes, help, sorting, summaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ckptcheck.cli import app

runner = CliRunner()
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
    assert json.loads(plain.stdout)["schema"] == "ckptcheck.manifest/1"


def test_manifest_without_schema_still_loads(tmp_path: Path) -> None:
    """Manifests written before the schema field (manifest_version only) verify as before."""
    golden = json.loads((REPO / "fixtures" / "keras.manifest.json").read_text())
    assert golden.pop("schema") == "ckptcheck.manifest/1"
    old = tmp_path / "old.manifest.json"
    old.write_text(json.dumps(golden))
    result = runner.invoke(app, ["verify", str(REPO / "fixtures" / "keras"), "--against", str(old)])
    assert result.exit_code == 0, result.output
    assert f"matches {old}" in result.stdout


def test_other_ckptcheck_json_is_not_taken_for_a_manifest(tmp_path: Path) -> None:
    listing = tmp_path / "listing.json"
    listing.write_text(runner.invoke(app, ["inspect", str(REPO / "fixtures" / "tf2"), "--json"]).stdout)
    result = runner.invoke(app, ["verify", str(REPO / "fixtures" / "tf2"), "--against", str(listing)])
    assert result.exit_code == 2
    assert "this is ckptcheck.inspect/1 output, not a manifest" in result.stderr


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
