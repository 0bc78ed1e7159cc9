"""What `verify` looks at beyond checksums: which tensors (``--kind``, ``--exclude``, and a manifest's own
selection), their kinds and variables, and (``--finite``) whether every floating-point value is finite.

A plain ``verify`` has no scope: it classifies nothing and reads values only as its checksums need.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckptcheck.pairing import named
from ckptcheck.records import TensorInfo
from ckptcheck.selection import Selection

if TYPE_CHECKING:
    import numpy as np

    from ckptcheck.formats.interface import CheckpointReader


@dataclass(frozen=True)
class NonFinite:
    """A floating-point tensor holding NaN or Inf (``verify --finite``)."""

    key: str
    variable: str | None
    kind: str | None
    count: int  # elements
    nan: int
    inf: int

    @property
    def text(self) -> str:
        counts = [f"{n} {what}" for n, what in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return f"{' and '.join(counts)} of {self.count} elements"


def floating(dtype: str) -> bool:
    """Whether a dtype holds floating-point values (or complex ones): what can be NaN or Inf."""
    from ckptcheck.formats.tensorflow import dtypes

    found = dtypes.BY_NAME.get(dtype)
    return found is not None and found.kind in ("float", "complex")


def count_nonfinite(chunks: Iterable[np.ndarray]) -> tuple[int, int, int]:
    """(elements, NaN, Inf) over a tensor's chunks."""
    from ckptcheck.compare import nonfinite_counts

    count = nan = inf = 0
    for chunk in chunks:
        count += chunk.size
        n, i = nonfinite_counts(chunk)
        nan += n
        inf += i
    return count, nan, inf


@dataclass
class Scope:
    """The tensors verify checks and what it learns of them beyond checksums."""

    selections: Sequence[Selection] = ()  # each must select a tensor (the command's, the manifest's)
    finite: bool = False  # --finite: count NaN and Inf in every floating-point tensor
    kinds: dict[str, str] = field(default_factory=dict)  # key -> kind, of the tensors checked
    variables: dict[str, str | None] = field(default_factory=dict)  # key -> variable, of the tensors checked
    skipped: list[TensorInfo] = field(default_factory=list)  # the tensors the selections left out
    nonfinite: list[NonFinite] = field(default_factory=list)
    finite_checked: int = 0  # floating-point tensors counted

    def select(self, reader: CheckpointReader, tensors: Sequence[TensorInfo]) -> list[TensorInfo]:
        """The tensors to check, of ``tensors``; their kinds are kept."""
        from ckptcheck.summary import classify_kinds

        every = reader.tensors()
        kinds = classify_kinds(reader, every)
        kept = {t.name for t in tensors}
        chosen, chosen_kinds = [t for t in every if t.name in kept], [k for t, k in zip(every, kinds, strict=True)
                                                                       if t.name in kept]
        for selection in self.selections:
            chosen, picked = selection.apply(reader, chosen, chosen_kinds)
            chosen_kinds = picked if picked is not None else chosen_kinds
        self.kinds = {t.name: k for t, k in zip(chosen, chosen_kinds, strict=True)}
        chosen_names = {t.name for t in chosen}
        self.skipped = [t for t in every if t.name in kept and t.name not in chosen_names]
        self.variables = {t.name: named(t) for t in chosen}
        return chosen

    def counts(self, reader: CheckpointReader, t: TensorInfo) -> bool:
        """Count NaN and Inf in ``t`` (its checksums checked on the way); False when it is not floating-point."""
        if not (self.finite and floating(t.dtype)):
            return False
        count, nan, inf = count_nonfinite(reader.iter_c_order(t.name))
        self.record(t, count, nan, inf)
        return True

    def record(self, t: TensorInfo, count: int, nan: int, inf: int) -> None:
        if not (self.finite and floating(t.dtype)):
            return
        self.finite_checked += 1
        if nan or inf:
            self.nonfinite.append(NonFinite(t.name, named(t), self.kinds.get(t.name), count, nan, inf))

    def recorded(self, t: TensorInfo, record: dict[str, Any]) -> None:
        """What a manifest record (verify --against) says of ``t``'s NaN and Inf."""
        stats = record.get("stats") or {}
        self.record(t, int(stats.get("count") or 0), int(stats.get("nan") or 0), int(stats.get("inf") or 0))
