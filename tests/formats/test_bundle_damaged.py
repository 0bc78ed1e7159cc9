"""Damaged and hostile bundles: every failure is a CkptcheckError naming the file (and tensor), raised before
anything large is allocated, and reading never changes a byte of the checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from index_writer import (
    DT_FLOAT,
    DT_INT32,
    DT_STRING,
    entry_proto,
    header_proto,
    masked_crc,
    object_graph_proto,
    slice_key,
    write_index,
    write_table,
)
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.diff import diff_readers
from ckptcheck.errors import CheckpointNotFoundError, CkptcheckError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats.interface import aligned_empty
from ckptcheck.formats.tensorflow.bundle import BundleReader
from ckptcheck.formats.tensorflow.object_graph import MAX_PATHS_PER_NODE, object_refs
from ckptcheck.formats.tensorflow.sstable import SSTable

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def unchanged(*directories: Path) -> Iterator[None]:
    """Reading must never write: every file under the directories is byte-for-byte the same afterwards."""
    before = [_files(d) for d in directories]
    yield
    assert [_files(d) for d in directories] == before


def copy_bundle(prefix: str, dest: Path) -> str:
    """Copy a bundle's .index and .data files (not the state file) into dest; return the new prefix."""
    source = Path(prefix)
    for f in source.parent.iterdir():
        if f.name.startswith(source.name + ".") and f.is_file():
            shutil.copyfile(f, dest / f.name)
    return str(dest / source.name)


def read_everything(path: str) -> int:
    """Open, list, read and stream every tensor, and the object graph; return how many tensors were read."""
    with ckptcheck.open_checkpoint(path) as reader:
        reader.info()
        reader.objects()
        count = 0
        for t in reader.tensors():
            reader.read(t.name)
            for _ in reader.iter_chunks(t.name, chunk_bytes=64):
                pass
            count += 1
        return count


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module", autouse=True)
def originals_untouched(
    tf2_all_dtypes: str, tf2_sharded: str, manager_dir: Path, tf1_model_dir: Path
) -> Iterator[None]:
    """Damage is only ever done to copies: the checkpoints they came from are byte-for-byte the same at the end."""
    with unchanged(Path(tf2_all_dtypes).parent, Path(tf2_sharded).parent, manager_dir, tf1_model_dir):
        yield


# --- damaged copies of real checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize(("tensor", "where"), [("float32", 5), ("strings", -3), ("strings", 2), ("int64", 0)])
def test_flipped_data_byte_names_shard_and_tensor(tf2_all_dtypes: str, tmp_path: Path, tensor: str,
                                                  where: int) -> None:
    """A flipped bit in one tensor's bytes (numeric data, string bytes, string lengths) fails that tensor's read
    only; the error names the shard and the tensor. `where` counts from the entry's start (or end if < 0)."""
    prefix = copy_bundle(tf2_all_dtypes, tmp_path)
    name = tensor + VALUE
    with ckptcheck.open_checkpoint(prefix) as reader:
        assert isinstance(reader, BundleReader)
        entry = reader.entry(name)
        shard = Path(reader.shard_path(entry.shard_id))
    flip(shard, entry.offset + (where if where >= 0 else entry.size + where))
    with unchanged(Path(tf2_all_dtypes).parent, tmp_path), ckptcheck.open_checkpoint(prefix) as reader:
        reads = [reader.read, lambda n: list(reader.iter_chunks(n, chunk_bytes=8))]
        if tensor != "strings":
            reads.append(lambda n: reader.read_into(n, aligned_empty(1 << 16)))
        for read in reads:
            with pytest.raises(CorruptCheckpointError) as info:
                read(name)
            assert shard.name in str(info.value) and f"tensor '{name}'" in str(info.value)
            assert "checksum" in str(info.value) or "string lengths" in str(info.value)
        for t in reader.tensors():
            if t.name != name:
                reader.read(t.name)
        with ckptcheck.open_checkpoint(tf2_all_dtypes) as original:
            with pytest.raises(CorruptCheckpointError) as info:
                diff_readers(original, reader)
            assert f"tensor '{name}'" in str(info.value)


def test_flipped_data_byte_in_a_slice_names_that_shard(tf2_sharded: str, tmp_path: Path) -> None:
    prefix = copy_bundle(tf2_sharded, tmp_path)
    name = "big" + VALUE
    with ckptcheck.open_checkpoint(prefix) as reader:
        assert isinstance(reader, BundleReader)
        _, part = reader.slices_of(reader.entry(name))[1]
        shard = Path(reader.shard_path(part.shard_id))
    flip(shard, part.offset + part.size // 2, 0x80)
    with (
        unchanged(tmp_path),
        ckptcheck.open_checkpoint(prefix) as reader,
        pytest.raises(CorruptCheckpointError) as info,
    ):
        reader.read(name)
    assert shard.name in str(info.value) and name in str(info.value)


def _index_block_spans(index: Path) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    table = SSTable.open(str(index))
    data = [(h.offset, h.size) for h in table.data_block_handles()]
    return data, (table.index_handle.offset, table.index_handle.size)


@pytest.mark.parametrize("target", ["data block", "index block", "block trailer"])
def test_flipped_index_byte_is_a_block_checksum_mismatch(tf2_all_dtypes: str, tmp_path: Path, target: str) -> None:
    prefix = copy_bundle(tf2_all_dtypes, tmp_path)
    index = Path(prefix + ".index")
    data_blocks, (index_offset, _) = _index_block_spans(index)
    offset, size = data_blocks[0]
    position = {"data block": offset + size // 2, "index block": index_offset + 1,
                "block trailer": offset + size + 2}[target]
    flip(index, position)
    with unchanged(Path(tf2_all_dtypes).parent, tmp_path), pytest.raises(CorruptCheckpointError) as info:
        ckptcheck.open_checkpoint(prefix)
    assert "block checksum mismatch" in str(info.value) and str(index) in str(info.value)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda data: data[: len(data) // 2], "bad magic number"),
        (lambda data: data[:-1], "bad magic number"),
        (lambda data: data[:30], "too short"),
        (lambda data: b"", "empty"),
        (lambda data: random.Random(0).randbytes(len(data)), "bad magic number"),
        (lambda data: random.Random(1).randbytes(len(data) - 8) + data[-8:], "footer|truncated block|checksum"),
    ],
    ids=["half", "minus-one-byte", "shorter-than-footer", "empty", "random", "random-with-magic"],
)
def test_damaged_index_file(tf2_all_dtypes: str, tmp_path: Path, damage: Callable[[bytes], bytes],
                            expected: str) -> None:
    prefix = copy_bundle(tf2_all_dtypes, tmp_path)
    index = Path(prefix + ".index")
    index.write_bytes(damage(index.read_bytes()))
    with unchanged(tmp_path), pytest.raises(CorruptCheckpointError, match=expected) as info:
        ckptcheck.open_checkpoint(prefix)
    assert str(index) in str(info.value)


def test_truncated_data_shard(tf2_all_dtypes: str, tmp_path: Path) -> None:
    prefix = copy_bundle(tf2_all_dtypes, tmp_path)
    shard = Path(prefix + ".data-00000-of-00001")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with unchanged(tmp_path), ckptcheck.open_checkpoint(prefix) as reader:
        failed = []
        for t in reader.tensors():
            try:
                reader.read(t.name)
            except CorruptCheckpointError as exc:
                assert shard.name in str(exc) and "truncated" in str(exc)
                failed.append(t.name)
        assert failed and len(failed) < len(reader.tensors())


def test_missing_shard(tf2_sharded: str, tmp_path: Path) -> None:
    prefix = copy_bundle(tf2_sharded, tmp_path)
    shards = sorted(tmp_path.glob("ckpt.data-*"))
    assert len(shards) > 2
    gone = shards[1]
    gone.unlink()
    with unchanged(tmp_path), ckptcheck.open_checkpoint(prefix) as reader:
        failed = 0
        for t in reader.tensors():  # listing needs no data file
            try:
                reader.read(t.name)
            except CorruptCheckpointError as exc:
                assert "data shard is missing" in str(exc) and gone.name in str(exc)
                failed += 1
        assert failed >= 1


def test_state_file_pointing_at_a_gone_checkpoint(manager_dir: Path, tmp_path: Path) -> None:
    for f in manager_dir.iterdir():
        if not f.name.startswith("ckpt-4."):
            shutil.copyfile(f, tmp_path / f.name)
    with unchanged(tmp_path), pytest.raises(CheckpointNotFoundError) as info:
        ckptcheck.open_checkpoint(str(tmp_path))
    text = str(info.value)
    assert "ckpt-4, which is gone" in text and "ckpt-3" in text and str(tmp_path / "checkpoint") in text


def test_paths_naming_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no such file or directory"):
        ckptcheck.open_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint in this directory"):
        ckptcheck.open_checkpoint(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="not a checkpoint format"):
        ckptcheck.open_checkpoint(str(tmp_path / "notes.txt"))
    (tmp_path / "checkpoint").write_text("this is not a state file\n")
    with pytest.raises(CorruptCheckpointError, match="unreadable line in the state file"):
        ckptcheck.open_checkpoint(str(tmp_path))


def test_directory_of_bundles_without_a_state_file(manager_dir: Path, tmp_path: Path) -> None:
    for f in manager_dir.glob("ckpt-3.*"):
        shutil.copyfile(f, tmp_path / f.name)
    with ckptcheck.open_checkpoint(str(tmp_path)) as reader:  # one bundle: no doubt which
        assert reader.info().location == str(tmp_path / "ckpt-3")
    for f in manager_dir.glob("ckpt-4.*"):
        shutil.copyfile(f, tmp_path / f.name)
    for f in manager_dir.glob("ckpt-2.*"):  # renamed ckpt-10: hints list by step, not by name
        shutil.copyfile(f, tmp_path / f.name.replace("ckpt-2", "ckpt-10"))
    with pytest.raises(CheckpointNotFoundError, match="3 checkpoints and no `checkpoint` state file") as info:
        ckptcheck.open_checkpoint(str(tmp_path))
    assert info.value.hint == "pass one prefix: ckpt-3, ckpt-4, ckpt-10"


def test_index_without_its_data_named_by_a_data_path(tf2_all_dtypes: str, tmp_path: Path) -> None:
    prefix = copy_bundle(tf2_all_dtypes, tmp_path)
    os.remove(prefix + ".index")
    with pytest.raises(CheckpointNotFoundError, match=r"no index file ckpt\.index beside it"):
        ckptcheck.open_checkpoint(prefix + ".data-00000-of-00001")


# --- hostile entries, crafted with the test-only index writer ----------------------------------------------------

DATA = np.arange(8, dtype=np.float32).tobytes()  # 32 bytes in the one shard
GOOD = entry_proto(DT_FLOAT, [8], size=32, crc=masked_crc(DATA))
HUGE = 2**40


def _sliced(shape: list[int], parts: list[tuple[list[tuple[int, int]], list[int], int, int]],
            dtype: int = DT_FLOAT, part_dtype: int | None = None) -> dict[bytes, bytes]:
    """A partitioned variable `v`: each part is (extents, stored shape, offset, size) in the shard."""
    out = {b"v": entry_proto(dtype, shape, slices=[extents for extents, *_ in parts])}
    for extents, stored, offset, size in parts:
        crc = masked_crc(DATA[offset : offset + size])
        out[slice_key("v", extents)] = entry_proto(part_dtype or dtype, stored, offset=offset, size=size, crc=crc)
    return out


HOSTILE: dict[str, tuple[dict[bytes, bytes], type[CkptcheckError], str]] = {
    "huge-shape": ({b"v": entry_proto(DT_FLOAT, [HUGE, HUGE], size=16)}, CorruptCheckpointError,
                   "invalid size in bundle entry"),
    "offset-past-end": ({b"v": entry_proto(DT_FLOAT, [4], offset=2**50, size=16)}, CorruptCheckpointError,
                        "runs past the end of the shard"),
    "size-past-end": ({b"v": entry_proto(DT_FLOAT, [2**28], size=2**30)}, CorruptCheckpointError,
                      "runs past the end of the shard"),
    "negative-offset": ({b"v": entry_proto(DT_FLOAT, [4], offset=-16, size=16)}, CorruptCheckpointError,
                        "negative offset"),
    "negative-dim": ({b"v": entry_proto(DT_FLOAT, [-4], size=16)}, CorruptCheckpointError, "invalid shape"),
    "shard-out-of-range": ({b"v": entry_proto(DT_FLOAT, [4], shard_id=7, size=16)}, CorruptCheckpointError,
                           "names shard 7"),
    "negative-shard": ({b"v": entry_proto(DT_FLOAT, [4], shard_id=-1, size=16)}, CorruptCheckpointError,
                       "names shard -1"),
    "many-strings": ({b"v": entry_proto(DT_STRING, [HUGE], size=32)}, CorruptCheckpointError,
                     "strings in 32 bytes"),
    "string-lengths-past-size": ({b"v": entry_proto(DT_STRING, [2], size=32)}, CorruptCheckpointError,
                                 "string lengths add up"),
    "bad-checksum": ({b"v": entry_proto(DT_FLOAT, [8], size=32, crc=masked_crc(DATA) ^ 1)}, CorruptCheckpointError,
                     "checksum mismatch"),
    "wrong-itemsize": ({b"v": entry_proto(DT_FLOAT, [3], size=16)}, CorruptCheckpointError, "needs 12 bytes"),
    "unknown-dtype": ({b"v": entry_proto(99, [4], size=16)}, UnsupportedFormatError, "unknown_dtype_99"),
    "huge-sliced-variable": (
        _sliced([2**20, 2**20], [([(-1, -1), (-1, -1)], [2**20, 2**20], 0, 16)]), CorruptCheckpointError,
        "invalid size in bundle entry"),
    "slice-outside-shape": (_sliced([4], [([(2, 4)], [4], 0, 16)]), CorruptCheckpointError, "lies outside"),
    "slice-shape-mismatch": (_sliced([4], [([(0, 4)], [2, 2], 0, 16)]), CorruptCheckpointError, "stores shape"),
    "slice-dtype-mismatch": (_sliced([4], [([(0, 4)], [4], 0, 16)], part_dtype=DT_INT32), CorruptCheckpointError,
                             "stores int32"),
    "slices-overlap-with-a-gap": (
        _sliced([4], [([(0, 2)], [2], 0, 8), ([(1, 2)], [2], 8, 8)]), CorruptCheckpointError, "overlap"),
    "slices-short": (_sliced([4], [([(0, 2)], [2], 0, 8)]), CorruptCheckpointError, "cover 2 of the 4"),
    "slice-without-entry": ({b"v": entry_proto(DT_FLOAT, [4], slices=[[(0, 4)]])}, CorruptCheckpointError,
                            "has no entry in the index"),
}


class Hung(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block runs longer than a generous ``seconds``: a guard against
    runaway work, not a timing assertion. A no-op where there is no SIGALRM."""
    import signal

    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _hostile_bundle(directory: Path, entries: dict[bytes, bytes]) -> str:
    (directory / "h.data-00000-of-00001").write_bytes(DATA)
    write_index(str(directory / "h.index"), {b"good": GOOD, **entries})
    return str(directory / "h")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_entry(tmp_path: Path, case: str) -> None:
    entries, error, message = HOSTILE[case]
    prefix = _hostile_bundle(tmp_path, entries)
    with unchanged(tmp_path), ckptcheck.open_checkpoint(prefix) as reader:
        assert {t.name for t in reader.tensors()} == {"good", "v"}  # listing reads no values
        np.testing.assert_array_equal(reader.read("good"), np.arange(8, dtype=np.float32))
        for read in (reader.read, lambda n: list(reader.iter_chunks(n))):
            # Refused before any large allocation or long read: bounded memory, and a hang guard (no timing).
            tracemalloc.start()
            try:
                with hang_guard(60), pytest.raises(error, match=message) as info:
                    read("v")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 16 << 20, f"{case}: {peak} bytes allocated before refusing"
            assert info.value.tensor == "v" and info.value.path is not None


def test_hostile_header(tmp_path: Path) -> None:
    (tmp_path / "h.index").write_bytes(write_table([(b"good", GOOD)]))
    with pytest.raises(CorruptCheckpointError, match="no bundle header"):
        ckptcheck.open_checkpoint(str(tmp_path / "h"))
    for header, message in [(header_proto(num_shards=0), "claims 0 shards"),
                            (header_proto(num_shards=2**40), "claims 1099511627776 shards"),
                            (header_proto(endianness=7), "unknown endianness 7")]:
        (tmp_path / "h.index").write_bytes(write_table([(b"", header), (b"good", GOOD)]))
        with pytest.raises(CorruptCheckpointError, match=message):
            ckptcheck.open_checkpoint(str(tmp_path / "h"))


def test_block_of_unknown_compression_is_unsupported_not_damaged(tmp_path: Path) -> None:
    """Type 9 under an intact checksum: a file from something ckptcheck does not know (exit 2), not damage."""
    (tmp_path / "h.index").write_bytes(write_table([(b"", header_proto()), (b"good", GOOD)], 9))
    with pytest.raises(UnsupportedFormatError, match="compression type 9, which no TensorFlow release writes"):
        ckptcheck.open_checkpoint(str(tmp_path / "h"))


@pytest.mark.parametrize(("header", "message"), [
    (header_proto(producer=3, min_consumer=2), "needs a reader of version 2 or newer"),
    (header_proto(bad_consumers=[1]), "names version 1 as bad"),
])
def test_bundle_for_newer_readers_is_refused_as_tensorflow_refuses_it(tmp_path: Path, header: bytes,
                                                                      message: str) -> None:
    """An intact file from a future format version: one line, exit 2 for inspect and verify alike."""
    import tensorflow as tf

    (tmp_path / "h.data-00000-of-00001").write_bytes(DATA)
    (tmp_path / "h.index").write_bytes(write_table([(b"", header), (b"good", GOOD)]))
    prefix = str(tmp_path / "h")
    with pytest.raises(Exception, match=r"(?i)version"):  # the oracle: TensorFlow refuses it too
        tf.train.load_checkpoint(prefix).get_tensor("good")
    for command in (["inspect", prefix], ["verify", prefix], ["manifest", prefix]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1


def test_snappy_block_that_does_not_decompress_is_damage(tmp_path: Path) -> None:
    """Type 1 over bytes that are not a Snappy stream (its checksum intact): damage, named with the block."""
    (tmp_path / "h.index").write_bytes(write_table([(b"", header_proto()), (b"good", GOOD)], 1))
    with pytest.raises(CorruptCheckpointError, match=r"Snappy block at byte 0 .* does not decompress"):
        ckptcheck.open_checkpoint(str(tmp_path / "h"))


def test_hostile_entries_allocate_nothing_large(tmp_path: Path) -> None:
    """Under a 1 GiB address-space limit every hostile entry still fails as CorruptCheckpointError (not
    MemoryError): sizes are checked against the shard before any buffer is allocated."""
    prefixes = []
    for case, (entries, error, _message) in HOSTILE.items():
        if error is CorruptCheckpointError:
            directory = tmp_path / case
            directory.mkdir()
            prefixes.append(_hostile_bundle(directory, entries))
    script = textwrap.dedent(
        f"""
        import resource
        import ckptcheck, numpy
        from ckptcheck.errors import CorruptCheckpointError
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        for prefix in {prefixes!r}:
            with ckptcheck.open_checkpoint(prefix) as reader:
                for read in (reader.read, lambda n: list(reader.iter_chunks(n))):
                    try:
                        read("v")
                    except CorruptCheckpointError:
                        pass
                    else:
                        raise SystemExit(prefix + " did not fail")
        print("ALL-REFUSED")
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-500:]
    assert "ALL-REFUSED" in proc.stdout


_CHAIN = 100_000
_DENSE = 300
HOSTILE_GRAPHS: dict[str, tuple[list[list[tuple[int, str]]], dict[int, str], dict[str, tuple[str, ...]]]] = {
    # A 100,000-deep chain: paths would be quadratic in the graph's size; the deep key gets none.
    "chain": ([[(i + 1, "a")] for i in range(_CHAIN)] + [[]], {5: "k5", _CHAIN: "deep"},
              {"k5": ("a/a/a/a/a",), "deep": ()}),
    # Three identical edges at each of 60 levels: 3**60 walks if each were followed.
    "duplicate-edges": ([[(i + 1, "x")] * 3 for i in range(60)] + [[]], {60: "k"}, {"k": ("/".join(["x"] * 60),)}),
    # Every node links to every later one: astronomically many paths, a few shown.
    "dense": ([[(j, f"n{j}") for j in range(i + 1, _DENSE)] for i in range(_DENSE)], {_DENSE - 1: "last"},
              {"last": (f"n{_DENSE - 1}", *(f"n{i}/n{_DENSE - 1}" for i in range(1, MAX_PATHS_PER_NODE)))}),
    "cycle": ([[(1, "a")], [(0, "back"), (2, "b")], [(1, "up")]], {2: "k"}, {"k": ("a/b",)}),
    "out-of-range-child": ([[(7, "nowhere"), (1, "v")], []], {1: "k"}, {"k": ("v",)}),
}


@pytest.mark.parametrize("case", list(HOSTILE_GRAPHS))
def test_hostile_object_graph_is_walked_in_bounded_time(case: str) -> None:
    children, keys, expected = HOSTILE_GRAPHS[case]
    graph = object_graph_proto(children, keys)
    with hang_guard(120):  # a walk quadratic in the 100,000-node chain, or exponential, would not finish
        refs = {r.key: r.paths for r in object_refs(graph, set(keys.values()))}
    assert refs == expected


# --- property: whatever the damage, only ckptcheck's own errors --------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_bundles(tmp_path_factory: pytest.TempPathFactory, tf2_sharded: str, tf1_model_dir: Path) -> list[str]:
    """Private copies of two real bundles (slices, strings, several shards, an object graph) to damage."""
    prefixes = []
    for source in (tf2_sharded, str(tf1_model_dir / "model.ckpt-6")):
        directory = tmp_path_factory.mktemp("fuzz")
        prefixes.append(copy_bundle(source, directory))
    return prefixes


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, where, value in ops:
        pos = where % (len(out) + 1)
        if op == "flip" and out:
            out[pos % len(out)] ^= 1 << (value % 8)
        elif op == "set" and out:
            out[pos % len(out)] = value % 256
        elif op == "insert":
            out[pos:pos] = bytes([value % 256]) * (1 + value % 3)
        elif op == "delete":
            del out[pos : pos + 1 + value % 4]
        elif op == "truncate":
            del out[pos:]
    return bytes(out)


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), st.integers(0, 2**20),
              st.integers(0, 255)),
    min_size=1, max_size=4,
)


FUZZ_MEMORY_BOUND = 64 << 20  # the fuzzed bundles hold a few KiB; a claimed shape must never be allocated


def _only_ckptcheck_errors(prefix: str) -> None:
    """Listing, reading and verifying a damaged bundle fail only with ckptcheck's errors, in bounded memory."""
    from ckptcheck.verify import verify

    tracemalloc.start()
    try:
        with contextlib.suppress(CkptcheckError):
            read_everything(prefix)
        with contextlib.suppress(CkptcheckError):
            verify(prefix)  # verification reports damage instead of raising; it must not crash either
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < FUZZ_MEMORY_BOUND, f"{peak} bytes allocated while reading a damaged {prefix}"


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(which=st.integers(0, 1), ops=MUTATIONS)
def test_mutated_index_file_raises_only_ckptcheck_errors(fuzz_bundles: list[str], which: int,
                                                         ops: list[tuple[str, int, int]]) -> None:
    """Raw damage to the .index file: mostly caught by block checksums and the footer."""
    prefix = fuzz_bundles[which]
    index = Path(prefix + ".index")
    original = index.read_bytes()
    try:
        index.write_bytes(_mutate(original, ops))
        _only_ckptcheck_errors(prefix)
    finally:
        index.write_bytes(original)


@settings(max_examples=120, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(which=st.integers(0, 1), entry=st.integers(0, 2**16), in_key=st.booleans(), ops=MUTATIONS)
def test_mutated_entries_with_valid_checksums_raise_only_ckptcheck_errors(
    fuzz_bundles: list[str], which: int, entry: int, in_key: bool, ops: list[tuple[str, int, int]]
) -> None:
    """Damage inside one entry's key or BundleEntryProto, written back with correct block checksums, so it
    reaches the entry, slice-key and shape decoding and the value reads behind them."""
    prefix = fuzz_bundles[which]
    index = Path(prefix + ".index")
    original = index.read_bytes()
    items = list(SSTable(str(index), original).items())
    key, value = items[entry % len(items)]
    if in_key:
        key = _mutate(key, ops)
    else:
        value = _mutate(value, ops)
    items[entry % len(items)] = (key, value)
    try:
        index.write_bytes(write_table(dict(items).items()))
        _only_ckptcheck_errors(prefix)
    finally:
        index.write_bytes(original)


# --- the entry decoder's fast path against its general one --------------------------------------------------------


def _fields(dtype: int, shape: list[int], shard: int, offset: int, size: int, crc: int) -> list[bytes]:
    from index_writer import _field_bytes, _field_fixed32, _field_varint, shape_proto

    fields = [_field_varint(1, dtype), _field_bytes(2, shape_proto(shape))]
    fields += [_field_varint(n, v) for n, v in ((3, shard), (4, offset), (5, size)) if v]
    return [*fields, _field_fixed32(6, crc)]


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from([1, 2, 3, 9, 14, 19, 20, 23]),
    shape=st.lists(st.integers(0, 1 << 40), max_size=5),
    shard=st.integers(0, 1 << 20),
    offset=st.integers(0, (1 << 62)),
    size=st.integers(0, 1 << 40),
    crc=st.integers(0, 0xFFFFFFFF),
    order=st.randoms(use_true_random=False),
)
def test_entry_decoders_agree_in_any_field_order(
    dtype: int, shape: list[int], shard: int, offset: int, size: int, crc: int, order: random.Random
) -> None:
    """TensorFlow writes fields in number order, which the fast decoder expects: it decodes every such entry whose
    varints fit 6 bytes (below 4 TiB), and declines the rest; any order is valid protobuf and the general decoder
    reads it the same (decode_entry takes whichever answers)."""
    from ckptcheck.formats.tensorflow.bundle import _decode_entry_fast, _decode_entry_general, decode_entry

    expected = (dtype, tuple(shape), shard, offset, size, crc)
    fields = _fields(dtype, shape, shard, offset, size, crc)
    canonical = b"".join(fields)
    fast = _decode_entry_fast("t", canonical)
    if max(shard, offset, size) < 1 << 42:
        assert fast is not None
    for entry in (fast, _decode_entry_general("t", canonical), decode_entry("t", canonical)):
        if entry is not None:
            assert (entry.dtype.enum, entry.shape, entry.shard_id, entry.offset, entry.size, entry.crc32c) == expected
    order.shuffle(fields)
    shuffled = b"".join(fields)
    assert decode_entry("t", shuffled) == _decode_entry_general("t", shuffled) == decode_entry("t", canonical)


@pytest.mark.parametrize("value", [1, 127, 128, (1 << 14) - 1, 1 << 14, (1 << 21) - 1, 1 << 21, (1 << 28) - 1,
                                   1 << 28, (1 << 35) - 1, 1 << 35, (1 << 42) - 1, 1 << 42, (1 << 63) - 1])
def test_entry_fast_decoder_at_every_varint_width(value: int) -> None:
    """Each varint width the fast decoder unrolls (1 to 6 bytes), at both ends, in every varint field; wider ones
    are left to the general decoder."""
    from ckptcheck.formats.tensorflow.bundle import _decode_entry_fast, _decode_entry_general

    for shard, offset, size in ((value, 3, 5), (3, value, 5), (3, 5, value)):
        entry = b"".join(_fields(1, [2, 3], shard, offset, size, 0xDEADBEEF))
        fast = _decode_entry_fast("t", entry)
        assert (fast is None) == (value >= 1 << 42)
        general = _decode_entry_general("t", entry)
        assert (general.shard_id, general.offset, general.size, general.crc32c) == (shard, offset, size, 0xDEADBEEF)
        assert fast in (None, general)


runner = CliRunner()


# --- variant tensors (a tf.data iterator's state) -----------------------------------------------------------------


def _variant_key(reader: BundleReader) -> str:
    keys = [name for name, e in reader.entries.items() if e.dtype.is_variant]
    assert len(keys) == 1, keys
    return keys[0]


def _restore_iterator(tf: object, prefix: str) -> None:
    it = iter(tf.data.Dataset.range(10).batch(2))  # type: ignore[attr-defined]
    tf.train.Checkpoint(iterator=it).read(prefix).expect_partial()  # type: ignore[attr-defined]


def test_variant_elements_are_read_and_every_checksum_checked(tf2_slots_checkpoint: str, tmp_path: Path) -> None:
    """TensorFlow stores an iterator's state as a variant tensor: per element a length, a serialized
    VariantTensorDataProto and a running checksum. ckptcheck reads the protos and checks every checksum; a flipped
    byte fails verify exactly where TensorFlow's own restore fails."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    with ckptcheck.open_checkpoint(tf2_slots_checkpoint) as reader:
        assert isinstance(reader, BundleReader)
        key = _variant_key(reader)
        values = reader.read(key)
        entry = reader.entry(key)
    assert values.dtype == object and values.shape == entry.shape and values.size >= 1
    for element in values.reshape(-1):
        proto = tensor_pb2.VariantTensorDataProto()
        proto.ParseFromString(element)
        assert proto.type_name == "tensorflow::Iterator"
    assert runner.invoke(app, ["verify", tf2_slots_checkpoint]).exit_code == 0
    _restore_iterator(tf, tf2_slots_checkpoint)  # TensorFlow agrees the untouched file is sound

    for where in (0, entry.size // 2, entry.size - 1):  # a length byte, a proto byte, a checksum byte
        dest = tmp_path / f"at{where}"
        dest.mkdir()
        prefix = copy_bundle(tf2_slots_checkpoint, dest)
        flip(dest / Path(reader.shard_path(entry.shard_id)).name, entry.offset + where)
        result = runner.invoke(app, ["verify", prefix, "--json"])
        assert result.exit_code == 1, result.stdout
        problems = json.loads(result.stdout)["problems"]
        assert [p["tensor"] for p in problems] == [key], problems
        with pytest.raises(Exception):  # noqa: B017 - TensorFlow's DataLoss or a parse error, both refusals
            _restore_iterator(tf, prefix)


@pytest.mark.slow
def test_object_graph_past_the_edge_cap_is_refused() -> None:
    """Every node linked to every later one, 1,100 nodes (600,000 edges): refused once past MAX_EDGES, rather than
    decoded and walked for minutes (2,000 such nodes took 754 MiB and 56 s)."""
    from ckptcheck.formats.tensorflow.object_graph import MAX_EDGES
    from ckptcheck.formats.tensorflow.protobuf import DecodeError

    n = 1100
    graph = object_graph_proto([[(j, f"n{j}") for j in range(i + 1, n)] for i in range(n)], {n - 1: "last"})
    assert n * (n - 1) // 2 > MAX_EDGES
    with hang_guard(120), pytest.raises(DecodeError, match="more than 500,000 edges"):
        object_refs(graph, {"last"})
