"""Step 4: measure the restore: fill every variable with a fingerprint, run the format's own restore, and
report what each variable holds after it, where the restore stopped and what loads the rest."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckptcheck.compare import same_bits
from ckptcheck.errors import UsageError
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.object_graph import OPTIMIZER_SLOT
from ckptcheck.records import KERAS, KERAS_FORMATS, KERAS_H5, KERAS_WEIGHTS, SAVEDMODEL, TF1, TF2, ObjectRef, TensorInfo
from ckptcheck.restore_check.matching import (
    match_tf2,
    predict_keras3,
    predict_legacy_h5,
    predict_tf2,
    short_key,
    tf2_root,
)
from ckptcheck.restore_check.report import (
    MISMATCH,
    MISSING,
    OPTIMIZER,
    RESTORED,
    RESTORED_DIFFERENT,
    SKIPPED,
    WEIGHT,
    KeptValue,
    Mismatch,
    RenameSuggestion,
    RestoreCheckReport,
    RestoreStop,
    StoredValueUse,
    VariableCheck,
)
from ckptcheck.restore_check.stored import StoredValues, equal_values, largest_difference, stored_kinds
from ckptcheck.restore_check.suggest import read_rename_map, resolve_map, suggest
from ckptcheck.restore_check.user_model import (
    LoadedModel,
    build_lazy,
    is_keras_model,
    keras_module,
    load_model,
    one_line,
    quiet_logs,
    tensorflow_module,
)
from ckptcheck.restore_check.variables import (
    DETERMINISTIC_INITIALIZERS,
    Var,
    argument_text,
    enumerate_variables,
    fingerprint_of,
    tf_name,
    value_of,
)

KERAS_SKIPS_OPTIMIZER = "Skipping variable loading for optimizer"
StageCallback = Callable[[str], None]


# --- the check ------------------------------------------------------------------------------------------------------


def restore_check(
    checkpoint: str,
    model: str,
    *,
    input_shapes: Sequence[tuple[int, ...]] = (),
    allow_unused: bool = False,
    ignore_optimizer: bool = False,
    apply_map: str | None = None,
    on_stage: StageCallback | None = None,
    allow_missing: Sequence[str] = (),
) -> RestoreCheckReport:
    """Restore CHECKPOINT into the model --model builds and report every variable and every stored value."""
    import gc

    from ckptcheck.restore_check.arguments import check_arguments

    check_arguments(checkpoint, model, apply_map)  # before TensorFlow's start-up: a typo costs no seconds
    pairs = read_rename_map(apply_map) if apply_map is not None else None
    from ckptcheck.formats.resolve import resolve
    from ckptcheck.records import SAFETENSORS

    if resolve(checkpoint).kind == SAFETENSORS:  # before TensorFlow's import: nothing of it restores one
        raise UsageError("restore-check restores TensorFlow and Keras checkpoints with their own restore; no "
                         "TensorFlow or Keras restore reads a safetensors file", path=checkpoint,
                         hint="assign its tensors by name (README: export's recipes), or restore-check the "
                              "checkpoint it was exported from")
    tf = tensorflow_module()
    try:
        with quiet_logs(tf, []):
            return _check(checkpoint, model, input_shapes, allow_unused, ignore_optimizer, apply_map, pairs,
                          on_stage or (lambda _what: None), tf, allow_missing)
    finally:
        # A restore that raised leaves TensorFlow's restore coordinator on the model's objects, and it logs every
        # unrestored value when they are collected: collect them now, while TensorFlow's logger is quiet.
        with quiet_logs(tf, []):
            gc.collect()


def _check(checkpoint: str, model: str, input_shapes: Sequence[tuple[int, ...]], allow_unused: bool,
           ignore_optimizer: bool, apply_map: str | None, pairs: list[tuple[str, str]] | None, stage: StageCallback,
           tf: Any, allow_missing: Sequence[str] = ()) -> RestoreCheckReport:
    import ckptcheck

    with ckptcheck.open_checkpoint(checkpoint) as reader:
        fmt = reader.format
        location = reader.info().location
        stage("loading the model")
        keras = keras_module()
        loaded = load_model(model)
        if fmt in KERAS_FORMATS and (isinstance(loaded.target, dict)
                                                          or not is_keras_model(loaded.target)):
            raise UsageError(f"a Keras file is restored with Model.load_weights; the model is a {loaded.kind}",
                             path=model, hint="return a Keras model from FUNCTION for a Keras checkpoint")
        with tempfile.TemporaryDirectory(prefix="ckptcheck-restore-check-") as work:
            # TensorFlow's and Keras's restores read local files: a checkpoint at a URL is copied here first
            # (and removed with the directory); ckptcheck's own reads stay on the URL.
            local = _local_copy(location, reader.info().files, work)
            stage("building")
            built = loaded.notes + build_lazy(loaded, input_shapes, fmt, local)
            variables = enumerate_variables(loaded, fmt, tf, keras)
            stored = StoredValues(reader)
            stage("restoring")
            outcome = _restore(fmt, local, loaded, reader, stored, variables, work, tf, keras)
            keras3 = _keras3(fmt, local, loaded, keras)
        for v in variables:  # values are read again when compared, one at a time: no copy of the whole model
            v.via = "restore" if v.fingerprint is not None and not same_bits(value_of(v.obj), v.fingerprint) else None
        if pairs is not None:
            _apply_pairs(pairs, variables, stored, apply_map or "")
        stage("comparing")
        skipped_optimizer = next((w for w in outcome.warnings if w.startswith(KERAS_SKIPS_OPTIMIZER)), None)
        checks, mismatches = _checks(variables, stored, fmt, outcome.error, outcome.warned, skipped_optimizer)
        values = _uses(fmt, reader, stored, checks, outcome.others)
        suggestions = suggest(checks, values, use_paths=fmt in (TF2, SAVEDMODEL), copies=_copies(values, stored))
        notes = outcome.notes + _format_notes(fmt, variables, keras, stored)
        if fmt == KERAS_H5 and any(v.kind == OPTIMIZER for v in checks if v.variable in {s.variable for s in
                                                                                         suggestions}):
            notes.append("its optimizer state carries over to a Keras 3 optimizer of the same algorithm: "
                         "--rename-map FILE writes each Keras 2 slot paired with its Keras 3 variable (likely matches "
                         "below); after model.optimizer.build(model.trainable_variables) and load_weights, "
                         "ckptcheck.restore_check.apply_rename_map(model, PATH, FILE) assigns them")
        stopped = _stopped(fmt, outcome.error, checks, mismatches, stored)
        recipes = _recipes(fmt, loaded, variables, mismatches, stopped, outcome.method, suggestions)
    return RestoreCheckReport(
        checkpoint=checkpoint, location=location, format=fmt, model=model, model_kind=loaded.kind,
        method=outcome.method, built=tuple(built), restore_error=outcome.error, variables=tuple(checks),
        values=tuple(values), mismatches=tuple(mismatches), suggestions=suggestions, notes=tuple(notes),
        allow_unused=allow_unused, ignore_optimizer=ignore_optimizer, applied_map=apply_map,
        allow_missing=tuple(allow_missing), stopped=stopped, recipes=tuple(recipes), keras3=keras3)


def _keras3(fmt: str, local: str, loaded: LoadedModel, keras: Any) -> Any:
    """For a legacy .h5 restored into a Keras 3 model: each layer of its config asked of the installed Keras
    (the weights restore by position whatever the config; keras.saving.load_model needs the config)."""
    if fmt != KERAS_H5 or keras is None or not isinstance(loaded.target, getattr(keras, "Model", ())):
        return None
    from ckptcheck.restore_check.keras3 import keras3_check

    try:
        return keras3_check(local, measure_load=False)
    except UsageError:  # a weights-only .h5: no config to ask about
        return None


def _local_copy(location: str, files: Sequence[str], work: str) -> str:
    """``location`` itself when it is local; for a URL, its files downloaded into ``work``/checkpoint and the
    location there."""
    from ckptcheck.formats import location as loc

    if not loc.is_url(location):
        return location
    directory = os.path.join(work, "checkpoint")
    os.makedirs(directory)
    for url in files:
        loc.download(url, os.path.join(directory, loc.basename(url)))
    return os.path.join(directory, loc.basename(location))


def _copies(values: Sequence[StoredValueUse], stored: StoredValues) -> dict[str, str]:
    """Stored values saved under the same name with the same bits (the same variable saved twice), each mapped to
    the first; only values sharing a name are read."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
    for s in values:
        if s.variable and not s.variable.startswith("("):
            groups.setdefault((s.variable, s.dtype, s.shape), []).append(s.key)
    out: dict[str, str] = {}
    for keys in groups.values():
        if len(keys) < 2:
            continue
        first = stored.read(keys[0])
        for k in keys[1:]:
            if same_bits(first, stored.read(k)):
                out[k] = keys[0]
    return out


def _stopped(fmt: str, error: str | None, checks: Sequence[VariableCheck], mismatches: Sequence[Mismatch],
             stored: StoredValues) -> RestoreStop | None:
    """TensorFlow's restore (object- and name-based) raises at the first dtype or shape mismatch, and what it had
    not reached yet stays unrestored although it is stored under its own name, fitting."""
    if error is None or fmt not in (TF2, SAVEDMODEL, TF1):
        return None
    def own(c: VariableCheck) -> bool:
        """The value at its path was saved from a variable of its name (or nothing says otherwise)."""
        saved_as = stored.infos[c.key].variable if c.key in stored.infos else None
        return saved_as is None or c.name is None or saved_as == c.name or saved_as.startswith("(")

    left = tuple(c.variable for c in checks if c.status == SKIPPED and own(c))
    if not left:
        return None
    named = re.search(r"and name (\S+?)(?::\d+)?\.?$", error)
    at = None
    if named is not None:
        by_name = [c for c in checks if c.status == MISMATCH and named.group(1) in (c.name, c.variable)]
        at = by_name[0] if len(by_name) == 1 else None
    if at is None and mismatches:
        at = next((c for c in checks if c.variable == mismatches[0].variable), None)
    return RestoreStop(variable=at.variable if at else None, key=at.key if at else None, error=error,
                       left_behind=left)


def _recipes(fmt: str, loaded: LoadedModel, variables: Sequence[Var], mismatches: Sequence[Mismatch],
             stopped: RestoreStop | None, method: str, suggestions: Sequence[RenameSuggestion] = ()) -> list[str]:
    """Ways to load everything but the mismatched layers in this format. Each is measured by the tests against
    TensorFlow and Keras (tests/test_restore_real.py); none is offered where it was not."""
    out: list[str] = []
    if not mismatches:
        return out
    target = loaded.target
    if fmt in KERAS_FORMATS:
        layers = sorted({m.variable.rsplit("/", 1)[0] for m in mismatches if "/" in m.variable})
        out.append("model.load_weights(PATH, skip_mismatch=True) loads every layer whose variables fit and skips "
                   f"the rest with a warning ({', '.join(layers[:5])}{', ...' if len(layers) > 5 else ''})")
        return out
    if fmt not in (TF2, SAVEDMODEL, TF1):
        return out
    head = _head_layers(target, variables, mismatches)
    if fmt == TF2 and head is not None and method.startswith("tf.train.Checkpoint(model=<model>)"):
        index, names = head
        out.append(f"restore a model without the head, which shares the other layers: backbone = keras.Model("
                   f"model.inputs, model.layers[{index}].output); tf.train.Checkpoint(model=backbone).restore("
                   f"PATH).expect_partial() restores every layer but {', '.join(names)} (not the optimizer's state)")
    covered = [s for s in suggestions if stopped is not None and s.variable in stopped.left_behind
               and s.rename == ("", "")]
    if covered:
        out.append(f"write the values left behind as a rename map (--rename-map FILE: {len(covered)} variables, "
                   f"each from the value saved under its own name) and after your restore (which raises: catch it) "
                   f"call ckptcheck.restore_check.apply_rename_map(model, PATH, FILE)")
    return out


def _head_layers(target: Any, variables: Sequence[Var], mismatches: Sequence[Mismatch]
                 ) -> tuple[int, list[str]] | None:
    """(the index in model.layers of the last layer before them, the mismatched layers) when every mismatch is
    in the last layers of a Keras functional model: the case a model without the head restores."""
    if isinstance(target, dict) or type(target).__name__ != "Functional" or not is_keras_model(target):
        return None
    by_label = {v.label: v for v in variables}
    owners = set()
    for m in mismatches:
        v = by_label.get(m.variable)
        if v is not None and v.kind == OPTIMIZER:
            continue  # the head's optimizer slots: the recipe leaves the optimizer out anyway
        if v is None or v.kind != WEIGHT or not v.name or "/" not in v.name:
            return None
        owners.add(v.name.rsplit("/", 1)[0])
    layers = list(target.layers)
    k = len(owners)
    if k == 0 or k >= len(layers) or {layer.name for layer in layers[-k:]} != owners:
        return None
    return -k - 1, [layer.name for layer in layers[-k:]]


@dataclass
class _Outcome:
    method: str
    error: str | None
    notes: list[str]
    others: dict[str, str]  # stored key -> a non-variable live object that consumed it
    warned: bool = False  # the restore emitted warnings
    warnings: tuple[str, ...] = ()  # their text


def _restore(fmt: str, location: str, loaded: LoadedModel, reader: CheckpointReader, stored: StoredValues,
             variables: list[Var], work: str, tf: Any, keras: Any) -> _Outcome:
    """Fingerprint every variable, run the format's restore, and say how (the error it raised, if any)."""
    notes: list[str] = []
    others: dict[str, str] = {}
    root = None
    if fmt in (TF2, SAVEDMODEL):
        root, graph_root, written, root_notes = tf2_root(loaded, reader, tf)
        notes += root_notes
        _ = root.save_counter  # created now (not on restore), so it is bound like any other object
        match = match_tf2(reader, graph_root, variables, tf, keras)
        predict_tf2(variables, match, graph_root, tf, keras)
        others = match.others
        method = (f"{written}.restore() — object-based: stored objects are matched to the model's by their path "
                  f"of attribute names from the root")
    elif fmt == TF1:
        target = loaded.target
        root = tf.train.Checkpoint(**target) if isinstance(target, dict) else tf.train.Checkpoint(model=target)
        for v in variables:
            v.key = tf_name(v.obj, keras)
        method = ("tf.train.Checkpoint(...).restore() — name-based: a TF1 checkpoint has no object graph, so "
                  "TensorFlow matches each variable by its name")
    elif fmt == KERAS_H5:
        predict_legacy_h5(loaded.target, variables, list(stored.infos.values()))
        method = ("keras.Model.load_weights() — legacy HDF5: the k-th layer with weights takes the file's k-th layer "
                  "group, whatever the names")
    else:
        method = ("keras.Model.load_weights() — Keras 3 layout: layers are keyed by class and position "
                  "(layers/dense_1/vars/0), not by their names")
    groups: dict[tuple[str, tuple[int, ...]], int] = {}
    for v in variables:
        k = groups.get((v.dtype, v.shape), 0)
        groups[(v.dtype, v.shape)] = k + 1
        avoid = stored.read(v.key) if v.key in stored.infos and stored.infos[v.key].shape == v.shape else None
        v.initial_stats = _initial_stats(v)
        v.fingerprint = fingerprint_of(v, k, avoid)
        del avoid
        v.initial = np.empty(0, dtype=v.initial.dtype)
        v.obj.assign(v.fingerprint)
        v.fingerprint = _compact(value_of(v.obj))  # as the variable holds it
    if fmt in (KERAS, KERAS_WEIGHTS):
        with quiet_logs(tf, []):
            predict_keras3(loaded.target, variables, work)
    error = None
    warned: list[str] = []
    with quiet_logs(tf, warned):
        try:
            if root is not None:
                status = root.restore(location)
                with contextlib.suppress(AttributeError):
                    status.expect_partial()  # its own "unresolved object" log lines say less than this report
                del status
            else:
                loaded.target.load_weights(location)
        except Exception as exc:  # whatever the restore raises is what the user's own restore would raise
            error = f"{type(exc).__name__}: {one_line(str(exc))}"
    return _Outcome(method, error, notes + [f"the restore warned: {w}" for w in warned], others, bool(warned),
                    tuple(warned))


def _apply_pairs(pairs: Sequence[tuple[str, str]], variables: list[Var], stored: StoredValues, where: str) -> None:
    by_label = {v.label: v for v in variables}
    resolved = resolve_map(pairs, dict(by_label), stored, where, lambda v: (v.dtype, v.shape))
    for _label, key, v in resolved:
        v.obj.assign(stored.read(key))
        v.via = f"rename map:{key}"


def _checks(variables: Sequence[Var], stored: StoredValues, fmt: str, error: str | None, warned: bool,
            skipped_optimizer: str | None = None) -> tuple[list[VariableCheck], list[Mismatch]]:
    checks: list[VariableCheck] = []
    mismatches: list[Mismatch] = []
    for v in variables:
        info = stored.infos.get(v.key) if v.key is not None else None
        if v.via is not None:
            v.after = value_of(v.obj)
            checks.append(_written(v, stored, info))
            v.after = None
            continue
        kept = _kept(v)
        if skipped_optimizer is not None and v.kind == OPTIMIZER and fmt in (KERAS, KERAS_WEIGHTS):
            # Keras compares the optimizer's variable count with the file's and loads none of them when they differ.
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, SKIPPED, v.key, name=v.name,
                                        reason=f"Keras skipped the whole optimizer: {skipped_optimizer}", kept=kept))
            continue
        if info is not None and (info.dtype, info.shape) != (v.dtype, v.shape):
            mismatches.append(Mismatch(v.label, info.name, (v.dtype, info.dtype), (v.shape, info.shape)))
            parts = []
            if info.dtype != v.dtype:
                parts.append(f"dtype {info.dtype}")
            if info.shape != v.shape:
                parts.append(f"shape {list(info.shape)}")
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, MISMATCH, v.key, name=v.name,
                                        reason=f"stored with {' and '.join(parts)}", kept=kept))
        elif info is not None:
            why = "stored with this dtype and shape, but the restore did not write it"
            if error is not None:
                why += " (the restore raised: see above)"
            elif warned:
                why += " (see the restore's warnings)"
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, SKIPPED, v.key, name=v.name, reason=why,
                                        kept=kept))
        else:
            checks.append(VariableCheck(v.label, v.kind, v.dtype, v.shape, MISSING, v.key, name=v.name,
                                        reason=_missing_reason(v, fmt, stored), kept=kept))
    return checks, mismatches


def _missing_reason(v: Var, fmt: str, stored: StoredValues | None = None) -> str:
    if v.key is None:
        if fmt == KERAS_H5 and v.kind == OPTIMIZER and (v.name or "").endswith("/learning_rate") and not any(
                (t.variable or "").endswith("learning_rate") for t in (stored.infos.values() if stored else ())):
            return ("the .h5 stores no learning-rate variable (a Keras 2 optimizer's learning rate is in its "
                    "training_config); it keeps the value the model was compiled with")
        if fmt == KERAS_H5:
            return ("load_weights does not read a legacy .h5's optimizer_weights" if v.kind == OPTIMIZER else
                    "the file has no layer group at its position")
        return "the restore looks it up under no stored name"
    if fmt in (TF2, SAVEDMODEL):
        return "nothing stored at this object path"
    return "nothing stored under this name"


def _written(v: Var, stored: StoredValues, info: TensorInfo | None) -> VariableCheck:
    """A variable the restore (or the rename map) wrote: find the stored value it now equals."""
    assert v.after is not None
    via = "rename map" if v.via and v.via.startswith("rename map:") else "restore"
    preferred = v.via.split(":", 1)[1] if v.via and v.via.startswith("rename map:") else v.key
    candidates = [k for k in ([preferred] if preferred in stored.infos else [])]
    candidates += sorted((k for k, t in stored.infos.items() if t.shape == v.shape and k != preferred),
                         key=lambda k: (stored.infos[k].variable != v.name, k))
    equal: list[tuple[str, str | None]] = []
    for k in candidates:
        same, conversion = equal_values(v.after, stored.read(k))
        if same:
            equal.append((k, conversion))
            if k == preferred:
                break
    if equal:
        source, conversion = equal[0]
        notes = []
        if conversion:
            notes.append(conversion)
        if via == "restore" and preferred is not None and source != preferred:
            notes.append(f"ckptcheck expected it to come from {short_key(preferred)}")
        if len(equal) > 1 and source != preferred:
            notes.append("equal values are also stored at " + ", ".join(short_key(k) for k, _ in equal[1:4]))
        saved_as = stored.infos[source].variable
        if saved_as and v.name and saved_as != v.name and not saved_as.startswith("("):
            notes.append(f"the value saved as {saved_as}, not under its own name")
        return VariableCheck(v.label, v.kind, v.dtype, v.shape, RESTORED, v.key, name=v.name, source=source,
                             values_equal=True, via=via, reason="; ".join(notes) or None, source_variable=saved_as)
    near = preferred if preferred in stored.infos else None
    diff = largest_difference(v.after, stored.read(near)) if near is not None else None
    why = "written by the restore, but equal to no stored value"
    if near is not None:
        why += f"; it differs from {short_key(near)}" + (f" by up to {diff:.6g}" if diff is not None else "")
    return VariableCheck(v.label, v.kind, v.dtype, v.shape, RESTORED_DIFFERENT, v.key, name=v.name, source=near,
                         values_equal=False, via=via, reason=why)


def _initial_stats(v: Var) -> Any:
    from ckptcheck.stats import stats_of_chunks

    return stats_of_chunks(v.label, v.dtype, [v.initial.reshape(-1)]) if v.initial.size else None


def _compact(value: np.ndarray) -> np.ndarray:
    """A constant array as a read-only broadcast of its one element (no memory per element); others as they are."""
    flat = value.reshape(-1)
    if flat.size > 1 and bool(np.all(flat == flat[0])) and (value.dtype == object or same_bits(
            np.broadcast_to(flat[:1], value.shape), value)):
        return np.broadcast_to(flat[:1].copy(), value.shape)
    return value


def _kept(v: Var) -> KeptValue:
    """What a variable that was not restored holds: its initial value, described by its initializer where the code
    that built it says, and by statistics of the values."""

    stats = v.initial_stats if v.initial_stats is not None else _initial_stats(v)
    summary = _stats_text(stats)
    if v.initializer is not None:
        cls = v.initializer.split("(", 1)[0]
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower()
        if cls in DETERMINISTIC_INITIALIZERS:
            described = (stats.note if stats is not None and stats.note else summary) or "its initial value"
            return KeptValue(v.initializer, f"{described} (its initializer, {v.initializer})", stats)
        return KeptValue(v.initializer, f"{snake} draw" + (f" ({summary})" if summary else ""), stats)
    if stats is not None and stats.note and stats.note.startswith(("constant", "all ")):
        return KeptValue(None, f"{stats.note} (its initial value)", stats)
    return KeptValue(None, f"its initial value: {summary}" if summary else "its initial value", stats)


def _stats_text(stats: Any) -> str:
    if stats is None or stats.min is None:
        return stats.note if stats is not None and stats.note else ""
    return (f"min {argument_text(stats.min)}, max {argument_text(stats.max)}, mean {argument_text(stats.mean)}, "
            f"std {argument_text(stats.std)}")


def _uses(fmt: str, reader: CheckpointReader, stored: StoredValues, checks: Sequence[VariableCheck],
          others: dict[str, str]) -> list[StoredValueUse]:
    refs: dict[str, ObjectRef] = {}
    if fmt in (TF2, SAVEDMODEL):
        refs = {r.key: r for r in reader.objects() or ()}
    used: dict[str, list[VariableCheck]] = {}
    looked: dict[str, list[VariableCheck]] = {}
    for c in checks:
        if c.source is not None and c.status in (RESTORED, RESTORED_DIFFERENT):
            used.setdefault(c.source, []).append(c)
        if c.key is not None and c.status in (MISMATCH, SKIPPED):
            looked.setdefault(c.key, []).append(c)
    kinds = stored_kinds(reader, list(stored.infos.values()), refs if fmt in (TF2, SAVEDMODEL) else None)
    out = []
    for key, t in stored.infos.items():
        ref = refs.get(key)
        label = short_key(key)
        if ref is not None and ref.paths:
            # The path through the model reads better than the optimizer's list that reached it first.
            plain = [p for p in ref.paths if not any("optimizer" in part.lower() for part in p.split("/"))]
            label = short_key(plain[0] if plain else ref.paths[0])
        users = used.get(key, [])
        kind = users[0].kind if users else kinds[key]
        by = [c.variable for c in users]
        if not users and key in others:
            path = others[key]
            by = [f"{path} (tf.train.Checkpoint's own counter)" if path == "save_counter" else f"{path} (not a "
                  f"model variable)"]
        note = None
        if key in looked:
            c = looked[key][0]
            note = (f"{c.variable} looks for it, but is {c.dtype} {list(c.shape)}" if c.status == MISMATCH else
                    f"{c.variable} looks for it, but the restore did not write it")
        elif not by and ref is not None and any(OPTIMIZER_SLOT in p for p in ref.paths):
            note = ("optimizer slot not created yet: TensorFlow holds the value and restores it when the slot is "
                    "created (first apply_gradients)")
        out.append(StoredValueUse(key=key, label=label, kind=kind, dtype=t.dtype, shape=t.shape, used_by=tuple(by),
                                  note=note, variable=t.variable))
    return out


def _format_notes(fmt: str, variables: Sequence[Var], keras: Any, stored: StoredValues) -> list[str]:
    notes = []
    kv = getattr(keras, "Variable", None) if keras is not None else None
    keras_vars = [v for v in variables if kv is not None and isinstance(v.obj, kv) and v.via is None]
    if fmt == TF1 and keras_vars and len(keras_vars) == sum(1 for v in variables
                                                            if kv is not None and isinstance(v.obj, kv)):
        notes.append(f"TensorFlow's name-based restore does not restore Keras 3 variables ({len(keras_vars)} here), "
                     f"whatever their names: copy the values yourself (a rename map does it: --rename-map, then "
                     f"apply_rename_map)")
    if fmt == KERAS_H5 and any(k.startswith("optimizer_weights/") for k in stored.infos):
        notes.append("keras.Model.load_weights reads only a legacy .h5's model_weights: its optimizer_weights are "
                     "left behind")
    return notes
