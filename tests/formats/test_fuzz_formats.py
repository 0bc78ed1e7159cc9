"""Fuzzing the Keras formats, HDF5 attributes and manifests: whatever the damage, only ckptcheck's own errors.

The tensor-bundle fuzzing lives in test_bundle_damaged.py. Here the damage goes where Keras files and manifests are
parsed: the bytes of a `.keras` archive, its members rewritten with valid CRCs (so the damage reaches the JSON and
HDF5 parsers), any attribute of a Keras HDF5 file replaced by a value of another type or shape, and manifests for
`verify --against` damaged in their bytes or their structure. Each case must end in a CkptcheckError or a report
from the library, an exit code of 0, 1 or 2 from the CLI (never an exception escaping it), in bounded memory. Raw
byte damage to HDF5 files is left to the `.keras` case, where the member CRC catches it before HDF5 reads it:
the HDF5 library itself is not ours to fuzz.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bundle_damaged import MUTATIONS, _mutate
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.errors import CkptcheckError
from ckptcheck.formats.keras.safety import scan
from ckptcheck.manifest import build_manifest
from ckptcheck.verify import verify

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
KERAS_FILES = {"keras": FIXTURES / "keras" / "model.keras", "weights": FIXTURES / "keras-weights" / "model.weights.h5",
               "legacy": FIXTURES / "keras-h5" / "model.h5"}
MEMORY_BOUND = 64 << 20  # the fuzzed files hold ~20 KiB; nothing they claim may be allocated
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture],
                derandomize=True)
runner = CliRunner()


def _exercise(path: str, against: str | None = None) -> None:
    """The safety scan, listing, reading and streaming every tensor, verify and the manifest: each may fail only
    with a CkptcheckError, in bounded memory; then the CLI, which may only exit 0, 1 or 2."""
    tracemalloc.start()
    try:
        with contextlib.suppress(CkptcheckError):
            scan(path)
        with contextlib.suppress(CkptcheckError), ckptcheck.open_checkpoint(path) as reader:
            reader.info()
            for t in reader.tensors():
                reader.read(t.name)
                for _ in reader.iter_chunks(t.name, chunk_bytes=64):
                    pass
        with contextlib.suppress(CkptcheckError):
            verify(path, against=against)
        with contextlib.suppress(CkptcheckError), ckptcheck.open_checkpoint(path) as reader:
            build_manifest(reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak} bytes allocated while reading a damaged {path}"
    verify_args = ["verify", path] + (["--against", against] if against else [])
    for args in (["inspect", "--json", "--stats", path], verify_args):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1, 2) and isinstance(result.exception, (SystemExit, type(None))), (
            args, result.exit_code, result.exception, result.output[-2000:])


# --- .keras archives ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(ops=MUTATIONS)
def test_mutated_keras_archive_bytes(ops: list[tuple[str, int, int]], tmp_path: Path) -> None:
    """Raw damage anywhere in the archive: zip structure, member headers, or a member's bytes (caught by its CRC)."""
    target = tmp_path / "model.keras"
    target.write_bytes(_mutate(KERAS_FILES["keras"].read_bytes(), ops))
    _exercise(str(target))


def _rezipped(target: Path, replace: dict[str, bytes]) -> None:
    """The fixture archive with some members' bytes replaced, written with their correct CRCs."""
    with zipfile.ZipFile(KERAS_FILES["keras"]) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, replace.get(info.filename, src.read(info.filename)))


@pytest.mark.slow
@FUZZ
@given(member=st.sampled_from(["config.json", "metadata.json", "model.weights.h5"]), ops=MUTATIONS)
def test_mutated_keras_members_with_valid_crcs(member: str, ops: list[tuple[str, int, int]], tmp_path: Path) -> None:
    """Damage inside a member whose CRC holds: it reaches the JSON parser or HDF5 itself."""
    with zipfile.ZipFile(KERAS_FILES["keras"]) as src:
        original = src.read(member)
    target = tmp_path / "model.keras"
    _rezipped(target, {member: _mutate(original, ops)})
    _exercise(str(target))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON document, as a path of keys and indexes."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, (*path, i))
    return out


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[path[0]] = _replaced(document[path[0]], path[1:], value)
    return copy


@pytest.mark.slow
@FUZZ
@given(member=st.sampled_from(["config.json", "metadata.json"]), where=st.integers(0, 2**16), value=JSON_VALUES)
def test_keras_json_members_with_any_value_anywhere(member: str, where: int, value: Any, tmp_path: Path) -> None:
    """A valid JSON document whose node at any position holds any other JSON value (a list for a layer, a number
    for a class name, a NaN, a 70-bit integer...): the config walkers and the safety scan meet every type."""
    with zipfile.ZipFile(KERAS_FILES["keras"]) as src:
        document = json.loads(src.read(member))
    nodes = _nodes(document)
    damaged = _replaced(document, nodes[where % len(nodes)], value)
    target = tmp_path / "model.keras"
    _rezipped(target, {member: json.dumps(damaged).encode()})
    _exercise(str(target))


# --- HDF5 attributes ----------------------------------------------------------------------------------------------

ATTRIBUTE_VALUES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(np.bytes_),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.floats().map(np.float64),
    st.lists(st.binary(min_size=1, max_size=12), max_size=6).map(lambda xs: np.array(xs, dtype="S12")),
    st.lists(st.text(max_size=12), max_size=6).map(lambda xs: np.array(xs, dtype=h5py.string_dtype())),
    st.lists(st.integers(-1000, 1000), max_size=6).map(lambda xs: np.array(xs, dtype=np.int32)),
    st.just(np.zeros((2, 3), dtype=np.float32)),
    st.just(np.array([], dtype="S1")),
    JSON_VALUES.map(lambda v: json.dumps(v)),
    JSON_VALUES.map(lambda v: np.bytes_(json.dumps(v).encode())),
)


def _attributes(path: Path) -> list[tuple[str, str]]:
    """(object, attribute name) of every attribute in the file, the root's included."""
    found: list[tuple[str, str]] = [("/", name) for name in h5py.File(path, "r").attrs]

    def visit(name: str, obj: Any) -> None:
        found.extend((name, attr) for attr in obj.attrs)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


@FUZZ
@given(which=st.sampled_from(["weights", "legacy"]), where=st.integers(0, 2**16), value=ATTRIBUTE_VALUES,
       delete=st.booleans())
@pytest.mark.slow
def test_hdf5_attributes_of_any_type(which: str, where: int, value: Any, delete: bool, tmp_path: Path) -> None:
    """Any attribute of a Keras 3 `.weights.h5` or a legacy `.h5` (`keras_version`, `model_config`, `layer_names`,
    `weight_names`, ...) replaced by a value of another type or shape, or removed."""
    source = KERAS_FILES[which]
    target = tmp_path / source.name
    shutil.copyfile(source, target)
    attributes = _attributes(target)
    if not attributes:
        pytest.skip("no attributes")
    obj, name = attributes[where % len(attributes)]
    with h5py.File(target, "r+") as f:
        holder = f[obj]
        del holder.attrs[name]
        if not delete:
            holder.attrs[name] = value
    _exercise(str(target))


# --- manifests ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf2_manifest() -> tuple[str, bytes]:
    """The committed TF2 fixture and its manifest (as `ckptcheck manifest` writes it)."""
    return str(FIXTURES / "tf2"), (FIXTURES / "tf2.manifest.json").read_bytes()


@pytest.mark.slow
@FUZZ
@given(ops=MUTATIONS)
def test_mutated_manifest_bytes(tf2_manifest: tuple[str, bytes], ops: list[tuple[str, int, int]],
                                tmp_path: Path) -> None:
    checkpoint, original = tf2_manifest
    target = tmp_path / "m.json"
    target.write_bytes(_mutate(original, ops))
    _exercise(checkpoint, against=str(target))


@pytest.mark.slow
@FUZZ
@given(where=st.integers(0, 2**16), value=JSON_VALUES)
def test_manifest_with_any_value_anywhere(tf2_manifest: tuple[str, bytes], where: int, value: Any,
                                          tmp_path: Path) -> None:
    """Any node of a valid manifest (a record, a shape, a stat, the version, the schema) holding any JSON value."""
    checkpoint, original = tf2_manifest
    document = json.loads(original)
    nodes = _nodes(document)
    target = tmp_path / "m.json"
    target.write_text(json.dumps(_replaced(document, nodes[where % len(nodes)], value)))
    _exercise(checkpoint, against=str(target))


def test_the_undamaged_inputs_pass(tf2_manifest: tuple[str, bytes]) -> None:
    """The fuzzing starts from files that read cleanly: each undamaged one lists, verifies and matches."""
    for path in KERAS_FILES.values():
        assert verify(str(path)).ok, path
        with ckptcheck.open_checkpoint(str(path)) as reader:
            assert reader.tensors()
    checkpoint, _ = tf2_manifest
    assert verify(checkpoint, against=str(FIXTURES / "tf2.manifest.json")).ok
