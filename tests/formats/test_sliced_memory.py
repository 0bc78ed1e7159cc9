"""Partitioned variables stream in C order without being assembled: memory stays flat for the checkpoints TensorFlow
shards, and the digests equal those of the whole tensor TensorFlow reads.

A 64 MiB variable is written by TensorFlow three ways: a TF1 partitioner (4 row partitions, V2 and V1 files) and a
TF2 sharding policy (slices of at most 16 MiB). manifest, verify --against, diff and inspect --stats then run in a
child process whose peak resident memory is measured by the kernel.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHAPE = (4096, 4096)  # float32: 64 MiB, in slices of 16 MiB
# Peak memory above the child's own baseline (numpy, ckptcheck). A bundle's slices are streamed in 2 MiB pieces;
# a V1 slice is one table record, read whole, and a diff holds one of each side's: at most two or three records.
PEAK_BUDGET_MIB = {"tf1": 24, "tf2": 24, "v1": 48}


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import tensorflow as tf

    v1 = tf.compat.v1
    root = tmp_path_factory.mktemp("sliced_memory")
    out: dict[str, Any] = {}
    graph = tf.Graph()
    with graph.as_default():
        v1.get_variable("big", SHAPE, initializer=v1.random_normal_initializer(seed=7),
                        partitioner=v1.fixed_size_partitioner(4))
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            out["tf1"] = v1.train.Saver().save(session, str(root / "tf1" / "model.ckpt"))
            (root / "v1").mkdir()
            out["v1"] = v1.train.Saver(write_version=v1.train.SaverDef.V1).save(session, str(root / "v1" / "m.ckpt"))
    # The oracle: the whole tensor as TensorFlow reads it back (the V1 file holds the same values).
    value = tf.train.load_checkpoint(out["tf1"]).get_tensor("big")
    assert value.shape == SHAPE
    out["sha256"] = hashlib.sha256(value.tobytes()).hexdigest()
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=16 << 20)
    ckpt = tf.train.Checkpoint(big=tf.Variable(value))
    out["tf2"] = ckpt.write(str(root / "tf2" / "ckpt"),
                            options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    out["tf2_name"] = "big/.ATTRIBUTES/VARIABLE_VALUE"
    return out


def _peak_mib(code: str, traced: bool = True) -> tuple[float, str]:
    """Run ``code`` in a child; the most memory it held above what it held after importing (the larger of
    Python's own traced allocations, numpy's included, and the kernel's resident high-water mark, which the child
    resets after importing), and what it printed."""
    script = textwrap.dedent(
        """
        import tracemalloc
        import numpy, ckptcheck, ckptcheck.cli, ckptcheck.manifest, ckptcheck.compare, ckptcheck.stats

        def hwm_kib():
            for line in open("/proc/self/status"):
                if line.startswith(("VmHWM", "VmRSS")):
                    yield int(line.split()[1])

        open("/proc/self/clear_refs", "w").write("5")  # reset the resident high-water mark
        base_rss = max(hwm_kib())
        if TRACED:
            tracemalloc.start()
        """
    ).replace("TRACED", str(traced)) + textwrap.dedent(code) + textwrap.dedent(
        """
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc.is_tracing() else 0
        rss = (max(hwm_kib()) - base_rss) / 1024
        print("PEAK", max(traced, rss))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(Path(__file__).parents[2]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return float(lines[-1].split()[1]), "\n".join(lines[:-1])


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["tf1", "v1", "tf2"])
def test_partitioned_variable_streams_in_flat_memory(sliced: dict[str, Any], kind: str, tmp_path: Path) -> None:
    path = sliced[kind]
    name = sliced["tf2_name"] if kind == "tf2" else "big"
    import ckptcheck

    with ckptcheck.open_checkpoint(path) as reader:
        assert reader.tensor_info(name).slices >= 4  # really partitioned
    golden = tmp_path / "golden.json"
    peak, printed = _peak_mib(f"""
        import json
        from ckptcheck import manifest, open_checkpoint
        from ckptcheck.compare import compare_tensors
        from ckptcheck.stats import tensor_stats
        from ckptcheck.verify import verify
        with open_checkpoint({path!r}) as reader:
            built = manifest.build_manifest(reader)
            open({str(golden)!r}, "w").write(manifest.dumps(built))
            stats = tensor_stats(reader, {name!r})
            with open_checkpoint({path!r}) as other:
                diff = compare_tensors(reader, {name!r}, other, {name!r})
        report = verify({path!r}, against={str(golden)!r})
        print(json.dumps({{"sha256": built["tensors"][{name!r}]["sha256"], "ok": report.ok,
                          "differing": diff.differing, "count": stats.count, "mean": stats.mean}}))
    """)
    result = json.loads(printed.splitlines()[-1])
    assert result["sha256"] == sliced["sha256"]  # the digest of the whole tensor TensorFlow was given
    assert result["ok"] and result["differing"] == 0 and result["count"] == SHAPE[0] * SHAPE[1]
    assert peak < PEAK_BUDGET_MIB[kind], f"{kind}: peak {peak:.0f} MiB above baseline for a 64 MiB variable"


def test_c_order_stream_equals_what_tensorflow_reads(sliced: dict[str, Any]) -> None:
    import tensorflow as tf

    import ckptcheck

    expected = tf.train.load_checkpoint(sliced["tf1"]).get_tensor("big")
    with ckptcheck.open_checkpoint(sliced["tf1"]) as reader:
        for chunk_bytes in (4096, 1 << 20, 1 << 30):
            got = np.concatenate([c.copy() for c in reader.iter_c_order("big", chunk_bytes)])
            assert got.tobytes() == expected.tobytes()


@pytest.fixture(scope="module")
def many_strings(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A TF2 checkpoint holding a string variable of 1,000,000 elements, and the sha256 a manifest gives it,
    computed from the values TensorFlow reads back."""
    import tensorflow as tf

    values = np.array([f"token-{i:08d}-{'x' * (i % 7)}".encode() for i in range(1_000_000)], dtype=object)
    prefix = tf.train.Checkpoint(vocab=tf.Variable(values)).write(
        str(tmp_path_factory.mktemp("strings") / "ckpt"))
    digest = hashlib.sha256()
    for element in tf.train.load_checkpoint(prefix).get_tensor("vocab/.ATTRIBUTES/VARIABLE_VALUE").reshape(-1):
        digest.update(len(element).to_bytes(8, "little"))
        digest.update(element)
    return prefix, digest.hexdigest()


@pytest.mark.slow
@pytest.mark.tf
def test_a_million_strings_stream_in_bounded_memory(many_strings: tuple[str, str], tmp_path: Path) -> None:
    """Read whole, a million strings are ~100 MiB of Python objects; streamed, the lengths (8 bytes each) and one
    chunk."""
    prefix, expected = many_strings
    name = "vocab/.ATTRIBUTES/VARIABLE_VALUE"
    peak, printed = _peak_mib(f"""
        import json
        from ckptcheck import manifest, open_checkpoint
        from ckptcheck.verify import verify
        with open_checkpoint({prefix!r}) as reader:
            built = manifest.build_manifest(reader)
        report = verify({prefix!r})
        print(json.dumps({{"sha256": built["tensors"][{name!r}]["sha256"], "ok": report.ok}}))
    """, traced=False)  # (tracing a million allocations is slow; the kernel's high-water mark is enough here)
    result = json.loads(printed.splitlines()[-1])
    assert result == {"sha256": expected, "ok": True}
    assert peak < 40, f"peak {peak:.0f} MiB above baseline for a million strings"
