"""Renamed variables, shared by `restore-check` (suggestions) and `diff` (pairing): a variable's last name part (its
leaf) spelled another way under the same layer, and rename maps read as pairs.

TF1 code (`tf.compat.v1.get_variable`, slim, Sonnet 1) and Keras 2 spell some variables differently from Keras 3:
`logits/weights` is Keras 3's `logits/kernel`, `block_1_depthwise/depthwise_kernel` its `block_1_depthwise/kernel`.
Nothing here pairs two tensors because their names look alike: a leaf rename is accepted on structure (the same
layer, the only candidate of its dtype and shape on each side, a tie is none) and, in `diff`, equal values. The
table below only says where a spelling comes from, in the evidence shown to the user.

Reading only: no TensorFlow, no numpy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ckptcheck.errors import UsageError

RENAME_MAP_SCHEMA = "ckptcheck.rename-map/1"
MAX_MAP_BYTES = 64 << 20

# (stored leaf, Keras 3 leaf) -> who spells it the first way. Explanations, never evidence.
KNOWN_LEAF_SPELLINGS: dict[tuple[str, str], str] = {
    ("weights", "kernel"): "TF1 get_variable/slim spelling",
    ("biases", "bias"): "TF1 slim spelling",
    ("w", "kernel"): "Sonnet 1 spelling",
    ("b", "bias"): "Sonnet 1 spelling",
    ("depthwise_kernel", "kernel"): "Keras 2 DepthwiseConv2D spelling",
    ("depthwise_weights", "kernel"): "TF1 slim depthwise spelling",
    ("scale", "gamma"): "tf.nn/Sonnet batch-norm spelling",
    ("offset", "beta"): "tf.nn/Sonnet batch-norm spelling",
    ("embedding", "embeddings"): "Keras 2/TF1 embedding spelling",
}


def components(name: str) -> list[str]:
    return [p for p in name.split("/") if p]


def layer_and_leaf(name: str) -> tuple[str, str]:
    """``logits/weights`` -> (``logits``, ``weights``); a name without a layer has the layer ``""``."""
    parts = components(name)
    if not parts:
        return "", ""
    return "/".join(parts[:-1]), parts[-1]


def spelling_note(old: str, new: str) -> str:
    """Where a leaf spelling comes from, when it is a known one: `` (TF1 get_variable/slim spelling)``."""
    known = KNOWN_LEAF_SPELLINGS.get((old, new)) or KNOWN_LEAF_SPELLINGS.get((new, old))
    return f" ({known})" if known else ""


def differing(a: str, b: str) -> tuple[str, str]:
    """The parts of two names after their common leading components: ("weights", "kernel") for logits/weights and
    logits/kernel."""
    ca, cb = components(a), components(b)
    start = 0
    while start < min(len(ca), len(cb)) and ca[start] == cb[start]:
        start += 1
    return "/".join(ca[start:]), "/".join(cb[start:])


@dataclass(frozen=True)
class LeafCandidate:
    """A tensor (or variable) on one side, with the name it is compared by."""

    ident: str  # unique on its side (a key, a variable label)
    name: str  # the name whose layer and leaf are compared
    dtype: str
    shape: tuple[int, ...]


def leaf_pairs(old: Sequence[LeafCandidate], new: Sequence[LeafCandidate],
               same_layer: Callable[[str, str], bool] | None = None) -> list[tuple[LeafCandidate, LeafCandidate]]:
    """Pairs (old, new) whose names differ only in the leaf, under the same layer (``same_layer(old layer, new
    layer)``, equality by default), where each is the other's only candidate of its dtype and shape under that
    layer. A candidate with the same leaf on the other side (which should have paired by name) blocks the pair:
    evidence of something else going on, not of a rename."""
    # Candidates are looked up by dtype and shape, and by layer too where layers must be equal (diff: thousands of
    # unpaired tensors of one shape stay linear).
    exact = same_layer is None
    by_group: dict[tuple[str, tuple[int, ...], str], list[LeafCandidate]] = {}
    for n in new:
        layer_n = layer_and_leaf(n.name)[0]
        if layer_n:
            by_group.setdefault((n.dtype, n.shape, layer_n if exact else ""), []).append(n)
    fits_old: dict[str, list[LeafCandidate]] = {}
    fits_new: dict[str, list[LeafCandidate]] = {}
    for o in old:
        layer_o = layer_and_leaf(o.name)[0]
        if not layer_o:
            continue
        for n in by_group.get((o.dtype, o.shape, layer_o if exact else ""), ()):
            if exact or (same_layer is not None and same_layer(layer_o, layer_and_leaf(n.name)[0])):
                fits_old.setdefault(o.ident, []).append(n)
                fits_new.setdefault(n.ident, []).append(o)
    out = []
    for o in old:
        fits = fits_old.get(o.ident, [])
        if len(fits) != 1:
            continue
        n = fits[0]
        if len(fits_new.get(n.ident, [])) != 1:
            continue
        if layer_and_leaf(o.name)[1] == layer_and_leaf(n.name)[1]:
            continue
        out.append((o, n))
    return out


# --- rename maps ----------------------------------------------------------------------------------------------------


def load_rename_map(source: str | dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, key) pairs from a rename map file (or its parsed dict) as `restore-check --rename-map` writes
    it: each entry restores the model variable `variable` from the checkpoint value `key`. Checked for shape."""
    where = source if isinstance(source, str) else "rename map"
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise UsageError("no such rename map file", path=source)
        if os.path.getsize(source) > MAX_MAP_BYTES:
            raise UsageError("too large for a rename map", path=source)
        try:
            with open(source, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            text = " ".join(str(exc).split())
            raise UsageError(f"not a JSON rename map: {text[:300]}", path=source) from None
    else:
        data = source
    if not isinstance(data, dict) or data.get("schema") != RENAME_MAP_SCHEMA or not isinstance(data.get("renames"),
                                                                                                list):
        raise UsageError(f"not a rename map (expected an object with schema {RENAME_MAP_SCHEMA!r} and a renames list)",
                         path=where, hint="write one with `ckptcheck restore-check ... --rename-map FILE`")
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(data["renames"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("variable"), str)
                and isinstance(entry.get("key"), str)):
            raise UsageError(f"renames[{i}] needs string fields `variable` and `key`", path=where)
        pairs.append((entry["variable"], entry["key"]))
    seen: set[str] = set()
    for variable, _ in pairs:
        if variable in seen:
            raise UsageError(f"variable {variable!r} is mapped twice", path=where)
        seen.add(variable)
    return pairs


# --- diff: renamed tensors ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Renamed:
    """A tensor of A paired with a tensor of B under another name, and why."""

    name_a: str  # A's key
    name_b: str  # B's key
    variable_a: str
    variable_b: str
    rule: str  # "rename map", or the leaf rename: "depthwise_kernel -> kernel"
    evidence: str  # what made the pair


def pair_renamed(ra: Any, rb: Any, removed: Sequence[Any], added: Sequence[Any], name_of: Callable[[Any], str],
                 rename_map: str | dict[str, Any] | None = None
                 ) -> tuple[list[tuple[Any, Any]], list[Any], list[Any], list[Renamed]]:
    """Among tensors left unpaired (A's `removed`, B's `added`, TensorInfo each), the renamed ones: those a rename
    map pairs (its `key` on one side, its `variable` on the other, in either direction), then those whose
    variables differ only in the leaf under the same layer, each the other's only candidate of its dtype and
    shape there, with bit-identical values. Returns the new pairs, what is still removed and added, and why each
    pair was made."""
    from ckptcheck.compare import compare_tensors

    left_a, left_b = list(removed), list(added)
    pairs: list[tuple[Any, Any]] = []
    why: list[Renamed] = []

    def take(x: Any, y: Any, rule: str, evidence: str) -> None:
        left_a.remove(x)
        left_b.remove(y)
        pairs.append((x, y))
        why.append(Renamed(x.name, y.name, name_of(x), name_of(y), rule, evidence))

    if rename_map is not None:
        for variable, key in load_rename_map(rename_map):
            for keyed, named, forward in ((left_a, left_b, True), (left_b, left_a, False)):
                x = next((t for t in keyed if t.name == key), None)
                y = next((t for t in named if variable in (name_of(t), t.name)), None)
                if x is not None and y is not None:
                    take(*((x, y) if forward else (y, x)), "rename map",
                         f"the rename map restores {variable} from {key}")
                    break
    old = [LeafCandidate(t.name, name_of(t), t.dtype, tuple(t.shape)) for t in left_a]
    new = [LeafCandidate(t.name, name_of(t), t.dtype, tuple(t.shape)) for t in left_b]
    by_a = {t.name: t for t in left_a}
    by_b = {t.name: t for t in left_b}
    for o, n in leaf_pairs(old, new):
        x, y = by_a[o.ident], by_b[n.ident]
        if not compare_tensors(ra, x.name, rb, y.name).equal:
            continue  # a leaf rename is only believed with the same values
        leaf_a, leaf_b = layer_and_leaf(o.name)[1], layer_and_leaf(n.name)[1]
        take(x, y, f"{leaf_a} -> {leaf_b}", f"the only fit of its dtype and shape under layer "
                                             f"{layer_and_leaf(o.name)[0]}, with equal values"
                                             f"{spelling_note(leaf_a, leaf_b)}")
    return pairs, left_a, left_b, why
