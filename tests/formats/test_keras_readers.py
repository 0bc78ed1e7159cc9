"""The Keras readers against Keras itself: every name, dtype, shape and value ckptcheck reads must equal what
h5py reads from the same file and what the model held (get_weights(), optimizer variables), bit for bit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import ml_dtypes
import numpy as np
import pytest
from h5_oracle import weights_h5
from keras_builders import SPLIT_LAYERS, KerasBuild
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import (
    CkptcheckError,
    CorruptCheckpointError,
    TensorNotFoundError,
    UnsupportedFormatError,
)
from ckptcheck.formats.keras import config as keras_config
from ckptcheck.formats.keras.archive import MAX_CONFIG_BYTES
from ckptcheck.formats.keras.open import open_keras
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS, SafetyFinding

THREE_FORMATS = {"keras": KERAS, "keras-weights": KERAS_WEIGHTS, "keras-h5": KERAS_H5}
KERAS2 = ("keras2-h5", "keras2-weights-h5")


def open_file(path: Path) -> ckptcheck.CheckpointReader:
    return ckptcheck.open_checkpoint(str(path))


def digest(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Reading must never write: the files are byte-for-byte the same afterwards."""
    before = digest(list(paths))
    yield
    assert digest(list(paths)) == before


def h5_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def raw(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def need_tf_keras(build: KerasBuild) -> None:
    if not build.has_tf_keras:
        pytest.skip("tf_keras is not installed (pip install tf-keras) to write Keras 2 files")




# --- listing and values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["keras", "keras-weights", "keras-h5", "keras-lambda", *KERAS2])
def test_every_value_equals_h5py(keras_build: KerasBuild, key: str) -> None:
    if key.startswith("keras2"):
        need_tf_keras(keras_build)
    path = keras_build.files[key]
    with unchanged(path), open_file(path) as reader, weights_h5(path) as f:
        info = reader.info()
        datasets = h5_datasets(f)
        prefix = "model_weights/" if "model_weights" in f else ""
        expected_names = {
            (n[len(prefix):] if n.startswith(prefix) else n) for n in datasets
        }
        assert {t.name for t in info.tensors} == expected_names
        for t in info.tensors:
            path_in_file = t.name if t.name.startswith("optimizer_weights/") else prefix + t.name
            ds = datasets[path_in_file]
            assert t.shape == ds.shape
            ours = reader.read(t.name)
            assert ours.shape == ds.shape
            assert raw(ours) == raw(ds[()]), t.name  # bfloat16: the same two bytes h5py reads as opaque
            assert t.nbytes == ours.nbytes
            assert t.file == ("model.weights.h5" if info.format == KERAS else path.name)
            if ds.dtype.kind != "V":
                assert t.dtype == ds.dtype.name


@pytest.mark.parametrize("key", list(THREE_FORMATS))
def test_keras3_values_equal_the_model(keras_build: KerasBuild, key: str) -> None:
    path = keras_build.files[key]
    with open_file(path) as reader:
        info = reader.info()
        assert info.format == THREE_FORMATS[key]
        optimizer_prefix = "optimizer_weights/" if key == "keras-h5" else "optimizer/vars/"
        model = [t for t in info.tensors if not t.name.startswith(optimizer_prefix)]
        optimizer = [t for t in info.tensors if t.name.startswith(optimizer_prefix)]
        expected = keras_build.weights[key]
        assert [t.shape for t in model] == [w.shape for w in expected]
        for t, w in zip(model, expected, strict=True):
            got = reader.read(t.name)
            assert got.dtype == w.dtype, t.name
            assert raw(got) == raw(w), t.name
        expected_opt = keras_build.optimizer[key]
        assert len(optimizer) == len(expected_opt)
        for t, w in zip(optimizer, expected_opt, strict=True):
            assert raw(reader.read(t.name)) == raw(w), t.name


def test_keras3_names_dtypes_and_order(keras_files: dict[str, Path]) -> None:
    with open_file(keras_files["keras-weights"]) as reader:
        tensors = {t.name: t for t in reader.tensors()}
        names = list(tensors)
    assert names[:6] == [
        "layers/dense/vars/0", "layers/dense/vars/1", "layers/dense_1/vars/0", "layers/dense_1/vars/1",
        "layers/dense_2/vars/0", "layers/dense_2/vars/1",
    ]
    optimizer = [n for n in names if n.startswith("optimizer/vars/")]
    assert optimizer == [f"optimizer/vars/{i}" for i in range(len(optimizer))]  # vars/10 after vars/9
    assert len(optimizer) > 10
    assert tensors["layers/dense/vars/0"].dtype == "float32"
    assert tensors["layers/dense/vars/0"].shape == (4, 3)
    assert tensors["layers/dense_1/vars/0"].dtype == "bfloat16"
    assert tensors["layers/dense_1/vars/0"].nbytes == 12
    assert tensors["optimizer/vars/0"].dtype == "int64"  # the iteration counter
    assert tensors["optimizer/vars/0"].shape == ()


@pytest.mark.parametrize("key", ["keras", "keras-weights", "keras-h5"])
def test_bfloat16(keras_build: KerasBuild, key: str) -> None:
    with open_file(keras_build.files[key]) as reader:
        half = [t for t in reader.tensors() if t.dtype == "bfloat16"]
        assert len(half) == 6  # kernel, bias and Adam's two slots of each
        value = reader.read(half[0].name)
    assert value.dtype == np.dtype(ml_dtypes.bfloat16)
    assert value.shape == (3, 2)


def test_legacy_names_info_and_metadata(keras_files: dict[str, Path]) -> None:
    with open_file(keras_files["keras-h5"]) as reader:
        info = reader.info()
    names = [t.name for t in info.tensors]
    assert names[:2] == ["dense/seq/dense/kernel", "dense/seq/dense/bias"]  # Keras 3 legacy: the variable path
    # The optimizer's name (adam, adam_1, ...) depends on what else the session built.
    assert any(n.startswith("optimizer_weights/adam") and n.endswith("/iteration") for n in names)
    assert info.writer is not None and info.writer.startswith("Keras 3.")
    assert info.metadata["backend"] == "tensorflow"
    assert info.metadata["optimizer"] == "Adam" and info.metadata["loss"] == "mse"
    assert info.files == (str(keras_files["keras-h5"]),)


def test_keras_archive_info(keras_files: dict[str, Path]) -> None:
    path = keras_files["keras"]
    with zipfile.ZipFile(path) as z:
        meta = json.loads(z.read("metadata.json"))
    with open_file(path) as reader:
        info = reader.info()
    assert info.format == KERAS
    assert info.writer == f"Keras {meta['keras_version']}"
    assert info.metadata["date_saved"] == meta["date_saved"]
    assert info.metadata["optimizer"] == "Adam" and info.metadata["loss"] == "mse"
    assert info.location == str(path) and info.files == (str(path),)
    assert info.path == str(path)


def test_keras2_names_and_values(keras_build: KerasBuild) -> None:
    need_tf_keras(keras_build)
    for key in KERAS2:
        with open_file(keras_build.files[key]) as reader:
            info = reader.info()
            assert info.format == KERAS_H5
            assert info.writer is not None and info.writer.startswith("Keras 2.")
            model = [t for t in info.tensors if not t.name.startswith("optimizer_weights/")]
            assert [t.name for t in model] == [
                "dense/dense/kernel:0", "dense/dense/bias:0", "inner/in_d/kernel:0", "inner/in_d/bias:0",
                "out/out/kernel:0", "out/out/bias:0",
            ]
            for t, w in zip(model, keras_build.weights[key], strict=True):
                assert raw(reader.read(t.name)) == raw(w), t.name
            assert (info.architecture is None) == (key == "keras2-weights-h5")
    with open_file(keras_build.files["keras2-h5"]) as reader:
        optimizer = [t for t in reader.tensors() if t.name.startswith("optimizer_weights/")]
        assert optimizer[0].name == "optimizer_weights/iteration:0"
        for t, w in zip(optimizer, keras_build.optimizer["keras2-h5"], strict=True):
            assert raw(reader.read(t.name)) == raw(w), t.name


def test_split_name_attributes(keras_build: KerasBuild) -> None:
    path = keras_build.files["keras-split-h5"]
    with h5py.File(path, "r") as f:  # the fixture really is split, as Keras splits
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
        assert "weight_names1" in f[keras_build.split_layout[1][0]].attrs
    expected = [(f"{layer}/{w}", value) for layer, weights in keras_build.split_layout for w, value in weights]
    with unchanged(path), open_file(path) as reader:
        info = reader.info()
        assert [t.name for t in info.tensors] == [n for n, _ in expected]
        assert info.writer == "Keras 2.15.0"
        for name, value in expected:
            assert raw(reader.read(name)) == raw(value)
    assert len(keras_build.split_layout) == SPLIT_LAYERS


@pytest.mark.parametrize("key", ["keras", "keras-weights", "keras-h5"])
def test_iter_chunks_streams_the_same_values(keras_build: KerasBuild, key: str) -> None:
    with open_file(keras_build.files[key]) as reader:
        for t in reader.tensors():
            whole = reader.read(t.name)
            for chunk_bytes in (1, 5, 8, 16, 1 << 20):
                parts = []
                for chunk in reader.iter_chunks(t.name, chunk_bytes):
                    assert chunk.ndim == 1
                    assert chunk.nbytes <= max(chunk_bytes, whole.itemsize)
                    parts.append(chunk.copy())  # a chunk is valid only until the next one
                joined = np.concatenate(parts) if parts else np.empty(0, whole.dtype)
                assert joined.dtype == whole.dtype
                assert raw(joined) == raw(whole), (t.name, chunk_bytes)


def test_iter_chunks_reuses_one_buffer(tmp_path: Path) -> None:
    path = tmp_path / "big.weights.h5"
    value = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/big/vars/0", data=value)
    with open_file(path) as reader:
        chunks = list(reader.iter_chunks("layers/big/vars/0", chunk_bytes=2 * 5 * 4 * 4))  # two rows a chunk
        assert len(chunks) == 3
        assert len({c.__array_interface__["data"][0] for c in chunks}) == 1  # the same buffer each time
        # A row larger than chunk_bytes: blocks along the next axis, still in storage order.
        joined = np.concatenate([c.copy() for c in reader.iter_chunks("layers/big/vars/0", chunk_bytes=24)])
    assert raw(joined) == raw(value)


def test_weights_file_recognized_by_content_not_name(keras_files: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.h5"
    shutil.copyfile(keras_files["keras-weights"], renamed)
    with open_file(renamed) as reader:
        assert reader.format == KERAS_WEIGHTS
        assert reader.info().format == KERAS_WEIGHTS


def test_deflated_archive_reads_the_same(keras_files: dict[str, Path], tmp_path: Path) -> None:
    deflated = tmp_path / "deflated.keras"
    with zipfile.ZipFile(keras_files["keras"]) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with open_file(keras_files["keras"]) as a, open_file(deflated) as b:
        assert a.tensors() == b.tensors()
        for t in a.tensors():
            assert raw(a.read(t.name)) == raw(b.read(t.name))


def test_unknown_tensor(keras_files: dict[str, Path]) -> None:
    with open_file(keras_files["keras"]) as reader, pytest.raises(TensorNotFoundError) as exc:
        reader.read("dense_1/vars")
    assert str(keras_files["keras"]) in str(exc.value)
    assert exc.value.tensor == "dense_1/vars"
    assert "layers/dense_1/vars/0" in str(exc.value)  # the hint suggests names containing it


def test_reading_imports_neither_keras_nor_tensorflow(keras_files: dict[str, Path]) -> None:
    code = (
        "import sys, ckptcheck\n"
        "assert 'h5py' not in sys.modules\n"
        f"with ckptcheck.open_checkpoint({str(keras_files['keras'])!r}) as r:\n"
        "    r.info(); [r.read(t.name) for t in r.tensors()]\n"
        f"with ckptcheck.open_checkpoint({str(keras_files['keras-h5'])!r}) as r:\n"
        "    r.info(); [r.read(t.name) for t in r.tensors()]\n"
        f"with ckptcheck.open_checkpoint({str(keras_files['keras-npz'])!r}) as r:\n"
        "    r.info(); [r.read(t.name) for t in r.tensors()]\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'tf_keras'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- architecture and safety --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["keras", "keras-h5"])
def test_architecture_of_keras3_model(keras_build: KerasBuild, key: str) -> None:
    with open_file(keras_build.files[key]) as reader:
        arch = reader.info().architecture
    assert arch is not None
    assert arch.source == ("config.json" if key == "keras" else "model_config attribute")
    assert arch.model_class == "Sequential" and arch.model_name == "seq"
    layers = {layer.name: layer for layer in arch.layers}
    dense = layers["dense"]
    assert dense.class_name == "Dense"
    assert dense.details["units"] == 3
    assert dense.details["activation"] == "relu"
    assert dense.details["kernel_initializer"] == "Constant(value=0.5)"
    assert dense.details["bias_initializer"] == "Zeros()"
    assert dense.details["use_bias"] is True
    assert layers["half"].details["dtype"] == "bfloat16"
    assert layers["out"].details["kernel_initializer"] == "GlorotUniform(seed=None)"
    assert arch.findings == ()


def test_no_architecture_for_weights_only(keras_files: dict[str, Path]) -> None:
    for key in ("keras-weights", "keras-split-h5"):
        with open_file(keras_files[key]) as reader:
            assert reader.info().architecture is None


def test_architecture_of_keras2_model(keras_build: KerasBuild) -> None:
    need_tf_keras(keras_build)
    with open_file(keras_build.files["keras2-h5"]) as reader:
        info = reader.info()
    arch = info.architecture
    assert arch is not None and arch.model_class == "Functional" and arch.model_name == "func"
    layers = {layer.name: layer for layer in arch.layers}
    assert layers["dense"].details["kernel_initializer"] == "Constant(value=0.5)"
    assert layers["inner"].class_name == "Sequential"
    assert layers["inner/in_d"].details["units"] == 2  # nested models are flattened as outer/inner
    assert arch.findings == ()  # tf_keras's own "Custom>Adam" optimizer is Keras, not custom code
    assert info.metadata["optimizer"] == "Custom>Adam"


def test_lambda_layer_is_flagged(keras_files: dict[str, Path]) -> None:
    with open_file(keras_files["keras-lambda"]) as reader:
        arch = reader.info().architecture
    assert arch is not None
    assert SafetyFinding("lam", "Lambda layer 'lam' carries Python bytecode that runs on load") in arch.findings
    assert len(arch.findings) == 1
    names = [layer.name for layer in arch.layers]
    assert "inner/in_d" in names
    assert {layer.name: layer for layer in arch.layers}["lam"].details["function"] == "<lambda bytecode>"


def test_keras2_lambda_layer_is_flagged(keras_build: KerasBuild) -> None:
    need_tf_keras(keras_build)
    with open_file(keras_build.files["keras2-lambda-h5"]) as reader:
        arch = reader.info().architecture
    assert arch is not None
    assert arch.findings == (SafetyFinding("lam", "Lambda layer 'lam' carries Python bytecode that runs on load"),)


def test_os_module_is_flagged(keras_files: dict[str, Path]) -> None:
    with unchanged(keras_files["keras-os"]), open_file(keras_files["keras-os"]) as reader:
        arch = reader.info().architecture
    assert arch is not None
    assert arch.findings == (SafetyFinding("dense", "config imports module 'os' (function 'system')"),)
    assert {layer.name: layer for layer in arch.layers}["dense"].details["activation"] == "os.system"


def _config(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": list(layers)}}


def _findings(config: Any) -> list[str]:
    return [f"{f.location}: {f.message}" for f in keras_config.findings_of(config, path="x")]


def test_findings_in_hand_written_configs() -> None:
    custom = {"module": None, "class_name": "MyLayer", "config": {"name": "mine", "trainable": True},
              "registered_name": "my_pkg>MyLayer"}
    assert _findings(_config(custom)) == [
        "mine: custom object 'my_pkg>MyLayer' is code registered outside Keras; loading runs it if it is importable"
    ]
    user_class = {"module": "my_pkg.layers", "class_name": "Evil", "config": {"name": "e"}, "registered_name": None}
    assert _findings(_config(user_class)) == ["e: config imports module 'my_pkg.layers' (class 'Evil')"]
    builtin_fn = {"module": "keras.layers", "class_name": "Dense", "config": {
        "name": "d", "units": 1, "activation": {"module": "builtins", "class_name": "function", "config": "exec",
                                                "registered_name": "function"}}}
    assert _findings(_config(builtin_fn)) == ["d: config imports module 'builtins' (function 'exec')"]
    keras2_fn = {"class_name": "Lambda", "config": {"name": "l", "function": "system", "function_type": "function",
                                                    "module": "os", "output_shape_type": "raw"}}
    assert _findings(_config(keras2_fn)) == ["l: config imports module 'os' (function 'system')"]
    keras2_custom = {"class_name": "Custom>Thing", "config": {"name": "t"}}
    assert _findings(_config(keras2_custom))[0].startswith("t: custom object 'Custom>Thing'")
    nested = _config({"module": "keras", "class_name": "Sequential", "config": {"name": "outer", "layers": [
        {"class_name": "Lambda", "config": {"name": "lam", "function": {"class_name": "__lambda__",
                                                                         "config": {"code": "AAAA"}}}}]}})
    assert _findings(nested) == ["outer/lam: Lambda layer 'lam' carries Python bytecode that runs on load"]
    top = {"module": "subprocess", "class_name": "function", "config": "run", "registered_name": None}
    assert _findings(top) == ["config: config imports module 'subprocess' (function 'run')"]
    plain = _config({"module": "keras.layers", "class_name": "Dense", "config": {
        "name": "d", "units": 1, "activation": {"module": "keras.activations", "class_name": "function",
                                                "config": "relu", "registered_name": "relu"},
        "kernel_initializer": {"module": "keras.src.initializers", "class_name": "Constant",
                               "config": {"value": 0.5}, "registered_name": None}}})
    assert _findings(plain) == []


def test_summary_of_hand_written_configs() -> None:
    # Keras 2.0-2.2 wrote a Sequential's layers as the config itself.
    old = {"class_name": "Sequential", "config": [
        {"class_name": "Conv2D", "config": {"name": "c", "filters": 8, "kernel_size": [3, 3],
                                            "kernel_initializer": {"class_name": "VarianceScaling", "config": {
                                                "scale": 2.0, "mode": "fan_in", "distribution": "normal",
                                                "seed": None}}}}]}
    arch = keras_config.architecture(old, keras_config.SOURCE_MODEL_CONFIG, path="x")
    assert arch.model_name is None
    (conv,) = arch.layers
    assert conv.details == {"filters": 8, "kernel_size": "(3, 3)", "kernel_initializer":
                            "VarianceScaling(scale=2.0, mode=fan_in, distribution=normal, seed=None)"}
    with pytest.raises(CorruptCheckpointError, match="names no model class"):
        keras_config.architecture({"config": {}}, keras_config.SOURCE_CONFIG_JSON, path="x")
    with pytest.raises(CorruptCheckpointError, match="not a JSON object"):
        keras_config.architecture([1, 2], keras_config.SOURCE_CONFIG_JSON, path="x")
    deep: dict[str, Any] = {"class_name": "Sequential", "config": {"name": "m", "layers": []}}
    node = deep
    for _ in range(keras_config.MAX_DEPTH + 5):
        child: dict[str, Any] = {"class_name": "Sequential", "config": {"name": "n", "layers": []}}
        node["config"]["layers"].append(child)
        node = child
    with pytest.raises(CorruptCheckpointError, match="deeper than"):
        keras_config.architecture(deep, keras_config.SOURCE_CONFIG_JSON, path="x")


# --- bad input ----------------------------------------------------------------------------------------------------


def expect_error(path: Path, error: type[CkptcheckError], *, read_all: bool = False) -> CkptcheckError:
    """Opening (and listing, and reading every tensor) must raise ``error`` naming the file, never change it."""
    with unchanged(path), pytest.raises(error) as exc, open_file(path) as reader:
        reader.info()
        if read_all:
            for t in reader.tensors():
                reader.read(t.name)
                list(reader.iter_chunks(t.name, 16))
    assert str(path) in str(exc.value)
    assert exc.value.path == str(path)
    return exc.value


def truncated_copy(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("key", ["keras-weights", "keras-h5"])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.95])
def test_truncated_hdf5(keras_files: dict[str, Path], tmp_path: Path, key: str, keep: float) -> None:
    path = truncated_copy(keras_files[key], tmp_path / ("cut" + keras_files[key].name), keep)
    expect_error(path, CorruptCheckpointError, read_all=True)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_archive(keras_files: dict[str, Path], tmp_path: Path, keep: float) -> None:
    path = truncated_copy(keras_files["keras"], tmp_path / "cut.keras", keep)
    expect_error(path, CorruptCheckpointError, read_all=True)


def test_hdf5_that_is_not_keras(tmp_path: Path) -> None:
    path = tmp_path / "random.h5"
    with h5py.File(path, "w") as f:
        f.create_group("experiment").create_dataset("data", data=np.arange(3))
        f.create_group("notes")
    err = expect_error(path, UnsupportedFormatError)
    assert err.hint is not None and "layer_names" in err.hint
    assert "experiment" in str(err)


def test_archive_without_weights(keras_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "noweights.keras"
    with zipfile.ZipFile(keras_files["keras"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename != "model.weights.h5":
                dst.writestr(info, src.read(info))
    err = expect_error(path, CorruptCheckpointError)
    assert "model.weights.h5" in str(err)


@pytest.mark.parametrize("config", [b"{not json", b"\xff\xfe", b"[" * 100_000, b"[1, 2]", b'{"config": {}}'])
def test_corrupt_config_json(keras_files: dict[str, Path], tmp_path: Path, config: bytes) -> None:
    path = tmp_path / "badconfig.keras"
    with zipfile.ZipFile(keras_files["keras"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, config if info.filename == "config.json" else src.read(info))
    err = expect_error(path, CorruptCheckpointError)
    assert "config.json" in str(err)


def _patch_central_size(path: Path, member: str, size: int) -> None:
    """Make the central directory claim ``size`` uncompressed bytes for ``member``."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        name = bytes(data[pos + 46 : pos + 46 + name_len])
        if name == member.encode():
            struct.pack_into("<I", data, pos + 24, size)
            if member != "config.json":
                struct.pack_into("<I", data, pos + 20, size)  # compressed size too, for a stored member
            path.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not found")


def test_member_claiming_a_huge_size(keras_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "huge.keras"
    shutil.copyfile(keras_files["keras"], path)
    _patch_central_size(path, "config.json", MAX_CONFIG_BYTES * 16)
    err = expect_error(path, CorruptCheckpointError)
    assert "config.json" in str(err) and str(MAX_CONFIG_BYTES * 16) in str(err)


def test_weights_member_claiming_more_than_the_archive(keras_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "huge_weights.keras"
    shutil.copyfile(keras_files["keras"], path)
    _patch_central_size(path, "model.weights.h5", 0x7FFF0000)
    err = expect_error(path, CorruptCheckpointError)
    assert "model.weights.h5" in str(err)


def test_legacy_file_listing_a_missing_layer(keras_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "missing_layer.h5"
    shutil.copyfile(keras_files["keras-h5"], path)
    with h5py.File(path, "r+") as f:
        names = [*f["model_weights"].attrs["layer_names"], "ghost"]
        f["model_weights"].attrs["layer_names"] = names
    err = expect_error(path, CorruptCheckpointError)
    assert "ghost" in str(err)


def test_links_are_not_followed(keras_files: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["secret"] = np.arange(4)
    path = tmp_path / "linked.weights.h5"
    shutil.copyfile(keras_files["keras-weights"], path)
    with h5py.File(path, "r+") as f:
        f["layers/dense/vars/9"] = h5py.ExternalLink(str(outside), "/secret")
    expect_error(path, UnsupportedFormatError)


def test_dataset_with_external_storage(tmp_path: Path) -> None:
    raw_file = tmp_path / "values.bin"
    raw_file.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = tmp_path / "external.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_group("layers/d/vars").create_dataset("0", shape=(4,), dtype=np.float32,
                                                       external=[(str(raw_file), 0, 16)])
    err = expect_error(path, UnsupportedFormatError)
    assert err.tensor == "layers/d/vars/0"


def test_open_keras_rejects_other_kinds(keras_files: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedFormatError):
        open_keras("tf2", str(keras_files["keras"]), path="x")


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "fake.keras"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    expect_error(path, CorruptCheckpointError)


runner = CliRunner()


# --- sharded Keras 3 weights (.weights.json) ----------------------------------------------------------------------


def test_sharded_weights_read_as_the_single_file_keras_wrote(keras_files: dict[str, Path]) -> None:
    """Keras wrote the same model both ways: the shards together hold exactly the .weights.h5's tensors, bit for
    bit, and each tensor names the shard that holds it."""
    sharded, single = keras_files["keras-sharded"], keras_files["keras-weights"]
    shard_names = sorted(p.name for p in sharded.parent.glob("model_*.weights.h5"))
    assert len(shard_names) >= 3
    with ckptcheck.open_checkpoint(str(sharded)) as rs, ckptcheck.open_checkpoint(str(single)) as r1:
        info = rs.info()
        assert info.format == KERAS_WEIGHTS and info.shards == len(shard_names)
        assert [os.path.basename(f) for f in info.files] == ["model.weights.json", *shard_names]
        assert [(t.name, t.dtype, t.shape, t.nbytes) for t in info.tensors] == [
            (t.name, t.dtype, t.shape, t.nbytes) for t in r1.info().tensors]
        assert {t.file for t in info.tensors} == set(shard_names)
        for t in info.tensors:
            a, b = rs.read(t.name), r1.read(t.name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), t.name
            streamed = b"".join(c.tobytes() for c in rs.iter_chunks(t.name, chunk_bytes=8))  # each valid until next
            assert streamed == b.tobytes(), t.name
    # the directory holding only the map and its shards stands for them
    with ckptcheck.open_checkpoint(str(sharded.parent)) as rd:
        assert rd.info().location == str(sharded)
    diff = runner.invoke(app, ["diff", str(sharded), str(single)])
    assert diff.exit_code == 0 and diff.stdout.startswith("same (exact)"), diff.stdout
    one = runner.invoke(app, ["inspect", str(sharded.parent / shard_names[1]), "--json"])
    assert json.loads(one.stdout)["metadata"]["shard_of"] == "model.weights.json"


def test_sharded_weights_damage_and_hostile_maps(keras_files: dict[str, Path], tmp_path: Path) -> None:
    sharded = keras_files["keras-sharded"]
    copy = tmp_path / "copy"
    shutil.copytree(sharded.parent, copy)
    shards = sorted(copy.glob("model_*.weights.h5"))
    shards[1].unlink()
    result = runner.invoke(app, ["inspect", str(copy / "model.weights.json")])
    assert result.exit_code == 2 and "missing" in result.stderr and shards[1].name in result.stderr
    verify = runner.invoke(app, ["verify", str(copy / "model.weights.json"), "--json"])
    assert verify.exit_code == 1 and shards[1].name in json.dumps(json.loads(verify.stdout)["problems"])
    for weight_map, message in [
        ({"/vars": ["../model.weights.h5"]}, "not a file beside it"),
        ({"/vars": ["/etc/passwd"]}, "not a file beside it"),
        ({"/vars": 7}, "not a list of file names"),
    ]:
        crafted = tmp_path / "crafted.weights.json"
        crafted.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        result = runner.invoke(app, ["inspect", str(crafted)])
        assert result.exit_code == 2 and message in result.stderr, (weight_map, result.stderr)
    not_keras = tmp_path / "other.weights.json"
    not_keras.write_text('{"hello": 1}')
    result = runner.invoke(app, ["inspect", str(not_keras)])
    assert result.exit_code == 2 and "weight_map" in result.stderr
    not_json = tmp_path / "broken.weights.json"
    not_json.write_text("{")
    result = runner.invoke(app, ["inspect", str(not_json)])
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


@pytest.mark.parametrize("kind", ["soft", "external"])
def test_links_in_a_keras3_weights_file_are_refused(tmp_path: Path, kind: str) -> None:
    """Keras writes hard links only; a soft link (or one to another file, which would read that file) is refused
    by name, found by HDF5's own walk of every link."""
    import h5py

    path = tmp_path / "links.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros(2, "f4"))
        f["layers/dense/vars/1"] = (h5py.SoftLink("/layers/dense/vars/0") if kind == "soft"
                                    else h5py.ExternalLink(str(tmp_path / "other.h5"), "/x"))
    with pytest.raises(UnsupportedFormatError, match="'layers/dense/vars/1' is a link; Keras files have none"):
        ckptcheck.open_checkpoint(str(path))


def test_group_linked_twice_and_deep_nesting(tmp_path: Path) -> None:
    """A group hard-linked under two names (a cycle, in a crafted file) is walked once; nesting past 64 levels is
    refused rather than walked."""
    import h5py

    cyclic = tmp_path / "cycle.weights.h5"
    with h5py.File(cyclic, "w") as f:
        group = f.create_group("layers/dense/vars")
        group.create_dataset("0", data=np.arange(3, dtype="f4"))
        group["loop"] = f["layers"]  # a hard link back up: layers/dense/vars/loop is layers
    with ckptcheck.open_checkpoint(str(cyclic)) as reader:
        assert [t.name for t in reader.tensors()] == ["layers/dense/vars/0"]
    deep = tmp_path / "deep.weights.h5"
    with h5py.File(deep, "w") as f:
        f.create_dataset("layers/" + "/".join(["g"] * 70) + "/vars/0", data=np.zeros(1, "f4"))
    with pytest.raises(CorruptCheckpointError, match="nest more than 64 levels"):
        ckptcheck.open_checkpoint(str(deep))


def _many_datasets(path: Path, layers: int) -> None:
    """A Keras 3 weights layout of ``layers`` layers with two datasets each (`layers/dense_<i>/vars/{0,1}`, the
    `vars` group named by its attribute, as Keras writes it), built with HDF5's own calls (h5py's groups took
    twice as long)."""
    from h5py import h5a, h5d, h5g, h5s, h5t

    with h5py.File(path, "w") as f:
        root = h5g.create(f.id, b"layers")
        float32 = h5t.py_create(np.dtype("<f4"))
        text = h5t.py_create(h5py.string_dtype(), logical=True)
        kernel, bias, scalar = h5s.create_simple((4, 2)), h5s.create_simple((2,)), h5s.create(h5s.SCALAR)
        for i in range(layers):
            group = h5g.create(h5g.create(root, f"dense_{i}".encode()), b"vars")
            h5a.create(group, b"name", text, scalar).write(np.array(f"dense_{i}".encode(), dtype=h5py.string_dtype()))
            h5d.create(group, b"0", float32, kernel).write(h5s.ALL, h5s.ALL, np.full((4, 2), i, "f4"))
            h5d.create(group, b"1", float32, bias).write(h5s.ALL, h5s.ALL, np.zeros(2, "f4"))


@pytest.mark.slow
def test_a_weights_file_of_20000_datasets_lists_as_h5py_walks_it(tmp_path: Path) -> None:
    """Issue 16: a .weights.h5 of 20,000 datasets lists every one, in natural order, with the shape, dtype and
    size h5py reads. Only a generous guard against a walk that would not finish (its speed, on 100,000 datasets,
    is in bench/: the test keeps to a fifth of that for the suite's time)."""
    from test_bundle_damaged import hang_guard

    from ckptcheck.order import natural_sorted

    path = tmp_path / "many.weights.h5"
    _many_datasets(path, 10_000)
    with hang_guard(900), ckptcheck.open_checkpoint(str(path)) as reader:
        listed = reader.info().tensors
    with h5py.File(path, "r") as f:
        oracle = {name: (ds.shape, ds.dtype) for name, ds in h5_datasets(f).items()}
    assert len(oracle) == 20_000
    assert [t.name for t in listed] == natural_sorted(oracle, str)
    for t in listed:
        shape, dtype = oracle[t.name]
        assert (t.shape, t.dtype, t.nbytes) == (shape, dtype.name, int(np.prod(shape)) * dtype.itemsize)
    assert listed[-1].variable is not None and listed[-1].variable != listed[-1].name  # named from the vars group
