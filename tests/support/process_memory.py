"""A ckptcheck command run in a fresh process, its peak memory measured: for the tests that hold large listings
and manifests to bounded memory (tracemalloc would miss what C allocates; VmHWM counts every resident page)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent("""
    import sys
    from ckptcheck.cli import app
    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    base = hwm_mib()
    real_stdout, sys.stdout = sys.stdout, open(sys.argv[1], "w", encoding="utf-8")  # a file: not a terminal
    try:
        app(sys.argv[2:], standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
    sys.stdout.close()
    real_stdout.write(str(hwm_mib() - base))
""")


def peak_mib_above_start(args: list[str], stdout: Path) -> float:
    """Run ``ckptcheck ARGS`` (in-process in a new interpreter, stdout written to the file ``stdout``) and return
    how far its peak resident memory rose above the interpreter's with ckptcheck imported, in MiB."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(stdout), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout)
