"""Step 5: suggest renames, on evidence only (the stored value's own saved name), and write, read and apply
rename maps."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptcheck.errors import UsageError
from ckptcheck.renames import RENAME_MAP_SCHEMA as RENAME_MAP_SCHEMA
from ckptcheck.renames import LeafCandidate, differing, leaf_pairs, load_rename_map, spelling_note
from ckptcheck.restore_check.matching import short_key
from ckptcheck.restore_check.report import (
    RESTORED_DIFFERENT,
    WEIGHT,
    RenameSuggestion,
    RestoreCheckReport,
    StoredValueUse,
    VariableCheck,
)
from ckptcheck.restore_check.stored import StoredValues
from ckptcheck.restore_check.variables import dtype_name, value_of, variable_labels

# --- suggestions ----------------------------------------------------------------------------------------------------


def _components(name: str) -> list[str]:
    return [p for p in short_key(name).split("/") if p]


def rename_of(checkpoint_name: str, model_name: str) -> tuple[str, str] | None:
    """The whole path components in which two names differ, as (in the checkpoint, in the model): dense_1 -> head.
    ("", "") for equal names; None when they differ in their last component (kernel vs bias: other variables)."""
    a, b = _components(checkpoint_name), _components(model_name)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    if a == b:
        return "", ""
    if end == 0:
        return None
    return "/".join(a[start: len(a) - end]), "/".join(b[start: len(b) - end])


def _index_like(part: str) -> bool:
    """Positions, not names (`5`, `layer_with_weights-3`): a rename of positions is no evidence."""
    return any(p.isdigit() or re.fullmatch(r"layer(_with_weights)?-\d+", p) is not None
               for p in part.split("/") if p)


def _flat_renamed(stored: str, model: str, rename: tuple[str, str]) -> bool:
    """Keras names an optimizer slot after its variable's path with '/' as '_' (adam/seq_dense_1_kernel_momentum):
    the same layer rename, inside the last component."""
    a, b = rename
    if not a or not b:
        return False
    ca, cb = _components(stored), _components(model)
    if len(ca) != len(cb) or ca[:-1] != cb[:-1]:
        return False
    flat_a, flat_b = a.replace("/", "_"), b.replace("/", "_")
    renamed = f"_{ca[-1]}_".replace(f"_{flat_a}_", f"_{flat_b}_")[1:-1]
    return renamed == cb[-1] and renamed != ca[-1]


@dataclass
class _Names:
    """The names a variable (or a stored value) is known by, each with how many others share it."""

    own: str | None  # the variable's own name: Keras path, TensorFlow name; for a stored value its `variable`
    path: str | None  # TF2: the object path through the model


def suggest(variables: Sequence[VariableCheck], values: Sequence[StoredValueUse], *, use_paths: bool = False,
            copies: Mapping[str, str] | None = None) -> tuple[RenameSuggestion, ...]:
    """Pair each unrestored variable with an unused stored value of the same dtype and shape, on evidence only:
    the value's recorded name (the name the saving model knew it by) equal to the variable's own name, or equal
    after one consistent rename of whole path components (a renamed layer or scope) that explains several values,
    or is the only fit for both. Names shared by several variables (TensorFlow's `kernel`, `Variable`) are no
    evidence; TF2 object paths through the model stand in for them (`use_paths`), unless they are positions
    (`_operations/12`). Never paired on mere similarity. `copies` maps a stored key to an earlier key holding the
    same name and the same bits (a SavedModel from `model.export()` saves each variable twice): one value, not
    two candidates."""
    copies = copies or {}
    waiting = [v for v in variables if not v.restored and v.status != RESTORED_DIFFERENT]
    free = [s for s in values if not s.consumed and s.key not in copies]
    model_names = _counts(v.name for v in variables)
    stored_names = _counts(s.variable for s in values if s.key not in copies)

    def v_name(v: VariableCheck) -> str | None:
        if v.name and model_names[v.name] == 1 and not v.name.startswith("("):
            return v.name
        return None

    def s_name(s: StoredValueUse) -> str | None:
        if s.variable and stored_names[s.variable] == 1 and not s.variable.startswith("("):
            return s.variable
        return None

    def names(v: VariableCheck, s: StoredValueUse) -> list[tuple[str, str, str]]:
        """(stored name, model name, what they are) to compare: own names when both are unique, else object
        paths."""
        a, b = s_name(s), v_name(v)
        if a is not None and b is not None:
            return [(a, b, "name")]
        if use_paths and v.key is not None and s.label and not _index_like(short_key(s.label)):
            return [(s.label, short_key(v.key), "object path")]
        return []

    groups: dict[tuple[str, tuple[int, ...]], list[StoredValueUse]] = {}
    for s in free:
        groups.setdefault((s.dtype, s.shape), []).append(s)
    out: list[RenameSuggestion] = []
    taken_v: set[str] = set()
    taken_s: set[str] = set()

    def take(v: VariableCheck, s: StoredValueUse, rename: tuple[str, str], support: int, what: str = "name",
             evidence: str | None = None) -> None:
        taken_v.add(v.variable)
        taken_s.add(s.key)
        out.append(RenameSuggestion(variable=v.variable, variable_key=v.key, key=s.key, dtype=v.dtype, shape=v.shape,
                                    score=1.0, rename=rename,
                                    evidence=evidence or _evidence_text(rename, support, what),
                                    stored_variable=s.variable))

    # 1. The same name: the value this variable was saved as (a restore that stopped, or was skipped, left it).
    candidates: list[tuple[VariableCheck, StoredValueUse, tuple[str, str]]] = []
    kinds: dict[tuple[str, str], str] = {}
    for v in waiting:
        for s in groups.get((v.dtype, v.shape), ()):
            for a, b, what in names(v, s):
                rename = rename_of(a, b)
                if rename == ("", ""):
                    if v.variable not in taken_v and s.key not in taken_s:
                        take(v, s, rename, 1, what)
                elif (rename is not None and v.kind == WEIGHT and s.kind == WEIGHT and not _index_like(rename[0])
                      and not _index_like(rename[1])):
                    # Only weights are renamed: optimizer state follows its variable (step 3), and a rename of the
                    # optimizer itself (adam -> sgd) pairs state of another algorithm.
                    candidates.append((v, s, rename))
                    kinds[(v.variable, s.key)] = what
    # 2. One rename of whole components that several values agree on (or the only fit for both sides).
    candidates = [c for c in candidates if c[0].variable not in taken_v and c[1].key not in taken_s]
    support = _counts(r for _, _, r in candidates)
    per_v = _counts(v.variable for v, _, _ in candidates)
    per_s = _counts(s.key for _, s, _ in candidates)
    accepted = {r for r, n in support.items()
                if n >= 2 or any(per_v[v.variable] == 1 and per_s[s.key] == 1 for v, s, rr in candidates if rr == r)}
    best: dict[str, list[tuple[VariableCheck, StoredValueUse, tuple[str, str]]]] = {}
    for v, s, r in candidates:
        if r in accepted:
            best.setdefault(v.variable, []).append((v, s, r))
    for options in best.values():
        top = max(support[r] for _, _, r in options)
        options = [o for o in options if support[o[2]] == top and o[1].key not in taken_s]
        if len(options) == 1:  # two renames as well supported: no evidence which
            v, s, r = options[0]
            take(v, s, r, support[r], kinds[(v.variable, s.key)])
    # 3. A leaf spelled another way under the same layer (logits/weights -> logits/kernel): the only unused value
    # of its dtype and shape under the layer, for the only variable without one there.
    _leaf_renames(waiting, free, names, accepted, taken_v, taken_s, take)
    # 4. Optimizer slots named after their variable's path (Keras 3), under a rename already established.
    layer_renames = [r for r in accepted if r[0] and r[1]]
    for v in waiting:
        if v.variable in taken_v or not v.name:
            continue
        fits = [(s, r) for s in groups.get((v.dtype, v.shape), ()) if s.key not in taken_s and s.variable
                for r in layer_renames if _flat_renamed(s.variable, v.name, r)]
        if len(fits) == 1:
            take(v, fits[0][0], fits[0][1], support[fits[0][1]])
    # 5. A Keras 2 optimizer's state for a Keras 3 optimizer of the same algorithm: each slot of the stored
    # variable a model variable was restored from.
    _carried_slots(variables, waiting, free, taken_v, taken_s, take)
    return tuple(sorted(out, key=lambda x: x.variable))


def _leaf_renames(waiting: Sequence[VariableCheck], free: Sequence[StoredValueUse],
                  names: Callable[[VariableCheck, StoredValueUse], list[tuple[str, str, str]]],
                  accepted: set[tuple[str, str]], taken_v: set[str], taken_s: set[str],
                  take: Callable[..., None]) -> None:
    """Weights whose leaf differs (weights -> kernel, depthwise_kernel -> kernel) under the same layer (or the
    layer an accepted rename makes it), each the other's only candidate of its dtype and shape there."""
    layer_renames = {("", "")} | accepted

    def same_layer(stored_layer: str, model_layer: str) -> bool:
        # A sentinel leaf makes rename_of compare the layers as whole paths (it needs a common last part).
        return rename_of(f"{stored_layer}/\0", f"{model_layer}/\0") in layer_renames

    vs = [v for v in waiting if v.kind == WEIGHT and v.variable not in taken_v]
    ss = [s for s in free if s.kind == WEIGHT and s.key not in taken_s]
    for what in ("name", "object path"):
        # The names each side is compared by: own names where both are unique, else TF2 object paths.
        named_v: dict[str, str] = {}
        named_s: dict[str, str] = {}
        for v in vs:
            for s in ss:
                if (v.dtype, v.shape) != (s.dtype, s.shape):
                    continue
                for a, b, kind in names(v, s):
                    if kind == what and not _index_like(b) and not _index_like(a):
                        named_v[v.variable] = b
                        named_s[s.key] = a
        old = [LeafCandidate(s.key, named_s[s.key], s.dtype, s.shape) for s in ss
               if s.key in named_s and s.key not in taken_s]
        new = [LeafCandidate(v.variable, named_v[v.variable], v.dtype, v.shape) for v in vs
               if v.variable in named_v and v.variable not in taken_v]
        by_v = {v.variable: v for v in vs}
        by_s = {s.key: s for s in ss}
        for o, n in leaf_pairs(old, new, same_layer):
            v, s = by_v[n.ident], by_s[o.ident]
            before, after = differing(o.name, n.name)
            (layer_s, leaf_s), (layer_v, leaf_v) = o.name.rsplit("/", 1), n.name.rsplit("/", 1)
            where = f"layer {layer_s}" if layer_s == layer_v else f"{layer_s} (in the model {layer_v})"
            evidence = (f"the only unused {s.dtype} {list(s.shape)} value under {where}, for its only variable "
                        f"without one: {leaf_s} -> {leaf_v}{spelling_note(leaf_s, leaf_v)}")
            take(v, s, (before, after), 1, what, evidence=evidence)


# Keras 2's slot spellings of the Adam family, as Keras 3 spells them (the first and second moments, AMSGrad's
# maximum); any other slot carries over under its own spelling (momentum, velocity, accumulator, ...).
KERAS2_SLOTS = {"m": "momentum", "v": "velocity", "vhat": "velocity_hat"}
_ITERATIONS = ("iteration", "iterations", "iter")


def _carried_slots(variables: Sequence[VariableCheck], waiting: Sequence[VariableCheck],
                   free: Sequence[StoredValueUse], taken_v: set[str], taken_s: set[str],
                   take: Callable[..., None]) -> None:
    """Pair a Keras 3 optimizer variable (`adam/Conv1_kernel_momentum`: the slot of the model variable whose path,
    '/' as '_', it starts with) with the stored Keras 2 slot (`Adam/m/Conv1/kernel`, or `Adam/Conv1/kernel/m` from
    a legacy optimizer) of the stored variable that model variable was restored from; the iteration count with the
    iteration count. Only for optimizers of one name (Adam and adam, adam_1), each pair the other's only
    candidate."""
    restored_from: dict[str, str] = {}  # stored variable -> the model variable restored from it
    flat: dict[str, list[str]] = {}  # a model variable's path with '/' as '_' -> its paths
    for v in variables:
        if v.kind == WEIGHT and v.restored and v.source_variable and v.name:
            restored_from[v.source_variable] = v.name
        if v.kind == WEIGHT and v.name:
            flat.setdefault(v.name.replace("/", "_"), []).append(v.name)
    stored_weights = set(restored_from)

    def model_side(v: VariableCheck) -> tuple[str, str, str] | None:
        """(optimizer, owner variable or "", slot) of a Keras 3 optimizer variable."""
        if v.kind != "optimizer" or not v.name or "/" not in v.name:
            return None
        opt, rest = v.name.split("/", 1)
        opt = re.sub(r"_\d+$", "", opt)  # Keras numbers a second optimizer of a name: adam_1
        if rest in _ITERATIONS:
            return opt.lower(), "", "iteration"
        found = [(owner, rest[i + 1:]) for i, ch in enumerate(rest) if ch == "_"
                 for owner in flat.get(rest[:i], ())]
        return (opt.lower(), found[0][0], found[0][1]) if len(found) == 1 else None

    def stored_side(s: StoredValueUse) -> tuple[str, str, str] | None:
        """(optimizer, owner stored variable or "", slot as Keras 3 spells it) of a Keras 2 optimizer value."""
        name = s.variable
        if s.kind != "optimizer" or not name:
            return None
        parts = name.split("/")
        if parts[-1] in _ITERATIONS and len(parts) <= 2:
            return (parts[0].lower() if len(parts) == 2 else ""), "", "iteration"
        if len(parts) >= 3 and "/".join(parts[2:]) in stored_weights:  # Adam/m/Conv1/kernel
            return parts[0].lower(), "/".join(parts[2:]), KERAS2_SLOTS.get(parts[1], parts[1])
        if len(parts) >= 3 and "/".join(parts[1:-1]) in stored_weights:  # Adam/Conv1/kernel/m (legacy optimizer)
            return parts[0].lower(), "/".join(parts[1:-1]), KERAS2_SLOTS.get(parts[-1], parts[-1])
        return None

    model = [(v, m) for v in waiting if v.variable not in taken_v and (m := model_side(v)) is not None]
    stored = [(s, k) for s in free if s.key not in taken_s and (k := stored_side(s)) is not None]
    optimizers = {k[0] for _, k in stored if k[0]}
    fits_v: dict[str, list[StoredValueUse]] = {}
    fits_s: dict[str, list[VariableCheck]] = {}
    for v, (opt, owner, slot) in model:
        for s, (s_opt, s_owner, s_slot) in stored:
            same_optimizer = s_opt == opt or (not s_opt and optimizers == {opt})  # `iteration` names none
            same_owner = (owner == "" == s_owner) or (s_owner != "" and restored_from.get(s_owner) == owner)
            if same_optimizer and same_owner and slot == s_slot and (v.dtype, v.shape) == (s.dtype, s.shape):
                fits_v.setdefault(v.variable, []).append(s)
                fits_s.setdefault(s.key, []).append(v)
    for v, (_opt, owner, slot) in model:
        fits = fits_v.get(v.variable, [])
        if len(fits) != 1 or len(fits_s.get(fits[0].key, [])) != 1:
            continue
        s = fits[0]
        k = stored_side(s)
        assert k is not None
        if owner:
            parts = (s.variable or "").split("/")
            stored_slot = parts[1] if "/".join(parts[2:]) == k[1] else parts[-1]
            evidence = (f"the Keras 2 optimizer's {stored_slot} slot of {k[1]}, the stored variable {owner} was "
                        f"restored from ({slot} in Keras 3)")
        else:
            evidence = "the Keras 2 optimizer's iteration count"
        take(v, s, differing(s.variable or s.key, v.name or v.variable), 1, "name", evidence=evidence)


def _counts(items: Iterator[Any] | Sequence[Any] | Any) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _evidence_text(rename: tuple[str, str], support: int, what: str = "name") -> str:
    if rename == ("", ""):
        return f"the same {what}"
    a, b = rename
    change = f"{a} -> {b}" if a and b else (f"scope {b}/ added" if b else f"scope {a}/ dropped")
    return f"the same {what} after {change}" + (f" ({support} values agree)" if support > 1 else " (the only fit)")


# --- rename maps ----------------------------------------------------------------------------------------------------


def rename_map_dict(report: RestoreCheckReport) -> dict[str, Any]:
    """The suggestions as a mapping to review: each entry restores `variable` from the stored `key`."""
    return {
        "schema": RENAME_MAP_SCHEMA,
        "checkpoint": report.location,
        "format": report.format,
        "model": report.model,
        "note": "Each entry restores the model variable `variable` from the checkpoint value `key`. Review every "
                "entry and delete the wrong ones; then check with `ckptcheck restore-check CHECKPOINT --model MODEL "
                "--apply-rename-map THIS_FILE`, and in your own code call "
                "ckptcheck.restore_check.apply_rename_map(model, checkpoint, THIS_FILE) after your restore.",
        "renames": [
            {"variable": s.variable, "key": s.key, "dtype": s.dtype, "shape": list(s.shape), "score": s.score,
             "rename": {"checkpoint": s.rename[0], "model": s.rename[1]}, "also": list(s.also),
             "evidence": s.evidence, "stored_variable": s.stored_variable}
            for s in report.suggestions
        ],
    }


def write_rename_map(report: RestoreCheckReport, path: str) -> dict[str, Any]:
    data = rename_map_dict(report)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return data


def read_rename_map(source: str | dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, key) pairs from a rename map file (or its parsed dict), checked for shape."""
    return load_rename_map(source)


def _unnumbered(label: str) -> str:
    """A label with Keras's numbering of its first part dropped: adam_3/dense_kernel_momentum -> adam/..."""
    head, sep, rest = label.partition("/")
    return re.sub(r"_\d+$", "", head) + sep + rest


def resolve_map(pairs: Sequence[tuple[str, str]], by_label: dict[str, Any], stored: StoredValues, where: str,
                 shape_of: Callable[[Any], tuple[str, tuple[int, ...]]]) -> list[tuple[str, str, Any]]:
    out = []
    # Keras numbers a second object of a name in one process (adam, adam_1): a map written in one process names
    # the optimizer as that process did. A label matching only after that numbering is dropped is the same one.
    renumbered: dict[str, list[str]] = {}
    for label in by_label:
        renumbered.setdefault(_unnumbered(label), []).append(label)
    for variable, key in pairs:
        if variable not in by_label and len(renumbered.get(_unnumbered(variable), ())) == 1:
            variable = renumbered[_unnumbered(variable)][0]
        if variable not in by_label:
            close = difflib.get_close_matches(variable, list(by_label), n=3)
            raise UsageError(f"the model has no variable {variable!r}", path=where,
                             hint=f"did you mean {', '.join(close)}?" if close else "see restore-check's variable list")
        if key not in stored.infos:
            close = difflib.get_close_matches(key, list(stored.infos), n=3)
            raise UsageError(f"the checkpoint stores no {key!r} (mapped to {variable})", path=where,
                             hint=f"did you mean {', '.join(close)}?" if close else "run `ckptcheck inspect`")
        info = stored.infos[key]
        dtype, shape = shape_of(by_label[variable])
        if (dtype, shape) != (info.dtype, info.shape):
            raise UsageError(f"{variable} is {dtype} {list(shape)} but {key} is {info.dtype} {list(info.shape)}",
                             path=where, hint="a rename map only maps values of the same dtype and shape")
        out.append((variable, key, by_label[variable]))
    return out


def apply_rename_map(model: Any, checkpoint: str, rename_map: str | dict[str, Any]) -> tuple[str, ...]:
    """Assign each mapped variable of `model` (what your model function returns) the stored value the map names,
    read by ckptcheck. Call it after your own restore; returns the variables assigned."""
    import ckptcheck

    pairs = read_rename_map(rename_map)
    by_label = variable_labels(model)
    where = rename_map if isinstance(rename_map, str) else "rename map"
    with ckptcheck.open_checkpoint(checkpoint) as reader:
        stored = StoredValues(reader)

        def shape_of(obj: Any) -> tuple[str, tuple[int, ...]]:
            value = value_of(obj)
            return dtype_name(value), tuple(value.shape)

        resolved = resolve_map(pairs, by_label, stored, where, shape_of)
        for _, key, obj in resolved:
            obj.assign(stored.read(key))
    return tuple(v for v, _, _ in resolved)
