"""How long `ckptcheck scan` takes on a 300-layer .keras and on a SavedModel with 10,000 graph nodes.

    python bench/scan_speed.py [--runs 7]

Needs the tf extra (Keras and TensorFlow build the two models once, cached in bench/cache/). Times the library call
(scan_paths) in this process after one warm-up, and the whole `python -m ckptcheck scan` process; prints medians.
Not a unit test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
sys.path.insert(0, str(HERE.parent))


def build_keras(path: Path) -> None:
    import keras

    inputs = keras.Input((8,))
    x = inputs
    for i in range(300):
        x = keras.layers.Dense(8, activation="relu", name=f"dense_{i}")(x)
    keras.Model(inputs, x).save(path)


def build_savedmodel(path: Path) -> None:
    import tensorflow as tf

    class Big(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.v = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x: tf.Tensor) -> tf.Tensor:
            for i in range(3300):  # ~3 nodes each: a constant, an add, a multiply
                x = (x + float(i)) * self.v
            return x

    big = Big()
    tf.saved_model.save(big, str(path), signatures={"serving_default": big.serve})


def graph_nodes(pb: Path) -> int:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    meta = proto.meta_graphs[0]
    return len(meta.graph_def.node) + sum(len(f.node_def) for f in meta.graph_def.library.function)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    CACHE.mkdir(exist_ok=True)
    keras_file, savedmodel = CACHE / "scan_300_layers.keras", CACHE / "scan_10k_nodes"
    if not keras_file.exists():
        build_keras(keras_file)
    if not savedmodel.exists():
        build_savedmodel(savedmodel)
    print(f"SavedModel graph nodes (graph + library): {graph_nodes(savedmodel / 'saved_model.pb')}")
    from ckptcheck.scan import scan_paths

    for label, path in (("300-layer .keras", keras_file), ("SavedModel, 10k nodes", savedmodel)):
        scan_paths([str(path)])  # warm-up: imports, page cache
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            report = scan_paths([str(path)])
            times.append(time.perf_counter() - start)
        process = []
        for _ in range(max(3, args.runs // 2)):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ckptcheck", "scan", str(path)], capture_output=True,
                           env=dict(os.environ, PYTHONPATH=str(HERE.parent)), check=False)
            process.append(time.perf_counter() - start)
        print(f"{label}: scan_paths median {statistics.median(times) * 1000:.0f} ms "
              f"(min {min(times) * 1000:.0f}), whole process median {statistics.median(process) * 1000:.0f} ms; "
              f"exit {report.exit_code}, {sum(len(f.findings) for f in report.files)} findings")


if __name__ == "__main__":
    main()
