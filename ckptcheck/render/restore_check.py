"""`restore-check` reports in text and JSON."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckptcheck.formats.tensorflow.keys import VALUE_SUFFIX
from ckptcheck.records import (
    SAVEDMODEL,
    TF1,
    TF2,
)
from ckptcheck.render.inspect import FORMAT_TITLES, stats_dict
from ckptcheck.render.lab import EVIDENCE_WIDTH
from ckptcheck.render.tables import shape_text, table

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    from ckptcheck.stats import TensorStats

if TYPE_CHECKING:
    from ckptcheck.restore_check.report import RestoreCheckReport, StoredValueUse, VariableCheck

RESTORE_CHECK_SCHEMA = "ckptcheck.restore-check/1"
WEIGHT, OPTIMIZER, COUNTER = "weight", "optimizer", "counter"  # restore_check.report's kinds
_STATUS_TEXT = {"restored": "yes", "restored-different": "VALUES DIFFER", "mismatch": "NO: mismatch",
                "skipped": "NO: skipped", "missing": "NO: missing"}


def _key_text(key: str | None) -> str:
    if key is None:
        return "-"
    return key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key


def _restore_verdict(report: RestoreCheckReport) -> str:
    counted = [v for v in report.variables if report.counts(v.kind)]
    bad = report.not_restored
    unused = report.unused
    restored = sum(1 for v in counted if v.restored)
    if report.ok and restored == len(counted):
        head = f"OK: all {len(counted)} variables restored, values equal to the checkpoint's"
    elif report.ok:  # some allowed to be missing: said, not counted as restored (the footer counts the same)
        head = f"OK: {restored} of {len(counted)} variables restored, values equal to the checkpoint's"
    elif bad:
        head = f"NOT RESTORED: {len(bad)} of {len(counted)} variables (they keep the values shown)"
    elif report.restore_error is not None:
        head = "RESTORE FAILED: the restore raised, although every variable holds a stored value"
    else:
        head = f"UNUSED VALUES: every variable restored, but {len(unused)} stored values were not used"
    extra = []
    if bad and unused:
        extra.append(f"{len(unused)} stored values unused")
    if report.allow_unused and unused:
        extra.append(f"{len(unused)} unused values allowed (--allow-unused)")
    if report.allowed_missing:
        extra.append(f"{len(report.allowed_missing)} variables allowed to be missing (--allow-missing)")
    ignored = [v for v in report.variables if not report.counts(v.kind)]
    ignored_values = [s for s in report.values if not report.counts(s.kind)]
    if ignored or ignored_values:
        extra.append(f"optimizer state and counters not counted (--ignore-optimizer): {len(ignored)} variables, "
                     f"{len(ignored_values)} stored values")
    return head + ("; " + "; ".join(extra) if extra else "")


def _variable_rows(variables: Sequence[VariableCheck]) -> list[list[str]]:
    rows = []
    for v in variables:
        status = _STATUS_TEXT.get(v.status, v.status)
        if v.status == "restored" and v.via == "rename map":
            status = "yes (rename map)"
        if v.status in ("restored", "restored-different"):
            where = _key_text(v.source)
            values = "equal" if v.values_equal else "DIFFER"
        else:
            where = _key_text(v.key)
            values = "-"
        rows.append([v.variable, v.dtype, shape_text(v.shape), status, where, values, v.reason or "",
                     v.kept.description if v.kept else ""])
    return rows


_VARIABLE_HEADERS = ["variable", "dtype", "shape", "restored", "from (or looked up as)", "values", "why", "keeps"]


def _value_rows(values: Sequence[StoredValueUse], with_variable: bool) -> list[list[str]]:
    return [[s.label, *([s.variable or ""] if with_variable else []), s.dtype, shape_text(s.shape),
             ", ".join(s.used_by) if s.used_by else "UNUSED", s.note or ""] for s in values]


MAX_NAMED = 30  # variables named in a summary line before "... and N more"


def restore_check_text(report: RestoreCheckReport, *, verbose: bool = False) -> str:
    """The verdict and the problems first (where the restore stopped, mismatches, variables not restored, values
    unused, likely matches), then counts; `verbose` adds every variable and every stored value."""
    lines = [_restore_verdict(report),
             f"checkpoint: {report.location} ({report.format} — {FORMAT_TITLES.get(report.format, report.format)})",
             f"model:      {report.model} — {report.model_kind}",
             f"restore:    {report.method}"]
    lines += [f"built:      {b}" for b in report.built]
    if report.applied_map:
        lines.append(f"then:       assigned the values --apply-rename-map {report.applied_map} maps")
    stop = report.stopped
    if stop is not None:
        at = ""
        if stop.variable:
            at = f" at {stop.variable}" + (f" (stored as {_key_text(stop.key)})" if stop.key else "")
        lines.append(_labelled(f"the restore stopped{at}: {stop.error} It left {len(stop.left_behind)} variables "
                               f"behind that are stored under their own names with their dtype and shape: "
                               f"{_names_text(stop.left_behind, verbose)}", "STOPPED:    "))
    elif report.restore_error is not None:
        lines.append(_labelled(f"the restore raised {report.restore_error}", "ERROR:      "))
    if report.recipes:
        lines.append("to load everything but the mismatched layers (measured with this format):")
        lines += [_labelled(r, "  - ") for r in report.recipes]
    lines += [_labelled(n, "note:       ") for n in report.notes]
    if report.keras3 is not None:
        from ckptcheck.render.keras3 import restore_check_section

        lines += restore_check_section(report.keras3)
    tail = " (TF2 keys shown without /.ATTRIBUTES/VARIABLE_VALUE)" if report.format in (TF2, SAVEDMODEL) else ""
    if report.mismatches:
        lines += ["", "dtype and shape mismatches:"]
        for m in report.mismatches:
            parts = [f"{kind} {_pair_text(kind, m)}" for kind in m.kinds]
            lines.append(f"  {m.variable} <- {_key_text(m.key)}: " + "; ".join(parts))
    left = set(stop.left_behind) if stop is not None and not verbose else set()
    bad = [v for v in report.not_restored if v.variable not in left]
    # Optimizer state is one line per optimizer unless --verbose: hundreds of slots say one thing.
    bad_state = [v for v in bad if v.kind == OPTIMIZER] if not verbose else []
    bad = [v for v in bad if not any(v is w for w in bad_state)]
    if bad or bad_state:
        lines += ["", f"variables not restored: {len(report.not_restored)}"
                  + (f" ({len(left)} left behind by the stop, named above)" if left else "") + tail]
        if bad:
            lines.append(table(_VARIABLE_HEADERS, _variable_rows(bad)))
        lines += _optimizer_variable_lines(bad_state)
    others = [v for v in report.variables if v.from_another_name and v.via != "rename map"]
    if others:
        lines += ["", f"restored from a value saved under another name: {len(others)} variables (the format matches "
                      f"by path or position, not by name): " + _renamed_text(others, verbose)]
    mapped = [v for v in report.variables if v.restored and v.via == "rename map"]
    if mapped:
        renamed = [v for v in mapped if v.from_another_name]
        lines += ["", f"restored by the rename map: {len(mapped)} variables"
                      + (f", {len(renamed)} of them from a value saved under another name: "
                         + _renamed_text(renamed, verbose, 5) if renamed else "")]
    allowed = report.allowed_missing
    if allowed:
        lines += ["", f"allowed to be missing (--allow-missing {' '.join(report.allow_missing)}): {len(allowed)} "
                      f"variables: {_names_text(tuple(v.variable for v in allowed), verbose)}"]
    with_variable = any(s.variable not in (None, s.label, s.key) for s in report.values)
    headers = ["stored value", *(["variable"] if with_variable else []), "dtype", "shape", "restored into", "note"]
    unused = report.unused
    # The values of the variables the stop left behind are summarized with them, not listed one by one.
    theirs = {v.key for v in report.variables if v.variable in left and v.key is not None}
    shown = [s for s in unused if s.key not in theirs]
    if unused and not verbose:
        lines += ["", f"stored values unused: {len(unused)}"
                  + (f" ({len(unused) - len(shown)} are the values of the variables left behind)" if left else "")
                  + (" (allowed: --allow-unused)" if report.allow_unused else "")]
        state_shown = [s for s in shown if s.kind == OPTIMIZER]
        shown = [s for s in shown if s.kind != OPTIMIZER]
        if shown:
            lines.append(table(headers, _value_rows(shown, with_variable)))
        lines += _optimizer_value_lines(state_shown, report.format)
    suggestions = [s for s in report.suggestions if s.variable not in left]
    if len(suggestions) < len(report.suggestions):
        lines += ["", f"likely matches: each of the {len(report.suggestions) - len(suggestions)} variables left behind "
                      f"is suggested the value saved under its own name (--rename-map FILE writes them; --verbose "
                      f"lists them)"]
    kinds = {v.variable: v.kind for v in report.variables}
    state_suggestions = [s for s in suggestions if kinds.get(s.variable) == OPTIMIZER] if not verbose else []
    suggestions = [s for s in suggestions if not any(s is t for t in state_suggestions)]
    if state_suggestions:
        lines += ["", _labelled(f"likely matches for optimizer state: {len(state_suggestions)} variables, e.g. "
                                f"{state_suggestions[0].variable} <- {_key_text(state_suggestions[0].key)} "
                                f"({state_suggestions[0].evidence}); --verbose lists them, --rename-map FILE writes "
                                f"them", "")]
    if suggestions:
        rows = [[s.variable, "<-", _key_text(s.key), shape_text(s.shape), s.stored_variable or "", s.evidence]
                for s in suggestions]
        lines += ["", "likely matches (the value saved under the variable's own name, under it with a layer "
                      "renamed, or the only fit under the same layer; same dtype and shape):",
                  table(["variable", "", "stored value", "shape", "saved as", "evidence"], rows)]
        renames = _rename_counts(report)
        if renames:
            lines.append("renames: " + ", ".join(f"{_rename_text((a, b))} ({n} values)" for (a, b), n in renames))
        lines.append("write them as a mapping to review with --rename-map FILE; check it with --apply-rename-map FILE")
    # The footer counts what the headline counts: model weights, step counters and optimizer variables, each
    # said counted or not (--ignore-optimizer) and with those allowed to be missing.
    weights = [v for v in report.variables if v.kind == WEIGHT]
    counters = [v for v in report.variables if v.kind == COUNTER]
    optimizer = [v for v in report.variables if v.kind == OPTIMIZER]
    ignored = " — not counted (--ignore-optimizer)" if report.ignore_optimizer else ""
    stored_weights = [s for s in report.values if s.kind == "weight"]
    state = [s for s in report.values if s.kind != "weight"]
    if not verbose:
        lines += ["", f"model variables: {_count_text(weights, report) if weights else 'none'}"]
        if counters:
            lines.append(f"step counters: {_count_text(counters, report)}{ignored}")
        if optimizer:
            lines.append(f"optimizer variables: {_count_text(optimizer, report)}{ignored}")
        if stored_weights:
            lines.append(f"checkpoint weights: {_use_text(stored_weights)}")
        if state:
            lines.append(f"checkpoint optimizer state and counters: {_use_text(state)}{ignored}")
        lines.append("(--verbose lists every variable and stored value; --json has everything)")
        return "\n".join(lines)
    if weights:
        lines += ["", f"model variables: {_count_text(weights, report)}{tail}",
                  table(_VARIABLE_HEADERS, _variable_rows(weights))]
    else:
        lines += ["", "model variables: none"]
    if counters:
        lines += ["", f"step counters: {_count_text(counters, report)}{ignored}",
                  table(_VARIABLE_HEADERS, _variable_rows(counters))]
    if optimizer:
        lines += ["", f"optimizer variables: {_count_text(optimizer, report)}{ignored}",
                  table(_VARIABLE_HEADERS, _variable_rows(optimizer))]
    if stored_weights:
        lines += ["", f"checkpoint weights: {_use_text(stored_weights)}",
                  table(headers, _value_rows(stored_weights, with_variable))]
    if state:
        lines += ["", f"checkpoint optimizer state and counters: {_use_text(state)}{ignored}",
                  table(headers, _value_rows(state, with_variable))]
    return "\n".join(lines)


def _renamed_text(variables: Sequence[VariableCheck], verbose: bool, most: int = MAX_NAMED) -> str:
    """`variable <- saved name` for each, or, when one rename of the last name part is shared by several (17
    depthwise kernels saved as depthwise_kernel), a count per rename with an example."""
    from ckptcheck.renames import differing

    pairs = tuple(f"{v.variable} <- {v.source_variable}" for v in variables)
    if verbose:
        return _names_text(pairs, verbose)
    groups: dict[tuple[str, str], list[str]] = {}
    for v, pair in zip(variables, pairs, strict=True):
        groups.setdefault(differing(v.source_variable or "", v.name or v.variable), []).append(pair)
    if len(groups) * 2 > len(variables):
        return _names_text(pairs, verbose, most)
    return "; ".join(f"{a or '(none)'} -> {b or '(none)'}: {len(ps)} (e.g. {ps[0]})" for (a, b), ps in
                     groups.items()) + " (--verbose lists them)"


def _names_text(names: Sequence[str], verbose: bool, most: int = MAX_NAMED) -> str:
    if verbose or len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most]) + f", ... and {len(names) - most} more (--verbose, --json)"


def _labelled(text: str, label: str) -> str:
    import textwrap

    return textwrap.fill(text, width=EVIDENCE_WIDTH, initial_indent=label, subsequent_indent=" " * len(label),
                         break_on_hyphens=False, break_long_words=False)


def _count_text(variables: Sequence[VariableCheck], report: RestoreCheckReport) -> str:
    restored = sum(1 for v in variables if v.restored)
    allowed = sum(1 for v in variables if report.allowed(v))
    return f"{restored} of {len(variables)} restored" + (f" ({allowed} allowed to be missing)" if allowed else "")


_SLOT = "/.OPTIMIZER_SLOT/"


def optimizer_of(label: str, fmt: str | None = None) -> str:
    """The optimizer a piece of optimizer state belongs to, for one summary line each: a TF slot's optimizer path
    (`dense/kernel/.OPTIMIZER_SLOT/optimizer/m` -> `optimizer`), a TF1 slot's optimizer name (`dense/kernel/Adam_1`
    -> `Adam`, and Adam's beta powers), else the first part of the name (`adam/dense_kernel_momentum` -> `adam`,
    `optimizer_weights/Adam/m/...` -> `optimizer_weights`)."""
    if _SLOT in label:
        rest = label.split(_SLOT, 1)[1]
        return rest.rsplit("/", 1)[0] if "/" in rest else rest
    if fmt == TF1:
        last = label.rsplit("/", 1)[-1]
        return "Adam" if last in ("beta1_power", "beta2_power") else re.sub(r"_\d+$", "", last)
    return label.split("/", 1)[0]


def _optimizer_variable_lines(variables: Sequence[VariableCheck]) -> list[str]:
    """One line per optimizer: how many of its variables were not restored, by status, with the commonest
    reason."""
    groups: dict[str, list[VariableCheck]] = {}
    for v in variables:
        groups.setdefault(optimizer_of(v.variable), []).append(v)
    out = []
    for name, group in groups.items():
        by_status: dict[str, list[VariableCheck]] = {}
        for v in group:
            by_status.setdefault(v.status, []).append(v)
        parts = []
        for status, vs in sorted(by_status.items(), key=lambda item: -len(item[1])):
            reasons: dict[str, int] = {}
            for v in vs:
                reasons[v.reason or ""] = reasons.get(v.reason or "", 0) + 1
            reason = max(reasons, key=lambda r: reasons[r])
            more = ", ..." if len(reasons) > 1 else ""
            parts.append(f"{len(vs)} {status}" + (f" ({reason}{more})" if reason else ""))
        out.append(_labelled(f"{name}: {len(group)} optimizer variables — {'; '.join(parts)}; e.g. "
                             f"{group[0].variable} (--verbose lists them)", "  "))
    return out


def _optimizer_value_lines(values: Sequence[StoredValueUse], fmt: str) -> list[str]:
    """One line per optimizer whose stored state no variable took."""
    groups: dict[str, list[StoredValueUse]] = {}
    for s in values:
        groups.setdefault(optimizer_of(s.label if fmt in (TF2, SAVEDMODEL) else s.key, fmt), []).append(s)
    return [_labelled(f"{name}: {len(group)} optimizer values, e.g. {_key_text(group[0].label)} (--verbose lists "
                      f"them)", "  ") for name, group in groups.items()]


def _use_text(values: Sequence[StoredValueUse]) -> str:
    used = sum(1 for s in values if s.consumed)
    return f"{used} of {len(values)} used"


def _pair_text(kind: str, m: Any) -> str:
    model, stored = (m.dtype if kind == "dtype" else tuple(shape_text(s) for s in m.shape))
    return f"{model} in the model, {stored} in the checkpoint"


def _rename_text(rename: tuple[str, str]) -> str:
    if rename == ("", ""):
        return "(same name)"
    return f"{rename[0] or '(no scope)'} -> {rename[1] or '(no scope)'}"


def _rename_counts(report: RestoreCheckReport) -> list[tuple[tuple[str, str], int]]:
    counts: dict[tuple[str, str], int] = {}
    for s in report.suggestions:
        if s.rename != ("", ""):
            counts[s.rename] = counts.get(s.rename, 0) + 1
    # A rename shared by several values is a layer (or scope) renamed; one value's own rename says nothing more.
    return sorted(((r, n) for r, n in counts.items() if n > 1), key=lambda item: (-item[1], item[0]))


def _stats_json(stats: TensorStats | None) -> dict[str, Any] | None:
    return stats_dict(stats) if stats is not None else None


def restore_check_dict(report: RestoreCheckReport) -> dict[str, Any]:
    return {
        "schema": RESTORE_CHECK_SCHEMA,
        "ok": report.ok,
        "checkpoint": report.checkpoint,
        "location": report.location,
        "format": report.format,
        "model": report.model,
        "model_kind": report.model_kind,
        "method": report.method,
        "built": list(report.built),
        "restore_error": report.restore_error,
        "options": {"allow_unused": report.allow_unused, "ignore_optimizer": report.ignore_optimizer,
                    "apply_rename_map": report.applied_map, "allow_missing": list(report.allow_missing)},
        "stopped": None if report.stopped is None else {
            "variable": report.stopped.variable, "key": report.stopped.key, "error": report.stopped.error,
            "left_behind": list(report.stopped.left_behind)},
        "recipes": list(report.recipes),
        "summary": {
            "variables": len(report.variables),
            "restored": sum(1 for v in report.variables if v.restored),
            "not_restored": [v.variable for v in report.not_restored],
            "stored_values": len(report.values),
            "used": sum(1 for s in report.values if s.consumed),
            "unused": [s.key for s in report.unused],
            "allowed_missing": [v.variable for v in report.allowed_missing],
        },
        "variables": [
            {"variable": v.variable, "kind": v.kind, "dtype": v.dtype, "shape": list(v.shape), "status": v.status,
             "restored": v.restored, "key": v.key, "source": v.source, "values_equal": v.values_equal, "via": v.via,
             "reason": v.reason, "name": v.name, "source_variable": v.source_variable,
             "kept": None if v.kept is None else {"initializer": v.kept.initializer,
                                                  "description": v.kept.description,
                                                  "stats": _stats_json(v.kept.stats)}}
            for v in report.variables
        ],
        "stored_values": [
            {"key": s.key, "label": s.label, "kind": s.kind, "dtype": s.dtype, "shape": list(s.shape),
             "used_by": list(s.used_by), "counted": report.counts(s.kind), "note": s.note, "variable": s.variable}
            for s in report.values
        ],
        "mismatches": [
            {"variable": m.variable, "key": m.key, "kinds": list(m.kinds),
             "dtype": {"model": m.dtype[0], "checkpoint": m.dtype[1]},
             "shape": {"model": list(m.shape[0]), "checkpoint": list(m.shape[1])}}
            for m in report.mismatches
        ],
        "suggestions": [
            {"variable": s.variable, "variable_key": s.variable_key, "key": s.key, "dtype": s.dtype,
             "shape": list(s.shape), "score": s.score, "rename": {"checkpoint": s.rename[0], "model": s.rename[1]},
             "also": list(s.also), "evidence": s.evidence, "stored_variable": s.stored_variable}
            for s in report.suggestions
        ],
        "notes": list(report.notes),
        "keras3": _keras3_json(report),
    }


def _keras3_json(report: RestoreCheckReport) -> dict[str, Any] | None:
    if report.keras3 is None:
        return None
    from ckptcheck.render.keras3 import keras3_dict

    return keras3_dict(report.keras3)
