"""The native bundle reader against TensorFlow: names, order, shapes, dtypes and every value, bit for bit.

TensorFlow (tf.train.list_variables / load_checkpoint) is the oracle; ckptcheck itself never imports it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_writer import entry_proto, header_proto, masked_crc, write_table
from tf_builders import SHARDED_STRINGS, TF1_SAVE_STEPS
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.formats.resolve import list_state
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.formats.tensorflow.bundle import BundleReader
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
from ckptcheck.formats.tensorflow.sstable import SSTable
from ckptcheck.records import SAVEDMODEL, TF1, TF2

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
runner = CliRunner()


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _prefixes(request: pytest.FixtureRequest, fixture: str) -> list[str]:
    """Every bundle prefix a fixture built (a directory fixture may hold several)."""
    value = request.getfixturevalue(fixture)
    path = Path(value)
    if path.is_dir():
        return sorted(str(p)[: -len(".index")] for p in path.rglob("*.index"))
    return [str(value)]


ALL_BUNDLES = [
    "tf1_model_dir",
    "tf_raw_bundle",
    "tf2_all_dtypes",
    "tf2_sharded",
    "tf2_slots_checkpoint",
    "keras_tf_checkpoint",
    "savedmodel_dir",
    "manager_dir",
]


def assert_same_value(mine: np.ndarray, theirs: Any, name: str) -> None:
    """Equal bit for bit: numeric arrays by dtype, shape and raw bytes (NaN payloads, -0.0, bfloat16 included);
    string arrays element by element, each element bytes."""
    theirs = np.asarray(theirs, dtype=object) if isinstance(theirs, bytes) else np.asarray(theirs)
    assert mine.shape == theirs.shape, name
    if theirs.dtype == object:
        assert mine.dtype == object, name
        for a, b in zip(mine.reshape(-1), theirs.reshape(-1), strict=True):
            assert type(a) is bytes and a == b, name
    else:
        assert mine.dtype == theirs.dtype, (name, mine.dtype, theirs.dtype)
        assert mine.tobytes() == theirs.tobytes(), name


# --- listing and values against TensorFlow ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ALL_BUNDLES)
def test_listing_and_values_match_tensorflow(request: pytest.FixtureRequest, fixture: str) -> None:
    tf = _tf()
    for prefix in _prefixes(request, fixture):
        expected = tf.train.list_variables(prefix)
        tf_reader = tf.train.load_checkpoint(prefix)
        dtype_map = tf_reader.get_variable_to_dtype_map()
        with ckptcheck.open_checkpoint(prefix) as reader:
            listed = reader.tensors()
            assert [(t.name, list(t.shape)) for t in listed] == [(n, list(s)) for n, s in expected]
            for t in listed:
                assert t.dtype == dtype_map[t.name].name, t.name
                if t.dtype == "variant":  # e.g. a tf.data iterator's state: TensorFlow's reader gives no values;
                    with pytest.raises(Exception, match="type 21 not convertible"):  # ckptcheck gives the protos
                        tf_reader.get_tensor(t.name)  # (checked in test_bundle_damaged.py against a restore)
                    assert reader.read(t.name).dtype == object, t.name
                    continue
                value = reader.read(t.name)
                assert_same_value(value, tf_reader.get_tensor(t.name), t.name)
                if t.dtype != "string":
                    assert t.nbytes == value.nbytes, t.name
                assert t.file is not None and os.path.isfile(os.path.join(os.path.dirname(prefix), t.file))


def test_every_dtype_is_present_and_read(tf2_all_dtypes: str) -> None:
    """The all-dtypes checkpoint really holds each dtype, with the awkward values it was built with."""
    with ckptcheck.open_checkpoint(tf2_all_dtypes) as reader:
        by_name = {t.name[: -len(VALUE)]: t for t in reader.tensors() if t.name.endswith(VALUE)}
        wanted = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                  "uint32", "uint64", "bool", "complex64", "complex128", "string", "int4", "uint4",
                  "float8_e4m3fn", "float8_e5m2"}
        assert wanted <= {t.dtype for t in by_name.values()}
        assert by_name["scalar"].shape == () and by_name["empty"].shape == (0, 3)
        f32 = reader.read("float32" + VALUE).reshape(-1)
        assert np.isnan(f32[4]) and np.isposinf(f32[5]) and np.isneginf(f32[6])
        assert f32[1] == 0 and np.signbit(f32[1])
        strings = reader.read("strings" + VALUE)
        assert list(strings) == [b"", "héllo wörld ✓".encode(), b"\x00\xff\x00", b"x" * 200, b"tail"]
        assert reader.read("string_scalar" + VALUE).shape == ()
        assert reader.read("many_strings" + VALUE).shape == (10, 100)
        assert reader.read("empty_strings" + VALUE).shape == (0,)


def test_dtype_table_matches_tensorflow() -> None:
    tf = _tf()
    for enum, dtype in dtypes.BY_ENUM.items():
        tf_dtype = tf.as_dtype(enum)
        assert dtype.name == tf_dtype.name, enum
        if dtype.readable and not dtype.is_string:
            assert dtype.itemsize == tf_dtype.size, dtype.name
            assert dtype.numpy.itemsize == dtype.itemsize, dtype.name
        # Reference dtypes (enum + 100) are stored as their base type.
        assert dtypes.from_enum(enum + 100) == dtype


def _expected_chunks(reader: BundleReader, name: str) -> np.ndarray:
    """Storage order: C order of the whole tensor, or of each slice in turn for a partitioned variable."""
    whole = reader.read(name)
    entry = reader.entry(name)
    if not entry.slices:
        return whole.reshape(-1)
    parts = [whole[tuple(slice(s, s + n) for s, n in extents)].reshape(-1) for extents, _ in reader.slices_of(entry)]
    return np.concatenate(parts)


@pytest.mark.parametrize(
    "fixture", ["tf1_model_dir", "tf2_all_dtypes", "tf2_sharded", "tf2_sharded_strings", "tf_raw_bundle"]
)
@pytest.mark.tf
@pytest.mark.parametrize("chunk_bytes", [1, 24, 1 << 20])
def test_iter_chunks_concatenated_equals_read(request: pytest.FixtureRequest, fixture: str, chunk_bytes: int) -> None:
    for prefix in _prefixes(request, fixture):
        with ckptcheck.open_checkpoint(prefix) as reader:
            assert isinstance(reader, BundleReader)
            for t in reader.tensors():
                chunks = [c.copy() for c in reader.iter_chunks(t.name, chunk_bytes=chunk_bytes)]
                expected = _expected_chunks(reader, t.name)
                got = np.concatenate(chunks) if chunks else np.zeros(0, expected.dtype)
                if t.dtype == "string":
                    assert list(got) == list(expected), t.name
                    continue
                assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), t.name
                itemsize = expected.dtype.itemsize
                assert all(c.nbytes <= max(chunk_bytes - chunk_bytes % itemsize, itemsize) for c in chunks), t.name


def test_read_buffers_are_aligned_and_bytes_streams_match_the_arrays(tf2_all_dtypes: str) -> None:
    """Reads land on cache-line boundaries (the kernel copies into an unaligned buffer at half the speed), and the
    numpy-free byte stream verify uses carries exactly the bytes of the array stream."""
    from ckptcheck.formats.interface import aligned_empty, read_buffer

    for n in (1, 63, 4097, 1 << 20):
        a = aligned_empty(n)
        assert a.nbytes == n and a.ctypes.data % 64 == 0
        assert len(read_buffer(n)) >= max(n, 1)
    with ckptcheck.open_checkpoint(tf2_all_dtypes) as reader:
        assert isinstance(reader, BundleReader)
        checked = 0
        for t in reader.tensors():
            entry = reader.entry(t.name)
            if entry.dtype.is_string or not entry.dtype.readable or entry.slices:
                continue
            assert reader.read(t.name).ctypes.data % 64 == 0 or not t.nbytes, t.name
            streamed = b"".join(bytes(v) for v in reader.iter_part_bytes(entry, t.name, chunk_bytes=16))
            assert streamed == b"".join(c.tobytes() for c in reader.iter_part(entry, t.name, chunk_bytes=16))
            reader.check_part(entry, t.name)
            checked += 1
        assert checked > 10


@pytest.mark.tf
@pytest.mark.parametrize("fixture", ["tf1_model_dir", "tf2_all_dtypes", "tf2_sharded", "tf_raw_bundle"])
def test_read_into_equals_read_or_declines(request: pytest.FixtureRequest, fixture: str) -> None:
    from ckptcheck.formats.interface import aligned_empty

    for prefix in _prefixes(request, fixture):
        with ckptcheck.open_checkpoint(prefix) as reader:
            assert isinstance(reader, BundleReader)
            for t in reader.tensors():
                entry = reader.entry(t.name)
                if not entry.dtype.readable and not entry.dtype.is_string:
                    continue
                out = aligned_empty(t.nbytes + 8)
                got = reader.read_into(t.name, out)
                if entry.slices or entry.dtype.is_string:
                    assert got is None, t.name
                    continue
                assert got is not None and (np.shares_memory(got, out) or not t.nbytes), t.name
                expected = reader.read(t.name)
                assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), t.name
                if t.nbytes:
                    assert reader.read_into(t.name, aligned_empty(t.nbytes - 1)) is None, t.name


def test_paused_gc_restores_the_collector_state() -> None:
    import gc

    from ckptcheck.formats.interface import paused_gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


# --- partitioned and sharded variables ---------------------------------------------------------------------------


def test_tf1_partitioned_variable_is_one_row_with_three_slices(tf1_model_dir: Path) -> None:
    with ckptcheck.open_checkpoint(str(tf1_model_dir)) as reader:
        slices = {t.name: t.slices for t in reader.tensors()}
        infos = {t.name: t for t in reader.tensors()}
    assert slices["embedding"] == slices["embedding/Adam"] == slices["embedding/Adam_1"] == 3
    assert infos["embedding"].shape == (10, 4)
    assert infos["embedding"].nbytes == 10 * 4 * 4
    assert all(n == 0 for name, n in slices.items() if not name.startswith("embedding"))


def _raw_keys(prefix: str) -> list[bytes]:
    return [key for key, _ in SSTable.open(prefix + ".index").items()]


def test_sharded_checkpoint_really_has_slices_across_shards(tf2_sharded: str) -> None:
    """The fixture does what it claims: several shards, and variables split into slice entries among them."""
    data_files = sorted(Path(tf2_sharded).parent.glob("ckpt.data-*"))
    assert len(data_files) > 1
    assert all(f.name.endswith(f"-of-{len(data_files):05d}") for f in data_files)
    slice_keys = [k for k in _raw_keys(tf2_sharded) if k.startswith(b"\x00")]
    assert slice_keys, "no slice entries in the index"
    with ckptcheck.open_checkpoint(tf2_sharded) as reader:
        assert isinstance(reader, BundleReader)
        assert reader.num_shards == len(data_files)
        info = {t.name: t for t in reader.tensors()}
        for short in ("big", "cube", "bf", "c"):
            name = short + VALUE
            n = sum(1 for k in slice_keys if k.startswith(b"\x00" + name.encode() + b"\x00\x01"))
            assert info[name].slices == n > 1, name
            shards = {part.shard_id for _, part in reader.slices_of(reader.entry(name))}
            assert len(shards) > 1, name
            assert info[name].nbytes == int(np.prod(info[name].shape)) * reader.entry(name).dtype.itemsize
        assert info["small" + VALUE].slices == info["words" + VALUE].slices == 0
        # "big" is split along both dimensions: its slices are not whole rows.
        big = reader.entry("big" + VALUE)
        assert any(length != 30 for extents, _ in reader.slices_of(big) for _, length in extents[1:])


def test_raw_bundle_has_a_multi_block_index_and_unusual_slices(tf_raw_bundle: str) -> None:
    """The SaveV2-written fixture exercises what it claims: several index data blocks, slices along inner
    dimensions with "-" extents, a NUL in a sliced name, two-byte slice-key numbers."""
    assert len(SSTable.open(tf_raw_bundle + ".index").data_block_handles()) > 1
    keys = _raw_keys(tf_raw_bundle)
    assert b"\x00a\x00\xffb\x00\x01" in b"".join(keys)
    with ckptcheck.open_checkpoint(tf_raw_bundle) as reader:
        assert isinstance(reader, BundleReader)
        assert reader.tensor_info("cols").slices == reader.tensor_info("a\x00b").slices == 3
        extents = [e for e, _ in reader.slices_of(reader.entry("deep"))]
        assert extents == [((0, 2), (0, 100), (0, 2)), ((0, 2), (100, 150), (0, 2)), ((0, 2), (250, 50), (0, 2))]
        np.testing.assert_array_equal(reader.read("deep"), np.arange(1200, dtype=np.int32).reshape(2, 300, 2))
        assert len(reader.tensors()) == 5003


def test_slice_keys_with_large_offsets(tmp_path: Path) -> None:
    """Slice keys hold OrderedCode numbers of 1 to 10 bytes: slices written by SaveV2 at offsets across every
    length boundary decode to the offsets written (the full variables are never read: only one slice exists)."""
    tf = _tf()
    offsets = [0, 1, 63, 64, 8191, 8192, 2**20 - 1, 2**20, 2**27, 2**34, 2**41 + 5, 2**48 + 3, 2**55 + 1, 2**62]
    prefix = str(tmp_path / "ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=[f"v{i}" for i in range(len(offsets))],
                      shape_and_slices=[f"{v + 3} {v},2" for v in offsets], tensors=[tf.zeros([2])] * len(offsets))
    with ckptcheck.open_checkpoint(prefix) as reader:
        assert isinstance(reader, BundleReader)
        for i, v in enumerate(offsets):
            entry = reader.entry(f"v{i}")
            assert entry.shape == (v + 3,)
            assert [extents for extents, _ in reader.slices_of(entry)] == [((v, 2),)]
            with pytest.raises(ckptcheck.CorruptCheckpointError, match=f"slices cover 2 of the {v + 3} elements"):
                reader.read(f"v{i}")


def test_sliced_string_variable_tensorflow_cannot_read(tf2_sharded_strings: str) -> None:
    """TF 2.21 writes this variable in slices and then fails to read it ("Dtype string not supported");
    ckptcheck reads it, checked against the values the fixture wrote."""
    tf = _tf()
    name = "words" + VALUE
    with ckptcheck.open_checkpoint(tf2_sharded_strings) as reader:
        info = reader.tensor_info(name)
        assert info.dtype == "string" and info.slices > 1 and info.shape == SHARDED_STRINGS.shape
        got = reader.read(name)
    assert list(got) == list(SHARDED_STRINGS)
    with pytest.raises(Exception, match="Dtype string not supported"):
        tf.train.load_checkpoint(tf2_sharded_strings).get_tensor(name)


# --- resolving what users pass -----------------------------------------------------------------------------------


def _location(path: str) -> tuple[str, str]:
    with ckptcheck.open_checkpoint(path) as reader:
        info = reader.info()
    return info.format, info.location


def test_paths_that_name_a_tf1_checkpoint(tf1_model_dir: Path) -> None:
    tf = _tf()
    latest = str(tf1_model_dir / f"model.ckpt-{TF1_SAVE_STEPS[-1]}")
    assert tf.train.latest_checkpoint(str(tf1_model_dir)) == latest
    for given in (
        str(tf1_model_dir),
        str(tf1_model_dir / "checkpoint"),
        latest,
        latest + ".index",
        latest + ".data-00000-of-00001",
        latest + ".meta",
    ):
        assert _location(given) == (TF1, latest), given
    older = str(tf1_model_dir / f"model.ckpt-{TF1_SAVE_STEPS[0]}")
    assert _location(older + ".meta") == (TF1, older)
    with ckptcheck.open_checkpoint(latest) as reader:
        files = reader.info().files
    assert latest + ".meta" in files and all(os.path.isfile(f) for f in files)


def test_tf2_formats_are_detected(tf2_all_dtypes: str, keras_tf_checkpoint: str, tf1_model_dir: Path) -> None:
    assert _location(tf2_all_dtypes)[0] == TF2
    assert _location(keras_tf_checkpoint)[0] == TF2
    assert _location(str(tf1_model_dir))[0] == TF1
    with ckptcheck.open_checkpoint(str(tf1_model_dir)) as reader:
        assert reader.objects() is None
        assert OBJECT_GRAPH_KEY not in {t.name for t in reader.tensors()}


def test_savedmodel_directory(savedmodel_dir: Path) -> None:
    variables = str(savedmodel_dir / "variables" / "variables")
    assert _location(str(savedmodel_dir)) == (SAVEDMODEL, variables)
    assert _location(str(savedmodel_dir / "variables")) == (SAVEDMODEL, variables)
    for given in (variables, variables + ".index", variables + ".data-00000-of-00001"):
        assert _location(given) == (SAVEDMODEL, variables), given
    # The files people paste name the SavedModel they are in (TensorFlow wrote both of these).
    pasted = [savedmodel_dir / "saved_model.pb", savedmodel_dir / "fingerprint.pb"]
    assert all(p.is_file() for p in pasted)
    for given in pasted:
        assert _location(str(given)) == (SAVEDMODEL, variables), given
        assert runner.invoke(app, ["inspect", str(given)]).exit_code == 0
    with ckptcheck.open_checkpoint(str(savedmodel_dir)) as reader:
        names = {t.name for t in reader.tensors()}
        assert {"scale" + VALUE, "offset" + VALUE} <= names
        np.testing.assert_array_equal(reader.read("scale" + VALUE), np.array([1.0, 2.0, 3.0], dtype=np.float32))


def test_checkpoint_manager_directory(manager_dir: Path) -> None:
    tf = _tf()
    latest = tf.train.latest_checkpoint(str(manager_dir))
    assert latest == str(manager_dir / "ckpt-4")
    assert _location(str(manager_dir)) == (TF2, latest)
    with ckptcheck.open_checkpoint(str(manager_dir)) as reader:
        assert int(reader.read("step" + VALUE)) == 4
        np.testing.assert_array_equal(reader.read("value" + VALUE), np.full([2, 2], 4.0, dtype=np.float32))


@pytest.mark.parametrize(("fixture", "steps"), [("manager_dir", [2, 3, 4]), ("tf1_model_dir", list(TF1_SAVE_STEPS))])
def test_list_state_names_every_checkpoint_with_its_step(
    request: pytest.FixtureRequest, fixture: str, steps: list[int]
) -> None:
    tf = _tf()
    directory = request.getfixturevalue(fixture)
    state = tf.train.get_checkpoint_state(str(directory))
    entries = list_state(str(directory))
    assert [e.prefix for e in entries] == list(state.all_model_checkpoint_paths)
    assert [e.step for e in entries] == steps
    assert [e.latest for e in entries] == [False] * (len(steps) - 1) + [True]
    assert all(e.exists for e in entries)


def test_copied_model_dir_reads_its_own_files(tf1_model_dir: Path, tmp_path: Path) -> None:
    """A TF1 Saver records absolute paths: a copied (or downloaded) model_dir still names the original files,
    or paths on the training machine. The checkpoint beside the state file is the one read."""
    copy = tmp_path / "copied"
    shutil.copytree(tf1_model_dir, copy)
    assert str(tf1_model_dir) in (copy / "checkpoint").read_text()
    latest = str(copy / f"model.ckpt-{TF1_SAVE_STEPS[-1]}")
    recorded = re.escape(f"records {tf1_model_dir}/model.ckpt-6; reading model.ckpt-6 beside it")
    with pytest.warns(ckptcheck.RelocatedCheckpointWarning, match=recorded):
        assert _location(str(copy)) == (TF1, latest)
    assert [e.prefix for e in list_state(str(copy))] == [str(copy / f"model.ckpt-{s}") for s in TF1_SAVE_STEPS]
    # Trained elsewhere: the state file names a bucket.
    (copy / "checkpoint").write_text(
        "".join(f'{field}: "gs://bucket/run/model.ckpt-{s}"\n'
                for field, s in [("model_checkpoint_path", TF1_SAVE_STEPS[-1])]
                + [("all_model_checkpoint_paths", s) for s in TF1_SAVE_STEPS])
    )
    recorded = re.escape("records gs://bucket/run/model.ckpt-6; reading model.ckpt-6 beside it")
    with pytest.warns(ckptcheck.RelocatedCheckpointWarning, match=recorded):
        assert _location(str(copy)) == (TF1, latest)
    os.remove(latest + ".index")
    with pytest.raises(ckptcheck.CheckpointNotFoundError, match=r"points at model\.ckpt-6, which is gone"):
        ckptcheck.open_checkpoint(str(copy))


def test_state_file_with_escaped_names(tmp_path: Path) -> None:
    """TensorFlow writes the state file as a text proto: quotes and backslashes are escaped, UTF-8 kept."""
    tf = _tf()
    name = 'é"q\'\\b'
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), str(tmp_path), max_to_keep=3,
                                         checkpoint_name=name)
    manager.save()
    manager.save()
    assert "\\\\" in (tmp_path / "checkpoint").read_text()
    entries = list_state(str(tmp_path))
    assert [e.prefix for e in entries] == list(tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths)
    assert [e.step for e in entries] == [1, 2] and all(e.exists for e in entries)
    assert _location(str(tmp_path)) == (TF2, str(tmp_path / f"{name}-2"))


# --- the object graph --------------------------------------------------------------------------------------------


def _escape(name: str) -> str:
    """tensorflow/python/trackable/trackable_utils.py's escape of an edge name in a checkpoint key."""
    return name.replace(".", "..").replace("/", ".S")


def _tf_graph(prefix: str) -> Any:
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(_tf().train.load_checkpoint(prefix).get_tensor(OBJECT_GRAPH_KEY))
    return graph


def _all_simple_paths(graph: Any) -> dict[int, set[str]]:
    """Every cycle-free path from the root to each node (escaped edge names joined by '/')."""
    found: dict[int, set[str]] = {0: {""}}
    stack: list[tuple[int, str, frozenset[int]]] = [(0, "", frozenset([0]))]
    while stack:
        node, path, seen = stack.pop()
        for child in graph.nodes[node].children:
            if child.node_id in seen:
                continue
            child_path = f"{path}/{_escape(child.local_name)}" if path else _escape(child.local_name)
            found.setdefault(child.node_id, set()).add(child_path)
            stack.append((child.node_id, child_path, seen | {child.node_id}))
    return found


def _first_paths(graph: Any) -> dict[int, str]:
    """TensorFlow's own rule: the path along which a breadth-first walk first reaches a node."""
    first = {0: ""}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        for child in graph.nodes[node].children:
            if child.node_id not in first:
                prefix = first[node]
                first[child.node_id] = f"{prefix}/{_escape(child.local_name)}" if prefix else _escape(child.local_name)
                queue.append(child.node_id)
    return first


@pytest.mark.tf
@pytest.mark.parametrize("fixture", ["keras_tf_checkpoint", "tf2_slots_checkpoint", "tf2_all_dtypes", "manager_dir"])
def test_objects_name_every_path_tensorflow_records(request: pytest.FixtureRequest, fixture: str) -> None:
    prefix = _prefixes(request, fixture)[-1]
    graph = _tf_graph(prefix)
    all_paths = _all_simple_paths(graph)
    first = _first_paths(graph)
    slots = {s.slot_variable_node_id: (s.original_variable_node_id, s.slot_name, opt_id)
             for opt_id, node in enumerate(graph.nodes) for s in node.slot_variables}
    # A stored key is an attribute's checkpoint_key, or extends it (objects saving several tensors).
    owner_of: dict[str, int] = {}
    saved_name: dict[str, str | None] = {}
    with ckptcheck.open_checkpoint(prefix) as reader:
        refs = {r.key: r for r in reader.objects() or ()}
        stored = {t.name for t in reader.tensors()}
    for node_id, node in enumerate(graph.nodes):
        for attr in node.attributes:
            extends = attr.name != "VARIABLE_VALUE"
            for key in stored:
                if key == attr.checkpoint_key or (extends and key.startswith(attr.checkpoint_key)):
                    owner_of[key] = node_id
                    saved_name[key] = attr.full_name or None
    assert set(refs) == set(owner_of) == stored - {OBJECT_GRAPH_KEY}
    assert any(saved_name.values())
    for key, ref in refs.items():
        node_id = owner_of[key]
        assert ref.saved_name == saved_name[key], key
        object_path, tensor = key.split("/.ATTRIBUTES/")
        suffix = "" if tensor == "VARIABLE_VALUE" else f"/{tensor}"
        if node_id in slots:
            original, slot_name, optimizer = slots[node_id]
            assert (ref.slot_of, ref.slot_name, ref.optimizer) == (first[original], slot_name, first[optimizer])
            expected_first = f"{first[original]}/.OPTIMIZER_SLOT/{first[optimizer]}/{_escape(slot_name)}"
            assert ref.paths == (expected_first + suffix,)
        else:
            if ref.slot_of is not None:  # a Keras 3 optimizer list entry (see the next test)
                assert ref.optimizer is not None and ref.slot_name in ("momentum", "velocity")
                assert first[node_id].startswith(ref.optimizer + "/_")
            else:
                assert ref.slot_name is ref.optimizer is None
            # The first path is the one TensorFlow built the key from; all others are real paths too.
            assert ref.paths[0] == first[node_id] + suffix
            assert {p[: len(p) - len(suffix)] for p in ref.paths} <= all_paths[node_id]
            assert len(ref.paths) == min(len(all_paths[node_id]), 8)
        assert object_path == ref.paths[0][: len(ref.paths[0]) - len(suffix)]


def test_keras_objects_show_the_model_path_of_each_weight(keras_tf_checkpoint: str) -> None:
    with ckptcheck.open_checkpoint(keras_tf_checkpoint) as reader:
        refs = {r.key: r for r in reader.objects() or ()}
        # Keras 3 tracks the optimizer's copy of the trainable variables first, so the Dense kernel is stored under
        # an optimizer key; only the object graph says it is the first Dense layer's `_kernel`.
        kernel = refs["optimizer/_trainable_variables/0" + VALUE]
        assert kernel.paths == ("optimizer/_trainable_variables/0", "model/_functional/_operations/1/_kernel")
        assert refs["optimizer/_trainable_variables/1" + VALUE].paths[1] == "model/_functional/_operations/1/bias"
        assert refs["optimizer/_trainable_variables/2" + VALUE].paths[1] == "model/_functional/_operations/2/_kernel"
        # The name the variable had: what only the graph says, and what a name-based reader would look for.
        assert kernel.saved_name is not None and kernel.saved_name.endswith("dense/kernel")
        # Keras 3 does not use TensorFlow's slot mechanism: the object graph has no `slot_variables`. Adam's m and
        # v are plain lists on the optimizer, `_momentums/i` and `_velocities/i`, in the order of
        # `_trainable_variables/i`, stored as `optimizer/_variables/<n>` (after iterations and learning_rate).
        # ckptcheck pairs them by that index and names the model path of the weight each belongs to.
        assert refs["optimizer/_iterations" + VALUE].paths == ("optimizer/_iterations", "optimizer/_variables/0")
        assert refs["optimizer/_iterations" + VALUE].slot_of is None
        for i in range(4):
            m = refs[f"optimizer/_variables/{2 + 2 * i}" + VALUE]
            v = refs[f"optimizer/_variables/{3 + 2 * i}" + VALUE]
            assert m.paths[1] == f"optimizer/_momentums/{i}" and v.paths[1] == f"optimizer/_velocities/{i}"
            weight_key = f"optimizer/_trainable_variables/{i}" + VALUE
            weight_path = refs[weight_key].paths[1]
            assert weight_path.startswith("model/")
            assert (m.slot_of, m.slot_name, m.optimizer) == (weight_path, "momentum", "optimizer")
            assert (v.slot_of, v.slot_name, v.optimizer) == (weight_path, "velocity", "optimizer")
            weight = reader.tensor_info(weight_key)
            assert reader.tensor_info(m.key).shape == reader.tensor_info(v.key).shape == weight.shape


def test_tf_slot_variables_map_to_their_variable(tf2_slots_checkpoint: str) -> None:
    with ckptcheck.open_checkpoint(tf2_slots_checkpoint) as reader:
        refs = {r.key: r for r in reader.objects() or ()}
    for variable in ("model/w", "model/named/a..b", "model/named/c.Sd"):
        for slot in ("m", "v"):
            ref = refs[f"{variable}/.OPTIMIZER_SLOT/optimizer/{slot}" + VALUE]
            assert (ref.slot_of, ref.slot_name, ref.optimizer) == (variable, slot, "optimizer")
    # Escaped names stay escaped in paths, so a path is never ambiguous: "c/d" is one edge, written "c.Sd".
    assert refs["model/named/c.Sd" + VALUE].paths == ("model/named/c.Sd",)
    assert refs["model/named/a..b" + VALUE].paths == ("model/named/a..b",)
    assert refs["table/.ATTRIBUTES/table-keys"].paths == ("table/table-keys",)
    assert refs["table/.ATTRIBUTES/table-values"].paths == ("table/table-values",)
    assert refs["iterator/.ATTRIBUTES/ITERATOR_STATE"].paths == ("iterator/ITERATOR_STATE",)
    deep = [r for r in refs.values() if r.key.endswith("/leaf" + VALUE)]
    assert len(deep) == 1 and deep[0].paths == (deep[0].key[: -len(VALUE)],)
    assert deep[0].paths[0].count("/inner") == 39


# --- the test-only index writer, and the reader without TensorFlow -----------------------------------------------


def test_index_writer_round_trips_a_real_index(tf2_sharded: str, tmp_path: Path) -> None:
    """tests/support/index_writer.py writes tables this reader (and TensorFlow) accept: rewrite a real index with it."""
    tf = _tf()
    source = Path(tf2_sharded)
    for f in source.parent.glob(source.name + ".data-*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "ckpt.index").write_bytes(write_table(SSTable.open(tf2_sharded + ".index").items()))
    copy = str(tmp_path / "ckpt")
    assert (tmp_path / "ckpt.index").read_bytes() != (source.parent / "ckpt.index").read_bytes()
    tf_reader = tf.train.load_checkpoint(copy)
    with ckptcheck.open_checkpoint(copy) as reader:
        for t in reader.tensors():
            assert_same_value(reader.read(t.name), tf_reader.get_tensor(t.name), t.name)


def test_big_endian_bundle_matches_tensorflow(tmp_path: Path) -> None:
    """A bundle whose header says BIG endian (crafted: TF writes host order) is byte-swapped on read, as TF does."""
    tf = _tf()
    values = {"f": (1, np.array([1.5, -2.0, np.nan, -0.0], ">f4")), "i": (5, np.array([1, -2, 300], ">i2")),
              "c": (8, np.array([1 + 2j, -0.0j], ">c8")), "d": (2, np.array([[1e300, -1e-300]], ">f8")),
              "b": (10, np.array([True, False]))}
    data = b""
    entries = []
    for name, (dtype, value) in values.items():
        raw = value.tobytes()
        entries.append((name.encode(), entry_proto(dtype, list(value.shape), offset=len(data), size=len(raw),
                                                   crc=masked_crc(raw))))
        data += raw
    (tmp_path / "be.data-00000-of-00001").write_bytes(data)
    (tmp_path / "be.index").write_bytes(write_table([(b"", header_proto(endianness=1)), *entries]))
    prefix = str(tmp_path / "be")
    tf_reader = tf.train.load_checkpoint(prefix)
    with ckptcheck.open_checkpoint(prefix) as reader:
        assert reader.info().metadata.get("endianness") == "big"
        for name in values:
            value = reader.read(name)
            assert value.dtype.isnative
            assert_same_value(value, tf_reader.get_tensor(name), name)
            chunks = np.concatenate([c.copy() for c in reader.iter_chunks(name, chunk_bytes=8)])
            assert chunks.tobytes() == value.reshape(-1).tobytes()


def test_reading_never_imports_tensorflow(request: pytest.FixtureRequest) -> None:
    prefixes = [p for fixture in [*ALL_BUNDLES, "tf2_sharded_strings"] for p in _prefixes(request, fixture)]
    paths = [*prefixes, str(request.getfixturevalue("tf1_model_dir")), str(request.getfixturevalue("savedmodel_dir"))]
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        import ckptcheck
        count = 0
        for path in {paths!r}:
            with ckptcheck.open_checkpoint(path) as reader:
                reader.objects()
                for t in ckptcheck.list_tensors(reader):
                    ckptcheck.read_tensor(reader, t.name)
                    for _ in reader.iter_chunks(t.name, chunk_bytes=64):
                        pass
                    count += 1
        assert sys.modules["tensorflow"] is None
        assert not [m for m in sys.modules if m.startswith(("tensorflow.", "keras"))]
        print("read", count)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 50


def test_directory_holding_one_keras_file_stands_for_it(keras_files: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from ckptcheck.errors import CheckpointNotFoundError
    from ckptcheck.formats.resolve import resolve

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(keras_files["keras"], one / "model.keras")
    resolved = resolve(str(one))
    assert (resolved.kind, resolved.location) == ("keras", str(one / "model.keras"))
    shutil.copy(keras_files["keras-weights"], one / "model.weights.h5")
    with pytest.raises(CheckpointNotFoundError, match="2 Keras files here") as err:
        resolve(str(one))
    assert "model.keras" in str(err.value)


def test_all_shows_checkpoints_on_disk_the_state_file_no_longer_names(manager_dir: Path, tmp_path: Path) -> None:
    """A checkpoint left beside the state file but not named in it (a restore point copied back, a manager that
    lost track): `--all` lists it, marked, as TensorFlow's own state shows it is not named."""
    import json

    from typer.testing import CliRunner

    from ckptcheck.cli import app

    tf = _tf()
    directory = tmp_path / "run"
    shutil.copytree(manager_dir, directory)
    for f in directory.glob("ckpt-2.*"):
        shutil.copy(f, directory / f.name.replace("ckpt-2", "ckpt-1"))
    named = [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(directory)).all_model_checkpoint_paths]
    assert "ckpt-1" not in named  # the oracle: TensorFlow's state does not name it
    entries = list_state(str(directory))
    assert [(os.path.basename(e.prefix), e.named, e.exists) for e in entries] == [
        ("ckpt-1", False, True), *((name, True, True) for name in named)]
    data = json.loads(CliRunner().invoke(app, ["inspect", str(directory), "--all", "--json"]).stdout)
    assert [c["named"] for c in data["checkpoints"]] == [False, True, True, True]
