"""What `generate`, `roundtrip` and `explain` return: frozen dataclasses, rendered by the render package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ckptcheck.lab.initializers import DEFAULT_PLAN, InitPlan
from ckptcheck.records import TensorInfo

if TYPE_CHECKING:  # (stats imports numpy)
    pass

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


# --- explain ---

VERDICTS = ("true", "false", "depends")


@dataclass(frozen=True)
class Question:
    """A claim about initializers and checkpoints that `explain` settles by experiment."""

    number: int
    slug: str  # the name to ask for it by
    claim: str
    experiment: str  # what is run to settle it, in a sentence


@dataclass(frozen=True)
class Evidence:
    """One experiment or reading behind an answer: what was done, what it showed, its numbers and its files."""

    title: str
    text: str  # what it showed, in words, with the numbers measured
    figures: dict[str, object]  # the key numbers, by name (JSON-ready)
    rows: tuple[dict[str, object], ...] = ()  # a table, one dict per row, the same keys in each
    files: tuple[str, ...] = ()  # the saved files it inspected, relative to the answer's working directory
    columns: tuple[str, ...] = ()  # the row keys a text table shows (all when empty); JSON carries every key


@dataclass(frozen=True)
class Answer:
    """A question's verdict, derived from its experiment's runs, and the evidence."""

    question: Question
    verdict: str  # "true", "false" or "depends" (the claim holds, does not, or depends on `depends_on`)
    depends_on: str | None
    conclusion: str  # the answer in a few sentences, with the figures that settle it
    evidence: tuple[Evidence, ...]
    seconds: float = 0.0  # how long the experiment took
    kept: str | None = None  # the working directory with the saved files, when kept
