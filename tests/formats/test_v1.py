"""V1 checkpoints (the TensorSliceReader format) against TensorFlow, which wrote them and reads them.

Every file here is written by TensorFlow's own Saver (write_version=V1): single files, shards across devices, a
partitioned variable, a string variable and a global step in a model_dir with a state file. What
tf.train.load_checkpoint reads is the oracle for names, dtypes, shapes and every value, bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_writer import SNAPPY, snappy_reencode
from test_bundle import assert_same_value
from tf_builders import TF1_SAVE_STEPS, V1_DTYPES
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.formats.resolve import list_state, resolve
from ckptcheck.formats.tensorflow.bundle import decode_slice_key
from ckptcheck.formats.tensorflow.sstable import SSTable
from ckptcheck.formats.tensorflow.v1 import V1Reader, encode_slice_key
from ckptcheck.verify import verify

runner = CliRunner()
LATEST = max(TF1_SAVE_STEPS)


def _tf():  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return tf


def sharded_pattern(dirs: dict[str, Path]) -> str:
    """The pattern TensorFlow's Saver returned for the sharded save (its state file names it)."""
    pattern = _tf().train.latest_checkpoint(str(dirs["sharded"]))
    assert pattern.endswith(tuple(f"-?????-of-0000{n}" for n in range(2, 10)))
    return str(pattern)


def v1_paths(dirs: dict[str, Path]) -> list[str]:
    """What TensorFlow's own Saver returned for each V1 save (what a state file names)."""
    return [*(str(dirs["model_dir"] / f"model.ckpt-{s}") for s in TF1_SAVE_STEPS), sharded_pattern(dirs),
            str(dirs["dtypes"] / "model.ckpt")]


def tf_value(path: str, name: str, dtype: str) -> np.ndarray:
    """What TensorFlow reads: load_checkpoint's get_tensor, or for a partitioned variable (which get_tensor refuses
    in a V1 file: "Sliced checkpoints are not supported") the Restore op that V1 restores are built on."""
    tf = _tf()
    try:
        return np.asarray(tf.train.load_checkpoint(path).get_tensor(name))
    except tf.errors.UnimplementedError:
        return np.asarray(tf.raw_ops.Restore(file_pattern=path, tensor_name=name, dt=tf.as_dtype(dtype)).numpy())


def assert_reads_as_tensorflow(path: str, tf_path: str | None = None) -> int:
    tf = _tf()
    tf_path = tf_path or path
    expected = dict(tf.train.list_variables(tf_path))
    with ckptcheck.open_checkpoint(path) as reader:
        assert reader.format == "tf1"
        listed = reader.tensors()
        assert {t.name: list(t.shape) for t in listed} == expected
        assert [t.name for t in listed] == sorted(expected)  # tf.train.list_variables order
        for t in listed:
            value = tf_value(tf_path, t.name, t.dtype)
            assert t.dtype == ("string" if value.dtype == object else tf.as_dtype(value.dtype).name), t.name
            mine = reader.read(t.name)
            assert_same_value(mine, value, t.name)
            streamed = list(reader.iter_chunks(t.name, chunk_bytes=16))
            if not t.slices:  # streamed in C order when not partitioned
                flat = np.concatenate([c.copy() for c in streamed]) if streamed else mine.reshape(-1)
                assert list(flat) == list(mine.reshape(-1)) if mine.dtype == object else \
                    flat.tobytes() == mine.reshape(-1).tobytes()
    return len(expected)


def test_every_v1_save_reads_as_tensorflow_reads_it(tf1_v1_checkpoints: dict[str, Path]) -> None:
    counts = [assert_reads_as_tensorflow(p) for p in v1_paths(tf1_v1_checkpoints)]
    assert min(counts) >= 3


def test_v1_shape_of_the_real_thing(tf1_v1_checkpoints: dict[str, Path]) -> None:
    """What the fixture is meant to hold, so the tests above cover it: slices, strings, shards, a step."""
    with ckptcheck.open_checkpoint(str(tf1_v1_checkpoints["model_dir"])) as reader:
        info = reader.info()
        by_name = {t.name: t for t in info.tensors}
        assert by_name["embedding"].slices == 3 and by_name["embedding"].shape == (10, 4)
        assert by_name["vocab"].dtype == "string"
        assert int(reader.read("global_step")) == LATEST
        assert "embedding/Adam_1" in by_name
        assert info.files[-1].endswith(f"model.ckpt-{LATEST}.meta")
        assert "V1" in (info.writer or "")
    with ckptcheck.open_checkpoint(str(tf1_v1_checkpoints["sharded"])) as reader:
        info = reader.info()
        shards = int(sharded_pattern(tf1_v1_checkpoints)[-5:])
        assert info.shards == shards and len({t.file for t in info.tensors}) == shards
    with ckptcheck.open_checkpoint(str(tf1_v1_checkpoints["dtypes"] / "model.ckpt")) as reader:
        assert {t.name: t.dtype for t in reader.tensors()} == {name: name for name in V1_DTYPES}
        for name, value in V1_DTYPES.items():
            assert_same_value(reader.read(name), value, name)


def test_every_path_a_user_pastes_resolves(tf1_v1_checkpoints: dict[str, Path]) -> None:
    model_dir, sharded = tf1_v1_checkpoints["model_dir"], tf1_v1_checkpoints["sharded"]
    latest = str(model_dir / f"model.ckpt-{LATEST}")
    for given in (str(model_dir), latest, latest + ".meta", str(model_dir / "checkpoint")):
        resolved = resolve(given)
        assert (resolved.kind, resolved.location) == ("v1", latest), given
    pattern = sharded_pattern(tf1_v1_checkpoints)
    for given in (str(sharded), pattern, pattern.replace("?????", "00001"),
                  str(sharded / f"model.ckpt-{LATEST}"), str(sharded / f"model.ckpt-{LATEST}.meta")):
        resolved = resolve(given)
        assert (resolved.kind, resolved.location) == ("v1", pattern), given
    # `inspect --all` sees both steps as present (TensorFlow's own list agrees)
    entries = list_state(str(model_dir))
    assert [(e.step, e.exists) for e in entries] == [(s, True) for s in TF1_SAVE_STEPS]
    assert _tf().train.get_checkpoint_state(str(model_dir)).model_checkpoint_path == latest
    result = runner.invoke(app, ["inspect", str(model_dir), "--all"])
    assert result.exit_code == 0 and "MISSING" not in result.stdout


def test_inspect_options_on_v1(tf1_v1_checkpoints: dict[str, Path]) -> None:
    tf = _tf()
    path = str(tf1_v1_checkpoints["model_dir"])
    data = json.loads(runner.invoke(app, ["inspect", path, "--json", "--stats"]).stdout)
    assert data["format"] == "tf1" and data["shards"] == 1
    theirs = tf.train.load_checkpoint(path)
    assert len(data["tensors"]) == len(theirs.get_variable_to_shape_map())
    for t in data["tensors"]:
        if t["dtype"] in ("float32", "int64"):
            value = tf_value(data["location"], t["name"], t["dtype"])
            assert t["stats"]["count"] == value.size
            assert t["stats"]["max"] == pytest.approx(float(np.max(value)))
    table = runner.invoke(app, ["inspect", path, "--filter", "embedding"])
    assert table.exit_code == 0 and "embedding/Adam" in table.stdout and "dense/kernel" not in table.stdout
    values = json.loads(runner.invoke(app, ["inspect", path, "--tensor", "dense/kernel", "--json"]).stdout)
    np.testing.assert_array_equal(np.array(values["values"], dtype=np.float32), theirs.get_tensor("dense/kernel"))


def test_v1_and_v2_saves_of_the_same_variables_are_the_same(tf1_v1_checkpoints: dict[str, Path]) -> None:
    for step in TF1_SAVE_STEPS:
        a = str(tf1_v1_checkpoints["model_dir"] / f"model.ckpt-{step}")
        b = str(tf1_v1_checkpoints["v2_model_dir"] / f"model.ckpt-{step}")
        result = runner.invoke(app, ["diff", a, b, "--json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["unchanged"]) == len(_tf().train.list_variables(b))
        ma, mb = (json.loads(runner.invoke(app, ["manifest", p]).stdout) for p in (a, b))
        # Same digests and statistics; a string tensor's stored size differs by format (V2 adds lengths and a
        # checksum), a number's does not.
        for name, record in ma["tensors"].items():
            other = dict(mb["tensors"][name])
            if record["dtype"] == "string":
                other["nbytes"] = record["nbytes"]
            assert record == other, name
    trained = runner.invoke(app, ["diff", str(tf1_v1_checkpoints["model_dir"] / "model.ckpt-3"),
                                  str(tf1_v1_checkpoints["model_dir"] / "model.ckpt-6"), "--json"])
    assert trained.exit_code == 1
    changed = {c["name"] for c in json.loads(trained.stdout)["changed"]}
    assert {"dense/kernel", "embedding", "global_step"} <= changed and "vocab" not in changed


def test_verify_v1(tf1_v1_checkpoints: dict[str, Path]) -> None:
    for path in v1_paths(tf1_v1_checkpoints):
        report = verify(path)
        assert report.ok, report.problems
        assert report.tensors_checked == len(_tf().train.list_variables(path))
        assert any("no per-tensor checksum" in n for n in report.notes)
    result = runner.invoke(app, ["verify", str(tf1_v1_checkpoints["model_dir"])])
    assert result.exit_code == 0 and "no per-tensor checksum" in result.stdout
    data = json.loads(runner.invoke(app, ["verify", str(tf1_v1_checkpoints["sharded"]), "--json"]).stdout)
    assert data["ok"] and data["notes"]
    manifest = runner.invoke(app, ["manifest", str(tf1_v1_checkpoints["model_dir"])]).stdout
    golden = Path(tf1_v1_checkpoints["model_dir"]) / ".." / "golden.json"
    golden.write_text(manifest)
    assert runner.invoke(app, ["verify", str(tf1_v1_checkpoints["model_dir"]), "--against",
                               str(golden)]).exit_code == 0


def _copy(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


def _data_blocks(path: Path) -> list[tuple[int, int]]:
    table = SSTable.open(str(path))
    return [(h.offset, h.size) for h in table.data_block_handles()]


def _flip(path: Path, block: int) -> None:
    data = bytearray(path.read_bytes())
    offset, size = _data_blocks(path)[block]
    data[offset + size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_v1_block_names_the_tensors_in_it(tf1_v1_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """A flipped byte in a later data block: TensorFlow refuses those tensors; verify names the block and the
    tensors in it, exit 1; inspect still lists the table of contents (it reads no values)."""
    target = _copy(tf1_v1_checkpoints["model_dir"], tmp_path) / f"model.ckpt-{LATEST}"
    assert len(_data_blocks(target)) > 1
    _flip(target, -1)
    refused = set()
    with ckptcheck.open_checkpoint(str(target)) as reader:
        listed = {t.name: t.dtype for t in reader.tensors()}
    for name, dtype in listed.items():
        try:  # TensorFlow's table iterator skips a corrupt block: its tensors are "not found in checkpoint file"
            tf_value(str(target), name, dtype)
        except Exception as exc:
            # (or, for a partitioned one, "Error copying slice data")
            assert "not found" in str(exc) or "copying slice data" in str(exc), exc
            refused.add(name)
    assert refused
    report = verify(str(target))
    assert {p.tensor for p in report.problems} == refused
    assert len({p.message for p in report.problems}) == 1 and "block checksum mismatch" in report.problems[0].message
    result = runner.invoke(app, ["verify", str(target)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert runner.invoke(app, ["inspect", str(target)]).exit_code == 0


def test_damaged_v1_table_of_contents_is_one_problem(tf1_v1_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    tf = _tf()
    target = _copy(tf1_v1_checkpoints["model_dir"], tmp_path) / f"model.ckpt-{LATEST}"
    _flip(target, 0)
    with pytest.raises(Exception, match="saved tensor slices"):
        tf.train.load_checkpoint(str(target))
    report = verify(str(target))
    assert len(report.problems) == 1 and "block checksum mismatch" in report.problems[0].message
    assert runner.invoke(app, ["verify", str(target)]).exit_code == 1
    inspect = runner.invoke(app, ["inspect", str(target)])
    assert inspect.exit_code == 2 and inspect.stderr.count("\n") == 1 and "block checksum mismatch" in inspect.stderr


# The copy's state file names where the Saver wrote (a RelocatedCheckpointWarning; not this test's subject).
@pytest.mark.filterwarnings("ignore::ckptcheck.RelocatedCheckpointWarning")
def test_truncated_and_missing_v1_shards(tf1_v1_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(tf1_v1_checkpoints["sharded"], tmp_path)
    (directory / Path(sharded_pattern(tf1_v1_checkpoints).replace("?????", "00001")).name).unlink()
    report = verify(str(directory))
    assert [p.kind for p in report.problems] == ["missing-file"]
    assert runner.invoke(app, ["verify", str(directory)]).exit_code == 1
    single = _copy(tf1_v1_checkpoints["dtypes"], tmp_path / "t") / "model.ckpt"
    single.write_bytes(single.read_bytes()[:-10])
    result = runner.invoke(app, ["verify", str(single)])
    assert result.exit_code == 1, result.output
    assert "bad magic number" in result.output or "truncated" in result.output


def test_snappy_compressed_v1(tf1_v1_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Old TensorFlow builds compressed V1 files' blocks too: re-encoded, TensorFlow still reads them, and so does
    ckptcheck, to the same values."""
    directory = _copy(tf1_v1_checkpoints["model_dir"], tmp_path)
    target = directory / f"model.ckpt-{LATEST}"
    table, compressed = snappy_reencode(target.read_bytes())
    assert compressed >= 1
    target.write_bytes(table)
    opened = SSTable.open(str(target))
    assert any(opened.data[h.offset + h.size] == SNAPPY for h in opened.data_block_handles())  # type: ignore[index]
    assert assert_reads_as_tensorflow(str(target)) > 5
    assert verify(str(target)).ok


def test_slice_keys_encode_as_tensorflow_writes_them(tf1_v1_checkpoints: dict[str, Path]) -> None:
    """Every key TensorFlow wrote decodes and encodes back to the same bytes (signed numbers of several lengths
    included)."""
    seen = 0
    for path in (tf1_v1_checkpoints["model_dir"] / f"model.ckpt-{LATEST}", tf1_v1_checkpoints["dtypes"] / "model.ckpt"):
        for key, _value in SSTable.open(str(path)).items():
            if key:
                name, extents = decode_slice_key(key)
                assert encode_slice_key(name.encode("utf-8", "surrogateescape"), extents) == key
                seen += 1
    assert seen > 10
    for value in (-(2**40), -65, -64, -1, 0, 63, 64, 8191, 8192, 2**40, 2**62):
        key = encode_slice_key(b"x\x00\xff", ((value, -1),))
        assert decode_slice_key(key) == ("x\x00\udcff", ((value, -1),))  # the raw byte, as surrogateescape


def test_hostile_v1_table_of_contents(tmp_path: Path) -> None:
    """A table of contents claiming a huge shape: listing shows it, reading refuses it without allocating."""
    from index_writer import shape_proto, slice_proto, varint, write_table

    def field(number: int, body: bytes) -> bytes:
        return varint((number << 3) | 2) + varint(len(body)) + body

    huge = [2**20, 2**20, 1]
    entry = field(1, b"v") + field(2, shape_proto(huge)) + varint(3 << 3) + varint(1) + field(4, slice_proto(
        [(0, -1)] * 3))
    meta = field(1, field(1, entry) + field(2, varint(1 << 3) + varint(1)))
    record = field(2, field(1, b"v") + field(3, field(5, b"\x00" * 8)))
    key = encode_slice_key(b"v", ((0, -1),) * 3)
    (tmp_path / "model.ckpt").write_bytes(write_table([(b"", meta), (key, record)]))
    with V1Reader(str(tmp_path / "model.ckpt")) as reader:
        assert reader.tensors()[0].shape == tuple(huge)
        with pytest.raises(CorruptCheckpointError, match="holds 2 values, the slice has 1099511627776"):
            reader.read("v")
    result = runner.invoke(app, ["verify", str(tmp_path / "model.ckpt")])
    assert result.exit_code == 1 and "holds 2 values" in result.output


def test_roundtrip_from_v1_says_what_to_do(tf1_v1_checkpoints: dict[str, Path]) -> None:
    result = runner.invoke(app, ["roundtrip", "--from", str(tf1_v1_checkpoints["model_dir"])])
    assert result.exit_code == 2
    assert "V1 checkpoint" in result.stderr and result.stderr.count("\n") == 1


def test_verify_reads_each_block_of_a_v1_file_once(tf1_v1_checkpoints: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A V1 file's values are its table blocks: verify checks them while reading the tensors, and its structure
    check reads only what no tensor reached (every block used to be read three times)."""
    reads: dict[tuple[str, int], int] = {}
    original = SSTable.read_block

    def counting(self: SSTable, handle: Any) -> Any:
        reads[(self.path, handle.offset)] = reads.get((self.path, handle.offset), 0) + 1
        return original(self, handle)

    monkeypatch.setattr(SSTable, "read_block", counting)
    target = tf1_v1_checkpoints["model_dir"] / f"model.ckpt-{LATEST}"
    assert verify(str(target)).ok
    counted = dict(reads)
    data_blocks = {(str(target), offset) for offset, _size in _data_blocks(target)}
    assert len(data_blocks) > 1 and data_blocks <= set(counted)
    # At most twice: the listing looks at string records (their stored size) before the tensors are read, and the
    # one-block cache may have let such a block go by then; the structure check reads nothing a tensor read did.
    assert max(counted[b] for b in data_blocks) <= 2, counted
