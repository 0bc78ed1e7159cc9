"""`history DIR`: a training run read from the checkpoints it left behind — per checkpoint and per variable (or
layer), the L2 norm, the change from the previous checkpoint and the NaN/Inf counts; and the findings a person looks
for first: what never changed, where NaN/Inf began, what grew or shrank most, which checkpoint is damaged.

Three steps:

1. ``find_run``: the checkpoints of a directory — those its ``checkpoint`` state file names (with ``all_``, also
   those on disk it no longer names), or, without a state file, every checkpoint in it (bundle prefixes, V1
   checkpoints, Keras files).
2. Each checkpoint is opened and listed (``_list``): its step read from the file (a ``global_step`` or ``step``
   counter, else the optimizer's iterations, else the save counter, else the number in its name), and the variables
   of the kinds asked for (summary.classify's kinds), identified across checkpoints by ``variable``.
3. Each checkpoint is read once beside the one before it (``_measure``): the two checkpoints' chunks of a variable
   are streamed side by side (C order of the whole tensor, compare._aligned), so ``||w_t - w_{t-1}||`` is summed
   without holding either tensor; only the sums are kept. The pairs are independent: ``jobs`` of them run at once
   (threads: reading and numpy's reductions release the GIL). Each checkpoint is thus read twice (as the newer and
   then as the older of a pair), never N times.

A checkpoint that cannot be opened, or whose values fail their checksums, is named in a finding; the others are
still read, and a change is then measured from the last checkpoint that could be read.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from ckptcheck.errors import CheckpointNotFoundError, CkptcheckError, UsageError
from ckptcheck.formats import location as loc
from ckptcheck.summary import KIND_TITLES, KINDS, OPTIMIZER, WEIGHTS

if TYPE_CHECKING:
    import numpy as np

    from ckptcheck.compare import Scratch
    from ckptcheck.formats.interface import CheckpointReader

T = TypeVar("T")
SCHEMA = "ckptcheck.history/1"
# Where a checkpoint's step was read, in the order they are preferred: a step counter the run kept, the optimizer's
# iterations (its training step), the checkpoint's save counter (how many saves), the number in its name.
GLOBAL_STEP, ITERATIONS, SAVE_COUNTER, NAME = "global_step", "iterations", "save_counter", "name"
STEP_SOURCES = (GLOBAL_STEP, ITERATIONS, SAVE_COUNTER, NAME)
# Finding kinds; the first two are problems (exit 1).
UNREADABLE, DAMAGED, NONFINITE = "unreadable", "damaged", "nonfinite"
NEVER_CHANGED, GREW, SHRANK, PARTIAL, LEFT_OUT, SINGLE, EMPTY = (
    "never-changed", "grew", "shrank", "partial", "left-out", "single", "empty")
TOP = 3  # variables named as those whose norm grew (or shrank) most
NOTABLE = 0.01  # ... by at least this share of their first norm (a drift of 0.01 % is nobody's "most")
NAMES_SHOWN = 8  # names a finding's sentence lists before "and N more"

_ITERATION_NAMES = frozenset({"iteration", "iterations", "_iterations", "iter"})
_STEP_NAMES = frozenset({"global_step", "step"})
_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_KERAS_SUFFIXES = (".weights.json", ".weights.h5", ".keras", ".hdf5", ".h5")


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of the run, in step order."""

    path: str  # the prefix (or V1 file, shard pattern, Keras file)
    step: int | None
    step_source: str | None  # one of STEP_SOURCES; None: no step found
    counters: dict[str, int]  # every counter found: global_step, iterations, save_counter
    format: str | None  # None when it could not be opened
    named: bool | None  # named by the directory's state file; None: the directory has none
    error: str | None = None  # could not be opened or listed: why (its values are all left out)
    damaged: tuple[tuple[str, str], ...] = ()  # (variable, error) for each variable whose values could not be read

    @property
    def name(self) -> str:
        return loc.basename(self.path)

    @property
    def readable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Series:
    """One variable (or layer) across the run's checkpoints: each tuple has one entry per checkpoint, None where
    the variable is absent or could not be read (or, for a change, where there is nothing to compare with)."""

    name: str
    kind: str  # summary.KINDS
    dtype: str | None  # a variable's (as last stored); None for a layer
    shape: tuple[int, ...] | None
    variables: tuple[str, ...]  # a layer's variables; a variable: itself
    norm: tuple[float | None, ...]  # L2 norm of the finite values
    change: tuple[float | None, ...]  # ||w_t - w_prev|| over the elements finite in both
    relative: tuple[float | None, ...]  # change / norm (0.0 for no change; None where the norm is 0)
    nan: tuple[int | None, ...]
    inf: tuple[int | None, ...]
    same: tuple[bool | None, ...]  # every value's bits equal to the previous checkpoint's

    @property
    def first_nonfinite(self) -> int | None:
        """The index of the first checkpoint where it holds a NaN or an Inf."""
        for i, (n, f) in enumerate(zip(self.nan, self.inf, strict=True)):
            if (n or 0) + (f or 0):
                return i
        return None

    @property
    def never_changed(self) -> bool:
        """Compared at least once, and every value the same at every comparison."""
        compared = [s for s in self.same if s is not None]
        return bool(compared) and all(compared)


@dataclass(frozen=True)
class Finding:
    """One sentence of what the run shows. ``problem``: something is wrong (exit 1)."""

    kind: str
    problem: bool
    message: str
    names: tuple[str, ...] = ()  # the variables, layers or checkpoints it is about
    checkpoint: str | None = None  # the checkpoint it is at, when one
    step: int | None = None


@dataclass(frozen=True)
class RunPlan:
    """The checkpoints ``find_run`` found, oldest first as the state file lists them (or by name): each with
    whether the state file names it (None: there is none) and whether it is on disk."""

    directory: str
    entries: tuple[tuple[str, bool | None, bool], ...]  # (path, named, on disk)
    state_file: bool
    left_out: tuple[str, ...] = ()  # on disk, no longer named by the state file (read with all_)

    @property
    def paths(self) -> tuple[str, ...]:
        """The checkpoints on disk, to read."""
        return tuple(p for p, _named, there in self.entries if there)


@dataclass(frozen=True)
class HistoryReport:
    """The run: its checkpoints in step order, every variable's series and every layer's, and the findings
    (problems first). ``grouped``: the view the findings (and the text) are about is the layers'."""

    directory: str
    kinds: tuple[str, ...]
    grouped: bool
    checkpoints: tuple[RunCheckpoint, ...]
    variables: tuple[Series, ...]
    layers: tuple[Series, ...]
    findings: tuple[Finding, ...]
    state_file: bool
    filter: str | None = None

    @property
    def series(self) -> tuple[Series, ...]:
        return self.layers if self.grouped else self.variables

    @property
    def labels(self) -> tuple[str, ...]:
        """What names each checkpoint in a column: its step, or its name where the step is unknown or shared."""
        steps = [c.step for c in self.checkpoints]
        return tuple(str(c.step) if c.step is not None and steps.count(c.step) == 1 else c.name
                     for c in self.checkpoints)

    @property
    def span(self) -> str:
        """``steps 25 to 200`` (``step 25``) over the checkpoints read; "the run" when a step is unknown."""
        read = [self.checkpoints[i].step for i in self.readable]
        if not read or None in read:
            return "the run"
        return f"steps {read[0]} to {read[-1]}" if read[0] != read[-1] else f"step {read[0]}"

    @property
    def readable(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.checkpoints) if c.readable)

    @property
    def exit_code(self) -> int:
        """2 when no checkpoint could be read; 1 when a finding is a problem (NaN/Inf, a damaged or unreadable
        checkpoint); else 0."""
        if not self.readable:
            return 2
        return 1 if any(f.problem for f in self.findings) else 0


# --- 1. the checkpoints of a directory -------------------------------------------------------------------------


def find_run(directory: str, *, all_: bool = False) -> RunPlan:
    """The checkpoints in ``directory``: those its state file names (``all_``: and those it no longer names), or
    every checkpoint in it when it has no state file."""
    from ckptcheck.formats.resolve import STATE_FILE, checkpoints_in, list_state

    if not loc.isdir(directory):
        if loc.exists(directory):
            raise UsageError("history reads a directory of checkpoints", path=directory,
                             hint="pass the model_dir, the CheckpointManager directory or a directory of checkpoints")
        raise CheckpointNotFoundError("no such directory", path=directory)
    if loc.isfile(loc.join(directory, STATE_FILE)):
        listed = list_state(directory)
        entries = tuple((e.prefix, e.named, e.exists) for e in listed if e.named or all_)
        left_out = () if all_ else tuple(e.prefix for e in listed if not e.named)
        plan = RunPlan(directory, entries, True, left_out)
    else:
        plan = RunPlan(directory, tuple((p, None, True) for p in checkpoints_in(directory)), False)
    if not plan.entries:
        raise CheckpointNotFoundError("no checkpoint in this directory", path=directory,
                                      hint="history reads a model_dir, a CheckpointManager directory, or a directory "
                                           "of checkpoint prefixes or Keras files")
    return plan


# --- 2. each checkpoint listed: its step and its variables -------------------------------------------------------


@dataclass(frozen=True)
class _Var:
    key: str
    dtype: str
    shape: tuple[int, ...]
    kind: str


@dataclass(frozen=True)
class _Listed:
    checkpoint: RunCheckpoint
    variables: dict[str, _Var]


def _open(path: str) -> CheckpointReader:
    from ckptcheck.formats.open import open_resolved
    from ckptcheck.formats.resolve import resolve

    return open_resolved(resolve(path), path=path)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


def name_number(path: str) -> int | None:
    """The step a checkpoint's name carries: ``ckpt-7`` and ``model.ckpt-7`` 7, ``weights_07.weights.h5`` 7 (the
    last number of its name, without the Keras suffix)."""
    from ckptcheck.formats.resolve import step_of

    step = step_of(path)
    if step is not None:
        return step
    name = loc.basename(path)
    for suffix in _KERAS_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    m = _NUMBER.search(name)
    return int(m.group(1)) if m else None


def _counter_source(name: str, variable: str | None, kind: str) -> str | None:
    from ckptcheck.diff import normalize_name

    names = {normalize_name(name)} | ({variable} if variable else set())
    lasts = {n.rsplit("/", 1)[-1] for n in names}
    if kind == OPTIMIZER and lasts & _ITERATION_NAMES:
        return ITERATIONS
    if "save_counter" in names or variable == "(save counter)":
        return SAVE_COUNTER
    if kind != OPTIMIZER and names & _STEP_NAMES:
        return GLOBAL_STEP
    return None


def _list(path: str, named: bool | None, kinds: tuple[str, ...], match: Callable[[str], bool]) -> _Listed:
    from ckptcheck.diff import variable_of
    from ckptcheck.formats.tensorflow import dtypes
    from ckptcheck.summary import classify

    def unreadable(error: str) -> _Listed:
        return _Listed(RunCheckpoint(path, None, None, {}, None, named, error), {})

    try:
        with _open(path) as reader:
            info = reader.info()
            counters: dict[str, int] = {}
            selected: dict[str, _Var] = {}
            # A variable several tensors hold (two layers both named `kernel` in a TF2 checkpoint of unnamed
            # Keras layers) identifies none of them: each is followed by its key, as diff pairs them.
            held = Counter(variable_of(t) for t in info.tensors)
            for t, (kind, _group) in zip(info.tensors, classify(reader, info.tensors), strict=True):
                if not t.shape and t.dtype.startswith(("int", "uint")):
                    source = _counter_source(t.name, t.variable, kind)
                    if source is not None and source not in counters:
                        # A counter that cannot be read gives no step (its damage shows where it is selected).
                        with contextlib.suppress(CkptcheckError, OSError, ValueError, IndexError):
                            counters[source] = int(reader.read(t.name).reshape(-1)[0])
                dtype = dtypes.BY_NAME.get(t.dtype)
                if kind not in kinds or dtype is None or dtype.kind in ("string", "other"):
                    continue
                variable = variable_of(t)
                if match(variable) or match(t.name):
                    selected.setdefault(variable if held[variable] == 1 else t.name,
                                        _Var(t.name, t.dtype, t.shape, kind))
            fmt = info.format
    except (CkptcheckError, OSError) as exc:
        return unreadable(_error_text(exc))
    step, source = next(((counters[s], s) for s in STEP_SOURCES if s in counters), (None, None))
    if step is None:
        step = name_number(path)
        source = NAME if step is not None else None
    return _Listed(RunCheckpoint(path, step, source, counters, fmt, named), selected)


# --- 3. each checkpoint read beside the one before it -------------------------------------------------------------

_CUR, _PREV = "current", "previous"
# Scratch slots: the difference of two chunks in float64, the bytes read of each checkpoint.
_DELTA, _READ_CUR, _READ_PREV = range(3)


class _SideError(Exception):
    """A read failed on one side of a pair (the current checkpoint or the previous one)."""

    def __init__(self, side: str, error: BaseException) -> None:
        super().__init__(_error_text(error))
        self.side = side


def _side(chunks: Iterator[np.ndarray], side: str) -> Iterator[np.ndarray]:
    try:
        yield from chunks
    except (CkptcheckError, OSError, ValueError) as exc:
        raise _SideError(side, exc) from None


@dataclass
class _Sums:
    sq: float = 0.0  # sum of squares of the finite values
    nan: int = 0
    inf: int = 0
    delta_sq: float | None = None  # sum of squared differences from the previous checkpoint (None: not compared)
    same: bool | None = None
    compared: int = 0  # elements finite on both sides (or the same bits), whose differences delta_sq sums


def _numeric(chunk: np.ndarray) -> np.ndarray:
    """A chunk numpy can widen to float64: |x| for complex, bytes for bool, float32 for bfloat16 and friends."""
    import numpy as np

    kind = chunk.dtype.kind
    if kind == "c":
        return np.abs(chunk)  # type: ignore[no-any-return]
    if kind == "b":
        return chunk.view(np.uint8)
    if kind == "V" or chunk.dtype.name not in np.sctypeDict:
        return chunk.astype(np.float32)
    return chunk


def _squares(x: np.ndarray) -> float:
    """The sum of squares in float64, in one pass that widens as it goes (einsum's own loop: np.dot would call a
    threaded BLAS, 100x slower on a busy machine, stats.py measured)."""
    import numpy as np

    return float(np.einsum("i,i->", x, x, dtype=np.float64, casting="unsafe"))


def _add(sums: _Sums, cur: np.ndarray, prev: np.ndarray | None, scratch: Scratch) -> None:
    """One chunk of the current checkpoint's values (and the same elements of the previous checkpoint's)."""
    import numpy as np

    from ckptcheck.compare import same_bytes

    n = cur.size
    if n == 0:
        return
    same = prev is not None and same_bytes(cur, prev)
    if prev is not None and not same:
        sums.same = False
    values = _numeric(cur)
    finite = values
    if values.dtype.kind == "f":
        lo, hi = values.min(), values.max()  # NaN propagates through both: finite extremes prove a finite chunk
        if not (math.isfinite(lo) and math.isfinite(hi)):
            sums.nan += int(np.count_nonzero(np.isnan(values)))
            sums.inf += int(np.count_nonzero(np.isinf(values)))
            finite = values[np.isfinite(values)]
    sums.sq += _squares(finite)
    if prev is None:
        return
    if same:
        sums.delta_sq = sums.delta_sq or 0.0
        sums.compared += n
        return
    delta = np.subtract(values, _numeric(prev), out=scratch.get(np.dtype(np.float64), n, _DELTA), dtype=np.float64,
                        casting="unsafe")  # finite exactly where both sides are
    if not math.isfinite(float(delta.max()) + float(delta.min())):
        delta = delta[np.isfinite(delta)]
    sums.delta_sq = (sums.delta_sq or 0.0) + _squares(delta)
    sums.compared += delta.size


def _whole(reader: CheckpointReader, key: str, scratch: Scratch, slot: int, chunk_bytes: int) -> np.ndarray | None:
    """A tensor small enough read whole into a reused buffer, where the reader can (most of a model's tensors)."""
    import numpy as np

    info = reader.tensor_info(key)
    if info.slices or info.nbytes > chunk_bytes:
        return None
    return reader.read_into(key, scratch.get(np.dtype(np.uint8), info.nbytes, slot))


def _sums_of(cur: CheckpointReader, key: str, prev: CheckpointReader | None, prev_key: str | None,
             scratch: Scratch, chunk_bytes: int) -> _Sums:
    """One variable's sums in the current checkpoint, and against the previous one when given: both streamed side
    by side, chunk against chunk of the same elements."""
    from ckptcheck.compare import aligned_chunks

    sums = _Sums(same=True if prev is not None else None)
    try:
        whole = _whole(cur, key, scratch, _READ_CUR, chunk_bytes)
    except (CkptcheckError, OSError, ValueError) as exc:
        raise _SideError(_CUR, exc) from None
    if prev is None or prev_key is None:
        for chunk in [whole] if whole is not None else _side(cur.iter_c_order(key, chunk_bytes), _CUR):
            _add(sums, chunk, None, scratch)
        return sums
    try:
        before = _whole(prev, prev_key, scratch, _READ_PREV, chunk_bytes) if whole is not None else None
    except (CkptcheckError, OSError, ValueError) as exc:
        raise _SideError(_PREV, exc) from None
    if whole is not None and before is not None:
        _add(sums, whole, before, scratch)
        return sums
    chunks = _side(cur.iter_c_order(key, chunk_bytes), _CUR)
    earlier = _side(prev.iter_c_order(prev_key, chunk_bytes), _PREV)
    for then, now in aligned_chunks(earlier, chunks):
        _add(sums, now, then, scratch)
    return sums


@dataclass(frozen=True)
class _Measured:
    sums: dict[str, _Sums]
    errors: dict[str, str]  # variable -> why its values could not be read
    error: str | None = None  # the checkpoint could not be opened


def _measure(cur: _Listed, prev: _Listed | None, chunk_bytes: int) -> _Measured:
    """Every selected variable of ``cur``, each against ``prev``'s where both hold it with one shape."""
    from ckptcheck.compare import Scratch

    scratch = Scratch()
    sums: dict[str, _Sums] = {}
    errors: dict[str, str] = {}
    try:
        reader = _open(cur.checkpoint.path)
    except (CkptcheckError, OSError) as exc:
        return _Measured({}, {}, _error_text(exc))
    before: CheckpointReader | None = None
    with reader:
        if prev is not None:
            try:
                before = _open(prev.checkpoint.path)
            except (CkptcheckError, OSError):
                before = None  # named where it was listed; here its changes are unknown
        try:
            for variable, v in cur.variables.items():
                p = prev.variables.get(variable) if prev is not None and before is not None else None
                if p is not None and p.shape != v.shape:
                    p = None
                try:
                    sums[variable] = _sums_of(reader, v.key, before if p else None, p.key if p else None, scratch,
                                              chunk_bytes)
                except _SideError as exc:
                    if exc.side == _CUR:
                        errors[variable] = str(exc)
                        continue
                    try:  # the previous checkpoint's values are damaged: this one's still count
                        sums[variable] = _sums_of(reader, v.key, None, None, scratch, chunk_bytes)
                    except _SideError as again:
                        errors[variable] = str(again)
        finally:
            if before is not None:
                before.close()
    return _Measured(sums, errors)


def _in_parallel(work: Sequence[Callable[[], T]], jobs: int, on_done: Callable[[], None] | None) -> list[T]:
    """Each callable's result, in order; ``jobs`` at a time on threads."""
    if jobs <= 1 or len(work) <= 1:
        results = []
        for w in work:
            results.append(w())
            if on_done is not None:
                on_done()
        return results
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="ckptcheck-history")
    try:
        futures = [pool.submit(w) for w in work]
        for future in as_completed(futures):
            future.result()  # the first failure stops everything
            if on_done is not None:
                on_done()
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- the report --------------------------------------------------------------------------------------------------


def read_history(
    plan: RunPlan, *, kinds: Sequence[str] = (WEIGHTS,), group: bool = False, filter_: str | None = None,
    jobs: int = 1, chunk_bytes: int | None = None, on_checkpoint: Callable[[], None] | None = None,
) -> HistoryReport:
    """The run ``plan`` names, read. ``on_checkpoint`` is called as each checkpoint has been listed and as each
    has been read (a progress bar: 2 calls per checkpoint)."""
    from ckptcheck.formats.interface import DEFAULT_CHUNK_BYTES
    from ckptcheck.listing import name_matcher

    chosen = tuple(k for k in KINDS if k in kinds)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not chosen:
        raise UsageError(f"unknown kind {', '.join(unknown) or '(none)'}", hint=f"kinds: {', '.join(KINDS)}")
    match = name_matcher(filter_)
    gone = "named by the state file, and not on disk"
    work = [lambda p=path, n=named: _list(p, n, chosen, match) for path, named, there in plan.entries if there]
    done = iter(_in_parallel(work, jobs, on_checkpoint))
    listed = [next(done) if there else _Listed(RunCheckpoint(path, None, None, {}, None, named, gone), {})
              for path, named, there in plan.entries]
    listed = _in_step_order(listed)
    readable = [i for i, x in enumerate(listed) if x.checkpoint.readable]
    size = chunk_bytes or DEFAULT_CHUNK_BYTES
    pairs = [(i, listed[i], listed[readable[j - 1]] if j else None) for j, i in enumerate(readable)]
    measure = [lambda c=cur, p=prev: _measure(c, p, size) for _i, cur, prev in pairs]
    measured: dict[int, _Measured] = {}
    for (i, _cur, _prev), m in zip(pairs, _in_parallel(measure, jobs, on_checkpoint), strict=True):
        measured[i] = m
    checkpoints = []
    for i, x in enumerate(listed):
        c = x.checkpoint
        found = measured.get(i)
        if found is not None and found.error is not None:
            c = replace(c, error=found.error)
        elif found is not None and found.errors:
            c = replace(c, damaged=tuple(sorted(found.errors.items())))
        checkpoints.append(c)
    variables = _variable_series(listed, measured)
    layers = _layer_series(variables)
    report = HistoryReport(plan.directory, chosen, group, tuple(checkpoints), variables, layers, (),
                           plan.state_file, filter_)
    return replace(report, findings=tuple(findings(report, plan)))


class _Columns:
    """A series' tuples, built one checkpoint at a time."""

    def __init__(self) -> None:
        self.norm: list[float | None] = []
        self.change: list[float | None] = []
        self.relative: list[float | None] = []
        self.nan: list[int | None] = []
        self.inf: list[int | None] = []
        self.same: list[bool | None] = []

    def absent(self) -> None:
        self.add(None, None, None, None, None)

    def add(self, norm: float | None, change: float | None, nan: int | None, inf: int | None,
            same: bool | None) -> None:
        self.norm.append(norm)
        self.change.append(change)
        relative = None
        if change is not None and norm is not None:
            relative = 0.0 if change == 0 else change / norm if norm > 0 else None
        self.relative.append(relative)
        self.nan.append(nan)
        self.inf.append(inf)
        self.same.append(same)

    def series(self, name: str, kind: str, dtype: str | None, shape: tuple[int, ...] | None,
               variables: tuple[str, ...]) -> Series:
        return Series(name, kind, dtype, shape, variables, tuple(self.norm), tuple(self.change),
                      tuple(self.relative), tuple(self.nan), tuple(self.inf), tuple(self.same))


def _in_step_order(listed: list[_Listed]) -> list[_Listed]:
    """The checkpoints that could be read by step (then in the plan's order); each that could not (its step
    unknown) right after the one the plan lists before it."""
    order = sorted((i for i, x in enumerate(listed) if x.checkpoint.readable),
                   key=lambda i: (listed[i].checkpoint.step is None, listed[i].checkpoint.step or 0, i))
    for i, x in enumerate(listed):
        if not x.checkpoint.readable:
            before = [j for j in order if j < i]
            order.insert(order.index(max(before)) + 1 if before else 0, i)
    return [listed[i] for i in order]


def _variable_series(listed: Sequence[_Listed], measured: dict[int, _Measured]) -> tuple[Series, ...]:
    from ckptcheck.order import natural_sorted

    found: dict[str, _Var] = {}
    kinds: dict[str, str] = {}
    for x in listed:
        for variable, v in x.variables.items():
            found[variable] = v  # the last checkpoint's dtype and shape
            kinds.setdefault(variable, v.kind)
    out = []
    for variable in natural_sorted(found, str):
        columns = _Columns()
        for i in range(len(listed)):
            m = measured.get(i)
            s = m.sums.get(variable) if m is not None else None
            if s is None:
                columns.absent()
                continue
            # No element finite on both sides (and not the same bits): no change to measure.
            measurable = s.delta_sq is not None and (s.compared or s.same)
            change = math.sqrt(s.delta_sq) if measurable and s.delta_sq is not None else None
            columns.add(math.sqrt(s.sq), change, s.nan, s.inf, s.same)
        v = found[variable]
        out.append(columns.series(variable, kinds[variable], v.dtype, v.shape, (variable,)))
    return tuple(out)


def layer_of(variable: str) -> str:
    """The layer (or object) holding a variable: its name without the last part; a top-level variable is its own."""
    head, sep, _tail = variable.rpartition("/")
    return head if sep and head else variable


def _layer_series(variables: Sequence[Series]) -> tuple[Series, ...]:
    """Each layer's series from its variables': the norm of all its values together (sqrt of the sum of the
    squared norms), likewise the change; counts summed; the same when every variable is."""
    from ckptcheck.order import natural_sorted

    by_layer: dict[tuple[str, str], list[Series]] = {}
    for s in variables:
        by_layer.setdefault((layer_of(s.name), s.kind), []).append(s)
    out = []
    for (layer, kind), members in by_layer.items():
        columns = _Columns()
        for i in range(len(members[0].norm)):
            here = [s for s in members if s.norm[i] is not None]
            if not here:
                columns.absent()
                continue
            changes = [s.change[i] for s in here]
            change = math.sqrt(sum(c * c for c in changes if c is not None)) if None not in changes else None
            sames = [s.same[i] for s in here]
            columns.add(math.sqrt(sum((s.norm[i] or 0.0) ** 2 for s in here)), change,
                        sum(s.nan[i] or 0 for s in here), sum(s.inf[i] or 0 for s in here),
                        False if False in sames else None if None in sames else True)
        name = layer if sum(1 for (other, _k) in by_layer if other == layer) == 1 else f"{layer} ({kind})"
        out.append(columns.series(name, kind, None, None, tuple(s.name for s in members)))
    return tuple(natural_sorted(out, lambda s: s.name))


# --- findings ----------------------------------------------------------------------------------------------------


def at(c: RunCheckpoint) -> str:
    """``step 160 (ckpt-7)``, or the checkpoint's name alone when it has no step."""
    return f"step {c.step} ({c.name})" if c.step is not None else c.name


def listed_names(names: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _nonfinite_text(s: Series, i: int) -> str:
    parts = [f"{s.nan[i]} NaN" if s.nan[i] else "", f"{s.inf[i]} Inf" if s.inf[i] else ""]
    return f"{s.name} ({', '.join(p for p in parts if p)})"


def findings(report: HistoryReport, plan: RunPlan | None = None) -> list[Finding]:
    """The findings, problems first: unreadable and damaged checkpoints, where NaN/Inf began; then what never
    changed, what grew and shrank most, what is not in every checkpoint, and what was left unread."""
    cps = report.checkpoints
    series = report.series
    what = "layer" if report.grouped else "variable"
    out: list[Finding] = []
    for c in cps:
        if c.error is not None:
            out.append(Finding(UNREADABLE, True, f"{at(c)} could not be read: {c.error}; the other checkpoints "
                                                 "were read.", (c.name,), c.name, c.step))
        elif c.damaged:
            names = [v for v, _e in c.damaged]
            out.append(Finding(DAMAGED, True, f"{at(c)} is damaged: the values of {_plural(len(names), 'variable')} "
                                              f"could not be read ({listed_names(names)}): {c.damaged[0][1]}.",
                               tuple(names), c.name, c.step))
    by_first: dict[int, list[Series]] = {}
    for s in series:
        first = s.first_nonfinite
        if first is not None:
            by_first.setdefault(first, []).append(s)
    for n, i in enumerate(sorted(by_first)):
        c, hit = cps[i], by_first[i]
        listed = listed_names([_nonfinite_text(s, i) for s in hit])
        if n == 0:
            message = f"NaN/Inf first appear at {at(c)}, in {listed}."
        else:
            message = f"NaN/Inf reach {_plural(len(hit), what)} more at {at(c)}: {listed}."
        out.append(Finding(NONFINITE, True, message, tuple(s.name for s in hit), c.name, c.step))
    readable = report.readable
    if readable and not series:
        kinds = " or ".join(KIND_TITLES[k] for k in report.kinds)
        matching = f" matching {report.filter!r}" if report.filter else ""
        out.append(Finding(EMPTY, False, f"No variable of the {kinds}{matching} in these checkpoints."))
    if len(readable) == 1:
        out.append(Finding(SINGLE, False, f"Only one checkpoint could be read, {at(cps[readable[0]])}: no change to "
                                          "measure."))
    span = f" ({report.span})" if report.span != "the run" else ""
    # What holds NaN/Inf is left to its own finding (a run gone NaN stops changing, every value NaN).
    frozen = [s for s in series if s.never_changed and s.first_nonfinite is None]
    if frozen and len(frozen) == len(series):
        out.append(Finding(NEVER_CHANGED, False, f"No {what} changed across the {len(readable)} checkpoints"
                                                 f"{span}: every value is the same in each.",
                           tuple(s.name for s in frozen)))
    elif frozen:
        out.append(Finding(NEVER_CHANGED, False,
                           f"{_plural(len(frozen), what)} never changed across the {len(readable)} checkpoints"
                           f"{span}: {listed_names([s.name for s in frozen])} — frozen (trainable=False), or never "
                           "reached by the loss.", tuple(s.name for s in frozen)))
    ratios = []
    for s in series:
        present = [i for i in readable if s.norm[i] is not None]
        if len(present) < 2 or s.never_changed:
            continue
        if any((s.nan[i] or 0) + (s.inf[i] or 0) for i in (present[0], present[-1])):
            continue  # its norm counts the finite values only: NaN/Inf have their own finding
        w0, w1 = s.norm[present[0]], s.norm[present[-1]]
        if w0 and w1 is not None and w1 != w0:
            ratios.append((w1 / w0, s, w0, w1))
    grew = sorted((r for r in ratios if r[0] >= 1 + NOTABLE), key=lambda r: -r[0])[:TOP]
    shrank = sorted((r for r in ratios if r[0] <= 1 - NOTABLE), key=lambda r: r[0])[:TOP]
    for kind, chosen, verb in ((GREW, grew, "grew"), (SHRANK, shrank, "shrank")):
        if chosen:
            text = ", ".join(f"{s.name} {_num(w0)} → {_num(w1)} ({ratio_text(r)})" for r, s, w0, w1 in chosen)
            out.append(Finding(kind, False, f"Norms {verb} most{span}: {text}.", tuple(r[1].name for r in chosen)))
    partial = [s for s in series if sum(1 for i in readable if s.norm[i] is not None) < len(readable)
               and not any(v in dict(cps[i].damaged) for v in s.variables for i in readable)]
    if partial and len(readable) > 1:
        shown = [f"{s.name} (in {sum(1 for i in readable if s.norm[i] is not None)} of {len(readable)})"
                 for s in partial]
        out.append(Finding(PARTIAL, False, f"{_plural(len(partial), what)} not in every checkpoint read: "
                                           f"{listed_names(shown)}.", tuple(s.name for s in partial)))
    if plan is not None and plan.left_out:
        names = [loc.basename(p) for p in plan.left_out]
        out.append(Finding(LEFT_OUT, False, f"{_plural(len(names), 'checkpoint')} on disk the state file no longer "
                                            f"names left out ({listed_names(names)}): --all reads them.",
                           tuple(names)))
    return out


def _num(x: float) -> str:
    return f"{x:.4g}"


def ratio_text(ratio: float) -> str:
    """A ratio of norms as a person reads it: ``×3.2`` when large, ``+4.1 %`` / ``-0.03 %`` when near 1."""
    if 0.5 <= ratio <= 2:
        return f"{(ratio - 1) * 100:+.2g} %"
    return f"×{ratio:.3g}"
