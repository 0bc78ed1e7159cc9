"""Session-wide test set-up: checkpoints are built once per session, with TensorFlow and Keras as the oracle.

Tests are grouped as the package is (formats/, lab/, restore_check/, the commands at the top); their helpers live
in support/ (builders of checkpoints, index writers, servers, memory probes, restore-check's model files), which is
put on the import path here. The builders' session-scoped fixtures are re-exported so every test module can use
them.
"""

from __future__ import annotations

import os

# Quiet TensorFlow before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import ast
import importlib.abc
import inspect
import re
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
_SUPPORT = _HERE / "support"
sys.path.insert(0, str(_SUPPORT))

from keras_builders import *  # noqa: E402, F403
from tf_builders import *  # noqa: E402, F403

# A test needs TensorFlow when it uses a fixture these modules build with it, or imports it itself.
_BUILDER_MODULES = ("tf_builders.py", "keras_builders.py")
_IMPORTS_TF = re.compile(r"\bimport (?:tensorflow|keras|tf_keras)\b|\b_tf\(\)|\b_keras\(\)")
_TF_PACKAGES = ("tensorflow", "keras", "tf_keras")


def _builder_fixtures() -> frozenset[str]:
    names = set()
    for module in _BUILDER_MODULES:
        tree = ast.parse((_SUPPORT / module).read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
                names.add(node.name)
    return frozenset(names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `tf` every test that uses TensorFlow: through a builder fixture, or by importing it in its own body.
    Whatever this misses, the reader-only run (`-m "not tf"`) catches: there TensorFlow cannot be imported."""
    fixtures = _builder_fixtures()
    for item in items:
        if item.get_closest_marker("tf") is not None:
            continue
        uses = fixtures.intersection(getattr(item, "fixturenames", ()))
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if uses or _IMPORTS_TF.search(source):
            item.add_marker(pytest.mark.tf)


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in _TF_PACKAGES:
            raise ImportError(f"{name} imported by a test run without TensorFlow (-m 'not tf'): mark the test "
                              f"@pytest.mark.tf")
        return None


def pytest_configure(config: pytest.Config) -> None:
    expression = config.getoption("markexpr", "") or ""
    if re.search(r"\bnot\s+tf\b", expression) and not any(m.split(".")[0] in _TF_PACKAGES for m in sys.modules):
        sys.meta_path.insert(0, _NoTensorFlow())
