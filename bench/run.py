"""Side-by-side benchmarks: ckptcheck against TensorFlow's own tools, whole processes, in the same run.

    python bench/run.py [--runs 5] [--large] [--only startup,inspect,v1,keras,keras100k,verify,stats,diff,remote,export]

Needs the tf extra (TensorFlow builds the synthetic checkpoints once, cached in bench/cache/, and is the side
compared against). Runs alternate A B A B; the table quotes medians, the median of the per-pair ratios, and each
side's peak resident memory (from the kernel's rusage of that process). Writes bench/RESULTS.md.
Not a unit test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
PY = sys.executable
CKPT = [PY, "-m", "ckptcheck"]
# Both sides run as on a user's machine: Python caches compiled bytecode (with PYTHONDONTWRITEBYTECODE set, as in
# some containers, an editable install recompiles ckptcheck's modules on every start: ~40 ms here), and
# TensorFlow's C++ start-up logging is off.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "TF_CPP_MIN_LOG_LEVEL": "3"}

# name -> (number of tensors, float32 elements per tensor)
CHECKPOINTS = {
    "small20k": (20_000, 800),  # ~64 MiB in 20,000 tensors
    "1g": (2_000, 134_144),  # ~1 GiB in 2,000 tensors
    "4g": (2_000, 536_576),  # ~4 GiB, with --large: memory must stay flat
}

BUILD = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    prefix, count, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    base = rng.standard_normal(size).astype(np.float32)
    variables = {}
    for i in range(count):
        values = np.roll(base, i)
        if seed and i % 10 == 0:
            values = values + np.float32(1e-3 * seed)
        variables[f"layer_{i:05d}"] = tf.Variable(values, name=f"v{i}")
    tf.train.Checkpoint(**variables).write(prefix)
    """
)

# The same 20,000 tensors written by TensorFlow's V1 Saver (the TensorSliceReader format): its table of contents is
# one record listing every tensor, where a V2 index has one entry each.
BUILD_V1 = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    prefix, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    v1 = tf.compat.v1
    base = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        variables = [v1.Variable(np.roll(base, i), name=f"layer_{i:05d}") for i in range(count)]
        saver = v1.train.Saver(variables, write_version=v1.train.SaverDef.V1)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            saver.save(session, prefix)
    """
)

# A real architecture's Keras 3 weights file: ResNet50 (weights=None: built offline), ~94 MiB in ~320 datasets.
BUILD_KERAS = textwrap.dedent(
    """
    import sys, keras
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    model.save_weights(sys.argv[1])
    """
)

# Issue 16's case: a Keras 3 weights layout of 100,000 datasets (50,000 layers of two, each `vars` group named by its
# attribute as Keras names it), written with HDF5's own calls (h5py's groups take twice as long).
BUILD_KERAS_100K = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    from h5py import h5a, h5d, h5g, h5s, h5t
    with h5py.File(sys.argv[1], "w") as f:
        root = h5g.create(f.id, b"layers")
        float32 = h5t.py_create(np.dtype("<f4"))
        text = h5t.py_create(h5py.string_dtype(), logical=True)
        kernel, bias, scalar = h5s.create_simple((4, 2)), h5s.create_simple((2,)), h5s.create(h5s.SCALAR)
        for i in range(50_000):
            group = h5g.create(h5g.create(root, f"dense_{i}".encode()), b"vars")
            h5a.create(group, b"name", text, scalar).write(np.array(f"dense_{i}".encode(), dtype=h5py.string_dtype()))
            h5d.create(group, b"0", float32, kernel).write(h5s.ALL, h5s.ALL, np.full((4, 2), i, "f4"))
            h5d.create(group, b"1", float32, bias).write(h5s.ALL, h5s.ALL, np.zeros(2, "f4"))
    """
)

# What h5py alone takes to list the same file: every dataset's name, shape and dtype.
H5_WALK = textwrap.dedent(
    """
    import sys, h5py
    def walk(group):
        for key in group:
            node = group[key]
            if isinstance(node, h5py.Group):
                walk(node)
            else:
                node.shape, node.dtype
    with h5py.File(sys.argv[1], "r") as f:
        walk(f)
    """
)

TF_READ_ALL = textwrap.dedent(
    """
    import sys, tensorflow as tf
    reader = tf.train.load_checkpoint(sys.argv[1])
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    """
)

TF_STATS = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    reader = tf.train.load_checkpoint(sys.argv[1])
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating:
            v = reader.get_tensor(name)
            print(name, v.min(), v.max(), v.mean(), v.std(), np.isnan(v).sum(), np.isinf(v).sum())
    """
)

TF_DIFF = textwrap.dedent(
    """
    import sys, numpy as np, tensorflow as tf
    a, b = tf.train.load_checkpoint(sys.argv[1]), tf.train.load_checkpoint(sys.argv[2])
    shapes_a, shapes_b = a.get_variable_to_shape_map(), b.get_variable_to_shape_map()
    for name in sorted(set(shapes_a) & set(shapes_b)):
        x, y = a.get_tensor(name), b.get_tensor(name)
        if x.dtype != object and x.shape == y.shape:
            d = np.abs(x.astype(np.float64) - y)
            print(name, d.max() if d.size else 0, int((x != y).sum()))
    """
)


def prefix_of(name: str, variant: int = 0) -> str:
    return str(CACHE / f"{name}-{variant}" / "ckpt")


def build_v1(name: str) -> str:
    prefix = str(CACHE / f"{name}-v1" / "model.ckpt")
    if not Path(prefix).exists():
        count, size = CHECKPOINTS[name]
        print(f"building {name} as a V1 checkpoint ({count} tensors x {size} float32) ...", file=sys.stderr)
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, "-c", BUILD_V1, prefix, str(count), str(size)], check=True, env=ENV)
    return prefix


def _built_once(name: str, what: str, script: str) -> str:
    """``CACHE/name``, built by ``script`` (given the path) the first time it is asked for."""
    path = CACHE / name
    if not path.exists():
        print(f"building {what} ...", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, "-c", script, str(path)], check=True, env=ENV)
    return str(path)


def build_keras() -> str:
    return _built_once("resnet50.weights.h5", "ResNet50 weights", BUILD_KERAS)


def build_keras_100k() -> str:
    return _built_once("many100k.weights.h5", "a .weights.h5 of 100,000 datasets", BUILD_KERAS_100K)


def build(name: str, variant: int = 0) -> str:
    prefix = prefix_of(name, variant)
    if not Path(prefix + ".index").exists():
        count, size = CHECKPOINTS[name]
        print(f"building {name} variant {variant} ({count} tensors x {size} float32) ...", file=sys.stderr)
        subprocess.run([PY, "-c", BUILD, prefix, str(count), str(size), str(variant)], check=True, env=ENV)
    return prefix


@dataclass
class Sample:
    seconds: float
    peak_mib: float


def run_once(cmd: list[str], fresh: Path | None = None) -> Sample:
    """One whole process, timed; ``fresh``: a file the command writes, removed first (outside the time)."""
    if fresh is not None:
        fresh.unlink(missing_ok=True)
        os.sync()  # the removed file's pages are not still being written back during the run
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 1):  # diff exits 1 when the checkpoints differ, as they do here
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {err[-2000:]}")
    return Sample(seconds, usage.ru_maxrss / 1024)  # ru_maxrss is KiB on Linux


@dataclass
class Result:
    label: str
    cmd_a: list[str]
    cmd_b: list[str]
    a: list[Sample]
    b: list[Sample]

    @property
    def ratio(self) -> float:
        return statistics.median(y.seconds / x.seconds for x, y in zip(self.a, self.b, strict=True))


def compare(label: str, cmd_a: list[str], cmd_b: list[str], runs: int, fresh: Path | None = None,
            fresh_b: Path | None = None) -> Result:
    """``fresh``, ``fresh_b``: a file cmd_a (cmd_b) writes, removed before each of its runs."""
    run_once(cmd_a, fresh)  # warm the page cache (both sides then read from memory) and the bytecode caches
    run_once(cmd_b, fresh_b)
    a: list[Sample] = []
    b: list[Sample] = []
    for _ in range(runs):
        a.append(run_once(cmd_a, fresh))
        b.append(run_once(cmd_b, fresh_b))
    result = Result(label, cmd_a, cmd_b, a, b)
    print(f"{label}: ckptcheck {med(a):.3f} s / TensorFlow {med(b):.3f} s = {result.ratio:.1f}x; "
          f"peak {peak(a):.0f} / {peak(b):.0f} MiB", file=sys.stderr)
    return result


def med(samples: list[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


def peak(samples: list[Sample]) -> float:
    return max(s.peak_mib for s in samples)


def single(label: str, cmd: list[str], runs: int) -> Result:
    samples = [run_once(cmd) for _ in range(runs)]
    print(f"{label}: {statistics.median(s.seconds for s in samples):.3f} s", file=sys.stderr)
    return Result(label, cmd, [], samples, [])


def short(cmd: list[str]) -> str:
    out = []
    for part in cmd:
        if part == PY:
            out.append("python")
        elif "\n" in part:
            out.append("<script>")
        else:
            out.append(part.replace(str(CACHE), "cache"))
    return " ".join(out)


# The speed issue's targets, checked against this run: label -> (minimum speed-up, maximum seconds, peak MiB).
TARGETS: dict[str, tuple[float | None, float | None, float | None]] = {
    "ckptcheck --version": (None, 0.150, None),
    "ckptcheck inspect --help": (None, 0.250, None),
    "inspect, 20,000 tensors (table)": (8.0, None, 80),
    "inspect, 20,000 tensors (--json)": (15.0, None, 80),
    # V1: the listing of the same 20,000 tensors within 2x of the V2 listing (ratio = V2 time / V1 time).
    "inspect V1 against inspect V2, 20,000 tensors": (0.5, None, 80),
    # Keras HDF5 listing within 1.5x of a bare h5py walk (ratio = walk time / ckptcheck time); the reading
    # commands on a ~100 MB Keras file under 1 s.
    "inspect ResNet50 .weights.h5 against a bare h5py walk": (1 / 1.5, None, None),
    "verify ResNet50 .weights.h5 (94 MiB)": (None, 1.0, None),
    "manifest ResNet50 .weights.h5 (94 MiB)": (None, 1.0, None),
    "diff ResNet50 .weights.h5 with itself": (None, 1.0, None),
    # Issue 16: 100,000 datasets listed in a few seconds, memory bounded.
    "inspect a .weights.h5 of 100,000 datasets against a bare h5py walk": (None, 5.0, None),
    "verify, 1 GiB": (8.0, 1.0, 150),  # 1 GiB in at most 1 s: at least 1 GB/s of checksummed data
    "verify, 4 GiB": (None, None, 150),
    "inspect --stats, 1 GiB": (5.0, None, None),
    "diff, 1 GiB vs 1 GiB": (5.0, None, None),
    # Remote reading (URLs through fsspec), over a loopback HTTP server answering Range requests: the listing
    # within 2x of the local listing (ratio = local time / HTTP time), verify at >= 300 MB/s (1 GiB in 3.58 s)
    # with flat memory.
    "inspect over HTTP against inspect local, 20,000 tensors": (0.5, None, None),
    "verify over HTTP, 1 GiB": (None, (1 << 30) / 300e6, 150),
    # Export (issue 24): 1 GiB written within 2x the time verify takes to read it (ratio = verify time / export
    # time), memory flat; a 1 GiB .safetensors file listed in a fraction of a second.
    "export 1 GiB to .safetensors against verify 1 GiB": (0.5, None, 150),
    "export 1 GiB to .npz against verify 1 GiB": (0.5, None, 150),
    "inspect a 1 GiB .safetensors against the safetensors library's listing": (None, 0.25, None),
}


def targets_table(results: list[Result]) -> list[str]:
    """Each target of the speed issue next to what this run measured."""
    lines = ["## Against the targets of the speed issue (this run)", "",
             "| benchmark | target | measured | |", "|---|---|---|---|"]
    for r in results:
        if r.label not in TARGETS:
            continue
        speedup, seconds, peak_mib = TARGETS[r.label]
        checks = []
        if speedup is not None:
            checks.append((f">= {speedup:g}x faster", f"{r.ratio:.1f}x", r.ratio >= speedup))
        if seconds is not None:
            checks.append((f"<= {seconds * 1000:.0f} ms", f"{med(r.a) * 1000:.0f} ms", med(r.a) <= seconds))
        if peak_mib is not None:
            checks.append((f"peak < {peak_mib} MiB", f"{peak(r.a):.0f} MiB", peak(r.a) < peak_mib))
        for target, measured, met in checks:
            lines.append(f"| {r.label} | {target} | {measured} | {'met' if met else '**not met**'} |")
    return lines


def write_results(results: list[Result], runs: int, tf_version: str, path: Path = HERE / "RESULTS.md") -> None:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {platform.platform()}; {cpu}; {os.cpu_count()} cores; {mem:.0f} GiB; "
        f"Python {platform.python_version()}; TensorFlow {tf_version}.",
        f"Each row: {runs} runs per side, alternating A B A B after one warm-up run of each (page cache warm, "
        "bytecode cached); "
        "medians of wall time of the whole process; ratio = median of per-pair TensorFlow/ckptcheck; "
        "peak = largest max RSS of any run.",
        "",
        "| benchmark | ckptcheck (s) | TensorFlow (s) | speed-up | ckptcheck peak (MiB) | TensorFlow peak (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.b:
            lines.append(f"| {r.label} | {med(r.a):.3f} | {med(r.b):.3f} | {r.ratio:.1f}x | {peak(r.a):.0f} | "
                         f"{peak(r.b):.0f} |")
        else:
            lines.append(f"| {r.label} | {med(r.a):.3f} | | | {peak(r.a):.0f} | |")
    lines += ["", "Commands:", ""]
    for r in results:
        lines.append(f"- {r.label}: `{short(r.cmd_a)}`" + (f" vs `{short(r.cmd_b)}`" if r.cmd_b else ""))
    lines += ["", *targets_table(results)]
    notes = HERE / "NOTES.md"  # what profiling taught us, kept beside the numbers
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


# The floor of any export on this machine: the checkpoint's data file copied by the kernel and made durable.
COPY_AND_SYNC = textwrap.dedent(
    """
    import os, shutil, sys
    shutil.copyfile(sys.argv[1], sys.argv[2])
    fd = os.open(sys.argv[2], os.O_RDONLY)
    os.fsync(fd)
    """
)

SAFETENSORS_KEYS = textwrap.dedent(
    """
    import sys
    from safetensors import safe_open
    with safe_open(sys.argv[1], framework="np") as f:
        print(len(list(f.keys())))
    """
)


def export_rows(big: str, runs: int) -> list[Result]:
    """Export of the 1 GiB checkpoint (2,000 float32 tensors) to each format, against verify of the same
    checkpoint (each run writes a new file: the previous one is removed first, outside the time); then the
    exported file's listing against the safetensors library's."""
    out: list[Result] = []
    verify = [*CKPT, "verify", big]
    for suffix in (".safetensors", ".npz"):
        target = CACHE / f"export-1g{suffix}"
        out.append(compare(f"export 1 GiB to {suffix} against verify 1 GiB", [*CKPT, "export", big, str(target)],
                           verify, runs, fresh=target))
    target, copied = CACHE / "export-1g.safetensors", CACHE / "copy-1g.data"
    data = next(Path(big).parent.glob(Path(big).name + ".data-*"))
    out.append(compare("export 1 GiB to .safetensors against copying its data file and fsync",
                       [*CKPT, "export", big, str(target)], [PY, "-c", COPY_AND_SYNC, str(data), str(copied)], runs,
                       fresh=target, fresh_b=copied))
    copied.unlink(missing_ok=True)
    listed = CACHE / "export-1g.safetensors"
    run_once([*CKPT, "export", big, str(listed)], fresh=listed)
    out.append(compare("inspect a 1 GiB .safetensors against the safetensors library's listing",
                       [*CKPT, "inspect", str(listed)], [PY, "-c", SAFETENSORS_KEYS, str(listed)], runs))
    return out


def remote_rows(small: str, big: str, runs: int, resnet: str | None = None) -> list[Result]:
    """The checkpoints served over loopback HTTP by the tests' Range-answering server (sendfile: it is not the
    bottleneck), in this process, while the commands run in their own."""
    sys.path.insert(0, str(HERE.parent / "tests" / "support"))
    from remote_servers import http_server

    out = []
    with http_server(CACHE) as (base, counter):
        def url(prefix: str) -> str:
            return prefix.replace(str(CACHE), base)

        def verify_counted(label: str, local: str, size: int) -> Result:
            """One verify row over HTTP, with the body bytes the server sent per run against the files' size."""
            counter.reset()
            result = single(label, [*CKPT, "verify", url(local)], runs)
            print(f"  bytes sent by the server per verify: {counter.total / (runs or 1):.0f} (files: {size})",
                  file=sys.stderr)
            return result

        out.append(compare("inspect over HTTP against inspect local, 20,000 tensors",
                           [*CKPT, "inspect", url(small)], [*CKPT, "inspect", small], runs))
        out.append(verify_counted("verify over HTTP, 1 GiB", big,
                                  sum(p.stat().st_size for p in Path(big).parent.iterdir())))
        out.append(single("verify over HTTP, 1 GiB, --jobs 1", [*CKPT, "verify", url(big), "--jobs", "1"], runs))
        if resnet is not None:  # a Keras file past the whole-file size: windows, and data fetched exactly
            out.append(compare("inspect ResNet50 .weights.h5 over HTTP against inspect local",
                               [*CKPT, "inspect", url(resnet)], [*CKPT, "inspect", resnet], runs))
            out.append(verify_counted("verify ResNet50 .weights.h5 over HTTP", resnet, Path(resnet).stat().st_size))
    out.append(compare("verify local 1 GiB, --jobs 2 against --jobs 1", [*CKPT, "verify", big, "--jobs", "2"],
                       [*CKPT, "verify", big, "--jobs", "1"], runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--large", action="store_true", help="also the 4 GiB checkpoint (memory must stay flat)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md",
                        help="where to write the table (a run of some rows only: elsewhere than RESULTS.md)")
    parser.add_argument("--only", default="startup,inspect,v1,keras,keras100k,verify,stats,diff,remote,export")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tf_version = subprocess.run([PY, "-c", "import tensorflow as tf; print(tf.__version__)"], capture_output=True,
                                text=True, env=ENV, check=True).stdout.strip()
    big = build("1g")
    small = build("small20k") if only & {"inspect", "v1", "remote"} else ""
    results: list[Result] = []
    if "startup" in only:
        results.append(single("ckptcheck --version", [*CKPT, "--version"], args.runs))
        results.append(single("ckptcheck inspect --help", [*CKPT, "inspect", "--help"], args.runs))
    tf_inspect = [PY, "-m", "tensorflow.python.tools.inspect_checkpoint", f"--file_name={small}"]
    if "inspect" in only:
        results.append(compare("inspect, 20,000 tensors (table)", [*CKPT, "inspect", small], tf_inspect, args.runs))
        results.append(compare("inspect, 20,000 tensors (--json)", [*CKPT, "inspect", small, "--json"], tf_inspect,
                               args.runs))
    if "v1" in only:
        small_v1 = build_v1("small20k")
        results.append(compare("inspect V1 against inspect V2, 20,000 tensors", [*CKPT, "inspect", small_v1],
                               [*CKPT, "inspect", small], args.runs))
        results.append(compare("inspect V1, 20,000 tensors (table)", [*CKPT, "inspect", small_v1],
                               [PY, "-m", "tensorflow.python.tools.inspect_checkpoint", f"--file_name={small_v1}"],
                               args.runs))
    if "keras" in only:
        resnet = build_keras()
        results.append(compare("inspect ResNet50 .weights.h5 against a bare h5py walk", [*CKPT, "inspect", resnet],
                               [PY, "-c", H5_WALK, resnet], args.runs))
        results.append(single("verify ResNet50 .weights.h5 (94 MiB)", [*CKPT, "verify", resnet], args.runs))
        results.append(single("manifest ResNet50 .weights.h5 (94 MiB)", [*CKPT, "manifest", resnet], args.runs))
        results.append(single("diff ResNet50 .weights.h5 with itself", [*CKPT, "diff", resnet, resnet], args.runs))
    if "keras100k" in only:
        many = build_keras_100k()
        results.append(compare("inspect a .weights.h5 of 100,000 datasets against a bare h5py walk",
                               [*CKPT, "inspect", many, "--json"], [PY, "-c", H5_WALK, many], args.runs))
    sizes = [("1 GiB", big)] + ([("4 GiB", build("4g"))] if args.large else [])
    for label, prefix in sizes:
        if "verify" in only:
            results.append(compare(f"verify, {label}", [*CKPT, "verify", prefix],
                                   [PY, "-c", TF_READ_ALL, prefix], args.runs))
        if "stats" in only:
            results.append(compare(f"inspect --stats, {label}", [*CKPT, "inspect", prefix, "--stats"],
                                   [PY, "-c", TF_STATS, prefix], args.runs))
    if "remote" in only:
        results += remote_rows(small, big, args.runs, build_keras() if "keras" in only else None)
    if "export" in only:
        results += export_rows(big, args.runs)
    if "diff" in only:
        other = build("1g", variant=1)
        results.append(compare("diff, 1 GiB vs 1 GiB", [*CKPT, "diff", big, other],
                               [PY, "-c", TF_DIFF, big, other], args.runs))
    write_results(results, args.runs, tf_version, args.results)
    print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
