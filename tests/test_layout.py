"""The package's floor plan, read from its source: the reading side never reaches TensorFlow, and no modules import
each other in a circle. Static (ast), so it runs in milliseconds; test_cli_inspect proves the same at run time with
TensorFlow blocked."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ckptcheck"
TENSORFLOW = ("tensorflow", "keras", "tf_keras")
# What needs TensorFlow: the lab and restore-check (they build and restore models), and the renderers of their
# reports, which the reading commands never load.
TF_WING = ("ckptcheck.lab", "ckptcheck.restore_check", "ckptcheck.render.lab", "ckptcheck.render.restore_check",
           "ckptcheck.render.keras3")
# The command line and the package's face reach everything (lazily, per command).
ABOVE_ALL = ("ckptcheck.cli", "ckptcheck.__main__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports, at any depth of its code (lazy imports inside functions count)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = found
    return {name: {m for m in found if m in graph or m.split(".")[0] in TENSORFLOW} for name, found in graph.items()}


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` reaches, each with the module that imports it on the way."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        here = todo.pop()
        for there in graph.get(here, ()):
            if there not in seen:
                seen[there] = here
                todo.append(there)
    return seen


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_reading_side_never_reaches_tensorflow() -> None:
    graph = _imports()
    reading = [m for m in graph if m != "ckptcheck" and not _in(m, TF_WING + ABOVE_ALL)]
    assert "ckptcheck.formats.tensorflow.bundle" in reading and "ckptcheck.verify" in reading
    for module in reading:
        reached = _reach(graph, module)
        bad = [m for m in reached if _in(m, TF_WING) or m.split(".")[0] in TENSORFLOW]
        assert not bad, f"{module} reaches {bad[0]} (through {reached[bad[0]]})"


def test_the_tf_wing_imports_tensorflow_through_the_gate_only() -> None:
    graph = _imports()
    direct = sorted(m for m, found in graph.items()
                    if any(f.split(".")[0] in TENSORFLOW for f in found) and m != "ckptcheck.lab.gate")
    # These modules drive TensorFlow's own APIs after the gate has imported it (generate builds models with it).
    assert all(_in(m, TF_WING) for m in direct), direct


def test_no_modules_import_each_other_in_a_circle() -> None:
    """At module level: a lazy import inside a function is how a lower module reaches an upper one on demand."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        found: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = found
    graph = {n: {m for m in f if m in graph and m != n} for n, f in graph.items()}
    for module in graph:
        if module == "ckptcheck":
            continue
        reached = _reach({n: f - {"ckptcheck"} for n, f in graph.items()}, module)
        assert module not in reached, f"{module} imports itself through {reached.get(module)}"
