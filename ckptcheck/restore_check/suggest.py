"""Step 5: suggest renames, on evidence only (the stored value's own saved name), and write, read and apply
rename maps."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptcheck.errors import UsageError
from ckptcheck.restore_check.matching import short_key
from ckptcheck.restore_check.report import (
    RESTORED_DIFFERENT,
    WEIGHT,
    RenameSuggestion,
    RestoreCheckReport,
    StoredValueUse,
    VariableCheck,
)
from ckptcheck.restore_check.stored import _Stored
from ckptcheck.restore_check.user_model import _one_line
from ckptcheck.restore_check.variables import _dtype_name, _value_of, variable_labels

RENAME_MAP_SCHEMA = "ckptcheck.rename-map/1"
MAX_MAP_BYTES = 64 << 20


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

    def take(v: VariableCheck, s: StoredValueUse, rename: tuple[str, str], support: int, what: str = "name"
             ) -> None:
        taken_v.add(v.variable)
        taken_s.add(s.key)
        out.append(RenameSuggestion(variable=v.variable, variable_key=v.key, key=s.key, dtype=v.dtype, shape=v.shape,
                                    score=1.0, rename=rename, evidence=_evidence_text(rename, support, what),
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
    # 3. Optimizer slots named after their variable's path (Keras 3), under a rename already established.
    layer_renames = [r for r in accepted if r[0] and r[1]]
    for v in waiting:
        if v.variable in taken_v or not v.name:
            continue
        fits = [(s, r) for s in groups.get((v.dtype, v.shape), ()) if s.key not in taken_s and s.variable
                for r in layer_renames if _flat_renamed(s.variable, v.name, r)]
        if len(fits) == 1:
            take(v, fits[0][0], fits[0][1], support[fits[0][1]])
    return tuple(sorted(out, key=lambda x: x.variable))


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
            raise UsageError(f"not a JSON rename map: {_one_line(str(exc))}", path=source) from None
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
    variables = [v for v, _ in pairs]
    dup = next((v for v in variables if variables.count(v) > 1), None)
    if dup is not None:
        raise UsageError(f"variable {dup!r} is mapped twice", path=where)
    return pairs


def _resolve_map(pairs: Sequence[tuple[str, str]], by_label: dict[str, Any], stored: _Stored, where: str,
                 shape_of: Callable[[Any], tuple[str, tuple[int, ...]]]) -> list[tuple[str, str, Any]]:
    out = []
    for variable, key in pairs:
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
        stored = _Stored(reader)

        def shape_of(obj: Any) -> tuple[str, tuple[int, ...]]:
            value = _value_of(obj)
            return _dtype_name(value), tuple(value.shape)

        resolved = _resolve_map(pairs, by_label, stored, where, shape_of)
        for _, key, obj in resolved:
            obj.assign(stored.read(key))
    return tuple(v for v, _, _ in resolved)
