"""Session-scoped fixtures that build TensorFlow bundle checkpoints (see conftest.py).

TensorFlow is imported inside the fixtures only, so collecting tests stays fast and a module that needs no
checkpoint never pays for it. Every builder uses fixed seeds and fixed values: the files differ between runs only
where TensorFlow writes timestamps (the `checkpoint` state file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = [
    "SHARDED_STRINGS",
    "V1_DTYPES",
    "keras_mixed_tf_checkpoint",
    "keras_tf_checkpoint",
    "manager_dir",
    "savedmodel_dir",
    "tf1_model_dir",
    "tf1_v1_checkpoints",
    "tf2_all_dtypes",
    "tf2_sharded",
    "tf2_sharded_strings",
    "tf2_slots_checkpoint",
    "tf_raw_bundle",
]

# Steps at which the TF1 model_dir is saved; single digits so the prefixes also sort by name.
TF1_SAVE_STEPS = (3, 6)
# A string variable large enough to be split into slices across shards (see tf2_sharded_strings).
SHARDED_STRINGS = np.array([f"row {i} ".encode() * (i % 7 + 1) + bytes([i % 256]) for i in range(60)], dtype=object)
# The shard-size cap for the sharded checkpoints: small, so variables of a few KiB are split.
MAX_SHARD_BYTES = 1000


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def _estimator_graph(tf: Any, *, devices: tuple[str, str] = ("", ""),
                     extra: Callable[[], None] | None = None) -> tuple[Any, Any]:
    """In the current graph: dense/kernel (constant 0.5), dense/bias (zeros), ``extra``'s variables beside them, a
    [10, 4] `embedding` partitioned into 3 (on ``devices[1]``), and Adam minimizing a loss with a global step.
    Returns (train op, global step)."""
    v1 = tf.compat.v1
    v1.set_random_seed(0)
    features = tf.constant(np.arange(20, dtype=np.float32).reshape(5, 4) / 10.0)
    labels = tf.constant(np.ones([5, 1], dtype=np.float32))
    ids = tf.constant([0, 3, 7, 9, 2])
    with tf.device(devices[0]):
        with v1.variable_scope("dense"):
            kernel = v1.get_variable("kernel", [4, 1], initializer=v1.constant_initializer(0.5))
            bias = v1.get_variable("bias", [1], initializer=v1.zeros_initializer())
        if extra is not None:
            extra()
    with tf.device(devices[1]):
        embedding = v1.get_variable(
            "embedding", [10, 4], initializer=v1.random_normal_initializer(seed=1),
            partitioner=v1.fixed_size_partitioner(3),
        )
    looked_up = tf.nn.embedding_lookup(embedding, ids)
    loss = tf.reduce_mean((tf.matmul(features + looked_up, kernel) + bias - labels) ** 2)
    global_step = v1.train.get_or_create_global_step()
    return v1.train.AdamOptimizer(0.01).minimize(loss, global_step=global_step), global_step


@pytest.fixture(scope="session")
def tf1_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Estimator-style model_dir written by a graph-mode tf.compat.v1 Saver at steps 3 and 6.

    Holds dense/kernel (constant 0.5 initializer), dense/bias (zeros), a [10, 4] `embedding` partitioned into 3
    slices, Adam's slots and beta powers, and global_step; model.ckpt-3 and model.ckpt-6 with their .meta files and
    a `checkpoint` state file naming both.
    """
    tf = _tf()
    v1 = tf.compat.v1
    model_dir = tmp_path_factory.mktemp("tf1_model_dir")
    graph = tf.Graph()
    with graph.as_default():
        train_op, global_step = _estimator_graph(tf)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            for step in range(1, max(TF1_SAVE_STEPS) + 1):
                session.run(train_op)
                if step in TF1_SAVE_STEPS:
                    saver.save(session, str(model_dir / "model.ckpt"), global_step=global_step)
    return model_dir


def _all_dtype_values() -> dict[str, Any]:
    """One variable per dtype TensorFlow can hold in a variable on CPU, with awkward values where they exist."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    floats = np.array([0.0, -0.0, 1.5, -2.25, np.nan, np.inf, -np.inf, 1e-3], dtype=np.float64)
    values: dict[str, Any] = {
        "float16": floats.astype(np.float16).reshape(2, 4),
        "bfloat16": floats.astype(ml_dtypes.bfloat16),
        "float32": np.concatenate([floats, rng.standard_normal(24)]).astype(np.float32).reshape(4, 8),
        "float64": np.concatenate([floats, [np.finfo(np.float64).tiny / 2, np.finfo(np.float64).max]]),
        "int8": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
        "int16": np.array([-32768, -1, 0, 32767], dtype=np.int16),
        "int32": np.arange(-6, 6, dtype=np.int32).reshape(3, 2, 2),
        "int64": np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64),
        "uint8": np.arange(0, 256, 51, dtype=np.uint8),
        "uint16": np.array([0, 1, 65535], dtype=np.uint16),
        "uint32": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
        "uint64": np.array([0, 1, 2**64 - 1], dtype=np.uint64),
        "bool": np.array([[True, False, True], [False, False, True]]),
        "complex64": np.array([1 + 2j, -0.0 - 0.0j, complex(np.nan, np.inf)], dtype=np.complex64),
        "complex128": np.array([[1e300 + 1j, -1 - 1e-300j]], dtype=np.complex128),
        "int4": np.array([-8, -1, 0, 7], dtype=ml_dtypes.int4),
        "uint4": np.array([0, 1, 15], dtype=ml_dtypes.uint4),
        "float8_e4m3fn": np.array([0.5, -1.0, 448.0], dtype=np.float32).astype(ml_dtypes.float8_e4m3fn),
        "float8_e5m2": np.array([0.5, -1.0, np.inf], dtype=np.float32).astype(ml_dtypes.float8_e5m2),
        "scalar": np.float32(3.25),
        "step": np.int64(42),
        "empty": np.zeros([0, 3], dtype=np.float32),
        "empty_strings": np.zeros([0], dtype=object),
        # Strings: empty, non-ASCII UTF-8, NUL and 0xff bytes, one long enough (200 bytes) that its length varint
        # takes 2 bytes, and a long list; a scalar string too.
        "strings": np.array(["", "héllo wörld ✓", b"\x00\xff\x00", "x" * 200, "tail"], dtype=object),
        "many_strings": np.array([f"s{i}".encode() * (i % 5) for i in range(1000)], dtype=object).reshape(10, 100),
        "string_scalar": np.array(b"just one", dtype=object),
    }
    return values


@pytest.fixture(scope="session")
def tf2_all_dtypes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tf.train.Checkpoint with one variable per dtype (see _all_dtype_values); returns the prefix."""
    tf = _tf()
    variables = {}
    for name, value in _all_dtype_values().items():
        if isinstance(value, np.ndarray) and value.dtype == object:
            variables[name] = tf.Variable(tf.constant(value, dtype=tf.string))
        else:
            variables[name] = tf.Variable(value)
    ckpt = tf.train.Checkpoint(**variables)
    return str(ckpt.write(str(tmp_path_factory.mktemp("tf2_all_dtypes") / "ckpt")))


def _sharding_options(tf: Any) -> Any:
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=MAX_SHARD_BYTES)
    return tf.train.CheckpointOptions(experimental_sharding_callback=policy)


@pytest.fixture(scope="session")
def tf2_sharded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Variables written with a MaxShardSizePolicy of 1000 bytes: float32 [40, 30], float64 [7, 3, 9], bfloat16
    [700] and complex128 [90] are split into slices across shards; small ones (and a short string) stay whole.

    No string variable is large enough to be split: TensorFlow 2.21 writes sliced string variables but cannot read
    them back (see tf2_sharded_strings), and other tests read every tensor here with TensorFlow.
    """
    tf = _tf()
    rng = np.random.default_rng(1)
    ckpt = tf.train.Checkpoint(
        big=tf.Variable(rng.standard_normal([40, 30]).astype(np.float32)),
        cube=tf.Variable(rng.standard_normal([7, 3, 9])),
        bf=tf.Variable(tf.constant(rng.standard_normal(700), dtype=tf.bfloat16)),
        c=tf.Variable((rng.standard_normal(90) + 1j * rng.standard_normal(90)).astype(np.complex128)),
        small=tf.Variable(np.arange(5, dtype=np.int64)),
        words=tf.Variable(["a", "bb"]),
    )
    prefix = tmp_path_factory.mktemp("tf2_sharded") / "ckpt"
    return str(ckpt.write(str(prefix), options=_sharding_options(tf)))


@pytest.fixture(scope="session")
def tf2_sharded_strings(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SHARDED_STRINGS (60 strings, ~1.9 KB) written with the 1000-byte shard policy, so it is split into slices.

    TensorFlow 2.21 cannot read this variable back ("Dtype string not supported" from both
    CheckpointReader.get_tensor and RestoreV2); tests compare with SHARDED_STRINGS instead.
    """
    tf = _tf()
    ckpt = tf.train.Checkpoint(words=tf.Variable(tf.constant(SHARDED_STRINGS, dtype=tf.string)))
    prefix = tmp_path_factory.mktemp("tf2_sharded_strings") / "ckpt"
    return str(ckpt.write(str(prefix), options=_sharding_options(tf)))


@pytest.fixture(scope="session")
def tf2_slots_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A checkpoint using TensorFlow's own slot mechanism, with names that need escaping and a deep object.

    tf.compat.v1.train.AdamOptimizer, used eagerly, records its m/v slots as `slot_variables` in the object graph
    (Keras 3 optimizers do not). The model holds a dict with keys "a.b" and "c/d" (escaped in checkpoint keys as
    "a..b" and "c.Sd") and a chain of 40 nested modules ending in a variable. A MutableHashTable and a tf.data
    iterator store tensors under keys that extend their attribute's key (`table-keys`, `ITERATOR_STATE`, a variant).
    """
    tf = _tf()
    model = tf.Module()
    model.w = tf.Variable(np.arange(6, dtype=np.float32).reshape(3, 2))
    model.named = {"a.b": tf.Variable([1.0, 2.0]), "c/d": tf.Variable([3.0])}
    chain = tf.Module()
    model.deep = chain
    for _ in range(39):
        chain.inner = tf.Module()
        chain = chain.inner
    chain.leaf = tf.Variable([7.0])
    trained = [model.w, model.named["a.b"], model.named["c/d"]]
    optimizer = tf.compat.v1.train.AdamOptimizer(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.w * 2.0) + tf.reduce_sum(model.named["a.b"] ** 2) + tf.reduce_sum(
            model.named["c/d"]
        )
    optimizer.apply_gradients(zip(tape.gradient(loss, trained), trained, strict=True))
    # Objects saving several tensors under one attribute, with keys extending the attribute's checkpoint_key.
    table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1)
    table.insert(tf.constant(["a", "b", "c"]), tf.constant([1, 2, 3], dtype=tf.int64))
    iterator = iter(tf.data.Dataset.range(10).batch(2))
    next(iterator)
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, table=table, iterator=iterator)
    return str(ckpt.write(str(tmp_path_factory.mktemp("tf2_slots") / "ckpt")))


RAW_BUNDLE_ENTRIES = 5000


@pytest.fixture(scope="session")
def tf_raw_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A bundle written by the SaveV2 op directly: what no high-level API writes, but TensorFlow reads.

    - 5000 tensors with long, unique, non-ASCII names: the index spans several 256 KiB data blocks;
    - `cols` [4, 6] saved as three column slices, rows given as "-" (the whole dimension);
    - `a\x00b`, a sliced variable whose name holds a NUL byte (escaped in slice keys);
    - `deep` [2, 300, 2] sliced along its middle dimension at 100 and 250 (two-byte OrderedCode numbers).
    """
    tf = _tf()
    names: list[str] = []
    specs: list[str] = []
    tensors: list[Any] = []

    def add(name: str, value: Any, spec: str = "") -> None:
        names.append(name)
        specs.append(spec)
        tensors.append(tf.constant(value))

    for i in range(RAW_BUNDLE_ENTRIES):
        name = f"{(i * 7919) % RAW_BUNDLE_ENTRIES:05d}_{chr(0x100 + i % 300)}/" + "w" * (60 + i % 40) + f"/{i}"
        kind = i % 4
        if kind == 0:
            add(name, np.full([i % 5 + 1], i, dtype=np.float32))
        elif kind == 1:
            add(name, np.int64(i) * -(2**40))
        elif kind == 2:
            add(name, np.array([i % 2 == 0, True]))
        else:
            add(name, np.array([f"v{i}".encode(), b""], dtype=object))
    cols = np.arange(24, dtype=np.float64).reshape(4, 6)
    for start, stop in ((0, 2), (2, 5), (5, 6)):
        add("cols", cols[:, start:stop], f"4 6 -:{start},{stop - start}")
        add("a\x00b", cols[:, start:stop] * 2, f"4 6 -:{start},{stop - start}")
    deep = np.arange(1200, dtype=np.int32).reshape(2, 300, 2)
    for start, stop in ((0, 100), (100, 250), (250, 300)):
        add("deep", deep[:, start:stop], f"2 300 2 -:{start},{stop - start}:-")
    prefix = str(tmp_path_factory.mktemp("tf_raw_bundle") / "ckpt")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=specs, tensors=tensors)
    return prefix


@pytest.fixture(scope="session")
def keras_tf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Keras 3 Sequential (Input 4 -> Dense 3 relu -> Dense 1) after one Adam step, saved with
    tf.train.Checkpoint(model=model, optimizer=optimizer); returns the prefix."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tf = _tf()
    import keras

    keras.utils.set_random_seed(0)
    # Named as in a fresh process: Keras numbers unnamed layers by a process-wide count, which other tests move.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="dense"),
                              keras.layers.Dense(1, name="dense_1")], name="sequential")
    optimizer = keras.optimizers.Adam(0.01)
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    y = np.ones((8, 1), dtype=np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    return str(ckpt.write(str(tmp_path_factory.mktemp("keras_tf") / "ckpt")))


@pytest.fixture(scope="session")
def keras_mixed_tf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Keras 3 Sequential 'mixed' (Input 4 -> Dense 'wide' 3 float32 -> Dense 'half' 2 bfloat16 -> Dense
    'quarter' 1 float16) after two Adam steps, saved with tf.train.Checkpoint(model=model, optimizer=optimizer).
    Returns {"prefix", "weights": [v.path for v in model.weights], "optimizer": [v.path for v in the optimizer's
    variables]}."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tf = _tf()
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="wide"),
                              keras.layers.Dense(2, dtype="bfloat16", name="half"),
                              keras.layers.Dense(1, dtype="float16", name="quarter")], name="mixed")
    optimizer = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((tf.cast(model(x), tf.float32) - 1.0) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer)
    prefix = ckpt.write(str(tmp_path_factory.mktemp("keras_mixed_tf") / "ckpt"))
    return {"prefix": str(prefix), "weights": [v.path for v in model.weights],
            "optimizer": [v.path for v in optimizer.variables]}


@pytest.fixture(scope="session")
def savedmodel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tf.saved_model.save of a tf.Module with two variables and a traced function; returns the directory."""
    tf = _tf()
    module = tf.Module()
    module.scale = tf.Variable([1.0, 2.0, 3.0])
    module.offset = tf.Variable(0.5, dtype=tf.float64)
    module.apply = tf.function(lambda x: x * module.scale, input_signature=[tf.TensorSpec([3], tf.float32)])
    directory = tmp_path_factory.mktemp("savedmodel") / "model"
    tf.saved_model.save(module, str(directory))
    return directory


@pytest.fixture(scope="session")
def manager_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tf.train.CheckpointManager directory (max_to_keep=3) after 4 saves: ckpt-2, ckpt-3, ckpt-4 remain."""
    tf = _tf()
    directory = tmp_path_factory.mktemp("manager")
    value = tf.Variable(np.zeros([2, 2], dtype=np.float32))
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(value=value, step=step), str(directory), max_to_keep=3)
    for _ in range(4):
        value.assign_add(tf.ones([2, 2]))
        step.assign_add(1)
        manager.save()
    return directory


# Values of every dtype a V1 Saver writes (TF 2.21 refuses the others: float16, complex, unsigned 16/32/64 bits).
V1_DTYPES = {
    "float32": np.array([[1.5, -0.0], [np.inf, 3.4e38]], dtype=np.float32),
    "float64": np.array([np.pi, -1e-300, np.nan], dtype=np.float64),
    "int32": np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32),
    "int64": np.array([-(2**63), -1, 2**63 - 1], dtype=np.int64),
    "uint8": np.array([0, 1, 255], dtype=np.uint8),
    "int8": np.array([-128, -1, 127], dtype=np.int8),
    "int16": np.array([-32768, -1, 32767], dtype=np.int16),
    "bool": np.array([True, False, True], dtype=bool),
    "string": np.array([b"", b"text", b"\xea\x00\xff raw bytes", b"a\\xea"], dtype=object),
}


@pytest.fixture(scope="session")
def tf1_v1_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """V1 checkpoints written by TensorFlow's own Saver (write_version=V1), with V2 saves of the same session.

    - ``model_dir``: a V1 Estimator-style model_dir at steps 3 and 6 (state file naming both): dense/kernel, dense/bias,
      a [10, 4] `embedding` partitioned into 3, a string variable `vocab`, a [300, 300] `big` (the files have several
      table blocks), Adam's slots and global_step.
    - ``v2_model_dir``: the same variables at the same steps, saved by a V2 Saver in the same session.
    - ``sharded``: a sharded V1 save at step 6 of variables on two devices (model.ckpt-6-?????-of-0000N, one shard
      per device the Saver groups variables by).
    - ``dtypes``: one variable per dtype in V1_DTYPES, saved as ``dtypes/model.ckpt``.
    """
    tf = _tf()
    v1 = tf.compat.v1
    root = tmp_path_factory.mktemp("tf1_v1")
    dirs = {name: root / name for name in ("model_dir", "v2_model_dir", "sharded", "dtypes")}
    for d in dirs.values():
        d.mkdir()
    def more() -> None:
        v1.get_variable("vocab", initializer=tf.constant(V1_DTYPES["string"]), dtype=tf.string, trainable=False)
        # 360 KB: more than a table block holds (256 KiB), so the files have several data blocks.
        v1.get_variable("big", [300, 300], initializer=v1.random_uniform_initializer(seed=2), trainable=False)

    graph = tf.Graph()
    with graph.as_default():
        train_op, global_step = _estimator_graph(tf, devices=("/cpu:0", "/cpu:1"), extra=more)
        v1_saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)
        v2_saver = v1.train.Saver()
        sharded_saver = v1.train.Saver(write_version=v1.train.SaverDef.V1, sharded=True)
        config = v1.ConfigProto(device_count={"CPU": 2})
        with v1.Session(graph=graph, config=config) as session:
            session.run(v1.global_variables_initializer())
            for step in range(1, max(TF1_SAVE_STEPS) + 1):
                session.run(train_op)
                if step in TF1_SAVE_STEPS:
                    v1_saver.save(session, str(dirs["model_dir"] / "model.ckpt"), global_step=global_step)
                    v2_saver.save(session, str(dirs["v2_model_dir"] / "model.ckpt"), global_step=global_step)
            sharded_saver.save(session, str(dirs["sharded"] / "model.ckpt"), global_step=global_step)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in V1_DTYPES.items():
            v1.Variable(tf.constant(value), name=name)
        saver = v1.train.Saver(write_version=v1.train.SaverDef.V1)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            saver.save(session, str(dirs["dtypes"] / "model.ckpt"))
    return dirs
