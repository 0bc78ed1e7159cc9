"""Reading .safetensors files: against the safetensors library (the oracle), on files it wrote and on hostile
headers it refuses. No TensorFlow needed."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.formats.safetensors import MAX_HEADER_BYTES, SafetensorsReader

safetensors = pytest.importorskip("safetensors")
st_numpy = pytest.importorskip("safetensors.numpy")
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def crafted(path: Path, header: Any, data: bytes = b"", *, raw: bytes | None = None,
            length: int | None = None) -> Path:
    """A file laid out as safetensors: the length prefix (``length`` overrides it), the header (a JSON value, or
    ``raw`` bytes) and ``data``."""
    text = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def library_reads(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return safetensors.deserialize(path.read_bytes())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def library_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A file written by the safetensors library itself: every numpy dtype it writes, a scalar, an empty tensor,
    a tensor of several MiB (read in more than one chunk), metadata."""
    rng = np.random.default_rng(0)
    values: dict[str, np.ndarray] = {
        "layer.0/kernel": rng.standard_normal((33, 17)).astype(np.float32),
        "f64": rng.standard_normal(7),
        "f16": rng.standard_normal((2, 3)).astype(np.float16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.arange(0, 256, 5, dtype=np.uint8),
        "i16": np.array([-1, 2], dtype=np.int16),
        "u16": np.array([65535], dtype=np.uint16),
        "i32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "u32": np.array([2**32 - 1], dtype=np.uint32),
        "i64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big": rng.standard_normal(3 << 20 >> 2).astype(np.float32),  # 3 MiB: several 2 MiB chunks
    }
    path = tmp_path_factory.mktemp("st") / "lib.safetensors"
    st_numpy.save_file(values, str(path), metadata={"format": "np", "note": "written by the library"})
    return path, values


def test_reads_what_the_library_wrote_bit_for_bit(library_file: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _values = library_file
    oracle = {name: t for name, t in library_reads(path)}
    with ckptcheck.open_checkpoint(str(path)) as reader:
        info = reader.info()
        assert info.format == "safetensors"
        assert {t.name for t in info.tensors} == set(oracle)
        assert info.metadata == {"format": "np", "note": "written by the library"}
        for t in info.tensors:
            want = oracle[t.name]
            assert list(t.shape) == want["shape"], t.name
            value = reader.read(t.name)
            assert value.tobytes() == bytes(want["data"]), t.name
            assert value.shape == tuple(want["shape"])
            streamed = b"".join(c.tobytes() for c in reader.iter_chunks(t.name, chunk_bytes=1 << 20))
            assert streamed == bytes(want["data"]), t.name
            assert t.variable == t.name  # a file not written by ckptcheck: the name is all it records


def test_numpy_dtypes_match_the_librarys(library_file: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _values = library_file
    loaded = st_numpy.load_file(str(path))
    with ckptcheck.open_checkpoint(str(path)) as reader:
        for name, value in loaded.items():
            ours = reader.read(name)
            assert ours.dtype == value.dtype, name
            assert np.array_equal(ours, value, equal_nan=value.dtype.kind == "f"), name


def test_bfloat16_and_float8_read_as_ml_dtypes(tmp_path: Path) -> None:
    """The library's numpy side has no bfloat16 or float8: its raw bytes (deserialize) are the oracle."""
    bf = np.array([1.5, -2.0, 3.0e38], dtype=ml_dtypes.bfloat16)
    e4 = np.array([0.5, -448.0], dtype=ml_dtypes.float8_e4m3fn)
    e5 = np.array([0.25, np.inf], dtype=ml_dtypes.float8_e5m2)
    data = bf.tobytes() + e4.tobytes() + e5.tobytes()
    header = {"bf": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
              "e4": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [6, 8]},
              "e5": {"dtype": "F8_E5M2", "shape": [2], "data_offsets": [8, 10]}}
    path = crafted(tmp_path / "x.safetensors", header, data)
    oracle = {name: t for name, t in library_reads(path)}
    with ckptcheck.open_checkpoint(str(path)) as reader:
        for name, want in (("bf", bf), ("e4", e4), ("e5", e5)):
            got = reader.read(name)
            assert got.dtype == want.dtype
            assert got.tobytes() == bytes(oracle[name]["data"]) == want.tobytes()
        assert [t.dtype for t in reader.tensors()] == ["bfloat16", "float8_e4m3fn", "float8_e5m2"]


def test_commands_on_a_library_file(library_file: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    path, values = library_file
    listed = run("inspect", str(path), "--json")
    assert listed.exit_code == 0, listed.output
    assert {t["name"]: t["shape"] for t in json.loads(listed.stdout)["tensors"]} == {
        k: list(v.shape) for k, v in values.items()}
    verified = run("verify", str(path), "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["ok"] and report["tensors_checked"] == len(values)
    assert any("no checksum" in n for n in report["notes"])
    assert "read" in run("verify", str(path)).stdout.splitlines()[0]  # read, not "checked"
    manifest = tmp_path / "m.json"
    assert run("manifest", str(path), "-o", str(manifest)).exit_code == 0
    assert run("verify", str(path), "--against", str(manifest)).exit_code == 0
    assert run("diff", str(path), str(path)).exit_code == 0
    # A directory holding one .safetensors file stands for it.
    assert run("inspect", str(path.parent)).exit_code == 0


def test_a_changed_value_is_found_against_a_manifest(library_file: tuple[Path, dict[str, np.ndarray]],
                                                     tmp_path: Path) -> None:
    path, _ = library_file
    manifest = tmp_path / "m.json"
    assert run("manifest", str(path), "-o", str(manifest)).exit_code == 0
    changed = tmp_path / "changed.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # the last byte belongs to some tensor's values
    changed.write_bytes(bytes(data))
    assert run("verify", str(changed)).exit_code == 0  # no checksum: verify alone cannot see it, and says so
    against = run("verify", str(changed), "--against", str(manifest))
    assert against.exit_code == 1, against.output


# --- hostile and damaged headers: the library refuses each; ckptcheck says why in one line ---------------------------

F32_1 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def _hostile(tmp: Path) -> dict[str, Path]:
    short = tmp / "short.safetensors"
    short.write_bytes(b"\x02\x00")
    return {
        "shorter than 8 bytes": short,
        "header past the cap": crafted(tmp / "cap.safetensors", None, raw=b"{}", length=MAX_HEADER_BYTES + 1),
        "header past the file": crafted(tmp / "past.safetensors", None, raw=b"{}", length=1 << 40),
        "not UTF-8": crafted(tmp / "utf8.safetensors", None, raw=b'{"\xff":1}'),
        "not JSON": crafted(tmp / "json.safetensors", None, raw=b'{"a": '),
        "not an object": crafted(tmp / "list.safetensors", [1, 2]),
        "deep nesting": crafted(tmp / "deep.safetensors", None, raw=b"[" * 100_000),
        "metadata not strings": crafted(tmp / "meta.safetensors", {"__metadata__": {"a": 1}}),
        "unknown dtype": crafted(tmp / "dtype.safetensors", {"a": {**F32_1, "dtype": "Q4"}}, b"\0" * 4),
        "negative dim": crafted(tmp / "neg.safetensors", {"a": {**F32_1, "shape": [-1]}}, b"\0" * 4),
        "float offsets": crafted(tmp / "float.safetensors", {"a": {**F32_1, "data_offsets": [0.0, 4]}}, b"\0" * 4),
        "missing field": crafted(tmp / "field.safetensors", {"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4),
        "end before start": crafted(tmp / "order.safetensors", {"a": {**F32_1, "data_offsets": [4, 0]}}, b"\0" * 4),
        "gap": crafted(tmp / "gap.safetensors", {"a": {**F32_1, "data_offsets": [4, 8]}}, b"\0" * 8),
        "overlap": crafted(tmp / "overlap.safetensors",
                           {"a": F32_1, "b": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]}}, b"\0" * 10),
        "past the end": crafted(tmp / "end.safetensors", {"a": {**F32_1, "shape": [3], "data_offsets": [0, 12]}},
                                b"\0" * 4),
        "size mismatch": crafted(tmp / "size.safetensors", {"a": {**F32_1, "shape": [2]}}, b"\0" * 4),
        "huge shape": crafted(tmp / "huge.safetensors", {"a": {**F32_1, "shape": [1 << 40, 1 << 40]}}, b"\0" * 4),
        "bytes left over": crafted(tmp / "trail.safetensors", {"a": F32_1}, b"\0" * 12),
        "sub-byte tail": crafted(tmp / "f4.safetensors", {"a": {"dtype": "F4", "shape": [3],
                                                                "data_offsets": [0, 2]}}, b"\0" * 2),
    }


HOSTILE = ["shorter than 8 bytes", "header past the cap", "header past the file", "not UTF-8", "not JSON",
           "not an object", "deep nesting", "metadata not strings", "unknown dtype", "negative dim", "float offsets",
           "missing field", "end before start", "gap", "overlap", "past the end", "size mismatch", "huge shape",
           "bytes left over", "sub-byte tail"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_headers_are_one_line_exit_2(tmp_path: Path, case: str) -> None:
    path = _hostile(tmp_path)[case]
    with pytest.raises(Exception, match=r"(?i)error|invalid|header|metadata|offset|variant"):
        library_reads(path)  # the oracle refuses it too
    result = run("inspect", str(path))
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ckptcheck: {path}"), (case, result.stderr)
    assert "Traceback" not in result.output
    verified = run("verify", str(path), "--json")
    expected = 2 if case == "unknown dtype" else 1  # damage is a problem; a dtype it does not define, unreadable
    assert verified.exit_code == expected, (case, verified.output)
    if expected == 1:
        assert json.loads(verified.stdout)["problems"], case


def test_verify_names_every_broken_rule(tmp_path: Path) -> None:
    """The library stops at its first broken rule; verify lists them all, each naming its tensor."""
    header = {"a": F32_1, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]},
              "c": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}}
    path = crafted(tmp_path / "many.safetensors", header, b"\0" * 40)
    with pytest.raises(Exception):  # noqa: B017 - the library's own error class varies by release
        library_reads(path)
    report = json.loads(run("verify", str(path), "--json").stdout)
    messages = [(p["tensor"], p["message"]) for p in report["problems"]]
    assert any(t == "b" and "no tensor covers" in m for t, m in messages), messages  # 8 bytes after `a`
    assert any(t == "c" and "overlap" in m for t, m in messages), messages
    assert any(t is None and "covered by no tensor" in m for t, m in messages), messages  # 16 trailing bytes
    assert report["tensors_checked"] == 1  # `a` alone lies where it should


def test_a_header_of_many_items_is_refused_before_parsing(tmp_path: Path) -> None:
    """Millions of tiny JSON items would be gigabytes of Python objects: counted first, refused."""
    text = b'{"x":[' + b"0," * 5_000_000 + b'0]}'
    path = crafted(tmp_path / "items.safetensors", None, raw=text)
    result = run("inspect", str(path))
    assert result.exit_code == 2
    assert "JSON items" in result.stderr


def test_reader_keeps_layout_problems_when_tolerant(tmp_path: Path) -> None:
    path = crafted(tmp_path / "gap.safetensors", {"a": {**F32_1, "data_offsets": [4, 8]}}, b"\0" * 8)
    with pytest.raises(ckptcheck.CorruptCheckpointError):
        SafetensorsReader(str(path))
    with SafetensorsReader(str(path), tolerant=True) as reader:
        assert [p.tensor for p in reader.layout_problems] == ["a"]
