"""A model file whose import fails on line 5."""

from __future__ import annotations

import a_module_that_does_not_exist  # noqa: F401


def build() -> None:
    return None
