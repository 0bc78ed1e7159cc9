"""Which tensors a command looks at: ``--filter``, ``--exclude`` and ``--kind``, the same in every command.

``--filter PATTERN`` keeps the tensors whose key or variable matches; ``--exclude PATTERN`` (repeatable) drops the
tensors whose key or variable matches any; ``--kind KIND`` (repeatable) keeps the tensors of those kinds
(summary.KINDS: weights, optimizer, counters, bookkeeping, told by summary.classify_kinds). A pattern is a glob
when it holds a glob character (``*kernel*``), else a substring.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptcheck.errors import UsageError
from ckptcheck.records import TensorInfo

if TYPE_CHECKING:
    from ckptcheck.formats.interface import CheckpointReader


def name_matcher(pattern: str | None) -> Callable[[str], bool]:
    """A glob when the pattern has glob characters, else a substring test."""
    if not pattern:
        return lambda name: True
    if any(c in pattern for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: pattern in name


@dataclass(frozen=True)
class Selection:
    """``--filter``, ``--exclude`` and ``--kind`` together; the default selects everything."""

    filter: str | None = None
    exclude: tuple[str, ...] = ()
    kinds: frozenset[str] | None = None  # None: every kind

    @classmethod
    def of(cls, filter_: str | None = None, exclude: Sequence[str] | None = None,
           kinds: Sequence[str] | None = None) -> Selection:
        """From command-line values; an unknown kind is misuse."""
        from ckptcheck.summary import KINDS

        unknown = sorted(set(kinds or ()) - set(KINDS))
        if unknown:
            raise UsageError(f"unknown kind {unknown[0]!r}", hint=f"--kind takes {', '.join(KINDS)}")
        return cls(filter_ or None, tuple(exclude or ()), frozenset(kinds) if kinds else None)

    @property
    def everything(self) -> bool:
        return self.filter is None and not self.exclude and self.kinds is None

    def name_tests(self) -> tuple[Callable[[TensorInfo], bool], Callable[[TensorInfo], bool]]:
        """(passes --filter, hit by --exclude): each asked of a tensor's key and its variable."""
        keep = name_matcher(self.filter) if self.filter else None
        drops = [name_matcher(p) for p in self.exclude]

        def passes(t: TensorInfo) -> bool:
            return keep is None or keep(t.name) or (t.variable is not None and keep(t.variable))

        def excluded(t: TensorInfo) -> bool:
            return any(drop(t.name) or (t.variable is not None and drop(t.variable)) for drop in drops)

        return passes, excluded

    def by_names(self) -> Callable[[TensorInfo], bool]:
        """Whether a tensor passes --filter and --exclude (its key or its variable matching)."""
        keep = name_matcher(self.filter) if self.filter else None
        drops = [name_matcher(p) for p in self.exclude]

        def wanted(t: TensorInfo) -> bool:
            names = (t.name,) if t.variable is None else (t.name, t.variable)
            if keep is not None and not any(keep(n) for n in names):
                return False
            return not any(drop(n) for drop in drops for n in names)

        return wanted

    def apply(self, reader: CheckpointReader, tensors: Sequence[TensorInfo],
              kinds: Sequence[str] | None = None) -> tuple[list[TensorInfo], list[str] | None]:
        """The selected tensors, in order, and their kinds (None when none were asked for and none were needed).
        ``kinds``: the kinds of ``tensors``, when already told."""
        if self.kinds is not None and kinds is None:
            from ckptcheck.summary import classify_kinds

            kinds = classify_kinds(reader, tensors)
        if self.everything:
            return list(tensors), list(kinds) if kinds is not None else None
        wanted = self.by_names()
        if kinds is None:
            return [t for t in tensors if wanted(t)], None
        pairs = [(t, k) for t, k in zip(tensors, kinds, strict=True)
                 if wanted(t) and (self.kinds is None or k in self.kinds)]
        return [t for t, _ in pairs], [k for _, k in pairs]

    def describe(self) -> dict[str, Any] | None:
        """What a manifest records of the selection it was written with (None: every tensor)."""
        if self.everything:
            return None
        return {"filter": self.filter, "exclude": list(self.exclude),
                "kinds": sorted(self.kinds) if self.kinds is not None else None}

    @classmethod
    def recorded(cls, data: Any) -> Selection:
        """The selection a manifest records (``describe``'s dict), or everything."""
        if not isinstance(data, dict):
            return cls()
        kinds = data.get("kinds")
        return cls(data.get("filter") or None, tuple(data.get("exclude") or ()),
                   frozenset(kinds) if kinds is not None else None)

    def text(self) -> str:
        parts = []
        if self.kinds is not None:
            parts.append("--kind " + " --kind ".join(sorted(self.kinds)))
        if self.filter is not None:
            parts.append(f"--filter {self.filter}")
        parts += [f"--exclude {p}" for p in self.exclude]
        return " ".join(parts)
