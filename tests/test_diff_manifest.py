"""`diff` and `manifest`: library results and CLI exit codes, on checkpoints TensorFlow wrote."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.compare import Scratch, compare_arrays
from ckptcheck.diff import diff_readers, normalize_name
from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.manifest import build_manifest, compare_manifests, dumps

runner = CliRunner()


@pytest.fixture(scope="session")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two tf.train.Checkpoints: B changes one element of `w`, retypes `n`, drops `gone`, adds `new`."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("diff")
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = tf.train.Checkpoint(w=tf.Variable(w), same=tf.Variable([1.0, np.nan]), n=tf.Variable([1, 2], dtype=tf.int32),
                            gone=tf.Variable([0.0]), big=tf.Variable(np.full([300], 7, dtype=np.int64)))
    w2 = w.copy()
    w2[1, 2] += 0.25
    b = tf.train.Checkpoint(w=tf.Variable(w2), same=tf.Variable([1.0, np.nan]), n=tf.Variable([1, 2], dtype=tf.int64),
                            new=tf.Variable([5.0]), big=tf.Variable(np.full([300], 7, dtype=np.int64)))
    return str(a.write(str(root / "a"))), str(b.write(str(root / "b")))


def _name(short: str) -> str:
    return f"{short}/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.mark.tf
def test_diff_library_report(pair: tuple[str, str]) -> None:
    with ckptcheck.open_checkpoint(pair[0]) as ra, ckptcheck.open_checkpoint(pair[1]) as rb:
        report = diff_readers(ra, rb)
    assert not report.same
    assert [t.name for t in report.removed] == [_name("gone")]
    assert [t.name for t in report.added] == [_name("new")]
    assert set(report.unchanged) == {_name("same"), _name("big")}  # NaN equals NaN
    changed = {c.name: c for c in report.changed}
    assert set(changed) == {_name("w"), _name("n")}
    assert changed[_name("n")].kinds == ("dtype",)
    w = changed[_name("w")]
    assert w.kinds == ("values",)
    assert w.values is not None
    assert (w.values.count, w.values.differing) == (12, 1)
    assert w.values.max_abs == pytest.approx(0.25)
    assert w.values.max_rel == pytest.approx(0.25 / 6.25)


@pytest.mark.tf
def test_diff_tolerance_hides_small_drift(pair: tuple[str, str]) -> None:
    with ckptcheck.open_checkpoint(pair[0]) as ra, ckptcheck.open_checkpoint(pair[1]) as rb:
        report = diff_readers(ra, rb, atol=0.3)
    assert _name("w") not in {c.name for c in report.changed}
    with ckptcheck.open_checkpoint(pair[0]) as ra, ckptcheck.open_checkpoint(pair[1]) as rb:
        report = diff_readers(ra, rb, rtol=0.05)
    assert _name("w") not in {c.name for c in report.changed}


def test_compare_exact_is_bitwise() -> None:
    a = np.array([0.0, 1.0, np.nan], dtype=np.float32)
    b = np.array([-0.0, 1.0, np.nan], dtype=np.float32)
    assert compare_arrays(a, b)[0] == 1  # -0.0 is not bit-identical to 0.0
    assert compare_arrays(a, b, atol=1e-9)[0] == 0
    big = np.array([2**62 + 1], dtype=np.int64)
    assert compare_arrays(big, big - 1)[0] == 1  # not lost to float64 rounding


@pytest.mark.tf
def test_diff_cli_exit_codes(pair: tuple[str, str]) -> None:
    same = runner.invoke(app, ["diff", pair[0], pair[0]])
    assert same.exit_code == 0, same.stderr
    assert same.stdout.startswith("same (exact)")
    different = runner.invoke(app, ["diff", pair[0], pair[1]])
    assert different.exit_code == 1
    assert "1 of 12 elements differ" in different.stdout
    data = json.loads(runner.invoke(app, ["diff", pair[0], pair[1], "--json"]).stdout)
    assert data["schema"] == "ckptcheck.diff/2" and data["same"] is False
    w = next(c for c in data["changed"] if c["name"] == _name("w"))
    assert (w["differing"], w["elements"]) == (1, 12)
    filtered = runner.invoke(app, ["diff", pair[0], pair[1], "--filter", "big"])
    assert filtered.exit_code == 0
    missing = runner.invoke(app, ["diff", pair[0], pair[0] + "-nope"])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_diff_finds_what_training_moved(tf1_model_dir: Path) -> None:
    """The question asked after training from constant initializers: which variables moved, and by how much."""
    entries = sorted(p.name[: -len(".index")] for p in tf1_model_dir.glob("*.index"))
    assert len(entries) >= 2
    first, last = (str(tf1_model_dir / e) for e in (entries[0], entries[-1]))
    result = runner.invoke(app, ["diff", first, last, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    moved = {c["name"] for c in data["changed"]}
    assert "global_step" in moved
    assert all(c["max_abs_diff"] > 0 for c in data["changed"] if "values" in c["changes"])


def test_normalize_name_matches_across_formats() -> None:
    assert normalize_name("dense/kernel/.ATTRIBUTES/VARIABLE_VALUE") == "dense/kernel"
    assert normalize_name("dense/kernel:0") == "dense/kernel"


@pytest.mark.tf
def test_manifest_is_deterministic_and_path_free(pair: tuple[str, str], tmp_path: Path) -> None:
    first = runner.invoke(app, ["manifest", pair[0]])
    second = runner.invoke(app, ["manifest", pair[0]])
    assert first.exit_code == 0 and first.stdout == second.stdout
    data = json.loads(first.stdout)
    assert data["manifest_version"] == 2 and data["format"] == "tf2"
    assert str(Path(pair[0]).parent) not in first.stdout
    assert list(data) == sorted(data)
    w = data["tensors"][_name("w")]
    assert w["shape"] == [3, 4] and w["stats"]["mean"] == pytest.approx(5.5)
    out = tmp_path / "m.json"
    written = runner.invoke(app, ["manifest", pair[0], "-o", str(out)])
    assert written.exit_code == 0 and out.read_text() == first.stdout


def test_manifest_digest_ignores_how_a_variable_is_sharded(tf2_sharded: str, tmp_path: Path) -> None:
    """A partitioned variable's digest is of its values in C order, not of its slices."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf2_sharded)
    names = [n for n, _ in tf.train.list_variables(tf2_sharded) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    whole = tf.train.Checkpoint(**{f"v{i}": tf.Variable(reader.get_tensor(n)) for i, n in enumerate(names)})
    prefix = whole.write(str(tmp_path / "whole"))
    with ckptcheck.open_checkpoint(tf2_sharded) as rs, ckptcheck.open_checkpoint(prefix) as rw:
        ms, mw = build_manifest(rs), build_manifest(rw)
    digests_s = sorted(ms["tensors"][n]["sha256"] for n in names)
    digests_w = sorted(v["sha256"] for k, v in mw["tensors"].items() if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert digests_s == digests_w


@pytest.mark.tf
def test_compare_manifests(pair: tuple[str, str]) -> None:
    with ckptcheck.open_checkpoint(pair[0]) as ra, ckptcheck.open_checkpoint(pair[1]) as rb:
        ma, mb = build_manifest(ra), build_manifest(rb)
    assert compare_manifests(ma, json.loads(dumps(ma))) == []
    kinds = {(d.tensor, d.kind) for d in compare_manifests(mb, ma)}
    assert (_name("gone"), "missing") in kinds
    assert (_name("new"), "extra") in kinds
    assert (_name("n"), "dtype") in kinds
    assert (_name("w"), "values") in kinds
    loose = {(d.tensor, d.kind) for d in compare_manifests(mb, ma, atol=0.1)}
    assert (_name("w"), "values") not in loose  # mean moved by 0.25/12, std by less: within 0.1


def test_interleaved_streams_on_one_reader_do_not_share_a_buffer(tf2_all_dtypes: str) -> None:
    """iter_chunks reuses one read buffer; two streams open at once on the same reader must still be right."""
    with ckptcheck.open_checkpoint(tf2_all_dtypes) as reader:
        names = [t.name for t in reader.tensors() if t.dtype != "string" and not t.slices and t.size > 1][:2]
        assert len(names) == 2
        a, b = (reader.iter_chunks(n, chunk_bytes=4) for n in names)
        got_a, got_b = [], []
        for x, y in itertools.zip_longest(a, b):  # alternate: a chunk of one, then of the other
            if x is not None:
                got_a.append(x.copy())
            if y is not None:
                got_b.append(y.copy())
        assert np.concatenate(got_a).tobytes() == reader.read(names[0]).tobytes()  # bitwise: NaN included
        assert np.concatenate(got_b).tobytes() == reader.read(names[1]).tobytes()


# --- compare_arrays against an obvious element-by-element reference ----------------------------------------------


def _reference(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[int, float, float]:
    """The definition, one element at a time, in the arithmetic type compare_arrays uses (float32 for float32 and
    narrower floats, float64 otherwise): bit-identical, or both NaN, is the same; with a tolerance, within
    atol + rtol * |b| or the same infinity is close. max_abs and max_rel range over the finite differences of
    the elements whose bits differ (max_rel where b is not 0)."""
    wide = np.float32 if a.dtype.kind == "f" and a.dtype.itemsize <= 4 else np.float64
    exact = atol == 0.0 and rtol == 0.0
    differing = 0
    max_abs = max_rel = 0.0
    for i in range(a.size):
        x, y = a[i], b[i]
        if x.tobytes() == y.tobytes():
            continue
        wx, wy = wide(x), wide(y)
        both_nan = bool(np.isnan(wx) and np.isnan(wy))
        with np.errstate(all="ignore"):
            delta = wide(abs(wx - wy))
            denom = wide(abs(wy))
            if np.isfinite(delta):
                max_abs = max(max_abs, float(delta))
                if denom > 0:
                    max_rel = max(max_rel, float(wide(delta / denom)))
            close = bool(delta <= atol + rtol * denom) or bool(wx == wy and np.isinf(wx))
        if both_nan:
            continue
        differing += 1 if exact else not close
    return differing, max_abs, max_rel


_SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-3, 1e30, -1e30, 1e-40, float("nan"), float("inf"), float("-inf")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from(["float32", "float64", "float16", "int32", "int64", "uint8"]),
    size=st.integers(1, 40),
    data=st.data(),
    tolerance=st.sampled_from([(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2), (0.5, 0.5)]),
)
@pytest.mark.slow
def test_compare_arrays_matches_the_reference(
    dtype: str, size: int, data: st.DataObject, tolerance: tuple[float, float]
) -> None:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        values = st.one_of(st.sampled_from(_SPECIAL), st.floats(-6e4, 6e4, width=min(64, dt.itemsize * 8)))
    else:
        info = np.iinfo(dt)
        values = st.integers(int(info.min), int(info.max))
    with np.errstate(all="ignore"):
        a = np.array(data.draw(st.lists(values, min_size=size, max_size=size)), dtype=dt)
        other = np.array(data.draw(st.lists(values, min_size=size, max_size=size)), dtype=dt)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    b = np.where(keep, a, other)
    atol, rtol = tolerance
    got = compare_arrays(a, b, atol, rtol, scratch=SCRATCH)
    want = _reference(a, b, atol, rtol)
    assert got[0] == want[0]
    assert got[1:] == pytest.approx(want[1:], rel=1e-6, nan_ok=True)


SCRATCH = Scratch()  # shared across examples, as a diff shares it across tensors: stale contents must not leak


def _object_graph_children(prefix: str) -> list[list[tuple[int, str]]]:
    """TensorFlow's own parse of the object graph: each node's (child node, edge name)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return [[(c.node_id, c.local_name) for c in node.children] for node in graph.nodes]


def test_diff_sees_object_graphs_that_place_values_differently(tmp_path: Path) -> None:
    """Same keys, same values, but `c` is another name for `a` in A and for `b` in B: a restore binds the values
    to other objects. diff used to say "same" (the graph was set aside); now it says where."""
    import tensorflow as tf

    a, b = tf.Variable([1.0, 2.0]), tf.Variable([3.0, 4.0])
    first = tf.train.Checkpoint(a=a, b=b, c=a).write(str(tmp_path / "A" / "ckpt"))
    second = tf.train.Checkpoint(a=a, b=b, c=b).write(str(tmp_path / "B" / "ckpt"))
    assert _object_graph_children(first) != _object_graph_children(second)  # the oracle: the graphs differ
    result = runner.invoke(app, ["diff", first, second, "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert not data["changed"] and not data["added"] and not data["removed"]
    assert any(d.startswith("a/.ATTRIBUTES/VARIABLE_VALUE: reached by a, c in A, a in B")
               for d in data["graph_differences"]), data["graph_differences"]
    same = tf.train.Checkpoint(a=a, b=b, c=a).write(str(tmp_path / "A2" / "ckpt"))
    assert runner.invoke(app, ["diff", first, same]).exit_code == 0


def test_diff_of_a_damaged_object_graph_is_not_same(tmp_path: Path) -> None:
    import shutil

    import tensorflow as tf

    from ckptcheck.formats.tensorflow.bundle import BundleReader

    v = tf.Variable([1.0, 2.0])
    first = tf.train.Checkpoint(v=v).write(str(tmp_path / "A" / "ckpt"))
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    second = str(tmp_path / "B" / "ckpt")
    with BundleReader(second) as reader:
        entry = reader.entry("_CHECKPOINTABLE_OBJECT_GRAPH")
        shard = reader.shard_path(entry.shard_id)
    data = bytearray(Path(shard).read_bytes())
    data[entry.offset + entry.size - 2] ^= 0x01
    Path(shard).write_bytes(bytes(data))
    result = runner.invoke(app, ["diff", first, second])
    assert result.exit_code == 2 and "_CHECKPOINTABLE_OBJECT_GRAPH" in result.stderr


def test_empty_tensors_of_every_kind_diff_as_same(tmp_path: Path) -> None:
    """An empty complex64 variable (and empty float and string ones) diffed with itself: same, not a traceback."""
    import numpy as np
    import tensorflow as tf

    prefix = tf.train.Checkpoint(
        c=tf.Variable(np.zeros((0, 3), np.complex64)), f=tf.Variable(np.zeros((0,), np.float32)),
        s=tf.Variable(tf.constant([], dtype=tf.string)),
    ).write(str(tmp_path / "ckpt"))
    assert {tuple(shape) for _name, shape in tf.train.list_variables(prefix)} >= {(0, 3), (0,)}
    result = runner.invoke(app, ["diff", prefix, prefix])
    assert result.exit_code == 0, result.output


def _streamed(path: str) -> str:
    import io

    from ckptcheck.manifest import write_manifest

    out = io.StringIO()
    with ckptcheck.open_checkpoint(path) as reader:
        write_manifest(reader, out.write)
    return out.getvalue()


def test_streamed_manifest_is_json_dumps_text(pair: tuple[str, str], tf2_all_dtypes: str, tf2_sharded: str,
                                              tmp_path: Path) -> None:
    """The manifest written a record at a time is the text json.dumps writes of the whole dict (indent, key order,
    number forms, NaN statistics as null, empty shapes, no tensors, keys that are not UTF-8 as \\udcXX escapes)."""
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    values = np.array([np.nan, 1.5, -2.0, 3e-41], dtype="<f4").tobytes()
    (tmp_path / "odd.data-00000-of-00001").write_bytes(values)
    write_index(str(tmp_path / "odd.index"), {
        b"a\xff": entry_proto(DT_FLOAT, [4], size=16, crc=masked_crc(values)),
        "é/ü".encode(): entry_proto(DT_FLOAT, [], size=4, crc=masked_crc(values[:4])),
        b"empty": entry_proto(DT_FLOAT, [0, 3]), b'q"\\\n': entry_proto(DT_FLOAT, [2, 1], offset=8, size=8,
                                                                          crc=masked_crc(values[8:])),
    })
    write_index(str(tmp_path / "none.index"), {})
    (tmp_path / "none.data-00000-of-00001").write_bytes(b"")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    paths = [*pair, tf2_all_dtypes, tf2_sharded, str(tmp_path / "odd"), str(tmp_path / "none"),
             *(str(p) for p in sorted(fixtures.glob("*/*")) if not p.name.startswith(("checkpoint", "README")))]
    for path in paths:
        with ckptcheck.open_checkpoint(path) as reader:
            expected = json.dumps(build_manifest(reader), indent=2, sort_keys=True, ensure_ascii=False,
                                  allow_nan=False) + "\n"
        text = _streamed(path)
        assert json.loads(text) == json.loads(expected), path
        if expected.isascii() or "\udcff" not in expected:
            assert text == expected, path
        else:  # the one difference: a lone surrogate is escaped, so the text is valid UTF-8
            assert text == expected.replace("\udcff", "\\udcff"), path
            text.encode("utf-8")
    assert '"a\\udcff"' in _streamed(str(tmp_path / "odd")) and '"é/ü"' in _streamed(str(tmp_path / "odd"))


@pytest.mark.slow
def test_manifest_of_100000_tensors_in_flat_memory(tmp_path: Path) -> None:
    """A 100,000-entry index: the manifest (to a file and to stdout) is the library's text, and writing it does not
    hold every record (held as dicts, then one string, it grew the process by ~400 MiB; a million took 3.9 GB)."""
    from index_writer import write_scalars
    from process_memory import peak_mib_above_start

    n = 100_000
    write_scalars(str(tmp_path / "many"), n)
    out = tmp_path / "many.json"
    assert peak_mib_above_start(["manifest", str(tmp_path / "many"), "-o", str(out)], tmp_path / "stdout") < 150
    text = out.read_text(encoding="utf-8")
    with ckptcheck.open_checkpoint(str(tmp_path / "many")) as reader:
        assert text == dumps(build_manifest(reader))
    # The oracle for the values: TensorFlow reads this index too, and each recorded scalar is what it reads.
    import hashlib

    import tensorflow as tf

    tensors = json.loads(text)["tensors"]
    assert len(tensors) == n
    tf_reader = tf.train.load_checkpoint(str(tmp_path / "many"))
    for key in ("layer_0/kernel_0", "layer_4321/kernel_7", f"layer_{n // 10 - 1}/kernel_9"):
        value = np.asarray(tf_reader.get_tensor(key), dtype="<f4")
        assert tensors[key]["stats"]["min"] == float(value) and tensors[key]["shape"] == []
        assert tensors[key]["sha256"] == hashlib.sha256(value.tobytes()).hexdigest()


def test_manifest_of_a_checkpoint_damaged_in_its_last_tensor_writes_nothing(tmp_path: Path) -> None:
    """Records are streamed, yet a damaged last tensor (its crc32c wrong, as TensorFlow also finds) leaves stdout
    empty and no -o file: a partial manifest is never mistaken for a golden one."""
    import tensorflow as tf
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    values = np.arange(8, dtype="<f4").tobytes()
    (tmp_path / "d.data-00000-of-00001").write_bytes(values)
    write_index(str(tmp_path / "d.index"), {
        b"a_good": entry_proto(DT_FLOAT, [4], size=16, crc=masked_crc(values[:16])),
        b"z_damaged": entry_proto(DT_FLOAT, [4], offset=16, size=16, crc=masked_crc(values[:16]))})
    with pytest.raises(Exception, match=r"(?i)checksum|crc"):
        tf.train.load_checkpoint(str(tmp_path / "d")).get_tensor("z_damaged")
    out = tmp_path / "d.manifest.json"
    for extra in ([], ["-o", str(out)]):
        result = runner.invoke(app, ["manifest", str(tmp_path / "d"), *extra])
        # 2: the manifest could not be made (verify is the command whose finding damage is exit 1)
        assert result.exit_code == 2 and result.stdout == "", (extra, result.stdout)
        assert "z_damaged" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def _bundle(prefix: Path, values: dict[str, np.ndarray], crcs: dict[str, int] | None = None) -> str:
    """A one-shard bundle of float32 tensors written by the test-only index writer (each checksum right unless
    ``crcs`` says otherwise)."""
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    data = bytearray()
    entries = {}
    for name, value in sorted(values.items()):
        raw = value.astype("<f4").tobytes()
        crc = (crcs or {}).get(name, masked_crc(raw))
        entries[name.encode()] = entry_proto(DT_FLOAT, value.shape, offset=len(data), size=len(raw), crc=crc)
        data += raw
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    write_index(f"{prefix}.index", entries)
    return str(prefix)


def test_diff_of_equal_bytes_still_checks_b_stored_checksum(tmp_path: Path) -> None:
    """Tensors whose bytes are A's are decided by those bytes, and B's checksum is trusted only where B stores A's
    (which held for A): a wrong checksum in B is still damage, a value moved by one bit is still a change."""
    from index_writer import masked_crc

    rng = np.random.default_rng(3)
    values = {f"t{i}": rng.standard_normal(size).astype(np.float32) for i, size in enumerate((1, 7, 1000, 40_000))}
    a = _bundle(tmp_path / "a", values)
    with ckptcheck.open_checkpoint(a) as ra, ckptcheck.open_checkpoint(_bundle(tmp_path / "b", values)) as rb:
        report = diff_readers(ra, rb)
    assert report.same and len(report.unchanged) == len(values)
    moved = {**values, "t2": values["t2"].copy()}
    moved["t2"].view(np.uint32)[5] ^= 1
    with ckptcheck.open_checkpoint(a) as ra, ckptcheck.open_checkpoint(_bundle(tmp_path / "m", moved)) as rb:
        report = diff_readers(ra, rb)
    (change,) = report.changed
    assert change.name == "t2" and change.values is not None and change.values.differing == 1
    assert change.values.max_abs == float(np.abs(values["t2"].astype(np.float64) - moved["t2"]).max())
    wrong = {"t3": masked_crc(values["t3"].tobytes()) ^ 1}
    damaged = _bundle(tmp_path / "w", values, wrong)
    with ckptcheck.open_checkpoint(a) as ra, ckptcheck.open_checkpoint(damaged) as rb, \
            pytest.raises(CorruptCheckpointError, match="checksum") as info:
        diff_readers(ra, rb)
    assert info.value.tensor == "t3" and "w.data-00000-of-00001" in str(info.value)
