"""What `restore-check` returns: frozen dataclasses, rendered by the render package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (stats imports numpy)
    from ckptcheck.restore_check.keras3 import Keras3Report
    from ckptcheck.stats import TensorStats

# What a variable or a stored value is for: a model weight, optimizer state (slots, moments, the optimizer's own
# iteration count and hyperparameter variables), or a step counter (global_step, save_counter, a tracked step).
WEIGHT, OPTIMIZER, COUNTER = "weight", "optimizer", "counter"

# What happened to one model variable in the restore.
RESTORED = "restored"  # written by the restore, and equal to the stored value it came from
RESTORED_DIFFERENT = "restored-different"  # written, but equal to no stored value (converted, or corrupted)
MISMATCH = "mismatch"  # not written: the value it is looked up under has another dtype or shape
SKIPPED = "skipped"  # not written, although a value of its name, dtype and shape is stored
MISSING = "missing"  # not written: nothing is stored under the name it is looked up by


@dataclass(frozen=True)
class KeptValue:
    """What an unrestored variable is left holding: its initial value, described."""

    initializer: str | None  # "GlorotUniform(seed=None)", when the code that built it says (Keras layers)
    description: str  # "glorot_uniform draw (min -0.62, max 0.71, ...)", "constant 0.5"
    stats: TensorStats | None


@dataclass(frozen=True)
class VariableCheck:
    """One variable of the model, after the restore."""

    variable: str  # the model's name for it: a Keras variable path, else its object path from what FUNCTION returned
    kind: str  # WEIGHT, OPTIMIZER or COUNTER
    dtype: str
    shape: tuple[int, ...]
    status: str  # RESTORED, RESTORED_DIFFERENT, MISMATCH, SKIPPED or MISSING
    key: str | None  # the stored name the format looks it up by (None when it cannot say)
    source: str | None = None  # the stored name its restored value came from
    values_equal: bool | None = None  # restored: its value's bits equal the stored value's (read by ckptcheck)
    via: str | None = None  # "restore" or "rename map"
    reason: str | None = None  # why it was not restored, or what else is worth knowing
    kept: KeptValue | None = None  # for a variable not restored: what it holds instead
    name: str | None = None  # its own name (a Keras variable's path, a tf.Variable's name): what stored values'
    # `variable` is compared with
    source_variable: str | None = None  # the name `source` was saved under (its TensorInfo.variable)

    @property
    def from_another_name(self) -> bool:
        """Restored from a value saved under another variable's name (formats that match by path or position)."""
        return bool(self.restored and self.source_variable and self.name and self.source_variable != self.name
                    and not self.source_variable.startswith("("))

    @property
    def restored(self) -> bool:
        return self.status == RESTORED


@dataclass(frozen=True)
class StoredValueUse:
    """One value stored in the checkpoint, and which model variables took it."""

    key: str
    label: str  # a friendlier name: the object path of a TF2 key, else the key
    kind: str  # WEIGHT, OPTIMIZER or COUNTER
    dtype: str
    shape: tuple[int, ...]
    used_by: tuple[str, ...]  # variables restored from it ("(tf.train.Checkpoint) save_counter" for bookkeeping)
    note: str | None = None  # e.g. "has the name model/head/kernel looks for, but shape [4, 2] vs [5, 2]"
    variable: str | None = None  # the name the saving model knew it by (TensorInfo.variable)

    @property
    def consumed(self) -> bool:
        return bool(self.used_by)


@dataclass(frozen=True)
class Mismatch:
    """A variable and the stored value it is looked up by, which differ in dtype or shape."""

    variable: str
    key: str
    dtype: tuple[str, str]  # (model, checkpoint)
    shape: tuple[tuple[int, ...], tuple[int, ...]]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, (a, b) in (("dtype", self.dtype), ("shape", self.shape)) if a != b)


@dataclass(frozen=True)
class RenameSuggestion:
    """A variable that was not restored and the unused stored value saved under its name (or under its name with a
    layer renamed)."""

    variable: str
    variable_key: str | None  # the name the variable is looked up by
    key: str  # the stored value that probably belongs to it
    dtype: str
    shape: tuple[int, ...]
    score: float  # 1.0: every suggestion rests on names (kept for the JSON schema; it was a similarity)
    rename: tuple[str, str]  # the path components that differ: (in the checkpoint, in the model); ("", "") if none
    also: tuple[str, ...] = ()  # other stored values that fit as well as this one (always empty now)
    evidence: str = ""  # why: "the same name", "the same name after dense_1 -> head (2 values agree)"
    stored_variable: str | None = None  # the name the saving model knew the stored value by


@dataclass(frozen=True)
class RestoreStop:
    """The restore raised part-way (TensorFlow stops at the first dtype or shape mismatch) and left variables behind
    whose values are stored, fitting, under their own names (variables whose path leads to a value saved under
    another name are not counted here: they are problems of their own)."""

    variable: str | None  # the variable it stopped at, when its error names one
    key: str | None  # the stored value that variable is looked up by
    error: str  # what the restore raised
    left_behind: tuple[str, ...]  # variables stored with their dtype and shape that it never wrote


@dataclass(frozen=True)
class RestoreCheckReport:
    """What `restore-check` found: every model variable and every stored value, matched up."""

    checkpoint: str  # as the user gave it
    location: str  # the resolved prefix or file
    format: str
    model: str  # the --model argument
    model_kind: str  # what FUNCTION returned, described
    method: str  # the restore call that was measured
    built: tuple[str, ...]  # what was built before the restore (lazily created variables, optimizer state)
    restore_error: str | None  # the restore call raised this (type: message); the state after it is reported
    variables: tuple[VariableCheck, ...]
    values: tuple[StoredValueUse, ...]
    mismatches: tuple[Mismatch, ...]
    suggestions: tuple[RenameSuggestion, ...]
    notes: tuple[str, ...]  # measured side remarks (warnings the restore emitted, format behaviour)
    allow_unused: bool = False
    ignore_optimizer: bool = False
    applied_map: str | None = None  # --apply-rename-map FILE
    allow_missing: tuple[str, ...] = ()  # --allow-missing PATTERN: globs on variable names left out on purpose
    stopped: RestoreStop | None = None  # the restore raised part-way and left variables behind
    # Ways this format loads everything but the mismatched layers, each checked against TensorFlow/Keras by the tests.
    recipes: tuple[str, ...] = ()
    # A legacy .h5 restored into a Keras 3 model: what the installed Keras says of each layer of its config.
    keras3: Keras3Report | None = None

    def counts(self, kind: str) -> bool:
        """Whether variables and values of this kind decide the verdict."""
        return not (self.ignore_optimizer and kind in (OPTIMIZER, COUNTER))

    def allowed(self, v: VariableCheck) -> bool:
        """A variable left out on purpose (--allow-missing): a new head may be missing or resized."""
        from fnmatch import fnmatchcase

        return not v.restored and any(fnmatchcase(v.variable, p) for p in self.allow_missing)

    @property
    def not_restored(self) -> tuple[VariableCheck, ...]:
        return tuple(v for v in self.variables if not v.restored and self.counts(v.kind) and not self.allowed(v))

    @property
    def allowed_missing(self) -> tuple[VariableCheck, ...]:
        return tuple(v for v in self.variables if self.allowed(v))

    @property
    def unused(self) -> tuple[StoredValueUse, ...]:
        """Stored values no variable took, except those an allowed-missing variable looks for (the old head)."""
        skip = {v.key for v in self.allowed_missing if v.key is not None}
        return tuple(s for s in self.values if not s.consumed and self.counts(s.kind) and s.key not in skip)

    @property
    def ok(self) -> bool:
        # A restore that raised is a problem unless what it failed on was allowed to be missing and everything
        # else holds its stored value (a resized head left out on purpose).
        raised = self.restore_error is not None and not (self.allow_missing and self.allowed_missing)
        return not raised and not self.not_restored and (self.allow_unused or not self.unused)
