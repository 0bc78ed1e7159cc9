"""What `generate` and `roundtrip` return: frozen dataclasses, rendered by ckptcheck.render and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from ckptcheck.initializers import DEFAULT_PLAN, InitPlan
from ckptcheck.model import TensorInfo

# The facts `roundtrip` establishes, in the order it reports them.
FACT_NAMES = ("values", "initializer", "optimizer_state", "step", "trainable", "architecture", "code")


@dataclass(frozen=True)
class GenerateOptions:
    """How `generate` builds, trains and saves a model (and how `roundtrip` rebuilds it)."""

    format: str
    layers: tuple[int, ...] = (64, 10)  # units of each Dense layer; the last is the output
    inputs: int = 100
    train_steps: int = 10
    optimizer: str = "adam"  # "sgd" or "adam"
    learning_rate: float = 0.01
    seed: int = 0
    init: InitPlan = DEFAULT_PLAN
    batch_size: int = 16


@dataclass(frozen=True)
class WrittenFile:
    path: str
    bytes: int


@dataclass(frozen=True)
class GenerateReport:
    """What `generate` wrote: the files, the checkpoint to pass to other commands, and its tensors."""

    options: GenerateOptions
    out: str  # as the user gave it
    location: str  # the checkpoint: a bundle prefix or a Keras file
    files: tuple[WrittenFile, ...]
    tensors: tuple[TensorInfo, ...]
    losses: tuple[float, ...]  # training loss at each step, before that step's update


@dataclass(frozen=True)
class Fact:
    """Whether a checkpoint records something, where, and the evidence (read from the files or measured)."""

    recorded: bool
    where: tuple[str, ...]
    evidence: str


@dataclass(frozen=True)
class TensorRoundTrip:
    """One stored tensor after restoring into every fresh model."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    restored_exactly: bool  # in every restore, the restored value's bits equal the stored bits
    max_abs_diff: float | None  # largest |restored - stored| over all restores; None when not comparable
    differed_before: int  # in how many restores the fresh model's value differed from the stored one
    problem: str | None = None  # why not restored exactly: missing, dtype, shape or values


@dataclass(frozen=True)
class RestoreRun:
    """One restore into a freshly built model."""

    label: str  # "sentinel" or "reseeded"
    init: str  # the fresh model's initializers, as a spec
    seed: int
    method: str  # the API that restored it
    notes: tuple[str, ...] = ()  # what the restore did beyond the plain call (measured)


@dataclass(frozen=True)
class RoundTripReport:
    format: str
    source: str  # the checkpoint restored from
    generated: bool  # True when roundtrip generated it, False for --from
    options: GenerateOptions
    tensors: tuple[TensorRoundTrip, ...]
    runs: tuple[RestoreRun, ...]
    facts: dict[str, Fact]
    kept: str | None = None  # the working directory, when kept

    @property
    def ok(self) -> bool:
        return bool(self.tensors) and all(t.restored_exactly for t in self.tensors)
