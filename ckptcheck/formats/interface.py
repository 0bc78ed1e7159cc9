"""The one face every format reader shows."""

from __future__ import annotations

import contextlib
import gc
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ckptcheck.errors import TensorNotFoundError, UsageError
from ckptcheck.records import CheckpointInfo, ObjectRef, TensorInfo

if TYPE_CHECKING:  # numpy is imported by the readers that produce arrays, not by `ckptcheck --version`
    import mmap

    import numpy as np

# Streaming reads hand out arrays of at most this many bytes, from one reused buffer. Small enough that a chunk
# is still in the CPU cache when it is checksummed and reduced: reading 1 GiB with crc32c took 0.12 s in 2 MiB
# chunks and 0.17 s in 8 MiB chunks here (bench/RESULTS.md).
DEFAULT_CHUNK_BYTES = 2 << 20
# Where a read buffer starts matters: the kernel copied into a buffer starting 16 bytes past a cache line (where
# malloc puts large blocks) at half the speed of an aligned one.
_ALIGN = 64


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects (index entries, listing rows).

    Each few hundred allocations trigger a collection that walks every live container; building 20,000 entries
    spent ~10 % of a listing there. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# numpy's limit on an array's dimensions; TensorFlow allows up to 254.
MAX_ARRAY_RANK = 64


def check_rank(shape: tuple[int, ...], *, path: str, tensor: str) -> None:
    """Refuse, as one clear error, to build an array of more dimensions than numpy can hold (digests, statistics
    and comparisons stream the values flat and need no such array)."""
    if len(shape) > MAX_ARRAY_RANK:
        from ckptcheck.errors import UnsupportedFormatError

        raise UnsupportedFormatError(
            f"the tensor has rank {len(shape)}; numpy arrays hold at most {MAX_ARRAY_RANK} dimensions", path=path,
            tensor=tensor, hint="manifest, verify, diff and --stats stream its values flat and still work")


def read_buffer(nbytes: int) -> mmap.mmap:
    """A page-aligned scratch buffer for readinto (an anonymous mapping: no numpy needed)."""
    import mmap

    return mmap.mmap(-1, max(nbytes, 1))


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialized uint8 array whose data starts on a cache-line boundary."""
    import numpy as np

    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes]


class CheckpointReader(ABC):
    """An open checkpoint. Reading never writes to the checkpoint's files."""

    format: str
    path: str

    @abstractmethod
    def info(self) -> CheckpointInfo:
        """The checkpoint and its tensor list; reads metadata only, never tensor values."""

    def tensors(self) -> tuple[TensorInfo, ...]:
        return self.info().tensors

    def tensor_info(self, name: str) -> TensorInfo:
        """The tensor stored under key ``name`` or, failing that, the one holding the variable ``name``."""
        by_name: dict[str, TensorInfo] | None = self.__dict__.get("_tensor_index")
        if by_name is None:
            by_name = self.__dict__["_tensor_index"] = {t.name: t for t in self.tensors()}
        found = by_name.get(name)
        if found is None:
            found = by_name[self.key_of(name)]
        return found

    def key_of(self, name: str) -> str:
        """The key of the tensor stored under ``name`` or, failing that, holding the variable ``name``
        (TensorInfo.variable). A variable several tensors hold (TensorFlow names every unnamed tf.Variable
        "Variable"; a Keras SavedModel export keeps two copies) names none of them: UsageError, listing the keys."""
        by_variable: dict[str, list[str]] | None = self.__dict__.get("_variable_index")
        if by_variable is None:
            by_variable = {}
            keys = set()
            for t in self.tensors():
                keys.add(t.name)
                if t.variable is not None:
                    by_variable.setdefault(t.variable, []).append(t.name)
            by_variable.update((k, [k]) for k in keys)  # a key is itself, whatever variable shares its spelling
            self.__dict__["_variable_index"] = by_variable
        found = by_variable.get(name)
        if found is None:
            raise self.not_found(name)
        if len(found) > 1:
            shown = ", ".join(found[:4]) + (f", ... {len(found) - 4} more" if len(found) > 4 else "")
            raise UsageError(f"{len(found)} tensors hold the variable {name!r}", path=self.path, tensor=name,
                             hint=f"pass one of their keys: {shown}")
        return found[0]

    def not_found(self, name: str) -> TensorNotFoundError:
        names = [n for t in self.tensors() for n in (t.name, t.variable) if n is not None]
        close = list(dict.fromkeys(n for n in names if name.lower() in n.lower()))[:5]
        hint = f"did you mean {', '.join(close)}?" if close else "run `ckptcheck inspect` to list the names"
        return TensorNotFoundError("no such tensor or variable in the checkpoint", path=self.path, tensor=name,
                                   hint=hint)

    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """The whole tensor, checked against its stored checksum where the format has one."""

    @abstractmethod
    def iter_chunks(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's elements as flat arrays in storage order, each valid only until the next is yielded.

        Memory stays bounded by ``chunk_bytes`` whatever the tensor's size (string tensors come whole).
        """

    def iter_c_order(self, name: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The tensor's elements in C order of the whole tensor, flat, each chunk valid until the next is yielded:
        digests, statistics and comparisons that must not depend on how a variable was partitioned use this.

        The default streams tensors stored in one piece and reads a partitioned one whole; readers that can stream
        slices in C order override it."""
        if self.tensor_info(name).slices:
            yield self.read(name).reshape(-1)
            return
        yield from self.iter_chunks(name, chunk_bytes)

    def read_ahead(self, names: Sequence[str], jobs: int, *, slices: bool = True) -> None:
        """The tensors ``names`` will be read next, in this order, each once: a reader that can fetches their bytes
        ahead, ``jobs`` ranges at a time (formats/prefetch.py). ``slices``: a partitioned variable is read slice
        by slice (verify) rather than in C order of the whole. The default does nothing."""
        return None

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray | None:
        """The whole tensor read into ``out`` (a uint8 buffer) as a flat array viewing it, when the reader can
        and it fits; None otherwise (the default: stream it with iter_chunks)."""
        return None

    def objects(self) -> tuple[ObjectRef, ...] | None:
        """For object-based checkpoints: every stored tensor with the object paths reaching it."""
        return None

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open
        pass

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
