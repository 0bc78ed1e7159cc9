"""Which tensor of A is which tensor of B: paired by the names the model knows them by.

A tensor's identity is its ``variable`` (TensorInfo.variable: Keras's variable path, a TF2 object graph's saved
name, a TF1 variable's name) wherever no other tensor on its side holds that variable. This holds within one format
as across formats: in an object-based checkpoint of a Keras model the keys are positions (a trained kernel is stored
as ``optimizer/_trainable_variables/14``), and freezing one layer moves every later variable to another key. Keys
pair only what has no such name on at least one side: tensors without a variable, a variable named by its position
(``adam/vars/3``: the file does not say which), and variables that several tensors hold (TensorFlow names every
unnamed ``tf.Variable`` "Variable"); two tensors with names of their own never pair by key. Where one side holds a
variable several times and the other once (a Keras SavedModel export stores each variable twice), every copy pairs
with the one. What is still unpaired pairs by its key without ``/.ATTRIBUTES/VARIABLE_VALUE`` and ``:0``, one to
one, by the same rule.

A variable stored under another key in B than in A (within one key layout) is a storage fact, reported as
``moved``, never as a change of the model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ckptcheck.formats.tensorflow.keys import VALUE_SUFFIX
from ckptcheck.records import KERAS, KERAS_WEIGHTS, TensorInfo

# A Keras 3 tensor whose variable name the file does not determine is named by position: <layer>/vars/<i>.
_POSITIONAL = re.compile(r"(^|/)vars/\d+$")
# An optimizer's step counter names the optimizer (adam/iteration; tf_keras: Adam/iter).
_ITERATION = re.compile(r"^(.+)/(iteration|iterations|iter)$")
_TF_OUTPUT_SUFFIX = re.compile(r":\d+$")
# Formats whose keys are built alike: a .keras archive's model.weights.h5 is laid out as a .weights.h5.
_KEY_FAMILY = {KERAS: KERAS_WEIGHTS}

Pairs = list[tuple[TensorInfo, TensorInfo]]


def same_keys(format_a: str, format_b: str) -> bool:
    """Whether two formats key tensors alike, so that equal keys mean the same place in the file."""
    return _KEY_FAMILY.get(format_a, format_a) == _KEY_FAMILY.get(format_b, format_b)


def normalize_name(name: str) -> str:
    """A name with format-specific decoration removed, to match tensors across formats."""
    if name.endswith(VALUE_SUFFIX):
        name = name[: -len(VALUE_SUFFIX)]
    return _TF_OUTPUT_SUFFIX.sub("", name)


def named(t: TensorInfo) -> str | None:
    """The variable a tensor holds, when it is a name: None for no variable and for what a reader labels in
    parentheses (``(object graph)``, ``(save counter)``)."""
    v = t.variable
    return None if v is None or v.startswith("(") else v


def identity(t: TensorInfo) -> str:
    """How a tensor is named and ordered in reports: its variable, else its key."""
    return named(t) or t.name


@dataclass(frozen=True)
class Pairing:
    pairs: Pairs  # (A's tensor, B's tensor)
    removed: list[TensorInfo]  # only in A
    added: list[TensorInfo]  # only in B
    how: str  # the steps that paired any: "variables", "keys", "normalized keys", joined by " and "
    # Pairs whose keys differ although both formats key alike: the variable is stored elsewhere in B.
    moved: Pairs
    ambiguous: frozenset[str]  # variables several tensors hold on both sides: paired by key instead


def _counts(ts: Sequence[TensorInfo]) -> Counter[str]:
    return Counter(v for t in ts if (v := t.variable) is not None)


def positional(variable: str) -> bool:
    """A Keras 3 variable the file does not name, named by its position (``adam/vars/3``): no identity."""
    return _POSITIONAL.search(variable) is not None


def pair_tensors(a: Sequence[TensorInfo], b: Sequence[TensorInfo], keys_alike: bool) -> Pairing:
    """Pair A's tensors with B's (see the module's docstring). ``keys_alike``: both sides key tensors alike
    (same_keys), so equal keys may pair what has no variable to pair by."""
    count_a, count_b = _counts(a), _counts(b)
    by_b: dict[str, list[TensorInfo]] = {}
    for t in b:
        v = t.variable  # a reader's label pairs too: (save counter) with (save counter)
        if v is not None:
            by_b.setdefault(v, []).append(t)
    ambiguous = frozenset(v for v, n in count_a.items() if n > 1 and count_b.get(v, 0) > 1)
    pairs: Pairs = []
    used_b: set[int] = set()
    left_a: list[TensorInfo] = []
    # Tensors with no name of their own (no variable, a positional one, one several tensors hold): keys may pair
    # them, with each other and with a named tensor the other side's names did not pair. Two tensors that both
    # have names of their own never pair by key: their names say they are different variables.
    keyed: set[int] = set()
    for t in a:
        v = t.variable
        ys = by_b.get(v) if v is not None and v not in ambiguous else None
        if ys:
            pairs += [(t, y) for y in ys]  # one side holds it once (see ambiguous)
            used_b.update(map(id, ys))
            continue
        left_a.append(t)
        if v is None or count_a[v] > 1 or positional(v):
            keyed.add(id(t))
    how = ["variables"] if pairs else []
    left_b = [t for t in b if id(t) not in used_b]
    keyed.update(id(t) for t in left_b if t.variable is None or count_b[t.variable] > 1 or positional(t.variable))
    for step, key in (("keys", lambda t: t.name), ("normalized keys", lambda t: normalize_name(t.name))):
        if step == "keys" and not keys_alike:
            continue
        candidates: dict[str, list[TensorInfo]] = {}
        for t in left_b:
            candidates.setdefault(key(t), []).append(t)
        still: list[TensorInfo] = []
        taken: set[int] = set()
        for t in left_a:
            fits = [y for y in candidates.get(key(t), ()) if id(y) not in taken and (id(t) in keyed or id(y) in keyed)]
            if len(fits) == 1:  # one to one
                pairs.append((t, fits[0]))
                taken.add(id(fits[0]))
                if step not in how:
                    how.append(step)
            else:
                still.append(t)
        left_a, left_b = still, [t for t in left_b if id(t) not in taken]
    moved = [(x, y) for x, y in pairs if keys_alike and x.name != y.name]
    return Pairing(pairs, left_a, left_b, " and ".join(how) or "variables", moved, ambiguous)


def optimizer_names(tensors: Sequence[TensorInfo], kinds: Sequence[str]) -> tuple[str, ...]:
    """The optimizers whose state is stored, by the name their step counter carries (``adam`` of
    ``adam/iteration``); ``kinds``: each tensor's kind."""
    found = {m.group(1) for t, kind in zip(tensors, kinds, strict=True)
             if kind == "optimizer" and (m := _ITERATION.match(named(t) or "")) is not None}
    return tuple(sorted(found))
