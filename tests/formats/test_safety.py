"""The safety warning cannot be dodged: files that are two formats at once, the unzipped .keras directory, and
archives whose other parts are broken.

The oracle is Keras itself: each file is loaded with ``keras.saving.load_model(..., safe_mode=False)``, and a
Lambda layer whose function creates a marker file shows whether Keras ran the attacker's code. Wherever it did,
every reading command of ckptcheck must print the warning (on stderr, first, so it survives the command failing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app
from ckptcheck.formats.keras.safety import hdf5_offset, scan
from ckptcheck.formats.resolve import resolve

runner = CliRunner()


def _model(marker: Path | None) -> Any:
    import keras

    inputs = keras.Input((3,))
    if marker is None:
        x = keras.layers.Identity()(inputs)
    else:
        # The function runs when Keras rebuilds the model (it infers the Lambda's output shape by calling it).
        code = f"lambda t: (open({str(marker)!r}, 'a').close(), t)[1]"
        x = keras.layers.Lambda(eval(code))(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _rewrite_zip(source: Path, target: Path, replace: dict[str, bytes | None]) -> None:
    """Copy a zip, replacing members (None drops one)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename in replace:
                data = replace[info.filename]
                if data is not None:
                    dst.writestr(info.filename, data)
            else:
                dst.writestr(info, src.read(info.filename))


def _userblock_h5(source: Path, payload: bytes, target: Path) -> None:
    """``source``'s HDF5 content with ``payload`` (a zip) in a user block before it: HDF5 finds its superblock
    after the block, and the file starts with the zip's magic."""
    import h5py

    size = 1 << max(9, (len(payload) - 1).bit_length())
    with h5py.File(source, "r") as src, h5py.File(target, "w", userblock_size=size) as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for key in src:
            src.copy(src[key], dst, name=key)
    with open(target, "r+b") as f:
        f.write(payload)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("safety")
    marker = root / "marker"
    evil, good = _model(marker), _model(None)
    for name, model in (("evil", evil), ("good", good)):
        model.save(root / f"{name}.keras")
        model.save(root / f"{name}.h5")
    import keras

    files: dict[str, Path] = {}
    # A benign legacy .h5 with the malicious .keras appended, named .keras: Keras sees a zip.
    files["h5 + evil zip, named .keras"] = root / "appended.keras"
    files["h5 + evil zip, named .keras"].write_bytes((root / "good.h5").read_bytes() + (root / "evil.keras")
                                                     .read_bytes())
    # A benign .keras in the user block of a malicious legacy .h5, named .h5: Keras reads the HDF5.
    files["benign zip in the user block of an evil .h5"] = root / "userblock.h5"
    _userblock_h5(root / "evil.h5", (root / "good.keras").read_bytes(), files["benign zip in the user block of an "
                                                                               "evil .h5"])
    # The unzipped .keras directory.
    files["unzipped .keras directory"] = root / "evil_dir"
    keras.saving.save_model(evil, files["unzipped .keras directory"], zipped=False)
    # Archives whose other parts are broken: Keras deserializes config.json first.
    for label, replace in {
        "metadata.json not JSON": {"metadata.json": b"{not json"},
        "weights member garbage": {"model.weights.h5": b"\x00" * 300},
        "weights member missing": {"model.weights.h5": None},
    }.items():
        target = root / (label.replace(" ", "_").replace(".", "") + ".keras")
        _rewrite_zip(root / "evil.keras", target, replace)
        files[label] = target
    return {"root": root, "marker": marker, "files": files, "good": root / "good.keras"}


def _keras_runs_it(path: Path, marker: Path) -> bool:
    import keras

    marker.unlink(missing_ok=True)
    with contextlib.suppress(Exception):  # a broken part may fail the load after the config ran
        keras.saving.load_model(str(path), safe_mode=False)
    return marker.exists()


CASES = ["h5 + evil zip, named .keras", "benign zip in the user block of an evil .h5", "unzipped .keras directory",
         "metadata.json not JSON", "weights member garbage", "weights member missing"]


@pytest.mark.tf
@pytest.mark.parametrize("case", CASES)
def test_every_command_warns_where_keras_runs_code(hostile: dict[str, Any], case: str) -> None:
    path = hostile["files"][case]
    assert _keras_runs_it(path, hostile["marker"]), f"{case}: Keras did not run the Lambda; the case tests nothing"
    before = {p: p.read_bytes() for p in Path(hostile["root"]).rglob("*") if p.is_file() and p.name != "marker"}
    for args in (["inspect", str(path)], ["inspect", str(path), "--json"], ["verify", str(path)],
                 ["manifest", str(path)], ["diff", str(path), str(hostile["good"])]):
        result = runner.invoke(app, args)
        warnings = [line for line in result.stderr.splitlines() if line.startswith("ckptcheck: warning:")]
        assert warnings and all(str(path) in w for w in warnings), (case, args, result.stderr)
        assert any("Lambda" in w for w in warnings), (case, args, result.stderr)
        assert "Traceback" not in result.output
    after = {p: p.read_bytes() for p in before}
    assert after == before


@pytest.mark.tf
def test_benign_files_warn_of_nothing(hostile: dict[str, Any]) -> None:
    good = hostile["good"]
    assert not _keras_runs_it(good, hostile["marker"])
    for args in (["inspect", str(good)], ["verify", str(good)]):
        assert "warning" not in runner.invoke(app, args).stderr


@pytest.mark.tf
def test_two_formats_at_once_are_named_and_read_as_keras_reads_them(hostile: dict[str, Any]) -> None:
    appended = hostile["files"]["h5 + evil zip, named .keras"]
    assert hdf5_offset(str(appended)) == 0 and zipfile.is_zipfile(appended)
    result = scan(str(appended))
    assert result is not None and result.unsafe
    assert any("both a zip archive and HDF5" in n and "reads it as the zip" in n for n in result.notes)
    assert resolve(str(appended)).kind == "keras"  # the zip, as keras.saving.load_model reads it
    userblock = hostile["files"]["benign zip in the user block of an evil .h5"]
    assert hdf5_offset(str(userblock)) not in (None, 0)
    assert userblock.read_bytes()[:4] == b"PK\x03\x04"
    assert resolve(str(userblock)).kind == "keras-h5"  # the HDF5, as Keras reads a .h5 name
    inspect = runner.invoke(app, ["inspect", str(userblock), "--json"])
    assert inspect.exit_code == 0, inspect.output
    assert '"format": "keras-h5"' in inspect.stdout.replace(": ", ": ").replace('"format":"', '"format": "')


@pytest.mark.tf
def test_warning_survives_a_failing_command(hostile: dict[str, Any], tmp_path: Path) -> None:
    """The weights member missing: inspect fails (exit 2, one error line), and the warning came first."""
    path = hostile["files"]["weights member missing"]
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code in (1, 2)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("ckptcheck: warning:") and lines[-1].startswith("ckptcheck: ")
    copy = tmp_path / "x.keras"
    shutil.copy(path, copy)
    assert os.path.getsize(copy) == os.path.getsize(path)
