""".keras archives with ``model.weights.npz`` (Keras 3 ``weights_format="npz"``) against Keras itself: every name,
dtype, shape and value ckptcheck reads must equal what the model held when it was saved, what numpy's own
``np.load`` unpickles from the same bytes (allowed here only: the test wrote the file), and what ckptcheck reads
from the same model saved with h5 weights — and ckptcheck must never run the pickle."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from keras_builders import KerasBuild
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats.keras.npz import KerasNpzArchiveReader
from ckptcheck.records import KERAS

runner = CliRunner()

CONVNET_MODEL_NAMES = [  # model.weights order: Conv2D kernel, bias; BatchNormalization gamma, beta, mean, var; Dense
    "layers/conv2d/vars/0", "layers/conv2d/vars/1",
    "layers/batch_normalization/vars/0", "layers/batch_normalization/vars/1",
    "layers/batch_normalization/vars/2", "layers/batch_normalization/vars/3",
    "layers/dense/vars/0", "layers/dense/vars/1",
]
SEQ_MODEL_NAMES = ["layers/dense/vars/0", "layers/dense/vars/1", "layers/dense_1/vars/0", "layers/dense_1/vars/1",
                   "layers/dense_2/vars/0", "layers/dense_2/vars/1"]


def raw(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def npz_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read("model.weights.npz")


def numpy_oracle(path: Path) -> dict[str, np.ndarray]:
    """What np.load unpickles from the archive's npz (Keras's own variables, turned into arrays), named as the h5
    layout names them."""
    out: dict[str, np.ndarray] = {}
    with np.load(io.BytesIO(npz_bytes(path)), allow_pickle=True) as contents:
        for key in contents.files:
            prefix = "vars" if key == "__root__" else f"{key}/vars"
            for k, v in contents[key].item().items():
                out[f"{prefix}/{k}"] = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    return out


def rewrite(src: Path, dst: Path, members: dict[str, bytes] | None = None, *, npz: dict[str, bytes] | None = None,
            compression: int = zipfile.ZIP_STORED) -> Path:
    """A copy of the archive with members replaced, and/or members of its npz replaced (or added)."""
    members = dict(members or {})
    if npz is not None:
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(npz_bytes(src))) as inner, zipfile.ZipFile(buf, "w", compression) as out:
            names = [i.filename for i in inner.infolist()]
            for name in names:
                out.writestr(name, npz.get(name, inner.read(name)))
            for name, data in npz.items():
                if name not in names:
                    out.writestr(name, data)
        members["model.weights.npz"] = buf.getvalue()
    with zipfile.ZipFile(src) as s, zipfile.ZipFile(dst, "w", compression) as d:
        for info in s.infolist():
            d.writestr(info.filename, members.get(info.filename, s.read(info)))
    return dst


def npy_bytes(value: Any, *, allow_pickle: bool = True) -> bytes:
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=allow_pickle)
    return buf.getvalue()


# --- the oracle ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "model_names"), [("keras-npz", CONVNET_MODEL_NAMES),
                                                  ("keras-npz-seq", SEQ_MODEL_NAMES)])
def test_values_equal_the_model_and_numpy(keras_build: KerasBuild, key: str, model_names: list[str]) -> None:
    path = keras_build.files[key]
    oracle = numpy_oracle(path)
    with ckptcheck.open_checkpoint(str(path)) as reader:
        assert isinstance(reader, KerasNpzArchiveReader)
        info = reader.info()
        assert info.format == KERAS
        assert {t.name for t in info.tensors} == set(oracle)
        for t in info.tensors:
            value = reader.read(t.name)
            want = oracle[t.name]
            assert value.shape == want.shape == t.shape, t.name
            assert value.dtype == want.dtype, t.name
            assert t.nbytes == want.nbytes
            assert raw(value) == raw(want), t.name
        # What the model held when it was saved, bit for bit (the optimizer's variables in its own order).
        for name, want in zip(model_names, keras_build.weights[key], strict=True):
            got = reader.read(name)
            assert got.dtype == want.dtype and got.shape == want.shape and raw(got) == raw(want), name
        optimizer = keras_build.optimizer[key]
        assert len([t for t in info.tensors if t.name.startswith("optimizer/")]) == len(optimizer)
        for i, want in enumerate(optimizer):
            got = reader.read(f"optimizer/vars/{i}")
            assert got.dtype == want.dtype and got.shape == want.shape and raw(got) == raw(want), i


def test_keras_own_loader(keras_files: dict[str, Path]) -> None:
    """Keras 3.15 writes the npz as pickles and loads it with allow_pickle=False, so it refuses its own file. Should
    a Keras load it, what it loads must be what ckptcheck reads."""
    import keras

    try:
        model = keras.saving.load_model(keras_files["keras-npz"])
    except ValueError as exc:
        assert "allow_pickle" in str(exc)
        return
    with ckptcheck.open_checkpoint(str(keras_files["keras-npz"])) as reader:  # pragma: no cover - a future Keras
        for name, v in zip(CONVNET_MODEL_NAMES, model.weights, strict=True):
            assert raw(reader.read(name)) == raw(np.asarray(v.numpy()))


def test_same_names_and_values_as_h5_weights(keras_files: dict[str, Path]) -> None:
    with ckptcheck.open_checkpoint(str(keras_files["keras-npz"])) as a, \
            ckptcheck.open_checkpoint(str(keras_files["keras-npz-h5"])) as b:
        assert [(t.name, t.dtype, t.shape, t.nbytes) for t in a.tensors()] == \
            [(t.name, t.dtype, t.shape, t.nbytes) for t in b.tensors()]
        assert a.info().architecture == b.info().architecture
        for t in a.tensors():
            assert raw(a.read(t.name)) == raw(b.read(t.name))
    result = runner.invoke(app, ["diff", str(keras_files["keras-npz"]), str(keras_files["keras-npz-h5"])])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("same (exact)")


def test_bfloat16(keras_files: dict[str, Path]) -> None:
    import ml_dtypes

    with ckptcheck.open_checkpoint(str(keras_files["keras-npz-seq"])) as reader:
        t = reader.tensor_info("layers/dense_1/vars/0")
        assert t.dtype == "bfloat16"
        assert reader.read(t.name).dtype == np.dtype(ml_dtypes.bfloat16)


def test_iter_chunks_streams_in_one_buffer(keras_files: dict[str, Path]) -> None:
    with ckptcheck.open_checkpoint(str(keras_files["keras-npz"])) as reader:
        for t in reader.tensors():
            whole = reader.read(t.name)
            for chunk_bytes in (1, 8, 40, 1 << 20):
                chunks = list(reader.iter_chunks(t.name, chunk_bytes))
                assert all(c.ndim == 1 and c.nbytes <= max(chunk_bytes, whole.itemsize) for c in chunks)
                if len(chunks) > 1:
                    assert len({c.__array_interface__["data"][0] for c in chunks}) == 1  # one reused buffer
                parts = [c.copy() for c in reader.iter_chunks(t.name, chunk_bytes)]
                assert raw(np.concatenate(parts)) == raw(whole), (t.name, chunk_bytes)


def test_deflated_archive_and_npz_read_the_same(keras_files: dict[str, Path], tmp_path: Path) -> None:
    src = keras_files["keras-npz"]
    deflated = rewrite(src, tmp_path / "deflated.keras", npz={}, compression=zipfile.ZIP_DEFLATED)
    with ckptcheck.open_checkpoint(str(src)) as a, ckptcheck.open_checkpoint(str(deflated)) as b:
        assert a.tensors() == b.tensors()
        for t in a.tensors():
            assert raw(a.read(t.name)) == raw(b.read(t.name))
            assert raw(np.concatenate([c.copy() for c in b.iter_chunks(t.name, 8)])) == raw(a.read(t.name))
    assert runner.invoke(app, ["verify", str(deflated)]).exit_code == 0


def test_plain_npy_members_are_read_by_key(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """An npz member that is an ordinary numeric .npy array is one tensor, named by its key."""
    value = np.arange(12, dtype=">f8").reshape(3, 4)  # big-endian: read as the values, not the bytes
    path = rewrite(keras_files["keras-npz"], tmp_path / "plain.keras",
                   npz={"extra/vars/0.npy": npy_bytes(value, allow_pickle=False)})
    with ckptcheck.open_checkpoint(str(path)) as reader:
        t = reader.tensor_info("extra/vars/0")
        assert (t.dtype, t.shape) == ("float64", (3, 4))
        assert np.array_equal(reader.read(t.name), value)
        assert np.array_equal(np.concatenate([c.copy() for c in reader.iter_chunks(t.name, 16)]), value.ravel())


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_every_verb(keras_files: dict[str, Path], tmp_path: Path) -> None:
    path = str(keras_files["keras-npz"])
    listing = json.loads(runner.invoke(app, ["inspect", path, "--json", "--stats"]).output)
    assert listing["format"] == "keras"
    assert listing["architecture"]["model_class"] == "Sequential"
    stats = {t["name"]: t["stats"] for t in listing["tensors"]}
    oracle = numpy_oracle(keras_files["keras-npz"])
    kernel = oracle["layers/conv2d/vars/0"]
    assert stats["layers/conv2d/vars/0"]["count"] == kernel.size
    assert stats["layers/conv2d/vars/0"]["min"] == pytest.approx(float(kernel.min()))
    result = runner.invoke(app, ["inspect", path, "--tensor", "layers/dense/vars/1", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["values"] == oracle["layers/dense/vars/1"].tolist()
    assert "layers/dense/vars/1: float32 [2]" in runner.invoke(app, ["inspect", path, "--tensor",
                                                                     "layers/dense/vars/1"]).output
    verified = json.loads(runner.invoke(app, ["verify", path, "--json"]).output)
    assert verified["ok"] and verified["tensors_checked"] == len(oracle)
    manifest = tmp_path / "m.json"
    assert runner.invoke(app, ["manifest", path, "-o", str(manifest)]).exit_code == 0
    h5_manifest = tmp_path / "h.json"
    assert runner.invoke(app, ["manifest", str(keras_files["keras-npz-h5"]), "-o", str(h5_manifest)]).exit_code == 0
    assert manifest.read_text() == h5_manifest.read_text()  # same model, same manifest, whatever the weights format
    assert runner.invoke(app, ["verify", path, "--against", str(h5_manifest)]).exit_code == 0


# --- damage and hostile input ---------------------------------------------------------------------------------------


def _flip_npz_byte(src: Path, dst: Path, at: int) -> Path:
    """Flip the byte at offset ``at`` of the archive's npz, its members' CRCs left as they were (the outer
    archive is rewritten, so its own CRC of model.weights.npz matches the flipped bytes: only the inner one can
    tell)."""
    data = bytearray(npz_bytes(src))
    data[at] ^= 0xFF
    return rewrite(src, dst, {"model.weights.npz": bytes(data)})


def test_flipped_byte_in_a_member_fails_verify(keras_files: dict[str, Path], tmp_path: Path) -> None:
    src = keras_files["keras-npz"]
    kernel_bytes = raw(numpy_oracle(src)["layers/dense/vars/0"])
    at = npz_bytes(src).index(kernel_bytes[:64]) + 10  # inside the Dense kernel's values
    path = _flip_npz_byte(src, tmp_path / "flipped.keras", at)
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1, result.output
    assert "model.weights.npz member layers/dense.npy is damaged: Bad CRC-32" in result.output
    report = json.loads(runner.invoke(app, ["verify", str(path), "--json"]).output)
    assert [(p["kind"], p["file"]) for p in report["problems"]] == [("checksum", str(path))]
    assert report["tensors_checked"] == len(numpy_oracle(src))  # the other members still listed and read


def test_flipped_byte_in_the_pickle(keras_files: dict[str, Path], tmp_path: Path) -> None:
    src = keras_files["keras-npz"]
    data = npz_bytes(src)
    with zipfile.ZipFile(io.BytesIO(data)) as inner:
        info = inner.getinfo("optimizer.npy")
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    stop = info.header_offset + 30 + name_len + extra_len + info.file_size - 1  # the pickle's STOP opcode
    path = _flip_npz_byte(src, tmp_path / "pickle.keras", stop)
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1
    assert "optimizer.npy is damaged" in result.output
    assert runner.invoke(app, ["inspect", str(path)]).exit_code == 2


def test_header_claiming_a_huge_shape(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """A plain .npy header declaring 4 TiB over 32 stored bytes: one clear line, nothing allocated."""
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    path = rewrite(keras_files["keras-npz"], tmp_path / "bomb.keras",
                   npz={"bomb/vars/0.npy": header.getvalue() + bytes(32)})
    tracemalloc.start()
    try:
        with pytest.raises(CorruptCheckpointError) as exc:
            ckptcheck.open_checkpoint(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    assert "bomb/vars/0.npy" in str(exc.value) and "refusing to allocate" in str(exc.value)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and str(path) in result.output and "Traceback" not in result.output


def test_pickled_array_claiming_a_huge_shape(keras_files: dict[str, Path], tmp_path: Path) -> None:
    """Inside the pickle: a 12-byte array whose state claims shape (2**40,) is refused before anything is read."""
    member = npy_bytes({"0": np.zeros(3, np.float32)})
    forged = member.replace(b"K\x03\x85", b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85", 1)  # BININT1 3 -> LONG1 2**40
    assert forged != member
    path = rewrite(keras_files["keras-npz"], tmp_path / "pbomb.keras", npz={"layers/conv2d.npy": forged})
    with pytest.raises(CorruptCheckpointError, match="needs 4398046511104 bytes but the pickle holds 12"):
        ckptcheck.open_checkpoint(str(path))


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch ckptcheck-was-pwned",))


@pytest.mark.parametrize("payload", [
    {"0": _Evil()},  # a call that would run a command on unpickling: never made, and the variable has no array
    [np.zeros(2)],  # pickled, but not the dict of variables Keras writes
])
def test_pickles_are_never_run(keras_files: dict[str, Path], tmp_path: Path, payload: Any,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    member = io.BytesIO()
    np.save(member, np.array(payload, dtype=object) if isinstance(payload, list) else payload, allow_pickle=True)
    path = rewrite(keras_files["keras-npz"], tmp_path / "evil.keras", npz={"layers/conv2d.npy": member.getvalue()})
    with pytest.raises(UnsupportedFormatError) as exc:
        ckptcheck.open_checkpoint(str(path))
    assert "layers/conv2d.npy" in str(exc.value)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert not (tmp_path / "ckptcheck-was-pwned").exists()


def test_object_array_member_refused(keras_files: dict[str, Path], tmp_path: Path) -> None:
    member = npy_bytes(np.array(["a", 1], dtype=object))
    path = rewrite(keras_files["keras-npz"], tmp_path / "obj.keras", npz={"layers/conv2d.npy": member})
    with pytest.raises(UnsupportedFormatError, match="array of Python objects"):
        ckptcheck.open_checkpoint(str(path))


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.98])
def test_truncated_npz_archive(keras_files: dict[str, Path], tmp_path: Path, keep: float) -> None:
    data = keras_files["keras-npz"].read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptCheckpointError) as exc, ckptcheck.open_checkpoint(str(path)) as reader:
        for t in reader.tensors():
            reader.read(t.name)
    assert exc.value.path == str(path)
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 1


def test_pickle_module_is_not_used(keras_files: dict[str, Path]) -> None:
    """The reader never unpickles: with pickle.loads and np.load made to fail, it still reads everything."""
    saved = (pickle.loads, pickle.load, np.load)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled")

    try:
        pickle.loads = pickle.load = np.load = refuse  # type: ignore[assignment]
        with ckptcheck.open_checkpoint(str(keras_files["keras-npz"])) as reader:
            for t in reader.tensors():
                reader.read(t.name)
    finally:
        pickle.loads, pickle.load, np.load = saved  # type: ignore[assignment]


def _object_npy(pickle_stream: bytes) -> bytes:
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    return header.getvalue() + pickle_stream


@pytest.mark.parametrize(("stream", "message"), [
    (b"\x80\x04" + b"N0" * 600_000 + b"N.", "opcodes"),  # a pickle too long to model
    (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60) + b".", "runs past the end of the member"),  # BINBYTES8 of 2**60
    (b"\x80\x04Q.", "opcode b'Q'"),  # BINPERSID: nothing ckptcheck models
])
def test_hostile_pickles(keras_files: dict[str, Path], tmp_path: Path, stream: bytes, message: str) -> None:
    path = rewrite(keras_files["keras-npz"], tmp_path / "hostile.keras", npz={"layers/conv2d.npy": _object_npy(stream)})
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output and "layers/conv2d.npy" in result.output
