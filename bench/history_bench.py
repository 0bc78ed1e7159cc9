"""`ckptcheck history` of a ResNet50-size run against `inspect --stats` on each checkpoint (what one did before:
a shell loop), and against TensorFlow's own loop (tf.train.load_checkpoint, numpy norms and differences).

    python bench/history_bench.py [--checkpoints 10] [--runs 3] [--tf]

The run (cached in bench/cache/history_resnet50_N/): keras.applications.ResNet50(weights=None, 64x64 inputs, 1000
classes), its weights only, saved by tf.train.CheckpointManager CHECKPOINTS times; between saves every trainable
variable but conv1's moves by a little noise (as training would), and an Inf is written into the head's kernel
before the save at 80 % of the run (the noise, scaled by its std, then makes the whole kernel NaN, as an optimizer
would). ~98 MiB a checkpoint. Each command runs in its own process after one warm-up
(the page cache holds the files); its wall time and peak RSS (the child's own ru_maxrss, from wait4) are the
median and the largest over RUNS. Not a unit test: nothing asserts a time.

Measured on the 2-core machine of bench/RESULTS.md (shared, load ~3; TensorFlow 2.21, Keras 3.15), --runs 3:

| ResNet50 weights, 98 MiB a checkpoint | 10 checkpoints | 20 checkpoints |
|---|---|---|
| `history --jobs 1` | 1.75 s, 56 MiB | 5.3 s, 58 MiB |
| `history --jobs 2` | 1.91 s, 75 MiB | 6.7 s, 77 MiB |
| `inspect --stats --json` on each (a process each) | 4.46 s, 43 MiB | 9.1 s, 43 MiB |
| TensorFlow's loop (`--tf`) | 16.7 s, 969 MiB | |

history reads each checkpoint twice (as the newer, then the older of a pair) and computes norms and differences
where inspect --stats computes min/max/mean/std once; it still costs less than the loop, which pays a process
start and a listing per checkpoint. A second job gained nothing on this loaded 2-core machine (the default there
is 1: half the cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
ENV = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}

BUILD = textwrap.dedent("""
    import sys
    import numpy as np, keras, tensorflow as tf
    directory, count = sys.argv[1], int(sys.argv[2])
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=1000)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), directory, max_to_keep=None)
    rng = np.random.default_rng(0)
    moving = [v for v in model.trainable_variables if not v.path.startswith("conv1_conv")]
    for k in range(count):
        if k:
            for v in moving:
                value = v.numpy()
                v.assign(value + rng.standard_normal(value.shape, dtype=np.float32) * 1e-3 * (value.std() + 1e-3))
        if k == int(count * 0.8):
            head = model.get_layer("predictions").kernel
            value = head.numpy()
            value[0, 0] = np.inf
            head.assign(value)
        manager.save()
""")

TF_LOOP = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    state = tf.train.get_checkpoint_state(sys.argv[1])
    previous = None
    for prefix in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(prefix)
        values = {k: reader.get_tensor(k) for k, dtype in reader.get_variable_to_dtype_map().items()
                  if dtype.is_floating}
        for k, v in values.items():
            finite = v[np.isfinite(v)].astype(np.float64)
            norm = np.linalg.norm(finite)
            bad = v.size - finite.size
            if previous is not None and k in previous:
                delta = (v.astype(np.float64) - previous[k])
                change = np.linalg.norm(delta[np.isfinite(delta)])
        previous = values
""")


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024


def measure(label: str, commands: list[list[str]], runs: int) -> None:
    for args in commands:  # warm-up: imports compiled, files in the page cache
        timed(args)
    walls, peaks = [], []
    for _ in range(runs):
        total, peak = 0.0, 0.0
        for args in commands:
            wall, rss = timed(args)
            total += wall
            peak = max(peak, rss)
        walls.append(total)
        peaks.append(peak)
    print(f"| {label} | {statistics.median(walls):.2f} s (min {min(walls):.2f}) | {max(peaks):.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tf", action="store_true", help="also TensorFlow's own loop")
    args = parser.parse_args()
    directory = CACHE / f"history_resnet50_{args.checkpoints}"
    if not (directory / "checkpoint").exists():
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", BUILD, str(directory), str(args.checkpoints)], env=ENV, check=True)
    prefixes = sorted((p.with_suffix("") for p in directory.glob("ckpt-*.index")), key=lambda p: int(p.name[5:]))
    size = sum(f.stat().st_size for f in directory.iterdir()) / 2**20
    print(f"{len(prefixes)} checkpoints of ResNet50 weights, {size:.0f} MiB in all; {os.cpu_count()} cores\n")
    print("| command | wall | peak RSS |\n|---|---|---|")
    ckptcheck = [sys.executable, "-m", "ckptcheck"]
    for jobs in (1, 2):
        measure(f"`history --jobs {jobs}`", [[*ckptcheck, "history", str(directory), "--json", "--jobs", str(jobs)]],
                args.runs)
    measure(f"`inspect --stats --json`, once per checkpoint ({len(prefixes)} processes)",
            [[*ckptcheck, "inspect", str(p), "--stats", "--json"] for p in prefixes], args.runs)
    if args.tf:
        measure("TensorFlow: load_checkpoint, numpy norms and differences",
                [[sys.executable, "-c", TF_LOOP, str(directory)]], args.runs)


if __name__ == "__main__":
    main()
