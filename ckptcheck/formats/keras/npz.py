"""Keras 3 ``model.weights.npz`` (``saving_lib.save_model(model, path, weights_format="npz")``), read without
running a pickle.

What Keras 3.15 writes (keras/src/saving/saving_lib.py, NpzIOStore): ``np.savez`` of one entry per object path,
``layers/conv2d``, ``optimizer``, ``__root__`` (the model's own variables), each entry the dict the object's
``save_own_variables`` filled: ``{"0": variable, "1": variable, ...}``. A dict is no array, so numpy stores it as
a 0-d object array — a pickle — and the values are the framework's variable objects themselves (with TensorFlow:
``keras.Variable`` wrapping a ``tf.ResourceVariable`` whose ``initial_value`` is the numpy array), not arrays.
Keras 3.15 loads with ``np.load(allow_pickle=False)`` and so refuses its own npz archives.

ckptcheck never unpickles. It walks the pickle's opcodes as data — globals are names, calls are records, nothing
is imported or called — and takes from each variable the one numpy array the pickle builds
(``numpy._core.multiarray._reconstruct`` of ``numpy.ndarray`` with its dtype, shape and raw bytes). Raw bytes are
not read while listing: their offset in the member is noted and values are streamed from there. A member that is
not such a dict (pickled objects of other shapes) is refused with a clear error; a member that is a plain numeric
``.npy`` array is read as one tensor named by its key. Names follow the ``.weights.h5`` layout, so the same model
saved both ways has the same names: entry ``layers/conv2d`` key ``"0"`` is ``layers/conv2d/vars/0``,
``__root__`` is ``vars/...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ckptcheck.errors import CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import open_regular
from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES, CheckpointReader, aligned_empty
from ckptcheck.formats.keras import names
from ckptcheck.formats.keras.archive import LOCAL_HEADER, LOCAL_MAGIC, NPZ_WEIGHTS_MEMBER, Archive, StoredMember
from ckptcheck.formats.keras.h5 import BOMB_EXPANSION, BOMB_FLOOR_BYTES, read_guard
from ckptcheck.formats.tensorflow import dtypes
from ckptcheck.order import natural_key
from ckptcheck.records import KERAS, CheckpointInfo, TensorInfo

if TYPE_CHECKING:
    pass


ROOT_KEY = "__root__"
# The pickle of one layer's variables is a few KB; a member's pickle (not counting array bytes, which are skipped)
# longer than this many opcodes is refused rather than modelled in memory.
MAX_OPCODES = 1 << 20
# Byte strings up to this size are kept (dtype markers such as b'b'); longer ones are only located.
_SMALL_BYTES = 256
_NUMPY_RECONSTRUCT = {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct")}
_NUMPY_SCALAR = {("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar")}
_NUMPY_FROMBUFFER = {("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")}


@dataclass(frozen=True)
class NpzArray:
    """One array found in an npz member: where its raw C-order bytes start in the member, and what they are."""

    name: str  # tensor name, as the .weights.h5 layout names it
    member: str  # the .npy member of the npz holding it
    dtype: str  # TensorFlow's name
    read_dtype: np.dtype  # as stored (its byte order included)
    shape: tuple[int, ...]
    offset: int  # of the first value byte, from the start of the member
    nbytes: int


def tensor_prefix(key: str) -> str:
    """The .weights.h5 group for an NpzIOStore key: ``layers/dense`` -> ``layers/dense/vars``."""
    return "vars" if key == ROOT_KEY else f"{key}/vars"


# --- a pickle read as data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


class _Call:
    """A call (REDUCE, NEWOBJ, ...) recorded, never made; BUILD's state is attached."""

    def __init__(self, func: Any, args: Any) -> None:
        self.func = func
        self.args = args
        self.state: Any = None


@dataclass(frozen=True)
class _Bytes:
    offset: int  # in the member
    length: int
    data: bytes | None  # kept when short


class _Mark:
    pass


_MARK = _Mark()


class _PickleWalk:
    """Interprets the opcodes of protocols 2-5 symbolically. Anything it does not model (persistent ids,
    extension registry, out-of-band buffers) is refused."""

    def __init__(self, f: IO[bytes], start: int, end: int, *, where: str) -> None:
        self.f = f
        self.pos = start
        self.end = end
        self.where = where
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def _read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise self._bad("the pickle runs past the end of the member")
        data = self.f.read(n)
        if len(data) != n:
            raise self._bad("the pickle is truncated")
        self.pos += n
        return data

    def _skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise self._bad(f"a byte string of {n} bytes runs past the end of the member")
        self.pos += n
        self.f.seek(self.pos)

    def _bad(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.where}: {message}")

    def _unpack(self, fmt: str) -> Any:
        s = struct.Struct(fmt)
        return s.unpack(self._read(s.size))[0]

    def _bytes(self, n: int) -> _Bytes:
        at = self.pos
        if n <= _SMALL_BYTES:
            return _Bytes(at, n, self._read(n))
        self._skip(n)
        return _Bytes(at, n, None)

    def _pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise self._bad("malformed pickle (no mark)")

    def _pop(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise self._bad("malformed pickle (stack underflow)")
        return self.stack.pop()

    def run(self) -> Any:  # one branch per opcode
        st = self.stack
        for _ in range(MAX_OPCODES):
            op = self._read(1)
            if op == b".":  # STOP
                return self._pop()
            if op == b"\x80":  # PROTO
                self._read(1)
            elif op == b"\x95":  # FRAME: framing only; positions stay stream positions
                self._read(8)
            elif op == b"\x94":  # MEMOIZE
                if not st:
                    raise self._bad("malformed pickle (memoize on an empty stack)")
                self.memo[len(self.memo)] = st[-1]
            elif op in (b"q", b"r", b"p"):  # BINPUT, LONG_BINPUT, PUT
                idx = self._unpack("<B") if op == b"q" else self._unpack("<I") if op == b"r" else int(self._line())
                if not st:
                    raise self._bad("malformed pickle (put on an empty stack)")
                self.memo[idx] = st[-1]
            elif op in (b"h", b"j", b"g"):  # BINGET, LONG_BINGET, GET
                idx = self._unpack("<B") if op == b"h" else self._unpack("<I") if op == b"j" else int(self._line())
                if idx not in self.memo:
                    raise self._bad("malformed pickle (memo key missing)")
                st.append(self.memo[idx])
            elif op == b"(":
                st.append(_MARK)
            elif op == b"N":
                st.append(None)
            elif op == b"\x88":
                st.append(True)
            elif op == b"\x89":
                st.append(False)
            elif op == b"K":
                st.append(self._unpack("<B"))
            elif op == b"M":
                st.append(self._unpack("<H"))
            elif op == b"J":
                st.append(self._unpack("<i"))
            elif op in (b"\x8a", b"\x8b"):  # LONG1, LONG4
                n = self._unpack("<B") if op == b"\x8a" else self._unpack("<i")
                if n > 64:
                    raise self._bad("an integer in the pickle is too long")
                st.append(int.from_bytes(self._read(n), "little", signed=True))
            elif op == b"G":
                st.append(self._unpack(">d"))
            elif op in (b"\x8c", b"X", b"\x8d"):  # SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                n = self._unpack({b"\x8c": "<B", b"X": "<I", b"\x8d": "<Q"}[op])
                if n > 1 << 20:
                    raise self._bad("a string in the pickle is longer than 1 MiB")
                st.append(self._read(n).decode("utf-8", "surrogatepass"))
            elif op in (b"C", b"B", b"\x8e", b"\x96"):  # SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                st.append(self._bytes(self._unpack({b"C": "<B", b"B": "<I", b"\x8e": "<Q", b"\x96": "<Q"}[op])))
            elif op in (b"U", b"T"):  # SHORT_BINSTRING, BINSTRING (protocol 2 str)
                st.append(self._bytes(self._unpack("<B" if op == b"U" else "<i")))
            elif op == b")":
                st.append(())
            elif op == b"]":
                st.append([])
            elif op == b"}":
                st.append({})
            elif op == b"\x8f":  # EMPTY_SET
                st.append([])
            elif op == b"t":
                st.append(tuple(self._pop_mark()))
            elif op in (b"\x85", b"\x86", b"\x87"):
                n = {b"\x85": 1, b"\x86": 2, b"\x87": 3}[op]
                items = [self._pop() for _ in range(n)][::-1]
                st.append(tuple(items))
            elif op == b"l":  # LIST
                st.append(self._pop_mark())
            elif op == b"d":  # DICT
                items = self._pop_mark()
                st.append(self._dict_from(items))
            elif op == b"a":  # APPEND
                value = self._pop()
                self._container(list).append(value)
            elif op in (b"e", b"\x90"):  # APPENDS, ADDITEMS
                items = self._pop_mark()
                self._container(list).extend(items)
            elif op == b"s":  # SETITEM
                value, key = self._pop(), self._pop()
                self._container(dict)[self._key(key)] = value
            elif op == b"u":  # SETITEMS
                items = self._pop_mark()
                self._container(dict).update(self._dict_from(items))
            elif op == b"\x91":  # FROZENSET
                st.append(self._pop_mark())
            elif op == b"\x93":  # STACK_GLOBAL
                name, module = self._pop(), self._pop()
                if not isinstance(name, str) or not isinstance(module, str):
                    raise self._bad("malformed pickle (global names are not strings)")
                st.append(_Global(module, name))
            elif op == b"c":  # GLOBAL
                module = self._line()
                st.append(_Global(module, self._line()))
            elif op == b"R":  # REDUCE
                args, func = self._pop(), self._pop()
                st.append(_Call(func, args))
            elif op == b"\x81":  # NEWOBJ
                args, cls = self._pop(), self._pop()
                st.append(_Call(cls, args))
            elif op == b"\x92":  # NEWOBJ_EX
                kwargs, args, cls = self._pop(), self._pop(), self._pop()
                st.append(_Call(cls, (args, kwargs)))
            elif op == b"b":  # BUILD
                state = self._pop()
                obj = self._pop()
                if isinstance(obj, _Call):
                    obj.state = state
                st.append(obj)
            elif op == b"0":  # POP
                self._pop()
            elif op == b"1":  # POP_MARK
                self._pop_mark()
            elif op == b"2":  # DUP
                st.append(st[-1] if st else None)
            else:
                raise UnsupportedFormatError(
                    f"{self.where}: the pickle uses opcode {op!r}, which ckptcheck does not read",
                    hint="ckptcheck reads Keras's npz weights without running their pickle",
                )
        raise self._bad(f"the pickle has more than {MAX_OPCODES} opcodes; ckptcheck does not model it")

    def _line(self) -> str:
        out = bytearray()
        while len(out) < 4096:
            c = self._read(1)
            if c == b"\n":
                return out.decode("utf-8", "surrogatepass")
            out += c
        raise self._bad("a text argument in the pickle is too long")

    def _container(self, kind: type) -> Any:
        if not self.stack or not isinstance(self.stack[-1], kind):
            raise self._bad(f"malformed pickle (expected a {kind.__name__})")
        return self.stack[-1]

    def _key(self, key: Any) -> Any:
        if isinstance(key, (str, int, float, bool, type(None), tuple, _Global)):
            try:
                hash(key)
            except TypeError:
                raise self._bad("a dict key in the pickle is not a plain value") from None
            return key
        raise self._bad("a dict key in the pickle is not a plain value")

    def _dict_from(self, items: list[Any]) -> dict[Any, Any]:
        if len(items) % 2:
            raise self._bad("malformed pickle (odd number of dict items)")
        return {self._key(items[i]): items[i + 1] for i in range(0, len(items), 2)}


# --- numpy arrays inside the pickle ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FoundArray:
    dtype: np.dtype
    dtype_name: str
    shape: tuple[int, ...]
    data: _Bytes


def _dtype_of(value: Any, *, where: str) -> tuple[np.dtype, str] | None:
    """A pickled ``numpy.dtype(...)``: ``dtype('f4', False, True)`` with state ``(3, '<', ...)``, or an ml_dtypes
    type (``dtype(ml_dtypes.bfloat16, ...)``). None when it is not a dtype record."""
    if not (isinstance(value, _Call) and value.func == _Global("numpy", "dtype")):
        return None
    args = value.args if isinstance(value.args, tuple) else ()
    state = value.state if isinstance(value.state, tuple) else ()
    if not args:
        return None
    spec = args[0]
    if isinstance(spec, _Global):
        if spec.module != "ml_dtypes":
            raise UnsupportedFormatError(f"{where}: an array of type {spec.module}.{spec.name}, which ckptcheck "
                                         "does not read")
        known = dtypes.BY_NAME.get(spec.name)
        if known is None or not known.readable:
            raise UnsupportedFormatError(f"{where}: an array of type ml_dtypes.{spec.name}, which ckptcheck does "
                                         "not read")
        return known.numpy, known.name
    if not isinstance(spec, str):
        return None
    if len(state) >= 4 and (state[2] is not None or state[3] is not None):
        raise UnsupportedFormatError(f"{where}: a structured array (fields), which Keras does not write")
    order = state[1] if len(state) >= 2 and state[1] in ("<", ">", "|", "=") else "|"
    try:
        dt = np.dtype(("" if order in ("|", "=") else order) + spec)
    except TypeError:
        raise CorruptCheckpointError(f"{where}: the pickle names an unknown dtype {spec!r}") from None
    if dt.hasobject:
        raise UnsupportedFormatError(f"{where}: an array of Python objects inside the pickle; ckptcheck reads "
                                     "numeric arrays only")
    known = dtypes.from_numpy(dt)
    if known is None or known.is_string:
        raise UnsupportedFormatError(f"{where}: an array of dtype {dt}, which ckptcheck does not read")
    return dt, known.name


def _as_array(value: Any, *, where: str) -> _FoundArray | None:
    """The array a pickled ``_reconstruct(ndarray, ...)`` + state builds (also a numpy scalar, ``scalar(dtype,
    bytes)``, which is how the optimizer's ``variable.numpy()`` of a 0-d variable pickles, and protocol 5's
    ``_frombuffer``)."""
    if not isinstance(value, _Call) or not isinstance(value.func, _Global):
        return None
    func = (value.func.module, value.func.name)
    if func in _NUMPY_SCALAR and isinstance(value.args, tuple) and len(value.args) == 2:  # a numpy scalar
        dt, buf = value.args
        found = _dtype_of(dt, where=where)
        if found is None or not isinstance(buf, _Bytes):
            return None
        return _checked(found, (), buf, where=where)
    if func in _NUMPY_FROMBUFFER and isinstance(value.args, tuple) and len(value.args) == 4:
        buf, dt, shape, order = value.args
        found = _dtype_of(dt, where=where)
        if found is None or not isinstance(buf, _Bytes):
            return None
        if order != "C":
            raise UnsupportedFormatError(f"{where}: a Fortran-order array, which ckptcheck does not read")
        return _checked(found, shape, buf, where=where)
    if func not in _NUMPY_RECONSTRUCT:
        return None
    args = value.args if isinstance(value.args, tuple) else ()
    if not args or args[0] != _Global("numpy", "ndarray"):
        return None
    state = value.state
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    if not (isinstance(state, tuple) and len(state) == 4):
        raise CorruptCheckpointError(f"{where}: an array in the pickle has no valid state")
    shape, dt, fortran, data = state
    if isinstance(data, list):  # an object array: its elements are pickled objects
        return None
    found = _dtype_of(dt, where=where)
    if found is None or not isinstance(data, _Bytes):
        raise CorruptCheckpointError(f"{where}: an array in the pickle has no valid dtype or data")
    if fortran is not False:
        raise UnsupportedFormatError(f"{where}: a Fortran-order array, which ckptcheck does not read")
    return _checked(found, shape, data, where=where)


def _checked(found: tuple[np.dtype, str], shape: Any, data: _Bytes, *, where: str) -> _FoundArray:
    dt, name = found
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                             for d in shape)):
        raise CorruptCheckpointError(f"{where}: an array in the pickle has an invalid shape {shape!r}")
    expected = math.prod(shape) * dt.itemsize
    if expected != data.length:
        raise CorruptCheckpointError(f"{where}: an array of shape {list(shape)} and dtype {name} needs {expected} "
                                     f"bytes but the pickle holds {data.length}")
    return _FoundArray(dt, name, tuple(shape), data)


def _arrays_within(value: Any, *, where: str) -> list[_FoundArray]:
    """Every numeric array the pickled object builds, in pickle order (a variable's value is its only one)."""
    out: list[_FoundArray] = []
    seen: set[int] = set()
    todo = [value]
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        arr = _as_array(v, where=where)
        if arr is not None:
            out.append(arr)
            continue
        if isinstance(v, _Call):
            todo += [v.state, v.args, v.func]
        elif isinstance(v, (list, tuple)):
            todo += list(v)[::-1]
        elif isinstance(v, dict):
            todo += [x for kv in v.items() for x in kv][::-1]
    return out


# --- one .npy member ------------------------------------------------------------------------------------------------


def scan_member(f: IO[bytes], member: str, size: int, *, path: str) -> list[NpzArray]:
    """The arrays in one npz member (``key.npy``), located, not read. ``f`` is positioned at its start."""
    from numpy.lib import format as npy

    key = member[: -len(".npy")] if member.endswith(".npy") else member
    where = f"model.weights.npz member {member}"
    try:
        major, minor = npy.read_magic(f)
        if major == 1:
            shape, fortran, dt = npy.read_array_header_1_0(f, max_header_size=1 << 16)
        elif major in (2, 3):
            shape, fortran, dt = npy.read_array_header_2_0(f, max_header_size=1 << 16)
        else:
            raise ValueError(f"unknown .npy version {major}.{minor}")
        start = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise CorruptCheckpointError(f"{where} is not a valid .npy array ({str(exc).strip()})", path=path,
                                     hint="the archive may be damaged") from None
    if not dt.hasobject:
        if fortran:
            raise UnsupportedFormatError(f"{where} is a Fortran-order array, which ckptcheck does not read",
                                         path=path)
        known = dtypes.from_numpy(dt)
        if known is None or known.is_string:
            raise UnsupportedFormatError(f"{where} holds dtype {dt}, which ckptcheck does not read", path=path)
        nbytes = math.prod(shape) * dt.itemsize
        if start + nbytes > size:
            raise CorruptCheckpointError(
                f"{where} declares shape {list(shape)} ({nbytes} bytes of {dt}) but the member holds "
                f"{max(0, size - start)} bytes of values; refusing to allocate", path=path, tensor=key,
                hint="the archive may be crafted or damaged",
            )
        return [NpzArray(key, member, known.name, dt, tuple(shape), start, nbytes)]
    if shape != () or dt != np.dtype(object):
        raise UnsupportedFormatError(f"{where} is an array of Python objects (shape {list(shape)}), not the dict of "
                                     "variables Keras writes; ckptcheck does not unpickle", path=path)
    try:
        top = _PickleWalk(f, start, size, where=where).run()
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(exc.message, path=path, hint="the archive may be damaged") from None
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(exc.message, path=path, hint=exc.hint) from None
    except (ValueError, OSError, EOFError, struct.error, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{where}: cannot read its pickle ({exc})", path=path) from None
    # np.save of a dict: a 0-d object ndarray whose one element is the dict.
    holder = top if isinstance(top, _Call) else None
    state = holder.state if holder is not None else None
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    variables = state[3][0] if (isinstance(state, tuple) and len(state) == 4 and isinstance(state[3], list)
                                and len(state[3]) == 1) else None
    if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
        raise UnsupportedFormatError(f"{where} pickles something other than a dict of variables (what Keras "
                                     "writes); ckptcheck does not unpickle", path=path)
    out = []
    prefix = tensor_prefix(key)
    for var_key, value in variables.items():
        name = f"{prefix}/{var_key}"
        found = _arrays_within(value, where=f"{where}, variable {var_key!r}")
        if len(found) != 1:
            raise UnsupportedFormatError(
                f"{where}: variable {var_key!r} pickles {len(found)} numeric arrays, not the one value ckptcheck "
                "expects", path=path, tensor=name,
            )
        arr = found[0]
        out.append(NpzArray(name, member, arr.dtype_name, arr.dtype, arr.shape, arr.data.offset, arr.data.length))
    return out


# --- the reader of a .keras archive whose weights are model.weights.npz ---------------------------------------


class KerasNpzArchiveReader(CheckpointReader):
    """A Keras 3 ``.keras`` zip whose weights are ``model.weights.npz`` (``weights_format="npz"``): the npz is a
    zip inside the zip, each member read where it lies; its pickles are walked as data, never run
    (ckptcheck.formats.keras.npz)."""

    format = KERAS

    def __init__(self, archive: Archive, member: zipfile.ZipInfo, *, path: str | None = None) -> None:
        self.location = archive.location
        self.path = path or archive.location
        self._archive: Archive | None = archive
        self._outer: io.IOBase | None = None
        self._npz: zipfile.ZipFile | None = None
        self._arrays: dict[str, NpzArray] = {}
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._direct: dict[str, int] = {}  # member -> offset of its data in the .keras file, when nothing is compressed
        try:
            self._open(member)
        except BaseException:
            self.close()
            raise

    def _open(self, member: zipfile.ZipInfo) -> None:
        assert self._archive is not None
        where = self.location
        summary = self._archive.info(path=self.path, tensors=())
        self._outer = self._archive.open_member(member)
        with read_guard(f"{NPZ_WEIGHTS_MEMBER} in the archive is not a readable zip", path=where,
                    hint="the archive may be truncated or damaged"):
            self._npz = zipfile.ZipFile(self._outer)
            infos = self._npz.infolist()
        for info in infos:
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise UnsupportedFormatError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} is encrypted", path=where)
            self._members[info.filename] = info
            start = self._direct_start(info)
            with read_guard(f"cannot read {NPZ_WEIGHTS_MEMBER} member {info.filename}", path=where,
                        hint="the archive may be truncated or damaged"), self._member_file(info, start) as f:
                found = scan_member(f, info.filename, info.file_size, path=where)
            for arr in found:
                if arr.name in self._arrays:
                    raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} lists this weight twice", path=where,
                                                 tensor=arr.name)
                self._arrays[arr.name] = arr
            if start is not None:
                self._direct[info.filename] = start
        ordered = sorted(self._arrays.values(), key=lambda a: natural_key(a.name))
        self._arrays = {a.name: a for a in ordered}
        # Named as the same model's model.weights.h5 is: from the layout and config.json (the npz keeps no vars
        # groups' name attribute), so that tensors pair by variable whatever the weights format.
        vars_names, functional = names.config_layout(self._archive.config)
        variables = names.keras3_variables([(a.name, a.shape) for a in ordered], vars_names, self._archive.config,
                                           functional)
        tensors = tuple(TensorInfo(a.name, a.dtype, a.shape, a.nbytes, file=NPZ_WEIGHTS_MEMBER,
                                   variable=variables.get(a.name, a.name)) for a in ordered)
        self._info = dataclasses.replace(summary, tensors=tensors)

    def _member_file(self, info: zipfile.ZipInfo, start: int | None) -> IO[bytes]:
        """The npz member as a buffered file: a window onto the .keras file when nothing is compressed (no CRC is
        checked then: `verify` checks every member's), else zipfile's stream."""
        if start is not None:
            return io.BufferedReader(StoredMember(self.location, start, info.file_size))
        assert self._npz is not None
        return self._npz.open(info)

    def _direct_start(self, info: zipfile.ZipInfo) -> int | None:
        """Where a stored npz member's bytes start in the .keras file, when the npz itself is stored there."""
        outer = self._outer
        if not isinstance(outer, StoredMember) or info.compress_type != zipfile.ZIP_STORED:
            return None
        if info.compress_size != info.file_size:
            raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} is stored but its sizes "
                                         "differ", path=self.location, hint="the archive may be damaged")
        outer.seek(info.header_offset)
        header = outer.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size or header[:4] != LOCAL_MAGIC:
            raise CorruptCheckpointError(f"bad local header for {NPZ_WEIGHTS_MEMBER} member {info.filename}",
                                         path=self.location, hint="the archive may be damaged")
        _magic, name_len, extra_len = LOCAL_HEADER.unpack(header)
        start = info.header_offset + LOCAL_HEADER.size + int(name_len) + int(extra_len)
        if start + info.file_size > outer._size:
            raise CorruptCheckpointError(f"{NPZ_WEIGHTS_MEMBER} member {info.filename} runs past the end of "
                                         f"{NPZ_WEIGHTS_MEMBER}", path=self.location, hint="the archive is truncated")
        return int(outer._start) + start

    def info(self) -> CheckpointInfo:
        return self._info

    def _entry(self, name: str) -> NpzArray:
        arr = self._arrays.get(name)
        if arr is None:
            raise self.not_found(name)
        return arr

    @contextlib.contextmanager
    def _values(self, arr: NpzArray) -> Iterator[Any]:
        """A file positioned at the array's first value byte."""
        start = self._direct.get(arr.member)
        with read_guard("cannot read the values", path=self.location, tensor=arr.name,
                    hint="the archive may be truncated or damaged"):
            if start is not None:
                with open_regular(self.location, whole_below=loc.WHOLE_BYTES) as f:
                    f.seek(start + arr.offset)
                    yield f
                return
            assert self._npz is not None
            with self._npz.open(self._members[arr.member]) as f:
                f.seek(arr.offset)
                yield f

    def _fill(self, f: Any, view: memoryview, arr: NpzArray) -> None:
        got = 0
        while got < len(view):
            n = f.readinto(view[got:])
            if not n:
                raise CorruptCheckpointError(
                    f"short read: {NPZ_WEIGHTS_MEMBER} member {arr.member} ends {len(view) - got} bytes early",
                    path=self.location, tensor=arr.name, hint="the archive is truncated or damaged")
            got += n

    def _native(self, values: np.ndarray) -> np.ndarray:
        return values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))

    def read(self, name: str) -> np.ndarray:
        arr = self._entry(name)
        info = self._members[arr.member]
        stored = max(info.compress_size, 1)
        if arr.nbytes > BOMB_FLOOR_BYTES and arr.nbytes > BOMB_EXPANSION * stored:
            raise CorruptCheckpointError(
                f"{NPZ_WEIGHTS_MEMBER} member {arr.member} declares {arr.nbytes} bytes but stores {stored}; "
                "refusing to allocate", path=self.location, tensor=name)
        out = np.empty(arr.nbytes, dtype=np.uint8)
        if arr.nbytes:
            with self._values(arr) as f:
                self._fill(f, out.data, arr)
        return self._native(out.view(arr.read_dtype).reshape(arr.shape))

    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        arr = self._entry(name)
        if arr.nbytes == 0:
            return
        itemsize = arr.read_dtype.itemsize
        per_chunk = max(itemsize, chunk_bytes // itemsize * itemsize)
        buf = aligned_empty(min(per_chunk, arr.nbytes))
        view = buf.data
        with self._values(arr) as f:
            done = 0
            while done < arr.nbytes:
                n = min(len(view), arr.nbytes - done)
                self._fill(f, view[:n], arr)
                done += n
                yield self._native(buf[:n].view(arr.read_dtype))

    def npz_members(self) -> tuple[str, ...]:
        return tuple(self._members)

    def close(self) -> None:
        for thing in (self._npz, self._outer):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._npz = None
        self._outer = None
        if self._archive is not None:
            self._archive.close()
        self._archive = None

