"""crc32c (Castagnoli), the checksum of index blocks and tensor bytes, from the `crc32c` package's extension.

The package's ``__init__`` looks up its own version through ``importlib.metadata``, which imports email, zipfile
and pathlib: ~20 ms, a tenth of a whole `ckptcheck inspect`. The compiled module is loaded directly from where
the package keeps it (``crc32c/_crc32c*.so`` since 2.4); anywhere else, the package is imported as usual.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Protocol

Buffer = bytes | bytearray | memoryview


class Crc32c(Protocol):
    def __call__(self, data: Buffer, value: int = 0, /) -> int: ...


def _load_extension() -> ModuleType | None:
    import importlib.util
    from importlib.machinery import EXTENSION_SUFFIXES

    name = "crc32c._crc32c"
    if name in sys.modules:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec("crc32c")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(directory, "_crc32c" + suffix)
            if not os.path.isfile(path):
                continue
            ext_spec = importlib.util.spec_from_file_location(name, path)
            if ext_spec is None or ext_spec.loader is None:
                return None
            try:
                module = importlib.util.module_from_spec(ext_spec)
                ext_spec.loader.exec_module(module)
            except ImportError:
                return None
            return module
    return None


def _crc32c_function() -> Crc32c:
    module = _load_extension()
    if module is not None and callable(getattr(module, "crc32c", None)):
        fn: Crc32c = module.crc32c
        return fn
    import crc32c  # the package's public import: slower start-up, the same function

    public: Crc32c = crc32c.crc32c
    return public


crc32c: Crc32c = _crc32c_function()
"""crc32c(data, value) -> the crc32c of ``data``, continuing from ``value`` (0 to start)."""
