"""Checkpoints read where they live: over HTTP (a Range-answering server that counts the bytes it sends) and S3
(moto's server), both real servers on loopback started here. The oracle is the local read of the same files:
every command answers the same JSON, modulo the path, and reads only what it needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from remote_servers import ByteCounter, env_for_s3, http_server, s3_server, upload_tree
from typer.testing import CliRunner

import ckptcheck
from ckptcheck.cli import app
from ckptcheck.formats import location

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
BIG_BYTES = 60 << 20


@pytest.fixture(scope="session")
def big_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~60 MB TF2 checkpoint in 4 shards (MaxShardSizePolicy of 16 MB), written by TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    each = BIG_BYTES // 4 // 4
    ckpt = tf.train.Checkpoint(**{f"w{i}": tf.Variable(rng.standard_normal(each).astype(np.float32))
                                  for i in range(4)}, step=tf.Variable(3, dtype=tf.int64))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=16 << 20)
    out = tmp_path_factory.mktemp("big") / "ckpt"
    ckpt.write(str(out), options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    return out.parent


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory, tf2_sharded: str, manager_dir: Path, tf1_model_dir: Path,
         keras_files: dict[str, Path], big_checkpoint: Path, tf1_v1_checkpoints: dict[str, Path]) -> Path:
    """What the servers serve: a CheckpointManager model_dir (state file), an Estimator model_dir whose state file
    names absolute paths elsewhere, a sharded TF2 checkpoint, Keras files, V1 checkpoints (a model_dir, a sharded
    save) and the ~60 MB checkpoint."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tf1_v1_checkpoints["model_dir"], root / "v1")
    shutil.copytree(tf1_v1_checkpoints["sharded"], root / "v1sharded")
    shutil.copytree(Path(tf2_sharded).parent, root / "sharded")
    shutil.copytree(manager_dir, root / "manager")
    shutil.copytree(tf1_model_dir, root / "tf1")
    shutil.copytree(big_checkpoint, root / "big")
    for name in ("keras", "keras-weights", "keras-h5", "keras-os"):
        (root / "keras").mkdir(exist_ok=True)
        shutil.copy(keras_files[name], root / "keras" / f"{name}{''.join(keras_files[name].suffixes)}")
    shutil.copytree(keras_files["keras-sharded"].parent, root / "keras" / "sharded")
    # Trained in a bucket, copied here: the state file names where it was written.
    relocated = root / "relocated"
    relocated.mkdir()
    for f in Path(tf2_sharded).parent.iterdir():
        shutil.copy(f, relocated / f.name)
    prefix = Path(tf2_sharded).name
    (relocated / "checkpoint").write_text(f'model_checkpoint_path: "gs://elsewhere/run/{prefix}"\n'
                                          f'all_model_checkpoint_paths: "gs://elsewhere/run/{prefix}"\n')
    gone = root / "gone"
    gone.mkdir()
    (gone / "checkpoint").write_text('model_checkpoint_path: "/nonexistent/run/model.ckpt-9"\n')
    return root


@pytest.fixture(scope="session")
def http(tree: Path) -> Iterator[tuple[str, ByteCounter]]:
    with http_server(tree) as served:
        yield served
    location.forget_filesystems()


@pytest.fixture(scope="session")
def s3(tree: Path) -> Iterator[str]:
    with s3_server() as endpoint:
        upload_tree(endpoint, "ckpts", tree)
        saved = {k: os.environ.get(k) for k in env_for_s3(endpoint)}
        os.environ.update(env_for_s3(endpoint))
        location.forget_filesystems()
        try:
            yield "s3://ckpts"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            location.forget_filesystems()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def answers(base: str, root: Path, *args: str) -> tuple[int, str]:
    """Run a command on the URL; its output with the URL base replaced by the local root, and the exit code."""
    result = cli(*[a.replace("{}", base) for a in args])
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout.replace(base, str(root))


def local(root: Path, *args: str) -> tuple[int, str]:
    result = cli(*[a.replace("{}", str(root)) for a in args])
    assert result.exit_code in (0, 1), (args, result.stderr)  # an answer, not an error
    return result.exit_code, result.stdout


TARGETS = ["{}/sharded/ckpt", "{}/manager", "{}/tf1", "{}/keras/keras.keras", "{}/keras/keras-weights.weights.h5",
           "{}/keras/keras-h5.h5", "{}/keras/sharded/model.weights.json", "{}/relocated", "{}/v1"]
COMMANDS = [("inspect", "--json", "--objects"), ("verify", "--json"), ("manifest",)]


@pytest.mark.parametrize("target", TARGETS)
def test_http_answers_as_local(http: tuple[str, ByteCounter], tree: Path, target: str) -> None:
    base, _ = http
    for command in COMMANDS:
        args = (command[0], target, *command[1:])
        if "--objects" in args and not target.endswith(("sharded/ckpt", "manager", "relocated")):  # TF2 only
            args = args[:-1]
        assert answers(base, tree, *args) == local(tree, *args), args
    assert answers(base, tree, "diff", target, "{}/manager", "--json") == local(tree, "diff", target, "{}/manager",
                                                                                "--json")


@pytest.mark.parametrize("target", ["{}/manager", "{}/sharded/ckpt", "{}/tf1", "{}/keras/keras.keras",
                                    "{}/keras/keras-weights.weights.h5", "{}/v1sharded"])
def test_s3_answers_as_local(s3: str, tree: Path, target: str) -> None:
    for args in (("inspect", target, "--json"), ("verify", target, "--json"), ("manifest", target),
                 ("diff", target, "{}/sharded/ckpt", "--json")):
        assert answers(s3, tree, *args) == local(tree, *args), args


def test_s3_directory_listing_finds_the_checkpoint(s3: str, tree: Path) -> None:
    """A directory with one checkpoint and no state file: an object store's listing finds it."""
    code, out = answers(s3, tree, "inspect", "{}/big", "--json")
    assert (code, out) == local(tree, "inspect", "{}/big", "--json")


def test_keras_safety_warning_over_url(http: tuple[str, ByteCounter], tree: Path) -> None:
    base, _ = http
    remote = cli("inspect", f"{base}/keras/keras-os.keras")
    here = cli("inspect", str(tree / "keras" / "keras-os.keras"))
    assert "warning" in here.stderr and "module 'os'" in here.stderr
    assert remote.stderr.replace(base, str(tree)) == here.stderr


def _bytes_by_file(counter: ByteCounter) -> dict[str, int]:
    out: dict[str, int] = {}
    for method, path, _asked, sent in counter.requests:
        if method == "GET":
            out[path] = out.get(path, 0) + sent
    return out


def test_listing_reads_the_index_and_little_more(http: tuple[str, ByteCounter], tree: Path) -> None:
    base, counter = http
    index = (tree / "big" / "ckpt.index").stat().st_size
    data = sum(f.stat().st_size for f in (tree / "big").glob("ckpt.data-*"))
    assert data > 50 << 20 and len(list((tree / "big").glob("ckpt.data-*"))) >= 4
    counter.reset()
    assert cli("inspect", f"{base}/big/ckpt").exit_code == 0
    assert counter.total <= index + (256 << 10), counter.requests
    assert _bytes_by_file(counter)["/big/ckpt.index"] == index  # the index once, whole


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_verify_reads_each_byte_once(http: tuple[str, ByteCounter], tree: Path, jobs: str) -> None:
    base, counter = http
    counter.reset()
    result = cli("verify", f"{base}/big/ckpt", "--json", "--jobs", jobs)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    sizes = {f"/big/{f.name}": f.stat().st_size for f in (tree / "big").iterdir()}
    got = _bytes_by_file(counter)
    assert set(got) == {p for p in sizes if ".meta" not in p}
    assert got["/big/ckpt.index"] == sizes["/big/ckpt.index"]
    # Every data byte once: the object graph, read for the listing, is not fetched again; the listing's small
    # read of it may fetch up to one read-ahead block past it.
    data = sum(v for k, v in sizes.items() if ".data-" in k)
    fetched = sum(v for k, v in got.items() if ".data-" in k)
    assert report["bytes_checked"] <= fetched <= data + location.READ_AHEAD


def test_relocated_state_file(http: tuple[str, ByteCounter], tree: Path) -> None:
    """A state file naming gs://... (where training wrote) resolves beside it, over a URL as locally; one
    naming a path that is neither beside it nor reachable says what it recorded."""
    base, _ = http
    info = json.loads(cli("inspect", f"{base}/relocated", "--json").stdout)
    assert info["location"] == f"{base}/relocated/ckpt"
    for where in (base, str(tree)):
        result = cli("inspect", f"{where}/gone")
        assert result.exit_code == 2 and "/nonexistent/run/model.ckpt-9" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def one_line_error(result: Any, *needles: str) -> None:
    text = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, text, result.stdout)
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.parametrize("command", ["inspect", "verify", "manifest"])
def test_http_errors_are_one_line(http: tuple[str, ByteCounter], command: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = http
    one_line_error(cli(command, f"{base}/nothing/here/ckpt-1"), f"{base}/nothing/here/ckpt-1", "not found")
    one_line_error(cli(command, f"{base}/forbidden/sharded/ckpt"), f"{base}/forbidden/sharded/ckpt",
                   "HTTP 403")
    one_line_error(cli(command, f"{base}/norange/big/ckpt"), "range requests", f"{base}/norange/big/ckpt")
    monkeypatch.setenv(location.TIMEOUT_ENV, "0.5")
    location.forget_filesystems()
    try:
        one_line_error(cli(command, f"{base}/slow/sharded/ckpt"), "timed out", f"{base}/slow/sharded/ckpt",
                       location.TIMEOUT_ENV)
    finally:
        monkeypatch.delenv(location.TIMEOUT_ENV)
        location.forget_filesystems()


def test_unknown_protocol_and_missing_credentials(s3: str, tmp_path: Path) -> None:
    one_line_error(cli("inspect", "nosuchprotocol://bucket/ckpt-1"), "nosuchprotocol://bucket/ckpt-1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
                "PYTHONPATH": str(REPO)})
    proc = subprocess.run([sys.executable, "-m", "ckptcheck", "inspect", f"{s3}/manager"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "AWS_ACCESS_KEY_ID" in proc.stderr and "~/.aws/credentials" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_local_reads_never_import_fsspec(tree: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from ckptcheck.cli import app
        for args in (["inspect", {str(tree / "manager")!r}], ["verify", {str(tree / "sharded")!r} + "/ckpt"],
                     ["manifest", {str(tree / "keras" / "keras.keras")!r}],
                     ["diff", {str(tree / "tf1")!r}, {str(tree / "tf1")!r}]):
            try:
                app(args, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, (args, exc.code)
        loaded = [m for m in sys.modules if m.split(".")[0] in ("fsspec", "aiohttp", "s3fs", "botocore")]
        assert not loaded, loaded
        print("NO-FSSPEC")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-FSSPEC" in proc.stdout


def _damaged_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    shard = sorted(dst.glob("ckpt.data-*"))[1]
    with open(shard, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    return dst / "ckpt"


def test_read_ahead_answers_as_one_read_at_a_time(tree: Path, tmp_path: Path) -> None:
    """--jobs 4 reads ahead through formats/prefetch.py: the same reports as one read at a time, for sliced and
    partitioned variables, damage and --against."""
    damaged = _damaged_copy(tree / "big", tmp_path / "damaged")
    manifest = tmp_path / "big.json"
    assert cli("manifest", str(tree / "big"), "-o", str(manifest)).exit_code == 0
    cases = [("verify", str(tree / "sharded" / "ckpt"), "--json"), ("verify", str(tree / "tf1"), "--json"),
             ("verify", str(damaged), "--json"), ("verify", str(damaged), "--json", "--against", str(manifest)),
             ("manifest", str(tree / "sharded" / "ckpt")), ("manifest", str(tree / "tf1")),
             ("diff", str(tree / "big"), str(damaged), "--json"),
             ("diff", str(tree / "sharded"), str(tree / "sharded"), "--json")]
    for args in cases:
        one, four = cli(*args, "--jobs", "1"), cli(*args, "--jobs", "4")
        assert (one.exit_code, one.stdout) == (four.exit_code, four.stdout), args
    assert json.loads(cli("verify", str(damaged), "--json", "--jobs", "4").stdout)["problems"][0]["kind"] == "checksum"


def test_prefetch_fetches_each_planned_byte_once(tree: Path) -> None:
    """The plan merges touching tensors into blocks and the reader takes every chunk from them."""
    from ckptcheck.formats.tensorflow.bundle import BundleReader

    with BundleReader(str(tree / "big" / "ckpt")) as reader:
        names = [t.name for t in reader.tensors()]
        reader.read_ahead(names, 4)
        ahead = reader._ahead
        assert ahead is not None
        for name in names:
            for _ in reader.iter_chunks(name):
                pass
        numeric = sum(t.nbytes for t in reader.tensors() if t.dtype != "string")
        assert ahead.fetched == numeric


# tree/tf1 is a copied Estimator model_dir: its state file names where TensorFlow wrote it (not this test's subject).
@pytest.mark.filterwarnings("ignore::ckptcheck.RelocatedCheckpointWarning")
def test_dask_example_from_readme(tree: Path) -> None:
    """README's fleet example, run with Dask's threaded scheduler: one manifest per checkpoint as a task."""
    import dask

    checkpoints = [str(tree / "sharded" / "ckpt"), str(tree / "manager"), str(tree / "tf1"),
                   str(tree / "keras" / "keras.keras")]
    tasks = [dask.delayed(ckptcheck.checkpoint_manifest)(path) for path in checkpoints]
    manifests = dask.compute(*tasks, scheduler="threads")
    assert list(manifests) == [ckptcheck.checkpoint_manifest(path) for path in checkpoints]
    reports = dask.compute(*[dask.delayed(ckptcheck.verify_checkpoint)(p) for p in checkpoints],
                           scheduler="threads")
    assert all(r.ok for r in reports)


def test_relocated_state_file_warns(http: tuple[str, ByteCounter], tree: Path) -> None:
    """Reading the checkpoint beside a state file that records another place is said: a warning from the library,
    a ``ckptcheck: warning:`` line from the CLI, locally and over a URL."""
    base, _ = http
    for where in (str(tree), base):
        with pytest.warns(ckptcheck.RelocatedCheckpointWarning, match="gs://elsewhere/run/ckpt"):
            ckptcheck.list_tensors(f"{where}/relocated")
        result = cli("inspect", f"{where}/relocated", "--json")
        assert result.exit_code == 0
        assert result.stderr.startswith("ckptcheck: warning: ") and "gs://elsewhere/run/ckpt" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_state_file_naming_its_own_directory_does_not_warn(tf1_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                           recwarn: pytest.WarningsRecorder) -> None:
    """TF1 records absolute paths to where it wrote: read there, by a relative path, nothing was relocated."""
    monkeypatch.chdir(tf1_model_dir.parent)
    assert ckptcheck.list_tensors(tf1_model_dir.name)
    assert not [w for w in recwarn if issubclass(w.category, ckptcheck.CkptcheckWarning)]


def test_memory_protocol(tree: Path) -> None:
    """Any fsspec protocol: the in-process memory:// store, listed as a directory like an object store."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("manager", "v1sharded"):
        for f in (tree / name).iterdir():
            fs.pipe(f"/ckptcheck-test/{name}/{f.name}", f.read_bytes())
    try:
        for args in (("inspect", "{}/manager", "--json"), ("verify", "{}/manager", "--json", "--jobs", "3"),
                     ("inspect", "{}/manager", "--all", "--json"), ("verify", "{}/v1sharded", "--json")):
            assert answers("memory://ckptcheck-test", tree, *args) == local(tree, *args), args
    finally:
        fs.rm("/ckptcheck-test", recursive=True)


@pytest.mark.parametrize("target", ["keras/keras.keras", "big/ckpt", "v1/model.ckpt-6"])
def test_store_failing_mid_read_is_an_error_not_damage(http: tuple[str, ByteCounter], target: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A read the store fails after the first bytes came (HTTP 500) stops the command with one line, exit 2:
    never reported as a damaged checkpoint (exit 1), whichever reader was reading (zipfile, the tables). (The
    session's HDF5 files are smaller than the first read's read-ahead: h5py never asks past it; and a small
    Keras file is fetched whole from byte 0, so it is read here as a file past location.WHOLE_BYTES is.)"""
    monkeypatch.setattr(location, "WHOLE_BYTES", 0)
    base, _ = http
    for command in ("inspect", "verify"):
        one_line_error(cli(command, f"{base}/broken/{target}"), "HTTP 500", f"{base}/broken/")


@pytest.fixture(scope="module")
def claims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index whose header claims 2,000 data shards, beside the one that holds its only tensor."""
    from index_writer import DT_FLOAT, entry_proto, masked_crc, write_index

    root = tmp_path_factory.mktemp("claims")
    values = np.arange(4, dtype="<f4").tobytes()
    write_index(str(root / "s.index"), {b"w": entry_proto(DT_FLOAT, [4], size=16, crc=masked_crc(values))},
                num_shards=2000)
    (root / "s.data-00000-of-02000").write_bytes(values)
    return root


def test_a_header_claiming_2000_shards_is_not_2000_requests(claims: Path) -> None:
    """A store that lists (memory://, as S3 and GCS do) is listed once, and answers as the local read (one problem
    for the 1,999 missing shards); plain HTTP, which has no listing, looks up only the shard holding a tensor and
    says so in a note, in a handful of requests rather than one per claimed shard."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for f in claims.iterdir():
        fs.pipe(f"/ckptcheck-claims/{f.name}", f.read_bytes())
    try:
        args = ("verify", "{}/s", "--json")
        code, text = answers("memory://ckptcheck-claims", claims, *args)
        assert (code, text) == local(claims, *args)
        assert code == 1 and "1,999 of the 2,000 data shards are missing" in text
    finally:
        fs.rm("/ckptcheck-claims", recursive=True)
    with http_server(claims) as (base, counter):
        result = cli("verify", f"{base}/s", "--json")
        report = json.loads(result.stdout)
        assert result.exit_code == 0 and report["problems"] == [], result.stdout
        assert report["notes"] == ["the header names 2,000 data shards and this store has no listing: the 1 "
                                   "holding tensors were looked up, the others not"]
        assert len(counter.requests) < 20, counter.requests
    location.forget_filesystems()


@pytest.fixture(scope="module")
def mobilenet_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2 (random weights, 9.5 MB) as Keras writes it: `.weights.h5` and `.keras`."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    root = tmp_path_factory.mktemp("mobilenet")
    model.save_weights(root / "m.weights.h5")
    model.save(root / "m.keras")
    return root


def _get_bytes(counter: ByteCounter, name: str) -> int:
    return sum(sent for method, path, _asked, sent in counter.requests if method == "GET" and path.endswith(name))


@pytest.mark.slow
@pytest.mark.tf
@pytest.mark.parametrize(("name", "verify_most"), [("m.weights.h5", 1.6), ("m.keras", 3.0)])
def test_keras_files_over_http_fetch_each_byte_about_once(mobilenet_files: Path, name: str, verify_most: float,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A Keras file keeps its HDF5 metadata between its tensors. Up to location.WHOLE_BYTES it is fetched whole,
    once for the whole command (safety scan and reader alike); past it, a listing fetches far less than the file,
    verify of a `.weights.h5` about the file once, of a `.keras` its weights member about twice (the CRC pass
    and the values' read open it separately). A read-ahead that ran past each header, refetched for every
    dataset, made them 1.7x and 3.1x (`.keras`: 4.0x) the file. Every answer is the local one."""
    size = (mobilenet_files / name).stat().st_size
    with http_server(mobilenet_files) as (base, counter):
        for args in (("inspect", "{}/" + name, "--json"), ("verify", "{}/" + name, "--json")):
            counter.reset()
            assert answers(base, mobilenet_files, *args) == local(mobilenet_files, *args), args
            assert _get_bytes(counter, name) == size, (args, counter.requests)
            # and asked about once, though resolving, the safety scan and the reader each open it
            assert [m for m, path, _asked, _sent in counter.requests if path.endswith(name)] == ["HEAD", "GET"]
        monkeypatch.setattr(location, "WHOLE_BYTES", 0)  # as for a file larger than it
        location.forget_filesystems()
        for args, most in ((("inspect", "{}/" + name, "--json"), 0.75),
                           (("verify", "{}/" + name, "--json"), verify_most)):
            counter.reset()
            assert answers(base, mobilenet_files, *args) == local(mobilenet_files, *args), args
            assert _get_bytes(counter, name) <= most * size, (args, _get_bytes(counter, name), size)
    location.forget_filesystems()
