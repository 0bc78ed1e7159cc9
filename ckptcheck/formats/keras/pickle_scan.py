"""What a pickle would call if it were unpickled, read from its opcodes with pickletools (nothing is unpickled).

A pickle runs code by naming a callable (GLOBAL, STACK_GLOBAL, INST, an extension code) and calling it (REDUCE,
NEWOBJ, OBJ, BUILD). numpy's arrays are rebuilt through a handful of its own functions; any other callable a
pickle names is a finding: that is how a 37-byte ``model.weights.npz`` calls ``os.system`` under
``numpy.load(..., allow_pickle=True)``.
"""

from __future__ import annotations

import pickletools
from typing import IO, Any

# What numpy's own pickles of arrays, dtypes and scalars name (numpy 1.x and 2.x module paths), and the two
# helpers a protocol-2 pickle of bytes uses.
NUMPY_RECONSTRUCTION = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "numpy.ndarray", "numpy.dtype", "_codecs.encode", "copyreg._reconstructor", "builtins.bytearray",
})
MAX_PICKLE_BYTES = 64 << 20  # analysed this far; a weights pickle of objects is far smaller
_STRINGS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                      "BINUNICODE8"})
PICKLE_PROTOCOL_BYTES = frozenset(range(2, 6))


def looks_like_pickle(head: bytes) -> bool:
    """A protocol 2-5 pickle starts with PROTO and its number."""
    return len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOL_BYTES


def callables(data: bytes) -> tuple[list[str], str | None]:
    """The callables outside numpy's array reconstruction that the pickle names (in order, each once), and why the
    opcodes could not be read to the end (None when they could)."""
    found: list[str] = []
    recent: list[Any] = []  # what the last opcodes pushed: a str for a string, None for anything else
    memo: dict[int, Any] = {}
    problem: str | None = None
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in _STRINGS:
                recent.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append(f"{module}.{attr}")
                recent.append(None)
            elif name == "STACK_GLOBAL":
                pair = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
                found.append(f"{pair[0]}.{pair[1]}" if isinstance(pair[0], str) and isinstance(pair[1], str)
                             else "a callable whose name is computed (STACK_GLOBAL on non-constant strings)")
                recent.append(None)
            elif name in ("EXT1", "EXT2", "EXT4"):
                found.append(f"the callable registered under extension code {arg} (copyreg)")
                recent.append(None)
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(arg))] = recent[-1] if recent else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                recent.append(memo.get(int(str(arg))))
            elif opcode.stack_after:
                recent.append(None)
            if len(recent) > 64:
                del recent[:32]
    except (ValueError, EOFError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
        problem = str(exc) or type(exc).__name__
    return [c for c in dict.fromkeys(found) if c not in NUMPY_RECONSTRUCTION], problem


def npy_pickle(data: bytes | IO[bytes]) -> bytes | None:
    """The pickle an ``.npy`` holds after its header when its dtype has objects (read up to MAX_PICKLE_BYTES),
    else None: raw values, of which only the header is read."""
    import io

    import numpy as np

    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            _shape, _order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0: a UTF-8 header, read by the same private helper numpy.load uses
            _shape, _order, dtype = np.lib.format._read_array_header(stream, version)  # type: ignore[attr-defined]
    except (ValueError, EOFError, SyntaxError, TypeError):
        return None
    return stream.read(MAX_PICKLE_BYTES) if dtype.hasobject else None
