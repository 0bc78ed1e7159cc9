"""`keras3-check` reports (and the Keras 3 section of `restore-check` on a legacy .h5), in text and JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckptcheck.render.lab import EVIDENCE_WIDTH

if TYPE_CHECKING:
    from ckptcheck.restore_check.keras3 import Keras3Report, LayerCheck, LoadCheck

KERAS3_SCHEMA = "ckptcheck.keras3-check/1"
MAX_NAMES = 8  # layer names in one row before "... and N more"


def _fill(text: str, label: str = "") -> str:
    return textwrap.fill(text, width=EVIDENCE_WIDTH, initial_indent=label, subsequent_indent=" " * len(label),
                         break_on_hyphens=False, break_long_words=False)


def _fix_text(c: LayerCheck) -> str:
    if c.skipped:
        return c.skipped
    if c.fixes and c.fixed_ok:
        return "drop " + ", ".join(f"{f.argument}={f.value!r}" for f in c.fixes) + " (checked)"
    if c.fixes and c.fixed_error:
        return f"without {', '.join(f.argument for f in c.fixes)} it still fails: {c.fixed_error}"
    return "no certain fix" + (": see below" if c.advice else "")


def _groups(failing: Sequence[LayerCheck]) -> list[tuple[LayerCheck, list[str]]]:
    """Failing layers grouped by class, reason and fix: one row each, with the layers' names."""
    groups: dict[tuple[str, str, str], tuple[LayerCheck, list[str]]] = {}
    for c in failing:
        key = (c.class_name, c.error or c.skipped or "", _fix_text(c))
        groups.setdefault(key, (c, []))[1].append(c.path)
    return list(groups.values())


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f", ... and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def verdict(report: Keras3Report) -> str:
    failing = report.failing
    n = len(report.layers)
    load = report.load
    if report.whole_error is None and not failing and load is not None and load.error is None \
            and load.compile_error is not None:
        return (f"KERAS 3 FAILS to compile it: Keras {report.keras_version} deserializes every layer of its config "
                f"({n} layers), but load_model raised while compiling its training_config (see below)")
    if report.ok:
        return f"OK: Keras {report.keras_version} deserializes every layer of this file's config ({n} layers)"
    if not failing:
        return f"KERAS 3 FAILS on the model as a whole, although each of its {n} layers deserializes"
    fixed = sum(1 for c in failing if c.fixed_ok)
    tail = ("; each has a certain fix, checked" if fixed == len(failing) else
            f"; {fixed} of them {'has' if fixed == 1 else 'have'} a certain fix, checked" if fixed else
            "; no certain fix")
    return f"KERAS 3 FAILS on {len(failing)} of {n} layers of this file's config (Keras {report.keras_version}){tail}"


def layer_lines(report: Keras3Report) -> list[str]:
    """The failing layers, grouped by class, reason and fix: Keras's reason, the fix and why it is certain."""
    lines: list[str] = []
    for c, names in _groups(report.failing):
        lines.append(_fill(f"{c.class_name} ({len(names)} layer{'s' if len(names) != 1 else ''}: {_names(names)})",
                           "  "))
        if c.error:
            lines.append(_fill(c.error, "    Keras:  "))
        fix = _fix_text(c)
        if c.fixes and c.fixed_ok:
            why = "; ".join(dict.fromkeys(f.why for f in c.fixes))
            fix = f"{fix[: -len(' (checked)')]} — checked: Keras then deserializes the layer; certain: {why}"
        lines.append(_fill(fix if not c.advice else f"{fix[: -len(': see below')]}: {c.advice}", "    fix:    "))
    return lines


def keras3_text(report: Keras3Report) -> str:
    lines = [verdict(report),
             f"file:       {report.path} ({report.model_class})",
             _fill("each layer of its model_config deserialized on its own by the installed Keras, in safe mode, with "
                   "the call keras.saving.load_model makes for a legacy .h5 (legacy saving_utils.model_from_config)",
                   "asked:      ")]
    lines += [_fill(n, "note:       ") for n in report.notes]
    failing = report.failing
    if failing:
        lines += ["", f"layers Keras 3 fails on: {len(failing)}", *layer_lines(report)]
    if report.whole_error is not None:
        lines += ["", _fill(f"the whole config as it is: {report.whole_error}", "")]
        if report.fixed_config is not None:
            lines.append(_fill("the whole config with the fixes: " + ("Keras deserializes it"
                                                                      if report.fixed_error is None
                                                                      else report.fixed_error), ""))
    if report.load is not None:
        lines += ["", *load_lines(report.load, fixed=report.fixed_config is not None)]
    return "\n".join(lines)


def load_lines(load: LoadCheck, *, fixed: bool) -> list[str]:
    """What keras.saving.load_model did with the (fixed) file, measured."""
    what = "a copy of the file with the fixed config" if fixed else "the file"
    if load.error is not None:
        return [_fill(f"keras.saving.load_model on {what} raised {load.error}", "load_model: ")]
    out = []
    if load.compile_error is not None:
        out.append(_fill(f"keras.saving.load_model on {what} raised {load.compile_error} while compiling (the "
                         f"training_config); with compile=False it loads", "load_model: "))
    else:
        out.append(_fill(f"keras.saving.load_model on {what} loads it", "load_model: "))
    out.append(_fill(f"{load.weights_equal} of {load.weights} weights hold the file's values (bit for bit)",
                     "weights:    "))
    if load.stored_optimizer_values:
        if load.optimizer is None:
            state = (f"the model is not compiled, so it has no optimizer: none of the file's "
                     f"{load.stored_optimizer_values} optimizer values is loaded")
        else:
            held = f" ({', '.join(load.optimizer_loaded[:3])})" if load.optimizer_loaded else ""
            state = (f"compiled with {load.optimizer}, whose {load.optimizer_variables} variables after loading "
                     f"include {len(load.optimizer_loaded)} holding a value of the file's optimizer_weights{held}: "
                     f"{load.stored_optimizer_values - len(load.optimizer_loaded)} of its "
                     f"{load.stored_optimizer_values} optimizer values are loaded into no variable")
        out.append(_fill(state, "optimizer:  "))
        said = [w for w in load.logged if "optimizer" in w.lower()]
        out += [_fill(f"Keras logged: {w}", "            ") for w in said]
        out.append(_fill("build the model with Keras 3 (or load it as above), "
                         "compile it, call model.optimizer.build(model.trainable_variables) and load the weights; "
                         "`ckptcheck restore-check FILE --model MODEL --rename-map MAP` pairs each Keras 2 slot with "
                         "its Keras 3 variable (the slot of the variable restored from the slot's variable: m -> "
                         "momentum, v -> velocity) and the iteration count, and "
                         "ckptcheck.restore_check.apply_rename_map(model, FILE, MAP) assigns them", "carry over: "))
    return out


def restore_check_section(report: Keras3Report) -> list[str]:
    """The short form restore-check shows for a legacy .h5 restored into a Keras 3 model."""
    if report.ok:
        return [f"keras 3:    Keras {report.keras_version} deserializes every layer of this file's config "
                f"({len(report.layers)} layers): keras.saving.load_model can rebuild it"]
    lines = ["", _fill(verdict(report) + " (asked layer by layer; `ckptcheck keras3-check FILE` loads the fixed "
                       "file and measures what becomes of the weights and the optimizer's state):", "")]
    return lines + layer_lines(report)


def _layer_dict(c: LayerCheck) -> dict[str, Any]:
    return {"layer": c.path, "class_name": c.class_name, "ok": c.ok, "error": c.error,
            "fixes": [{"drop": f.argument, "value": f.value, "why": f.why} for f in c.fixes],
            "fixed_ok": c.fixed_ok, "fixed_error": c.fixed_error, "advice": c.advice, "skipped": c.skipped}


def keras3_dict(report: Keras3Report) -> dict[str, Any]:
    load = report.load
    return {
        "schema": KERAS3_SCHEMA,
        "ok": report.ok,
        "path": report.path,
        "keras_version": report.keras_version,
        "model_class": report.model_class,
        "layers": len(report.layers),
        "failing": [_layer_dict(c) for c in report.failing],
        "whole_error": report.whole_error,
        "fixed_error": report.fixed_error,
        "fixed": report.fixed_config is not None,
        "load": None if load is None else {
            "error": load.error, "compile_error": load.compile_error, "weights": load.weights,
            "weights_equal": load.weights_equal, "compiled": load.compiled, "optimizer": load.optimizer,
            "optimizer_variables": load.optimizer_variables, "optimizer_loaded": list(load.optimizer_loaded),
            "stored_optimizer_values": load.stored_optimizer_values, "logged": list(load.logged)},
        "notes": list(report.notes),
    }
