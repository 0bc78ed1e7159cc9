"""Hostile and unusual input: what an attacker, or a mistyped path, hands ckptcheck.

Each case is made at test time. Every one must end with the exit code the README promises (1 damaged, 2 cannot be
read), one line on stderr naming the file, no traceback, and the user's files unchanged. Cases that used to hang run
in a subprocess with a generous timeout: a guard against hangs, not a speed test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HANG_GUARD_SECONDS = 120


def _cli_cases(cases: list[list[str]], cwd: Path, peaks: list[float] | None = None) -> list[tuple[int, str]]:
    """Run each argument list through the CLI in one child process; (exit code, stderr) per case, and in
    ``peaks`` each case's peak resident memory above what the process held before it (MiB)."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from click.exceptions import Exit
        from ckptcheck.cli import app
        out = []
        def hwm_mib():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
        for args in {cases!r}:
            open("/proc/self/clear_refs", "w").write("5")  # reset the resident high-water mark per case
            base = hwm_mib()
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = app(args, standalone_mode=False) or 0
                except Exit as exc:
                    code = exc.exit_code
                except SystemExit as exc:
                    code = exc.code or 0
            out.append((code, err.getvalue(), hwm_mib() - base))
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=HANG_GUARD_SECONDS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.splitlines()[-1])
    if peaks is not None:
        peaks += [peak for _code, _err, peak in rows]
    return [(code, err) for code, err, _peak in rows]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def specials(tmp_path: Path) -> dict[str, Path]:
    """A FIFO or a device standing where each kind of file ckptcheck reads is expected."""
    made: dict[str, Path] = {}
    bundle = tmp_path / "fifo_index"
    bundle.mkdir()
    for f in (FIXTURES / "tf2").glob("ckpt-1.data-*"):
        shutil.copy(f, bundle / f.name)
    os.mkfifo(bundle / "ckpt-1.index")
    made["fifo index"] = bundle / "ckpt-1"
    shard = tmp_path / "fifo_shard"
    shard.mkdir()
    shutil.copy(FIXTURES / "tf2" / "ckpt-1.index", shard / "ckpt-1.index")
    os.mkfifo(shard / "ckpt-1.data-00000-of-00001")
    made["fifo data shard"] = shard / "ckpt-1"
    zero = tmp_path / "zero_index"
    zero.mkdir()
    (zero / "ckpt.index").symlink_to("/dev/zero")
    made["/dev/zero as the index"] = zero / "ckpt"
    state = tmp_path / "fifo_state"
    state.mkdir()
    os.mkfifo(state / "checkpoint")
    made["fifo state file"] = state
    os.mkfifo(tmp_path / "model.keras")
    made["fifo .keras"] = tmp_path / "model.keras"
    os.mkfifo(tmp_path / "model.weights.h5")
    made["fifo .weights.h5"] = tmp_path / "model.weights.h5"
    made["a device"] = Path("/dev/urandom")
    return made


def test_pipes_and_devices_are_refused_at_once(specials: dict[str, Path], tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    cases = []
    for kind, path in specials.items():
        # Listing reads no data shard: inspect of a bundle whose shard is a pipe lists it and never opens it.
        if kind != "fifo data shard":
            cases.append(["inspect", str(path)])
        cases += [["verify", str(path)], ["manifest", str(path)]]
    results = _cli_cases(cases, tmp_path)
    for args, (code, err) in zip(cases, results, strict=True):
        assert code == 2, (args, code, err)
        assert err.count("\n") == 1 and err.startswith("ckptcheck: "), (args, err)
        assert "not a regular file" in err or "FIFO" in err, (args, err)
        assert "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_manifest_that_is_a_pipe_or_a_bomb(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "golden.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "number.json").write_text("42")
    target = str(FIXTURES / "tf2")
    cases = [["verify", target, "--against", str(tmp_path / name)] for name in ("golden.json", "deep.json",
                                                                                  "number.json")]
    results = _cli_cases(cases, tmp_path)
    assert [code for code, _ in results] == [2, 2, 2]
    assert "FIFO" in results[0][1]
    assert "too deeply" in results[1][1]
    assert "not a ckptcheck manifest" in results[2][1]
    assert all(err.count("\n") == 1 and "Traceback" not in err for _, err in results)


def test_unreadable_entries_do_not_end_the_report(tmp_path: Path) -> None:
    """Entries of dtype 0, 20 (resource) and 99 each become one problem, and the damaged tensor after them is still
    found (TensorFlow refuses the damaged one too)."""
    import numpy as np
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    from ckptcheck.verify import verify

    data = np.arange(16, dtype=np.float32).tobytes()
    (tmp_path / "h.data-00000-of-00001").write_bytes(data)
    good = entry_proto(DT_FLOAT, [8], size=32, crc=masked_crc(data[:32]))
    bad = entry_proto(DT_FLOAT, [8], offset=32, size=32, crc=masked_crc(data[:32]))  # the other half's crc
    write_index(str(tmp_path / "h.index"), {
        b"a_good": good, b"b_dtype0": entry_proto(0, [4], size=16), b"c_resource": entry_proto(20, [], size=0),
        b"d_dtype99": entry_proto(99, [4], size=16), b"z_damaged": bad,
    })
    report = verify(str(tmp_path / "h"))
    by_tensor = {p.tensor: p.kind for p in report.problems}
    assert by_tensor == {"b_dtype0": "unreadable", "c_resource": "unreadable", "d_dtype99": "unreadable",
                         "z_damaged": "checksum"}
    assert report.tensors_checked == 5
    results = _cli_cases([["verify", str(tmp_path / "h")]], tmp_path)
    assert results[0][0] == 1


def test_damaged_metaindex_block_is_named(tmp_path: Path) -> None:
    import struct

    from ckptcheck.formats.tensorflow.sstable import SSTable
    from ckptcheck.verify import verify

    directory = tmp_path / "tf2"
    shutil.copytree(FIXTURES / "tf2", directory)
    index = directory / "ckpt-1.index"
    data = bytearray(index.read_bytes())
    handle = SSTable(str(index), bytes(data)).metaindex_handle
    crc_at = handle.offset + handle.size + 1
    struct.pack_into("<I", data, crc_at, struct.unpack_from("<I", data, crc_at)[0] ^ 1)
    index.write_bytes(bytes(data))
    report = verify(str(directory))
    assert [p.message for p in report.problems] == [
        f"metaindex block: block checksum mismatch (block at byte {handle.offset}, {handle.size} bytes)"]


@pytest.fixture(scope="module")
def deflated_keras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A .keras whose model.weights.h5 is deflated (Keras stores it; zip tools recompress), and the model."""
    import keras
    import numpy as np

    root = tmp_path_factory.mktemp("deflated")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 64)), np.zeros((4, 10)), verbose=0)
    stored = root / "stored.keras"
    model.save(stored)
    deflated = root / "deflated.keras"
    with zipfile.ZipFile(stored) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return deflated, model


def test_deflated_weights_member_reads_as_keras_does(deflated_keras: tuple[Path, Any]) -> None:
    import keras
    import numpy as np

    import ckptcheck

    path, _ = deflated_keras
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("model.weights.h5").compress_type == zipfile.ZIP_DEFLATED
    loaded = keras.saving.load_model(path)  # the oracle: what Keras reads from this very file
    with ckptcheck.open_checkpoint(str(path)) as reader:
        names = [t.name for t in reader.tensors() if not t.name.startswith("optimizer/")]
        values = [reader.read(n) for n in names]
    assert len(values) == len(loaded.weights)
    for mine, theirs in zip(values, loaded.weights, strict=True):
        assert np.asarray(theirs).tobytes() == mine.tobytes()
    results = _cli_cases([["verify", str(path)], ["manifest", str(path)], ["inspect", str(path), "--stats"]],
                         path.parent)
    assert [code for code, _ in results] == [0, 0, 0]


@pytest.mark.tf
def test_deflated_member_damage_and_bombs(deflated_keras: tuple[Path, Any], tmp_path: Path) -> None:
    import struct

    path, _ = deflated_keras
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model.weights.h5")
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    damaged = tmp_path / "damaged.keras"
    flipped = bytearray(data)
    flipped[start + info.compress_size // 2] ^= 0x20
    damaged.write_bytes(bytes(flipped))
    bomb = tmp_path / "bomb.keras"
    claimed = bytearray(data)
    # The central directory's uncompressed size of the member: 2**40 bytes from a few KB.
    pos = -1
    while (pos := claimed.find(b"PK\x01\x02", pos + 1)) != -1:
        if claimed[pos + 46 : pos + 46 + len("model.weights.h5")] == b"model.weights.h5":
            struct.pack_into("<I", claimed, pos + 24, 0xFFFFFFF0)
    bomb.write_bytes(bytes(claimed))
    results = _cli_cases([["verify", str(damaged)], ["inspect", str(bomb)], ["verify", str(bomb)]], tmp_path)
    assert results[0][0] == 1
    assert results[1][0] == 2 and "more than any deflate stream expands to" in results[1][1]
    assert results[2][0] == 1
    assert all("Traceback" not in err for _, err in results)


def test_rank_65_tensor_is_one_clear_line(tmp_path: Path) -> None:
    """TensorFlow allows 254 dimensions, numpy 64: printing the values is refused in one line; everything that
    streams them flat works (and the digest is the one of the flat values)."""
    import hashlib

    import numpy as np
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    data = np.arange(2, dtype=np.float32).tobytes()
    (tmp_path / "r.data-00000-of-00001").write_bytes(data)
    write_index(str(tmp_path / "r.index"), {b"deep": entry_proto(DT_FLOAT, [1] * 64 + [2], size=8,
                                                                  crc=masked_crc(data))})
    prefix = str(tmp_path / "r")
    cases = [["inspect", prefix, "--tensor", "deep"], ["inspect", prefix, "--stats"], ["manifest", prefix],
             ["diff", prefix, prefix], ["verify", prefix]]
    results = _cli_cases(cases, tmp_path)
    assert [code for code, _ in results] == [2, 0, 0, 0, 0]
    assert "rank 65" in results[0][1] and results[0][1].count("\n") == 1
    assert all("Traceback" not in err for _, err in results)
    import ckptcheck
    from ckptcheck.manifest import build_manifest

    with ckptcheck.open_checkpoint(prefix) as reader:
        assert build_manifest(reader)["tensors"]["deep"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_claimed_bytes_are_not_counted_as_checked(tmp_path: Path) -> None:
    """A 48-byte shard whose entry claims 2**40 elements: verify names it and does not say '4.0 TiB checked'."""
    import numpy as np
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    from ckptcheck.verify import verify

    data = np.arange(12, dtype=np.float32).tobytes()
    (tmp_path / "h.data-00000-of-00001").write_bytes(data)
    write_index(str(tmp_path / "h.index"), {
        b"good": entry_proto(DT_FLOAT, [12], size=48, crc=masked_crc(data)),
        b"huge": entry_proto(DT_FLOAT, [2**40], size=2**42, crc=0),
    })
    report = verify(str(tmp_path / "h"))
    assert [p.tensor for p in report.problems] == ["huge"]
    assert report.bytes_checked == 48


def test_manifest_will_not_overwrite_the_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "tf2"
    shutil.copytree(FIXTURES / "tf2", directory)
    before = _snapshot(directory)
    index = directory / "ckpt-1.index"
    results = _cli_cases([["manifest", str(directory), "-o", str(index)]], tmp_path)
    assert results[0][0] == 2 and "refusing to write the manifest over" in results[0][1]
    assert _snapshot(directory) == before


def test_unwritten_hdf5_dataset_declaring_2_40_elements(tmp_path: Path) -> None:
    """A .weights.h5 whose dataset declares 2**40 float32s and stores none (HDF5 would hand out its fill value
    for as long as asked): every command that reads values refuses it at once, naming it."""
    import h5py

    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(2**40,), dtype="f4", chunks=(1 << 16,))
        f.create_dataset("layers/dense/vars/1", data=[1.0, 2.0])
    assert path.stat().st_size < 1 << 20
    cases = [["verify", str(path)], ["inspect", str(path), "--stats"], ["manifest", str(path)],
             ["diff", str(path), str(path)], ["inspect", str(path)]]
    results = _cli_cases(cases, tmp_path)
    assert [code for code, _ in results] == [1, 2, 2, 2, 0]
    for _code, err in results[1:4]:
        assert "declares 4398046511104 bytes but the file stores 0" in err and "layers/dense/vars/0" in err
        assert err.count("\n") == 1


@pytest.mark.parametrize("name", ["empty.keras", "empty.h5", "empty.weights.h5", "empty.index"])
def test_an_empty_file_is_one_rule(tmp_path: Path, name: str) -> None:
    """Empty where a checkpoint file is named: verify says damaged (1), inspect cannot read it (2), whatever the
    format."""
    (tmp_path / name).write_bytes(b"")
    results = _cli_cases([["verify", str(tmp_path / name)], ["inspect", str(tmp_path / name)]], tmp_path)
    assert [code for code, _ in results] == [1, 2]
    assert results[1][1].count("\n") == 1


def test_json_output_stays_utf8_for_paths_that_are_not(tmp_path: Path) -> None:
    """A directory whose name is not UTF-8: every --json output is valid UTF-8 JSON, the path's bytes recoverable
    (as Python's surrogateescape gives them)."""
    directory = os.path.join(os.fsencode(tmp_path), b"run\xff")
    shutil.copytree(FIXTURES / "tf2", os.fsdecode(directory))
    path = os.fsdecode(directory)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for args in (["inspect", path, "--json"], ["inspect", path, "--json", "--stats"], ["verify", path, "--json"]):
        proc = subprocess.run([sys.executable, "-m", "ckptcheck", *args], capture_output=True, env=env,
                              timeout=HANG_GUARD_SECONDS)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout.decode("utf-8"))  # strict UTF-8
        assert os.fsencode(data["path"]) == directory


def test_nan_in_a_config_is_written_as_text(tmp_path: Path) -> None:
    """A config.json with NaN (Python's json reads it): inspect --json writes "NaN", as it does for values."""
    source = next((FIXTURES / "keras").glob("*.keras"))
    target = tmp_path / "nan.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][-1]["config"]["units"] = float("nan")
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    from typer.testing import CliRunner

    from ckptcheck.cli import app

    result = CliRunner().invoke(app, ["inspect", str(target), "--json"])
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["architecture"]["layers"]
    assert layers[-1]["config"]["units"] == "NaN"


MEMORY_GUARD_MIB = 300


@pytest.mark.slow
def test_json_and_name_bombs_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    """20 million `[],` in a .keras config, a legacy model_config, a sharded-weights map and a manifest; 60 million
    layer_names: each refused in one line, no case growing the process by more than MEMORY_GUARD_MIB."""
    import h5py
    import numpy as np

    bomb = b"[" + b"[]," * 20_000_000 + b"[]]"
    source = next((FIXTURES / "keras").glob("*.keras"))
    keras_bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(keras_bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, bomb if info.filename == "config.json" else src.read(info.filename))
    legacy = tmp_path / "bomb.h5"
    with h5py.File(legacy, "w", libver="latest") as f:  # dense attribute storage: attributes past 64 KB
        f.attrs["keras_version"] = "3.15.1"
        f.attrs["model_config"] = np.bytes_(bomb)
        f.create_group("model_weights").attrs["layer_names"] = np.array([], dtype="S1")
    shard_map = tmp_path / "bomb.weights.json"
    shard_map.write_bytes(bomb)
    manifest = tmp_path / "bomb.manifest.json"
    manifest.write_bytes(bomb)
    names = tmp_path / "names.h5"
    with h5py.File(names, "w", libver="latest") as f:
        f.attrs["keras_version"] = "3.15.1"
        f.create_group("model_weights").attrs["layer_names"] = np.full(60_000_000, b"x", dtype="S1")
    cases = [["inspect", str(keras_bomb)], ["inspect", str(legacy)], ["inspect", str(shard_map)],
             ["verify", str(FIXTURES / "tf2"), "--against", str(manifest)], ["inspect", str(names)]]
    peaks: list[float] = []
    results = _cli_cases(cases, tmp_path, peaks)
    for args, (code, err), peak in zip(cases, results, peaks, strict=True):
        assert code == 2, (args, code, err)
        # One error line; the safety scan may add a note before it that the config could not be scanned.
        errors = [line for line in err.splitlines() if not line.startswith(("ckptcheck: note:", "ckptcheck: warn"))]
        assert len(errors) == 1 and "Traceback" not in err, (args, err)
        assert "JSON items" in errors[0] or "more than 1,000,000 names" in errors[0], (args, err)
        assert peak < MEMORY_GUARD_MIB, (args, peak)


def test_hdf5_datasets_that_hold_no_tensor(tmp_path: Path) -> None:
    """Compound, opaque, variable-length-number and object-reference datasets: listed, but reading their values is
    one clear line (exit 2), verify names each (exit 1), and a string dataset beside them still reads."""
    import h5py
    import numpy as np

    path = tmp_path / "odd.weights.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("layers/dense/vars")
        group.create_dataset("0", data=np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]))
        group.create_dataset("1", data=np.array([np.void(b"abcd")] * 3))
        group.create_dataset("2", data=np.array([b"ab", b"cd"], dtype="S2"))
        vlen = group.create_dataset("3", (2,), dtype=h5py.vlen_dtype(np.dtype("int32")))
        vlen[0], vlen[1] = [1, 2, 3], [4]
        refs = group.create_dataset("4", (1,), dtype=h5py.ref_dtype)
        refs[0] = group.ref
    odd = [f"layers/dense/vars/{i}" for i in (0, 1, 3, 4)]
    cases = [["inspect", str(path), "--tensor", name] for name in odd]
    cases += [["inspect", str(path), "--tensor", "layers/dense/vars/2"], ["diff", str(path), str(path)],
              ["verify", str(path)], ["inspect", str(path)]]
    results = _cli_cases(cases, tmp_path)
    assert [code for code, _ in results] == [2, 2, 2, 2, 0, 2, 1, 0]
    for (_code, err), name in zip(results[:4], odd, strict=False):
        assert f"tensor '{name}'" in err and "holds no tensor values" in err and err.count("\n") == 1
    assert all("Traceback" not in err for _, err in results)


@pytest.mark.parametrize(("record", "message"), [
    (5, "its record is int"),
    ({"dtype": "float32", "shape": 3, "sha256": "x", "stats": {}}, "its shape is not a list"),
    ({"dtype": "float32", "shape": [3], "sha256": "x", "stats": [1]}, "its stats are not an object"),
])
def test_malformed_manifest_records(tmp_path: Path, record: Any, message: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"manifest_version": 1, "tensors": {"dense/kernel": record}}))
    results = _cli_cases([["verify", str(FIXTURES / "tf1"), "--against", str(manifest), "--atol", "0.1"]], tmp_path)
    assert results[0][0] == 2 and message in results[0][1] and "Traceback" not in results[0][1]


def _patched_member(source: Path, target: Path, *, method: int | None = None, flags: int | None = None) -> None:
    """``source`` with model.weights.h5's compression method or flags rewritten in both its headers."""
    import struct

    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as zf:
        local = zf.getinfo("model.weights.h5").header_offset
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + 16] != b"model.weights.h5":
        central = data.find(b"PK\x01\x02", central + 1)
    for where, (flag_at, method_at) in ((local, (6, 8)), (central, (8, 10))):
        if flags is not None:
            struct.pack_into("<H", data, where + flag_at, flags)
        if method is not None:
            struct.pack_into("<H", data, where + method_at, method)
    target.write_bytes(bytes(data))


@pytest.mark.parametrize(("patch", "message"), [
    ({"method": 9}, "compression method 9"), ({"method": 99}, "compression method 99"),
    ({"flags": 1}, "is encrypted"),
])
def test_keras_members_zipfile_cannot_read(tmp_path: Path, patch: dict[str, int], message: str) -> None:
    """What Python's zipfile (and so Keras) cannot open is one line and exit 2 in every command, not a traceback."""
    source = next((FIXTURES / "keras").glob("*.keras"))
    target = tmp_path / "m.keras"
    _patched_member(source, target, **patch)
    results = _cli_cases([["inspect", str(target)], ["verify", str(target)], ["manifest", str(target)],
                          ["diff", str(target), str(source)]], tmp_path)
    for code, err in results:
        assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.tf
def test_roundtrip_from_a_garbage_meta(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ckptcheck.cli import app

    directory = tmp_path / "tf1"
    shutil.copytree(FIXTURES / "tf1", directory)
    meta = next(directory.glob("*.meta"))
    meta.write_bytes(bytes(range(256)) * 2)
    result = CliRunner().invoke(app, ["roundtrip", "--from", str(directory), "--layers", "4,2", "--inputs", "3",
                                      "--optimizer", "adam"])
    assert result.exit_code == 2, result.output
    assert "the .meta graph cannot be read" in result.stderr and result.stderr.count("\n") == 1


def test_keys_that_differ_in_a_non_utf8_byte_stay_two_tensors(tmp_path: Path) -> None:
    """b"a\\xff" (a raw byte, its data corrupt) beside the text "a\\\\xff" (intact): two tensors, as TensorFlow lists
    them; verify finds the corrupt one (it used to be overwritten by the other, and verify said OK)."""
    import numpy as np
    import tensorflow as tf
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    from ckptcheck.verify import verify

    data = np.arange(16, dtype=np.float32).tobytes()
    (tmp_path / "k.data-00000-of-00001").write_bytes(data)
    write_index(str(tmp_path / "k.index"), {
        b"a\\xff": entry_proto(DT_FLOAT, [8], size=32, crc=masked_crc(data[:32])),
        b"a\xff": entry_proto(DT_FLOAT, [8], offset=32, size=32, crc=masked_crc(data[:32])),  # wrong crc
    })
    prefix = str(tmp_path / "k")
    # The oracle: TensorFlow's restore op reads the intact key and refuses the corrupt one (its Python listing
    # cannot decode a name that is not UTF-8).
    def restore(key: bytes) -> Any:
        return tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[key], shape_and_slices=[""], dtypes=[tf.float32])

    restore(b"a\\xff")
    with pytest.raises(Exception, match=r"(?i)checksum"):
        restore(b"a\xff")
    report = verify(prefix)
    assert [os.fsencode(p.tensor) for p in report.problems] == [b"a\xff"]  # named by its own bytes
    results = _cli_cases([["inspect", prefix], ["verify", prefix]], tmp_path)
    assert [code for code, _ in results] == [0, 1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listing = subprocess.run([sys.executable, "-m", "ckptcheck", "inspect", prefix], capture_output=True, env=env,
                             timeout=HANG_GUARD_SECONDS)
    text = listing.stdout.decode("utf-8")  # printable whatever the terminal: the raw byte shows as \\udcff
    assert "a\\xff" in text and "a\\udcff" in text
    listing = subprocess.run([sys.executable, "-m", "ckptcheck", "inspect", prefix, "--json"], capture_output=True,
                             env=env, timeout=HANG_GUARD_SECONDS)  # piped: the streamed JSON, escaped as emit_json does
    names = [t["name"] for t in json.loads(listing.stdout.decode("utf-8"))["tensors"]]  # strict UTF-8
    assert sorted(os.fsencode(n) for n in names) == [b"a\\xff", b"a\xff"]


def test_a_flipped_weight_byte_in_a_keras_archive_is_never_read_silently(tmp_path: Path) -> None:
    """A stored .keras member is read where it lies, without zipfile's CRC check: manifest and --stats used to
    digest the damaged values silently. Now any command reading values checks the member's CRC first (exit 2,
    one line), verify reports it once, and diff warns (it checks every member) and compares."""
    source = next((FIXTURES / "keras").glob("*.keras"))
    damaged = tmp_path / "flipped.keras"
    shutil.copy(source, damaged)
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("model.weights.h5")
    assert info.compress_type == zipfile.ZIP_STORED
    data = bytearray(damaged.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    results = _cli_cases([["manifest", str(damaged)], ["inspect", str(damaged), "--stats"], ["verify", str(damaged)],
                          ["diff", str(source), str(damaged)], ["inspect", str(damaged)]], tmp_path)
    assert [code for code, _ in results][:3] == [2, 2, 1]
    assert all("fails its CRC" in err and err.count("\n") == 1 for _, err in results[:2])
    assert results[3][0] in (0, 1) and results[4][0] == 0  # diff compares (and warns); listing reads no values
    from ckptcheck.verify import verify

    report = verify(str(damaged))
    assert [p.kind for p in report.problems] == ["checksum"]


def _sparse_index(path: Path, tail: bytes, hole: int) -> None:
    """``tail`` written after a ``hole`` of ``hole`` bytes the file system stores as nothing."""
    with open(path, "wb") as f:
        f.seek(hole)
        f.write(tail)


@pytest.mark.slow
def test_a_2_gb_sparse_index_costs_only_the_blocks_it_points_at(tmp_path: Path) -> None:
    """Two ~2 GB sparse .index files: a valid table after a 2 GB hole (read by TensorFlow too), and a data block
    claiming the 2 GB of zeros. Neither is read whole, nor twice: each command stays under the memory guard."""
    import struct

    import numpy as np
    import tensorflow as tf
    from index_writer import DT_FLOAT, MAGIC, block, entry_proto, header_proto, masked_crc, varint, with_trailer

    hole = (2 << 30) - 4096
    values = np.arange(4, dtype="<f4")
    items = sorted([(b"", header_proto(1)),
                    (b"w", entry_proto(DT_FLOAT, [4], size=16, crc=masked_crc(values.tobytes())))])

    def table(blocks: list[tuple[bytes, bytes]], index_key: bytes, data_handle: tuple[int, int]) -> bytes:
        data = b"".join(with_trailer(block(blocks)) for _ in [0] if blocks)
        meta_block, index_block = block([]), block([(index_key, varint(data_handle[0]) + varint(data_handle[1]))])
        meta_at = hole + len(data)
        out = data + with_trailer(meta_block)
        index_at = hole + len(out)
        out += with_trailer(index_block)
        handles = varint(meta_at) + varint(len(meta_block)) + varint(index_at) + varint(len(index_block))
        return out + handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)

    valid, damaged = tmp_path / "valid", tmp_path / "damaged"
    _sparse_index(Path(f"{valid}.index"), table(items, b"w", (hole, len(block(items)))), hole)
    _sparse_index(Path(f"{damaged}.index"), table([], b"w", (0, hole - 5)), hole)
    for prefix in (valid, damaged):
        Path(f"{prefix}.data-00000-of-00001").write_bytes(values.tobytes())
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(valid)).get_tensor("w"), values)  # the oracle

    def stamps() -> dict[str, tuple[int, int]]:  # the files are too large to snapshot by content
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}

    before = stamps()
    cases = [[verb, str(prefix)] for prefix in (valid, damaged) for verb in ("inspect", "verify", "manifest")]
    cases += [["diff", str(valid), str(valid)], ["diff", str(damaged), str(valid)]]
    peaks: list[float] = []
    results = _cli_cases(cases, tmp_path, peaks)
    assert [code for code, _err in results] == [0, 0, 0, 2, 1, 2, 0, 2], results
    for (code, err), peak in zip(results, peaks, strict=True):
        assert "Traceback" not in err and peak < MEMORY_GUARD_MIB, (err, peak)
        if code == 2:  # (verify's report of the damage, exit 1, is on stdout)
            assert err.count("\n") == 1 and "damaged.index: block checksum mismatch (block at byte 0" in err, err
    assert stamps() == before
    from ckptcheck.verify import verify

    assert [p.message for p in verify(str(damaged)).problems] == [
        f"block checksum mismatch (block at byte 0, {hole - 5} bytes)"]


@pytest.mark.slow
def test_a_header_claiming_200000_shards_beside_one_file(tmp_path: Path) -> None:
    """The header names 200,000 shards; one exists and holds the only tensor. TensorFlow reads the tensor (it opens
    a shard only when a tensor needs it); verify says the rest are missing in one problem, not 199,999 lines."""
    import numpy as np
    import tensorflow as tf
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    n = 200_000
    values = np.arange(4, dtype="<f4")
    write_index(str(tmp_path / "s.index"), {b"w": entry_proto(DT_FLOAT, [4], size=16,
                                                                crc=masked_crc(values.tobytes()))}, num_shards=n)
    (tmp_path / f"s.data-00000-of-{n:05d}").write_bytes(values.tobytes())
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(tmp_path / "s")).get_tensor("w"), values)
    from ckptcheck.verify import verify

    report = verify(str(tmp_path / "s"))
    assert report.tensors_checked == 1 and [(p.kind, p.file) for p in report.problems] == [
        ("missing-file", str(tmp_path / f"s.data-00001-of-{n:05d}"))]
    assert report.problems[0].message.startswith(f"199,999 of the 200,000 data shards are missing: s.data-00001-of-"
                                                 f"{n:05d}, s.data-00002-of-{n:05d}, s.data-00003-of-{n:05d}, ... "
                                                 f"s.data-{n - 1:05d}-of-{n:05d}")
    peaks: list[float] = []
    results = _cli_cases([["verify", str(tmp_path / "s")], ["inspect", "--json", str(tmp_path / "s")],
                          ["manifest", str(tmp_path / "s")]], tmp_path, peaks)
    assert [code for code, _err in results] == [1, 0, 0] and max(peaks) < MEMORY_GUARD_MIB, (results, peaks)
