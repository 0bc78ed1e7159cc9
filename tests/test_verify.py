"""`verify` and damaged input: every problem reported, the right exit code, files never touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.formats.tensorflow.bundle import BundleReader

runner = CliRunner()


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (or of root itself), to prove reading wrote nothing."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def sharded_copy(tf2_sharded: str, tmp_path: Path) -> Path:
    """A copy of the sharded TF2 checkpoint (prefix path) that a test may damage."""
    src = Path(tf2_sharded)
    for f in src.parent.glob(src.name + ".*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / src.name


def data_location(prefix: Path, name: str) -> tuple[Path, int, int]:
    """(shard file, offset, size) of the first stored part of a tensor."""
    with BundleReader(str(prefix)) as reader:
        part = reader.parts(name)[0]
        return Path(reader.shard_path(part.shard_id)), part.offset, part.size


def largest_tensor(prefix: Path) -> str:
    with ckptcheck.open_checkpoint(str(prefix)) as reader:
        return max(reader.tensors(), key=lambda t: t.nbytes).name


def verify_json(path: Path | str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["verify", str(path), "--json", *extra])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def test_verify_clean_checkpoints(tf1_model_dir: Path, tf2_all_dtypes: str, tf2_sharded: str,
                                  savedmodel_dir: Path, keras_files: dict[str, Path]) -> None:
    paths: list[Path | str] = [tf1_model_dir, tf2_all_dtypes, tf2_sharded, savedmodel_dir, *keras_files.values()]
    for path in paths:
        code, data = verify_json(path)
        assert code == 0, (path, data)
        assert data["ok"] and data["problems"] == [] and data["tensors_checked"] > 0
    text = runner.invoke(app, ["verify", tf2_sharded]).stdout
    assert text.startswith("OK: ")


def test_flipped_data_byte_names_tensor_and_file(sharded_copy: Path) -> None:
    name = largest_tensor(sharded_copy)
    shard, offset, size = data_location(sharded_copy, name)
    flip(shard, offset + size // 2)
    before = snapshot(sharded_copy.parent)
    code, data = verify_json(sharded_copy)
    assert code == 1 and not data["ok"]
    [problem] = data["problems"]
    assert problem["kind"] == "checksum" and problem["tensor"] == name and problem["file"] == str(shard)
    text = runner.invoke(app, ["verify", str(sharded_copy)]).stdout
    assert f"checksum mismatch (bytes {offset}..{offset + size - 1}" in text and shard.name in text
    assert snapshot(sharded_copy.parent) == before
    # inspect still lists (it reads only the index), but reading the values fails with exit 2 and one line.
    assert runner.invoke(app, ["inspect", str(sharded_copy)]).exit_code == 0
    result = runner.invoke(app, ["inspect", str(sharded_copy), "--tensor", name])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert name in result.stderr and shard.name in result.stderr


def test_every_problem_is_reported(sharded_copy: Path) -> None:
    """Damage in two shards and a missing third: all of it in one run."""
    with BundleReader(str(sharded_copy)) as reader:
        shards = reader.num_shards
        entries = sorted({(p.shard_id, p.offset, p.size, n) for n in reader.entries for p in reader.parts(n)
                          if p.size})
    assert shards >= 3
    by_shard: dict[int, tuple[int, int, str]] = {}
    for shard_id, offset, size, name in entries:
        by_shard.setdefault(shard_id, (offset, size, name))
    ids = sorted(by_shard)
    flip(Path(f"{sharded_copy}.data-{ids[0]:05d}-of-{shards:05d}"), by_shard[ids[0]][0])
    truncated = Path(f"{sharded_copy}.data-{ids[1]:05d}-of-{shards:05d}")
    truncated.write_bytes(truncated.read_bytes()[: by_shard[ids[1]][0] + 1])
    missing = Path(f"{sharded_copy}.data-{ids[2]:05d}-of-{shards:05d}")
    missing.unlink()
    code, data = verify_json(sharded_copy)
    assert code == 1
    kinds = {(p["kind"], Path(p["file"]).name) for p in data["problems"]}
    assert ("checksum", f"{sharded_copy.name}.data-{ids[0]:05d}-of-{shards:05d}") in kinds
    assert ("truncated", truncated.name) in kinds
    assert ("missing-file", missing.name) in kinds


def test_flipped_index_byte(sharded_copy: Path) -> None:
    index = Path(str(sharded_copy) + ".index")
    flip(index, 12)
    code, data = verify_json(sharded_copy)
    assert code == 1
    assert any("block checksum mismatch" in p["message"] and p["file"] == str(index) for p in data["problems"])
    result = runner.invoke(app, ["inspect", str(sharded_copy)])
    assert result.exit_code == 2 and "block checksum mismatch" in result.stderr and index.name in result.stderr


DAMAGE: dict[str, Callable[[Path], None]] = {
    "empty index": lambda p: Path(str(p) + ".index").write_bytes(b""),
    "random index": lambda p: Path(str(p) + ".index").write_bytes(os.urandom(4096)),
    "truncated index": lambda p: Path(str(p) + ".index").write_bytes(Path(str(p) + ".index").read_bytes()[:-10]),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_index(sharded_copy: Path, damage: str) -> None:
    DAMAGE[damage](sharded_copy)
    before = snapshot(sharded_copy.parent)
    code, data = verify_json(sharded_copy)
    assert code == 1 and data["problems"][0]["kind"] == "index"
    result = runner.invoke(app, ["inspect", str(sharded_copy)])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and ".index" in line and "Traceback" not in result.output
    assert snapshot(sharded_copy.parent) == before


def test_dangling_state_file_and_missing_path(manager_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(manager_dir, copy)
    latest = ckptcheck.open_checkpoint(str(copy)).info().location
    for f in copy.glob(Path(latest).name + ".*"):
        f.unlink()
    for command in ("verify", "inspect"):
        result = runner.invoke(app, [command, str(copy)])
        assert result.exit_code == 2
        assert "which is gone" in result.stderr and "checkpoints present" in result.stderr
    result = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such file or directory" in result.stderr


@pytest.mark.parametrize("key", ["keras-weights", "keras-h5"])
@pytest.mark.parametrize("keep", [8, 0.25, 0.5, -1])
def test_truncated_hdf5(keras_files: dict[str, Path], tmp_path: Path, key: str, keep: float) -> None:
    """A truncated file that is still recognisably HDF5 (its 8-byte signature is there) is damage: verify exits 1
    and names it; inspect cannot read it (2)."""
    copy = tmp_path / keras_files[key].name
    data = keras_files[key].read_bytes()
    cut = int(keep) if keep >= 1 else len(data) + int(keep) if keep < 0 else int(len(data) * keep)
    copy.write_bytes(data[:cut])
    before = snapshot(copy)
    code, report = verify_json(copy)
    assert code == 1, report
    assert [p["file"] for p in report["problems"]] == [str(copy)]
    assert report["problems"][0]["kind"] == ("structure" if cut == 8 else "truncated"), report["problems"]
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1 and result.stdout.startswith("DAMAGED:") and "Traceback" not in result.output
    assert runner.invoke(app, ["inspect", str(copy)]).exit_code == 2
    assert snapshot(copy) == before


def _flip_value_byte(path: Path, dataset: str) -> None:
    """Flip a bit of a dataset's stored values, where HDF5 keeps them (no checksum covers them)."""
    import h5py

    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    assert offset is not None
    flip(path, offset + 1)


def test_hdf5_verify_says_what_it_checked(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """HDF5 has no checksums: a flipped value byte passes verify, which says so and how to check the values;
    verify --against a manifest made before the flip finds it."""
    copy = tmp_path / "model.weights.h5"
    shutil.copy(keras_files["keras-weights"], copy)
    manifest = tmp_path / "before.manifest.json"
    assert runner.invoke(app, ["manifest", str(copy), "-o", str(manifest)]).exit_code == 0
    _flip_value_byte(copy, "layers/dense/vars/0")
    code, report = verify_json(copy)
    assert code == 0 and report["problems"] == []
    assert len(report["notes"]) == 1 and "no checksum" in report["notes"][0] and "--against" in report["notes"][0]
    text = runner.invoke(app, ["verify", str(copy)]).stdout
    assert text.splitlines()[0].endswith(" read") and "note: HDF5 stores no checksum" in text
    result = runner.invoke(app, ["verify", str(copy), "--against", str(manifest)])
    # Named by the variable Keras knows (Sequential 'seq', Dense 'dense'), the key in JSON.
    assert result.exit_code == 1 and "seq/dense/kernel" in result.stdout and "digest differs" in result.stdout
    code, report = verify_json(copy, "--against", str(manifest))
    assert [(d["key"], d["variable"], d["kind"]) for d in report["differences"]] == [
        ("layers/dense/vars/0", "seq/dense/kernel", "values")]
    # A .keras archive's members carry CRCs: no such note there.
    code, report = verify_json(keras_files["keras"])
    assert code == 0 and report["notes"] == []


def test_diff_warns_of_a_damaged_keras_archive(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """diff reads a .keras archive's weights where they lie, without the member's CRC: it checks the CRCs and
    warns, besides comparing the values."""
    damaged = tmp_path / "flipped.keras"
    shutil.copy(keras_files["keras"], damaged)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("model.weights.h5")
    assert info.compress_type == zipfile.ZIP_STORED
    header_len = 30 + len(info.filename.encode()) + len(info.extra)
    flip(damaged, info.header_offset + header_len + info.file_size // 2)
    result = runner.invoke(app, ["diff", str(keras_files["keras"]), str(damaged), "--json"])
    data = json.loads(result.stdout)
    assert len(data["warnings"]) == 1 and "model.weights.h5" in data["warnings"][0]
    assert str(damaged) in data["warnings"][0]
    text = runner.invoke(app, ["diff", str(keras_files["keras"]), str(damaged)]).stdout
    assert text.startswith("WARNING: ") and "run ckptcheck verify" in text
    clean = json.loads(runner.invoke(app, ["diff", str(keras_files["keras"]), str(keras_files["keras"]),
                                           "--json"]).stdout)
    assert clean["warnings"] == [] and clean["same"]


def test_keras_archive_without_weights(keras_files: dict[str, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "no-weights.keras"
    with zipfile.ZipFile(keras_files["keras"]) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(".h5"):
                dst.writestr(item, src.read(item))
    code, data = verify_json(damaged)
    assert code == 1 and "model.weights.h5" in json.dumps(data["problems"])
    result = runner.invoke(app, ["inspect", str(damaged)])
    assert result.exit_code == 2 and damaged.name in result.stderr


def test_keras_archive_member_crc(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """A byte flipped inside a stored zip member is caught by the member's CRC."""
    damaged = tmp_path / "flipped.keras"
    shutil.copy(keras_files["keras"], damaged)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("config.json")
    header_len = 30 + len(info.filename.encode()) + len(info.extra)
    flip(damaged, info.header_offset + header_len + 5)
    code, data = verify_json(damaged)
    assert code == 1 and any("config.json" in p["message"] for p in data["problems"])


def test_verify_against_manifest(tf2_all_dtypes: str, tmp_path: Path) -> None:
    manifest = tmp_path / "golden.json"
    assert runner.invoke(app, ["manifest", tf2_all_dtypes, "-o", str(manifest)]).exit_code == 0
    code, data = verify_json(tf2_all_dtypes, "--against", str(manifest))
    assert code == 0 and data["against"] == str(manifest) and data["differences"] == []
    golden = json.loads(manifest.read_text())
    name = next(n for n, t in golden["tensors"].items() if t["dtype"] == "float32" and t["stats"]["count"] > 1)
    golden["tensors"][name]["sha256"] = "0" * 64
    golden["tensors"][name]["stats"]["mean"] += 1e-3
    golden["tensors"]["gone"] = dict(golden["tensors"][name])
    manifest.write_text(json.dumps(golden))
    code, data = verify_json(tf2_all_dtypes, "--against", str(manifest))
    assert code == 1
    kinds = {(d["tensor"], d["kind"]) for d in data["differences"]}
    assert kinds == {(name, "values"), ("gone", "missing")}
    code, data = verify_json(tf2_all_dtypes, "--against", str(manifest), "--atol", "0.01")
    assert {(d["tensor"], d["kind"]) for d in data["differences"]} == {("gone", "missing")}
    bad = runner.invoke(app, ["verify", tf2_all_dtypes, "--against", str(tmp_path / "absent.json")])
    assert bad.exit_code == 2 and "manifest file does not exist" in bad.stderr


def test_quiet_when_stderr_is_not_a_terminal(tf2_sharded: str) -> None:
    """No progress bar unless stderr is a terminal: piped or captured runs get nothing on stderr."""
    for args in (["verify", tf2_sharded], ["inspect", tf2_sharded, "--stats"], ["manifest", tf2_sharded]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.stderr == "", args


def test_against_a_manifest_still_names_every_damaged_slice(tf2_sharded: str, sharded_copy: Path,
                                                             tmp_path: Path) -> None:
    """With --against, data is streamed once for digests and checksums; damage still gets every slice named."""
    manifest = tmp_path / "golden.json"
    assert runner.invoke(app, ["manifest", tf2_sharded, "-o", str(manifest)]).exit_code == 0
    name = largest_tensor(sharded_copy)
    with BundleReader(str(sharded_copy)) as reader:
        parts = reader.parts(name)
        assert len(parts) >= 2
        for part in parts[:2]:
            flip(Path(reader.shard_path(part.shard_id)), part.offset)
    code, data = verify_json(sharded_copy, "--against", str(manifest))
    assert code == 1
    assert [p["kind"] for p in data["problems"] if p["tensor"] == name] == ["checksum", "checksum"]
    assert data["differences"] == []  # the damaged tensor is reported as damage, not as a changed value
