"""`ckptcheck export`: every value it writes read back with the safetensors library and with numpy, compared bit
for bit with what TensorFlow (tf.train.load_checkpoint) or h5py reads for the same key."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest
from h5_oracle import weights_h5
from keras_builders import KerasBuild
from typer.testing import CliRunner

from ckptcheck.cli import app

safetensors = pytest.importorskip("safetensors")
runner = CliRunner()

# The safetensors spec's dtype names, as numpy (and ml_dtypes) hold them.
ST_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
            "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "I64": np.int64,
            "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
            "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def export_json(*args: str) -> dict[str, Any]:
    result = run("export", *args, "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["schema"] == "ckptcheck.export/1"
    return report


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file as the safetensors library reads it (its own header checks; raw bytes and dtype names), each
    tensor viewed by numpy; and its metadata. Where the library's numpy loader can hold every dtype, its arrays
    must be the same."""
    out = {}
    for name, t in safetensors.deserialize(path.read_bytes()):
        out[name] = np.frombuffer(bytes(t["data"]), dtype=ST_NUMPY[t["dtype"]]).reshape(t["shape"])
    with safetensors.safe_open(str(path), framework="np") as f:
        metadata = f.metadata() or {}
        assert set(f.keys()) == set(out)
    if not any(a.dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2)
               for a in out.values()):
        from safetensors.numpy import load_file

        for name, value in load_file(str(path)).items():
            assert value.dtype == out[name].dtype and value.tobytes() == out[name].tobytes(), name
    return out, metadata


def same_bits(ours: np.ndarray, theirs: Any, name: str) -> None:
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, name
    assert ours.dtype == theirs.dtype, (name, ours.dtype, theirs.dtype)
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes(), name


def key_of(report: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["key"] for t in report["tensors"]}


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# --- TF1 -------------------------------------------------------------------------------------------------------------


def tf1_trainable(prefix: str) -> set[str]:
    """The trainable variables the .meta graph records (a partitioned variable by its full name)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(prefix + ".meta")
        names = set()
        for v in tf.compat.v1.trainable_variables():
            info = v._save_slice_info
            names.add(info.full_name if info is not None else v.op.name)
    return names


def test_tf1_saver_with_a_partitioned_variable(tf1_model_dir: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    out = tmp_path / "tf1.safetensors"
    report = export_json(str(tf1_model_dir), str(out))
    prefix = tf.train.latest_checkpoint(str(tf1_model_dir))
    tf_reader = tf.train.load_checkpoint(prefix)
    shapes = tf_reader.get_variable_to_shape_map()
    values, metadata = read_safetensors(out)
    assert set(values) == set(shapes)  # every variable, named by its name (TF1: the key)
    for name, value in values.items():
        same_bits(value, tf_reader.get_tensor(name), name)  # `embedding` assembled from its 3 slices
    assert json.loads(metadata["ckptcheck.keys"]) == {n: n for n in shapes}
    assert metadata["ckptcheck.source_format"] == "tf1"
    assert metadata["ckptcheck.source"] == os.path.abspath(prefix)

    weights = tmp_path / "weights.npz"
    report = export_json(str(tf1_model_dir), str(weights), "--kind", "weights")
    assert {t["name"] for t in report["tensors"]} == tf1_trainable(prefix)  # no slots, no beta powers, no step
    with np.load(weights, allow_pickle=False) as z:
        assert set(z.files) == tf1_trainable(prefix)
        for name in z.files:
            same_bits(z[name], tf_reader.get_tensor(name), name)


def test_tf1_v1_checkpoint_skips_its_string(tf1_v1_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """A V1 checkpoint (partitioned `embedding`, a string `vocab`): TensorFlow cannot read a partitioned V1
    variable, so the V2 save of the same session is the oracle."""
    import tensorflow as tf

    out = tmp_path / "v1.safetensors"
    refused = run("export", str(tf1_v1_checkpoints["model_dir"]), str(out))
    assert refused.exit_code == 2
    assert "vocab (string)" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists()
    report = export_json(str(tf1_v1_checkpoints["model_dir"]), str(out), "--skip-unsupported")
    assert report["skipped"] == ["vocab"]
    oracle = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tf1_v1_checkpoints["v2_model_dir"])))
    values, _ = read_safetensors(out)
    assert set(values) == set(oracle.get_variable_to_shape_map()) - {"vocab"}
    for name, value in values.items():
        same_bits(value, oracle.get_tensor(name), name)
    text = run("export", str(tf1_v1_checkpoints["model_dir"]), str(tmp_path / "v1b.safetensors"),
               "--skip-unsupported").stdout
    assert "skipped: 1 tensor(s)" in text and "  - vocab (string, [4])" in text


# --- TF2 -------------------------------------------------------------------------------------------------------------


def test_tf2_keras_model_with_optimizer_state(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    import tensorflow as tf

    prefix = keras_mixed_tf_checkpoint["prefix"]
    tf_reader = tf.train.load_checkpoint(prefix)
    tf_dtypes = tf_reader.get_variable_to_dtype_map()
    out = tmp_path / "all.safetensors"
    report = export_json(prefix, str(out))
    values, metadata = read_safetensors(out)
    keys = key_of(report)
    assert json.loads(metadata["ckptcheck.keys"]) == keys
    # Every variable of the model and of the optimizer, by its Keras path; the object graph is not exported.
    assert set(values) == set(keras_mixed_tf_checkpoint["weights"]) | set(keras_mixed_tf_checkpoint["optimizer"])
    assert set(keys.values()) == set(tf_dtypes) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    for name, value in values.items():
        same_bits(value, tf_reader.get_tensor(keys[name]), name)
    header = {name: t["dtype"] for name, t in safetensors.deserialize(out.read_bytes())}
    assert header["mixed/half/kernel"] == "BF16" and tf_dtypes[keys["mixed/half/kernel"]] == tf.bfloat16
    assert header["mixed/quarter/kernel"] == "F16" and tf_dtypes[keys["mixed/quarter/kernel"]] == tf.float16

    weights = export_json(prefix, str(tmp_path / "w.safetensors"), "--kind", "weights")
    assert [t["name"] for t in weights["tensors"]] != [] and sorted(t["name"] for t in weights["tensors"]) == sorted(
        keras_mixed_tf_checkpoint["weights"])
    optimizer = export_json(prefix, str(tmp_path / "o.safetensors"), "--kind", "optimizer")
    assert sorted(t["name"] for t in optimizer["tensors"]) == sorted(keras_mixed_tf_checkpoint["optimizer"])

    # diff pairs the export with its source by variable, and finds them equal.
    diffed = run("diff", prefix, str(out), "--json")
    assert diffed.exit_code == 0, diffed.output
    assert json.loads(diffed.stdout)["matching"] == "variables"


def test_tf2_to_npz_refuses_bfloat16_or_skips_it(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    import tensorflow as tf

    prefix = keras_mixed_tf_checkpoint["prefix"]
    tf_reader = tf.train.load_checkpoint(prefix)
    bf16 = {k for k, d in tf_reader.get_variable_to_dtype_map().items() if d == tf.bfloat16}
    out = tmp_path / "x.npz"
    refused = run("export", prefix, str(out))
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1 and f"{len(bf16)} tensor(s) of a dtype npz cannot hold" in refused.stderr
    assert not out.exists() and files_in(tmp_path) == set()
    report = export_json(prefix, str(out), "--skip-unsupported")
    assert set(report["skipped"]) == bf16
    with np.load(out, allow_pickle=False) as z:
        keys = key_of(report)
        assert set(z.files) == set(keys) and not bf16 & set(keys.values())
        for name in z.files:
            same_bits(z[name], tf_reader.get_tensor(keys[name]), name)


def test_sharding_policy_slices_come_out_whole(tf2_sharded: str, tmp_path: Path) -> None:
    """Variables split across shards by a MaxShardSizePolicy; unnamed tf.Variables share the name `Variable`, so
    they are exported by key; complex128 and strings are not safetensors dtypes."""
    import tensorflow as tf

    out = tmp_path / "sharded.safetensors"
    shared = run("export", tf2_sharded, str(out), "--skip-unsupported")
    assert shared.exit_code == 2 and "would be named 'Variable'" in shared.stderr
    report = export_json(tf2_sharded, str(out), "--names", "key", "--skip-unsupported")
    tf_reader = tf.train.load_checkpoint(tf2_sharded)
    dtypes = tf_reader.get_variable_to_dtype_map()
    assert set(report["skipped"]) == {k for k, d in dtypes.items() if d in (tf.complex128, tf.string)} - {
        "_CHECKPOINTABLE_OBJECT_GRAPH"}  # bookkeeping: left out before its dtype matters
    values, _ = read_safetensors(out)
    assert "big/.ATTRIBUTES/VARIABLE_VALUE" in values
    for name, value in values.items():
        same_bits(value, tf_reader.get_tensor(name), name)


def test_savedmodel(savedmodel_dir: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    tf_reader = tf.train.load_checkpoint(str(savedmodel_dir / "variables" / "variables"))
    out = tmp_path / "sm.safetensors"
    # Two unnamed tf.Variables, both saved as `Variable`: refused by variable, naming both keys.
    result = run("export", str(savedmodel_dir), str(out))
    assert result.exit_code == 2 and not out.exists()
    assert ("2 tensors would be named 'Variable': offset/.ATTRIBUTES/VARIABLE_VALUE, "
            "scale/.ATTRIBUTES/VARIABLE_VALUE") in result.stderr
    report = export_json(str(savedmodel_dir), str(out), "--names", "key")
    assert report["source_format"] == "savedmodel"
    values, _ = read_safetensors(out)
    keys = key_of(report)
    assert set(keys.values()) == set(tf_reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    for name, value in values.items():
        same_bits(value, tf_reader.get_tensor(keys[name]), name)


# --- Keras files -----------------------------------------------------------------------------------------------------




def h5_value(f: h5py.File, key: str) -> np.ndarray:
    if "model_weights" in f and not key.startswith("optimizer_weights/"):
        key = "model_weights/" + key
    return np.asarray(f[key][()])


@pytest.mark.parametrize("which", ["keras", "keras-weights", "keras-h5", "keras2-h5"])
def test_keras_files(keras_build: KerasBuild, tmp_path: Path, which: str) -> None:
    if which not in keras_build.files:
        pytest.skip("tf_keras is not installed to write Keras 2 files")
    path = keras_build.files[which]
    out = tmp_path / "k.safetensors"
    report = export_json(str(path), str(out))
    values, metadata = read_safetensors(out)
    keys = key_of(report)
    assert metadata["ckptcheck.source_format"] == report["source_format"]
    with weights_h5(path) as f:
        datasets: list[str] = []
        f.visititems(lambda n, o: datasets.append(n) if isinstance(o, h5py.Dataset) else None)
        stored = {n[len("model_weights/"):] if n.startswith("model_weights/") else n for n in datasets}
        assert set(keys.values()) == stored  # every dataset, each once
        for name, value in values.items():
            theirs = h5_value(f, keys[name])
            if theirs.dtype.kind == "V":  # bfloat16: h5py reads Keras's two bytes as opaque
                assert value.dtype == ml_dtypes.bfloat16 and value.tobytes() == theirs.tobytes(), name
            else:
                same_bits(value, theirs, name)


@pytest.mark.parametrize("which", ["keras", "keras-weights", "keras-h5"])
def test_keras_weights_are_the_models_weight_paths(keras_build: KerasBuild, tmp_path: Path, which: str) -> None:
    """`--kind weights` of a Keras 3 file: exactly the saved model's `[v.path for v in model.weights]`, each
    holding that variable's value."""
    out = tmp_path / "w.safetensors"
    report = export_json(str(keras_build.files[which]), str(out), "--kind", "weights")
    paths = keras_build.paths[which]
    assert sorted(t["name"] for t in report["tensors"]) == sorted(paths)
    values, _ = read_safetensors(out)
    for path, value in zip(paths, keras_build.weights[which], strict=True):
        same_bits(values[path], value, path)


def test_keras_to_npz(keras_build: KerasBuild, tmp_path: Path) -> None:
    path = keras_build.files["keras-npz-h5"]  # float32 throughout: every tensor fits an npz
    out = tmp_path / "convnet.npz"
    report = export_json(str(path), str(out), "--kind", "weights")
    assert report["out_format"] == "npz" and report["skipped"] == []
    with np.load(out, allow_pickle=False) as z, weights_h5(path) as f:
        keys = key_of(report)
        assert set(z.files) == set(keys)
        for name in z.files:
            same_bits(z[name], h5_value(f, keys[name]), name)


# --- choosing and naming ---------------------------------------------------------------------------------------------


def test_filter_exclude_and_rename_maps(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    import tensorflow as tf

    prefix = keras_mixed_tf_checkpoint["prefix"]
    tf_reader = tf.train.load_checkpoint(prefix)
    report = export_json(prefix, str(tmp_path / "a.safetensors"), "--filter", "mixed/*", "--exclude", "*bias*")
    assert sorted(key_of(report)) == sorted(w for w in keras_mixed_tf_checkpoint["weights"] if "bias" not in w)
    assert {t["reason"] for t in report["left_out"]} == {"filter", "exclude", "kind"}

    plain = tmp_path / "plain.json"
    kernel_key = next(t["key"] for t in report["tensors"] if t["name"] == "mixed/wide/kernel")
    plain.write_text(json.dumps({"mixed/wide/kernel": "encoder.weight", kernel_key.replace("0/", "1/"): "b"}))
    renamed = export_json(prefix, str(tmp_path / "r.safetensors"), "--kind", "weights", "--rename-map", str(plain))
    assert renamed["renamed"] == 2
    values, _ = read_safetensors(tmp_path / "r.safetensors")
    assert "encoder.weight" in values and "b" in values and "mixed/wide/kernel" not in values
    same_bits(values["encoder.weight"], tf_reader.get_tensor(kernel_key), "encoder.weight")

    mapped = tmp_path / "restore-check.json"
    mapped.write_text(json.dumps({"schema": "ckptcheck.rename-map/1", "renames": [
        {"variable": "head/kernel", "key": kernel_key}]}))
    report = export_json(prefix, str(tmp_path / "m.safetensors"), "--kind", "weights", "--rename-map", str(mapped))
    assert key_of(report)["head/kernel"] == kernel_key

    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"mixed/wide/kernel": "mixed/wide/bias"}))
    result = run("export", prefix, str(tmp_path / "c.safetensors"), "--rename-map", str(clash))
    assert result.exit_code == 2 and "2 tensors would be named 'mixed/wide/bias'" in result.stderr
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"no/such/thing": "x"}))
    result = run("export", prefix, str(tmp_path / "c.safetensors"), "--rename-map", str(missing))
    assert result.exit_code == 2 and "no/such/thing" in result.stderr
    assert not (tmp_path / "c.safetensors").exists()


def test_bookkeeping_only_when_asked(manager_dir: Path, tmp_path: Path) -> None:
    """A CheckpointManager's checkpoint: its save counter and object graph are format bookkeeping, exported only
    with --kind bookkeeping (the graph, a string, is then skipped and listed)."""
    import tensorflow as tf

    save_counter = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    default = export_json(str(manager_dir), str(tmp_path / "d.safetensors"), "--names", "key")
    assert sorted(t["key"] for t in default["left_out"]) == ["_CHECKPOINTABLE_OBJECT_GRAPH", save_counter]
    assert {t["reason"] for t in default["left_out"]} == {"kind"}
    out = tmp_path / "b.safetensors"
    asked = export_json(str(manager_dir), str(out), "--kind", "bookkeeping", "--skip-unsupported")
    assert asked["skipped"] == ["_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert key_of(asked) == {save_counter: save_counter}  # its "variable" is a label: named by its key
    values, _ = read_safetensors(out)
    same_bits(values[save_counter], tf.train.load_checkpoint(str(manager_dir)).get_tensor(save_counter), "counter")
    nothing = run("export", str(manager_dir), str(tmp_path / "n.safetensors"), "--filter", "no-such-name")
    assert nothing.exit_code == 2 and "nothing to export" in nothing.stderr


# --- streamed, atomic ------------------------------------------------------------------------------------------------


def test_a_damaged_source_leaves_no_out(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(Path(keras_mixed_tf_checkpoint["prefix"]).parent, src)
    from ckptcheck.formats.tensorflow.bundle import BundleReader

    with BundleReader(str(src / "ckpt")) as reader:  # a float32 kernel's first byte: exported in both formats
        entry = reader.entry("optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE")
        data = Path(reader.shard_path(entry.shard_id))
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    target = tmp_path / "out"
    target.mkdir()
    for name in ("x.safetensors", "x.npz"):
        result = run("export", str(src / "ckpt"), str(target / name), "--skip-unsupported")
        assert result.exit_code == 2, result.output
        assert "checksum mismatch" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert files_in(target) == set()  # no OUT, and no temporary file left beside it


def test_an_interrupted_export_leaves_no_out(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    from ckptcheck.export import export_checkpoint

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(keras_mixed_tf_checkpoint["prefix"], str(tmp_path / "x.safetensors"), progress=stop)
    assert files_in(tmp_path) == set()


def test_existing_out_needs_force(keras_mixed_tf_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep me")
    result = run("export", keras_mixed_tf_checkpoint["prefix"], str(out))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert run("export", keras_mixed_tf_checkpoint["prefix"], str(out), "--force").exit_code == 0
    assert read_safetensors(out)[0]
    assert run("export", keras_mixed_tf_checkpoint["prefix"], str(tmp_path / "x.pt")).exit_code == 2


@pytest.mark.slow
def test_a_partitioned_96_mib_variable_streams_in_flat_memory(tmp_path: Path) -> None:
    """A [4096, 6144] float32 variable stored as two column slices (so C order of the whole interleaves them,
    row by row): exported in memory far below its size, every byte where C order puts it."""
    from index_writer import DT_FLOAT, entry_proto, masked_crc, slice_key, write_index
    from process_memory import peak_mib_above_start

    rows, cols = 4096, 6144
    whole = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    half = cols // 2
    parts = [np.ascontiguousarray(whole[:, :half]), np.ascontiguousarray(whole[:, half:])]
    prefix = str(tmp_path / "big")
    entries = {b"big": entry_proto(DT_FLOAT, [rows, cols], slices=[[(0, -1), (0, half)], [(0, -1), (half, half)]])}
    offset = 0
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        for i, part in enumerate(parts):
            data = part.tobytes()
            entries[slice_key("big", [(0, -1), (i * half, half)])] = entry_proto(
                DT_FLOAT, [rows, half], offset=offset, size=len(data), crc=masked_crc(data))
            f.write(data)
            offset += len(data)
    write_index(prefix + ".index", entries)
    out = tmp_path / "big.safetensors"
    assert peak_mib_above_start(["export", prefix, str(out)], tmp_path / "report.txt") < 48  # (MiB)
    values, _ = read_safetensors(out)
    same_bits(values["big"], whole, "big")


def test_export_from_a_url(tf1_model_dir: Path, tmp_path: Path) -> None:
    from remote_servers import http_server

    local = tmp_path / "local.safetensors"
    export_json(str(tf1_model_dir), str(local))
    with http_server(tf1_model_dir.parent) as (base, _counter):
        url = f"{base}/{tf1_model_dir.name}"
        remote = tmp_path / "remote.safetensors"
        report = export_json(url, str(remote))
        assert report["source"] == url
    a, _ = read_safetensors(local)
    b, meta_b = read_safetensors(remote)
    assert meta_b["ckptcheck.source"].startswith(url)
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_restore_check_refuses_a_safetensors_file(tf1_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    export_json(str(tf1_model_dir), str(out))
    model = tmp_path / "m.py"
    model.write_text("def build():\n    raise AssertionError('not reached')\n")
    result = run("restore-check", str(out), "--model", f"{model}:build")
    assert result.exit_code == 2 and "no TensorFlow or Keras restore reads a safetensors file" in result.stderr
