"""Peak memory of `restore-check` against the restore it measures (issue 13: stay within 1.5x).

    python bench/restore_check_memory.py [--models resnet50,mobilenetv2] [--work DIR]

For each model (weights=None, 64x64 inputs, 1000 classes, Adam built, every variable random) it writes a TF2
checkpoint and a .keras file, then runs in fresh processes, one at a time: TensorFlow's / Keras's own build +
restore (`tf.train.Checkpoint(model=m).restore`, `m.load_weights`), and `restore_check` of the same model. Peak is
the process's max RSS. Also with the head resized to 10 classes (the restore stops or raises).

Measured on the 2-core machine of bench/RESULTS.md (TensorFlow 2.21, Keras 3.15), MiB:

| model, checkpoint | own restore | restore-check | before issue 13 |
|---|---|---|---|
| ResNet50, TF2 | 1226 | 1285 (1.05x) | 2164 |
| ResNet50, .keras | 1035 | 1283 (1.24x) | 2134 |
| ResNet50 head resized, TF2 | 1202 | 1232 (1.02x) | |
| ResNet50 head resized, .keras | 1027 | 1228 (1.20x) | |
| MobileNetV2, TF2 | 712 | 744 (1.04x) | 856 |
| MobileNetV2, .keras | 719 | 759 (1.06x) | 854 |
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}

MODELS = '''
import keras


def _compiled(m):
    m.compile(optimizer=keras.optimizers.Adam(0.01, name="adam"), loss="mse")
    return m


def resnet50(classes=1000):
    return _compiled(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=classes))


def resnet50_head(): return resnet50(10)


def mobilenetv2(classes=1000):
    return _compiled(keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=classes))


def mobilenetv2_head(): return mobilenetv2(10)
'''

MAKE = '''
import sys, numpy as np, tensorflow as tf
sys.path.insert(0, sys.argv[1])
import bench_models
m = getattr(bench_models, sys.argv[2])()
m.optimizer.build(m.trainable_variables)
rng = np.random.default_rng(0)
for v in list(m.weights) + list(m.optimizer.variables):
    d = str(v.dtype)
    v.assign(rng.standard_normal(v.shape).astype(d) if "float" in d else np.array(3, dtype=d))
tf.train.Checkpoint(model=m).write(sys.argv[3])
m.save(sys.argv[4])
'''

RUN = '''
import resource, sys, warnings
sys.path.insert(0, sys.argv[1])
mode, model, ckpt = sys.argv[2:5]
import tensorflow as tf
import bench_models
if mode == "own":
    m = getattr(bench_models, model)()
    m.optimizer.build(m.trainable_variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if ckpt.endswith(".keras"):
                m.load_weights(ckpt)
            else:
                tf.train.Checkpoint(model=m).restore(ckpt).expect_partial()
        except ValueError:
            pass  # a resized head: the restore raises, as the user's would
else:
    from ckptcheck.restore_check import restore_check
    restore_check(ckpt, sys.argv[1] + "/bench_models.py:" + model)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
'''


def peak(work: Path, mode: str, model: str, ckpt: str) -> int:
    out = subprocess.run([sys.executable, "-c", RUN, str(work), mode, model, ckpt], capture_output=True, text=True,
                         check=True, env=ENV)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,mobilenetv2")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="ckptcheck-bench-restore-"))
    (work / "bench_models.py").write_text(MODELS)
    print("| model, checkpoint | own restore (MiB) | restore-check (MiB) | ratio |\n|---|---|---|---|")
    for name in args.models.split(","):
        tf2, keras_file = str(work / name / "ckpt"), str(work / f"{name}.keras")
        subprocess.run([sys.executable, "-c", MAKE, str(work), name, tf2, keras_file], check=True,
                       capture_output=True, env=ENV)
        for target in (name, f"{name}_head"):
            for label, ckpt in (("TF2", tf2), (".keras", keras_file)):
                own, check = peak(work, "own", target, ckpt), peak(work, "check", target, ckpt)
                print(f"| {target}, {label} | {own} | {check} | {check / own:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
