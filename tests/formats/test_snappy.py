"""Snappy-compressed table blocks, as many TensorFlow 1.x and 2.x builds wrote them.

Current pip builds of TensorFlow do not compress, so the files are made by re-encoding the blocks of indexes
TensorFlow wrote (index_writer.snappy_reencode). TensorFlow itself then reads every rewritten file, and what it
reads is the oracle for what ckptcheck reads.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from index_writer import MAGIC, SNAPPY, block, masked_crc, snappy_raw, snappy_reencode, varint, with_trailer
from test_bundle import assert_same_value
from tf_builders import SHARDED_STRINGS
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.formats.tensorflow.sstable import SSTable
from ckptcheck.verify import verify

runner = CliRunner()
BUNDLES = ["tf1_model_dir", "tf_raw_bundle", "tf2_sharded", "tf2_sharded_strings", "savedmodel_dir"]


def _prefix_of(value: Any) -> str:
    path = Path(value)
    if path.is_dir():
        return str(sorted(path.rglob("*.index"))[-1])[: -len(".index")]
    return str(value)


def snappy_copy(prefix: str, directory: Path, min_saving: float = 0.0) -> tuple[str, int]:
    """Copy a bundle's files into ``directory`` with its index re-encoded; the new prefix and how many blocks
    are compressed."""
    source = Path(prefix)
    directory.mkdir(parents=True, exist_ok=True)
    for f in source.parent.iterdir():
        if f.name.startswith(source.name + ".") and f.is_file():
            shutil.copy(f, directory / f.name)
    index = directory / (source.name + ".index")
    table, compressed = snappy_reencode(index.read_bytes(), min_saving=min_saving)
    index.write_bytes(table)
    return str(directory / source.name), compressed


@pytest.fixture(scope="module")
def snappy_bundles(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for fixture in BUNDLES:
        prefix = _prefix_of(request.getfixturevalue(fixture))
        out[fixture], compressed = snappy_copy(prefix, tmp_path_factory.mktemp(f"snappy_{fixture}"))
        assert compressed >= 1
    return out


def _block_types(index: str) -> list[int]:
    table = SSTable.open(index)
    handles = [*table.data_block_handles(), table.metaindex_handle, table.index_handle]
    return [table.data[h.offset + h.size] for h in handles]  # type: ignore[index]


@pytest.mark.parametrize("fixture", BUNDLES)
def test_snappy_index_reads_as_tensorflow_reads_it(snappy_bundles: dict[str, str], fixture: str) -> None:
    import tensorflow as tf

    prefix = snappy_bundles[fixture]
    assert SNAPPY in _block_types(prefix + ".index")  # the file under test really is compressed
    theirs = tf.train.load_checkpoint(prefix)
    expected = dict(tf.train.list_variables(prefix))
    with ckptcheck.open_checkpoint(prefix) as reader:
        listed = {t.name: list(t.shape) for t in reader.tensors()}
        assert listed == expected
        for name in expected:
            if fixture == "tf2_sharded_strings" and name.startswith("words/"):
                # TensorFlow cannot reassemble a sliced string variable (test_bundle.py shows it): the values
                # the fixture wrote are the oracle.
                assert list(reader.read(name)) == list(SHARDED_STRINGS)
                continue
            assert_same_value(reader.read(name), theirs.get_tensor(name), name)


def test_every_block_kind_compressed_and_the_builder_rule(tf_raw_bundle: str, tmp_path: Path) -> None:
    """The index and metaindex blocks compressed too; and TensorFlow's own rule (compress only when it saves
    12.5 %), which leaves a mix of compressed and stored blocks in one file."""
    import tensorflow as tf

    assert len(SSTable.open(tf_raw_bundle + ".index").data_block_handles()) > 1
    mixed, _ = snappy_copy(tf_raw_bundle, tmp_path / "mixed", min_saving=0.125)
    types = _block_types(mixed + ".index")
    assert SNAPPY in types and 0 in types
    theirs = tf.train.load_checkpoint(mixed)
    with ckptcheck.open_checkpoint(mixed) as reader:
        for t in reader.tensors():
            assert_same_value(reader.read(t.name), theirs.get_tensor(t.name), t.name)
    assert verify(mixed).ok


def test_verify_manifest_diff_on_snappy(tf1_model_dir: Path, snappy_bundles: dict[str, str]) -> None:
    prefix = snappy_bundles["tf1_model_dir"]
    original = _prefix_of(tf1_model_dir)
    result = runner.invoke(app, ["verify", prefix])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["manifest", prefix]).stdout == runner.invoke(app, ["manifest", original]).stdout
    assert runner.invoke(app, ["diff", original, prefix]).exit_code == 0


def _flip_in_first_compressed_block(prefix: str) -> None:
    index = Path(prefix + ".index")
    data = bytearray(index.read_bytes())
    table = SSTable(str(index), bytes(data))
    handle = next(h for h in table.data_block_handles() if data[h.offset + h.size] == SNAPPY)
    data[handle.offset + handle.size // 2] ^= 0x10
    index.write_bytes(bytes(data))


def test_damaged_snappy_block_is_one_problem_exit_1(tf1_model_dir: Path, tmp_path: Path) -> None:
    prefix, _ = snappy_copy(_prefix_of(tf1_model_dir), tmp_path / "damaged")
    _flip_in_first_compressed_block(prefix)
    report = verify(prefix)
    assert [p.kind for p in report.problems] == ["index"]  # no follow-on "no bundle header"
    assert "block checksum mismatch" in report.problems[0].message
    result = runner.invoke(app, ["verify", prefix])
    assert result.exit_code == 1
    assert "no bundle header" not in result.output
    inspect = runner.invoke(app, ["inspect", prefix])
    assert inspect.exit_code == 2 and "block checksum mismatch" in inspect.stderr


def _with_block(contents: bytes) -> bytes:
    """A table whose one data block stores ``contents`` under type 1 with an intact checksum."""
    out = with_trailer(contents, SNAPPY)
    meta = block([])
    meta_offset = len(out)
    out += with_trailer(meta)
    index_offset = len(out)
    index = block([(b"\xff", varint(0) + varint(len(contents)))])
    out += with_trailer(index)
    handles = varint(meta_offset) + varint(len(meta)) + varint(index_offset) + varint(len(index))
    return out + handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)


def test_snappy_length_bomb_allocates_nothing(tmp_path: Path) -> None:
    """A block claiming 2**40 uncompressed bytes from a few: refused before any buffer is made."""
    bomb = bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20]) + b"\x00" * 8  # varint 2**40, then junk
    (tmp_path / "b.index").write_bytes(_with_block(bomb))
    with pytest.raises(CorruptCheckpointError, match="declares 1099511627776 bytes"):
        ckptcheck.open_checkpoint(str(tmp_path / "b"))
    report = verify(str(tmp_path / "b"))
    assert not report.ok and len(report.problems) == 1
    assert "declares 1099511627776 bytes" in report.problems[0].message


def test_truncated_snappy_stream_is_damage(tmp_path: Path) -> None:
    whole = snappy_raw(b"".join(bytes([i]) * 40 for i in range(40)))
    (tmp_path / "t.index").write_bytes(_with_block(whole[: len(whole) // 2]))
    with pytest.raises(CorruptCheckpointError, match="does not decompress"):
        ckptcheck.open_checkpoint(str(tmp_path / "t"))
    assert runner.invoke(app, ["verify", str(tmp_path / "t")]).exit_code == 1


def test_masked_crc_covers_the_type_byte(tmp_path: Path) -> None:
    """Flipping only the type byte (1 -> 0) breaks the checksum: damage, exit 1, not 'unknown format'."""
    prefix, _ = snappy_copy(str(Path(__file__).parents[2] / "fixtures/tf1/model.ckpt-2"), tmp_path / "t")
    index = Path(prefix + ".index")
    data = bytearray(index.read_bytes())
    table = SSTable(str(index), bytes(data))
    handle = next(h for h in table.data_block_handles() if data[h.offset + h.size] == SNAPPY)
    data[handle.offset + handle.size] = 0
    assert masked_crc(bytes(data[handle.offset : handle.offset + handle.size + 1])) != struct.unpack_from(
        "<I", data, handle.offset + handle.size + 1)[0]
    index.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", prefix])
    assert result.exit_code == 1 and "block checksum mismatch" in result.output
