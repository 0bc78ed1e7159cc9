"""Save, restore into freshly built models whose initializers differ, compare bit for bit, and say what the
checkpoint records — each fact derived from the files themselves and from the restore experiment.

The experiment, per format: the checkpoint (generated, or `--from PATH`) is restored into two fresh models, one
initialized with a sentinel constant and one with a random initializer under another seed. Each fresh model is
written before and after the restore in the same format, and ckptcheck's own readers compare what it wrote with
the original, tensor by tensor and bit for bit. A restore that skipped a tensor shows up as the fresh value.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ckptcheck.compare import same_bits
from ckptcheck.errors import CorruptCheckpointError, UsageError
from ckptcheck.formats.keras.safety import model_config
from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
from ckptcheck.lab.gate import import_tensorflow
from ckptcheck.lab.generate import (
    GENERATE_FORMATS,
    MAX_SEED,
    build_model,
    check_options,
    generate,
    read_stored,
    target_path,
)
from ckptcheck.lab.initializers import InitPlan, parse_spec
from ckptcheck.lab.reports import Fact, GenerateOptions, RestoreRun, RoundTripReport, TensorRoundTrip
from ckptcheck.numbers import number_text
from ckptcheck.records import KERAS, KERAS_FORMATS, SAVEDMODEL, TF1, TF2, ObjectRef, TensorInfo

SENTINEL = -7.25  # exactly representable, and no initializer or trained weight lands on it by chance
RESEED_OFFSET = 7919
PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

StageCallback = Callable[[str], None]
Values = dict[str, np.ndarray]


def restore_plans(seed: int) -> list[tuple[str, InitPlan, int]]:
    """The fresh models restored into: a sentinel constant, and a random draw under another seed."""
    sentinel = parse_spec(f"constant:{SENTINEL}")
    normal = parse_spec("random_normal:mean=0,stddev=1")
    return [
        ("sentinel", InitPlan(kernel=sentinel, bias=sentinel), (seed + 1) % (MAX_SEED + 1)),
        ("reseeded", InitPlan(kernel=normal, bias=normal), (seed + RESEED_OFFSET) % (MAX_SEED + 1)),
    ]


def source_format(path: str) -> tuple[str, str]:
    """The format and location of an existing checkpoint (`--from`), detected from its files."""
    from ckptcheck.formats.resolve import BUNDLE, resolve
    from ckptcheck.formats.tensorflow.bundle import BundleReader

    resolved = resolve(path)
    if resolved.kind == "v1":
        raise UsageError("roundtrip --from takes V2 checkpoints; this is a V1 checkpoint (TensorSliceReader format)",
                         path=path, hint="inspect, verify, manifest, diff and restore-check read it; to roundtrip, "
                                         "restore it into your graph and save it again with a V2 Saver")
    if resolved.kind != BUNDLE:
        return resolved.kind, resolved.location
    with BundleReader(resolved.location, path=path, format=resolved.format_hint) as reader:
        fmt = reader.format
    if fmt == SAVEDMODEL:
        raise UsageError("roundtrip rebuilds the model from --layers/--inputs; a SavedModel brings its own",
                         path=path, hint="pass a tf1 or tf2 checkpoint, or a Keras file")
    return fmt, resolved.location


@contextlib.contextmanager
def work_directory(keep: str | None, fmt: str) -> Iterator[str]:
    if keep is not None:
        path = os.path.join(keep, fmt)
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            # Never delete or mix with what is there: it may not be ours.
            raise UsageError(f"{path} already exists and is not empty", path=keep,
                             hint="give --keep a new or empty directory")
        os.makedirs(path, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"ckptcheck-roundtrip-{fmt}-") as path:
        yield path


def roundtrip(
    options: GenerateOptions,
    *,
    source: str | None = None,
    keep: str | None = None,
    on_stage: StageCallback | None = None,
) -> RoundTripReport:
    """Generate (or take `source`), restore into two fresh models, compare, and establish the facts."""
    stage = on_stage or (lambda _label: None)
    check_options(options)
    fmt = options.format
    with work_directory(keep, fmt) as work:
        if source is None:
            stage(f"{fmt}: generate")
            location = generate(os.path.join(work, "original"), options).location
        else:
            found, location = source_format(source)
            if found != fmt:
                raise UsageError(f"--from holds a {found} checkpoint, not {fmt}", path=source,
                                 hint=f"--format {found}")
        infos, stored = read_stored(location)
        runs: list[RestoreRun] = []
        befores: list[Values] = []
        afters: list[Values] = []
        for label, plan, seed in restore_plans(options.seed):
            stage(f"{fmt}: restore into a fresh model ({plan.kernel.text()})")
            model = build_model(options, plan, seed)
            try:
                before = model.snapshot(target_path(fmt, os.path.join(work, f"{label}-before")))
                notes = model.restore(location)
                after = model.snapshot(target_path(fmt, os.path.join(work, f"{label}-after")))
            finally:
                model.close()
            befores.append(read_stored(before)[1])
            _check_fits(location, infos, befores[-1])
            afters.append(read_stored(after)[1])
            runs.append(RestoreRun(label, plan.text(), seed, model.restore_method, notes))
        tensors = tuple(_compare(t, stored[t.name], befores, afters) for t in infos)
        stage(f"{fmt}: facts")
        facts = establish_facts(fmt, location, infos, stored, tensors, runs)
    return RoundTripReport(format=fmt, source=source or location, generated=source is None, options=options,
                           tensors=tensors, runs=tuple(runs), facts=facts,
                           kept=os.path.abspath(work) if keep is not None else None)


def roundtrip_all(
    options: GenerateOptions, *, keep: str | None = None, on_stage: StageCallback | None = None
) -> tuple[RoundTripReport, ...]:
    from dataclasses import replace

    return tuple(roundtrip(replace(options, format=fmt), keep=keep, on_stage=on_stage) for fmt in GENERATE_FORMATS)


def _check_fits(location: str, infos: Sequence[TensorInfo], fresh: Values) -> None:
    """A fresh model whose variables have other shapes than the stored ones was built with other options (a TF1
    Saver would even restore into it, silently reshaping the variables)."""
    for t in infos:
        mine = fresh.get(t.name)
        if mine is None or (mine.dtype == object and t.dtype == "string"):
            continue
        if tuple(mine.shape) != t.shape or mine.dtype.name != t.dtype:
            raise UsageError(f"the checkpoint does not fit a model built with these options: {t.name} is "
                             f"{t.dtype} {list(t.shape)} in the checkpoint, {mine.dtype.name} {list(mine.shape)} "
                             f"in the model", path=location,
                             hint="pass the --layers, --inputs and --optimizer it was generated with")


# --- comparing --------------------------------------------------------------------------------------------------


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.shape != b.shape or a.dtype == object or b.dtype == object or a.dtype.kind == "c":
        return None
    if a.size == 0:
        return 0.0
    try:
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    except (TypeError, ValueError):
        return None
    finite = diff[np.isfinite(diff)]
    return float(finite.max()) if finite.size else 0.0


def _compare(
    info: TensorInfo, stored: np.ndarray, befores: Sequence[Values], afters: Sequence[Values]
) -> TensorRoundTrip:
    exact = True
    worst: float | None = 0.0
    problem = None
    for after in afters:
        restored = after.get(info.name)
        if restored is None:
            exact, worst, problem = False, None, "not in the checkpoint the restored model writes"
            continue
        if restored.dtype != stored.dtype:
            exact, worst, problem = False, None, f"restored as {restored.dtype.name}"
            continue
        if restored.shape != stored.shape:
            exact, worst, problem = False, None, f"restored with shape {list(restored.shape)}"
            continue
        if not same_bits(stored, restored):
            exact, problem = False, "values differ"
        diff = _max_abs_diff(stored, restored)
        worst = None if worst is None or diff is None else max(worst, diff)
    differed = sum(1 for before in befores if info.name not in before or not same_bits(before[info.name], stored))
    return TensorRoundTrip(name=info.name, dtype=info.dtype, shape=info.shape, restored_exactly=exact,
                           max_abs_diff=worst, differed_before=differed, problem=problem)


# --- the facts ----------------------------------------------------------------------------------------------------


class _Evidence:
    """What the files hold, read once: tensors, and the format's own metadata (graph, object graph, config)."""

    def __init__(self, fmt: str, location: str, infos: Sequence[TensorInfo], stored: Values) -> None:
        self.fmt = fmt
        self.location = location
        self.infos = tuple(infos)
        self.stored = stored
        self.name = os.path.basename(location)
        self.meta_path = location + ".meta" if fmt == TF1 and os.path.isfile(location + ".meta") else None
        self.meta = _read_meta(self.meta_path) if self.meta_path else None
        self.refs: dict[str, ObjectRef] = _object_refs(location) if fmt == TF2 else {}
        found = model_config(location) if fmt in KERAS_FORMATS else None
        self.config_source: str | None = found[0] if found else None
        self.config: dict[str, Any] | None = found[1] if found else None
        self.hdf5_words = _hdf5_words(location) if fmt in KERAS_FORMATS else ()

    @property
    def meta_name(self) -> str:
        return os.path.basename(self.meta_path or "")

    @property
    def config_where(self) -> str:
        return f"{self.name}: {self.config_source}"

    def data_files(self) -> tuple[str, ...]:
        if self.fmt in (TF1, TF2):
            files = sorted({os.path.basename(t.file) for t in self.infos if t.file})
            return tuple(files) or (self.name,)
        if self.fmt == KERAS:
            return (f"{self.name}: model.weights.h5",)
        return (self.name,)

    def integer_scalars(self) -> list[TensorInfo]:
        return [t for t in self.infos if t.shape == () and t.dtype.startswith(("int", "uint"))]

    def meta_variables(self) -> list[Any]:
        """VariableDef protos of the .meta graph's `variables` collection."""
        if self.meta is None or "variables" not in self.meta.collection_def:
            return []
        from tensorflow.core.framework import variable_pb2

        out = []
        for raw in self.meta.collection_def["variables"].bytes_list.value:
            var = variable_pb2.VariableDef()
            var.ParseFromString(raw)
            out.append(var)
        return out


def _read_meta(path: str) -> Any:
    import_tensorflow()
    from google.protobuf.message import DecodeError as ProtoDecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    from ckptcheck.formats.files import open_regular

    meta = meta_graph_pb2.MetaGraphDef()
    try:
        with open_regular(path) as f:
            meta.ParseFromString(f.read())
    except (ProtoDecodeError, OSError) as exc:
        raise CorruptCheckpointError(f"the .meta graph cannot be read ({exc})", path=path,
                                     hint="roundtrip --from reads the initializers from it; restore the .meta or "
                                          "pass the checkpoint without it") from None
    return meta


def _object_refs(location: str) -> dict[str, ObjectRef]:
    import ckptcheck

    with ckptcheck.open_checkpoint(location) as reader:
        return {r.key: r for r in reader.objects() or ()}


def _hdf5_words(location: str) -> tuple[str, ...]:
    """Every group, dataset and attribute name in a Keras file's HDF5 weights, and every text attribute value
    except the model/training configs (read separately)."""
    import h5py

    words: list[str] = []
    with contextlib.ExitStack() as stack:
        if zipfile.is_zipfile(location):
            archive = stack.enter_context(zipfile.ZipFile(location))
            # h5py reads the member through the zip file object: nothing is extracted or read whole.
            member = stack.enter_context(archive.open("model.weights.h5"))
            f = stack.enter_context(h5py.File(member, "r"))
            words += [n for n in archive.namelist() if n != "config.json"]
            if "metadata.json" in archive.namelist():
                words.append(archive.read("metadata.json").decode("utf-8", "replace"))
        else:
            f = stack.enter_context(h5py.File(location, "r"))

        def attrs(obj: Any) -> None:
            for key, value in obj.attrs.items():
                if key in ("model_config", "training_config"):
                    continue
                words.append(key)
                words.append(str(value))

        def visit(name: str, obj: Any) -> None:
            words.append(name)
            attrs(obj)

        attrs(f)
        f.visititems(visit)
    return tuple(words)


def _names(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"


def _number(value: Any) -> str:
    return number_text(float(value))


def _value_text(a: np.ndarray) -> str:
    if a.size == 0:
        return "[]"
    if a.size == 1:
        return _number(a.reshape(-1)[0])
    flat = a.reshape(-1)
    if bool(np.all(flat == flat[0])):
        return f"{_number(flat[0])} (all {a.size} elements)"
    return f"{a.dtype.name} {list(a.shape)}"


def establish_facts(
    fmt: str,
    location: str,
    infos: Sequence[TensorInfo],
    stored: Values,
    tensors: Sequence[TensorRoundTrip],
    runs: Sequence[RestoreRun],
) -> dict[str, Fact]:
    ev = _Evidence(fmt, location, infos, stored)
    return {
        "values": _values_fact(ev, tensors, runs),
        "initializer": _initializer_fact(ev, tensors, runs),
        "optimizer_state": _optimizer_fact(ev, runs),
        "step": _step_fact(ev),
        "trainable": _trainable_fact(ev),
        "architecture": _architecture_fact(ev),
        "code": _code_fact(ev),
    }


def _restores_text(runs: Sequence[RestoreRun]) -> str:
    return " and ".join(f"{r.init} (seed {r.seed})" for r in runs)


def _values_fact(ev: _Evidence, tensors: Sequence[TensorRoundTrip], runs: Sequence[RestoreRun]) -> Fact:
    total = sum(t.nbytes for t in ev.infos)
    bad = [t for t in tensors if not t.restored_exactly]
    changed = sum(1 for t in tensors if t.differed_before == len(runs))
    method = runs[0].method if runs else "restore"
    if not tensors:
        return Fact(False, (), "the checkpoint stores no tensors")
    if bad:
        worst = ", ".join(f"{t.name} ({t.problem}"
                          + (f", max |diff| {_number(t.max_abs_diff)}" if t.max_abs_diff else "") + ")"
                          for t in bad[:6])
        return Fact(False, ev.data_files(),
                    f"{len(bad)} of {len(tensors)} tensors did not restore exactly with {method} into fresh models "
                    f"initialized with {_restores_text(runs)}: {worst}")
    return Fact(True, ev.data_files(),
                f"all {len(tensors)} tensors ({total} bytes: values, dtypes, shapes) restored bit for bit with "
                f"{method} into fresh models initialized with {_restores_text(runs)}; before the restore "
                f"{changed} of them held other values in both fresh models")


def _independent_of_init(tensors: Sequence[TensorRoundTrip], runs: Sequence[RestoreRun]) -> str:
    if tensors and all(t.restored_exactly for t in tensors):
        return (f"restored values were identical whatever the fresh model's initializer was "
                f"({_restores_text(runs)})")
    return "some tensors did not restore exactly (see values)"


def _initializer_fact(ev: _Evidence, tensors: Sequence[TensorRoundTrip], runs: Sequence[RestoreRun]) -> Fact:
    experiment = _independent_of_init(tensors, runs)
    named = [t.name for t in ev.infos if "initializer" in t.name.lower()]
    if ev.fmt in (TF1, TF2):
        keys = f"no key of the bundle's {len(ev.infos)} names an initializer" if not named else (
            f"keys naming an initializer: {_names(named)}")
        graph_paths = [p for r in ev.refs.values() for p in r.paths if "initializer" in p.lower()]
        if ev.fmt == TF2:
            keys += ("; nor does any path of the object graph" if not graph_paths
                     else f"; object paths naming one: {_names(graph_paths)}")
        found = _meta_initializers(ev)
        if found:
            return Fact(True, tuple(f"{ev.meta_name}: {op}" for op, _ in found),
                        f"the .meta graph holds each variable's initializer ops: "
                        f"{'; '.join(text for _, text in found[:6])}. The bundle itself does not: {keys}, and "
                        f"{experiment}")
        where = tuple(named) + tuple(graph_paths)
        note = "" if ev.fmt == TF2 else " (and there is no .meta graph beside it)"
        return Fact(bool(where), where, f"{keys}{note}; {experiment}")
    found_cfg = _config_initializers(ev)
    in_weights = [w for w in ev.hdf5_words if "initializer" in w.lower()]
    weights_text = ("the HDF5 weights name none" if not in_weights
                    else f"the HDF5 weights mention: {_names(in_weights)}")
    if found_cfg:
        return Fact(True, tuple(f"{ev.config_where}: {where}" for where, _ in found_cfg),
                    f"the config names each initializer and its arguments: "
                    f"{'; '.join(text for _, text in found_cfg[:6])}; {weights_text}; {experiment}")
    no_config = "no model config (no config.json, no model_config attribute)"
    return Fact(bool(in_weights), tuple(in_weights), f"{no_config}; {weights_text}; {experiment}")


def _meta_initializers(ev: _Evidence) -> list[tuple[str, str]]:
    """(op name, description) of each variable's initial-value op in the .meta graph."""
    if ev.meta is None:
        return []
    from tensorflow import make_ndarray

    nodes = {n.name: n for n in ev.meta.graph_def.node}
    out = []
    for var in ev.meta_variables():
        if not var.trainable:
            continue
        name = var.variable_name.split(":")[0]
        op_name = var.initial_value_name.split(":")[0]
        if op_name not in nodes:
            continue
        scope = f"{name}/Initializer/"
        parts = []
        for node in ev.meta.graph_def.node:
            if not node.name.startswith(scope):
                continue
            short = node.name[len(scope):]
            if node.op == "Const" and node.name != op_name:
                value = make_ndarray(node.attr["value"].tensor)
                if value.size == 1 and value.dtype.kind == "f":
                    parts.append(f"{short.rsplit('/', 1)[-1]}={_number(value.reshape(-1)[0])}")
            elif node.op != "Const":
                seeds = ", ".join(f"{k}={node.attr[k].i}" for k in ("seed", "seed2") if k in node.attr)
                parts.append(f"{node.op}({seeds})" if seeds else node.op)
        head = nodes[op_name]
        if head.op == "Const":
            parts.insert(0, f"Const {_value_text(make_ndarray(head.attr['value'].tensor))}")
        out.append((op_name, f"{name} <- {op_name} [{', '.join(parts)}]"))
    return out


def _config_layers(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not isinstance(config, dict):
        return []
    inner = config.get("config", {})
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    return [layer for layer in layers if isinstance(layer, dict)]


def _layer_name(layer: dict[str, Any]) -> str:
    cfg = layer.get("config", {})
    return str(cfg.get("name", "?")) if isinstance(cfg, dict) else "?"


def _config_initializers(ev: _Evidence) -> list[tuple[str, str]]:
    out = []
    for layer in _config_layers(ev.config):
        cfg = layer.get("config", {})
        for key, value in (cfg.items() if isinstance(cfg, dict) else ()):
            if key.endswith("_initializer") and isinstance(value, dict):
                args = value.get("config") or {}
                arg_text = ", ".join(f"{k}={v}" for k, v in args.items()) if isinstance(args, dict) else ""
                out.append((f"{_layer_name(layer)}.{key}",
                            f"{_layer_name(layer)}.{key} = {value.get('class_name')}({arg_text})"))
    return out


def _optimizer_fact(ev: _Evidence, runs: Sequence[RestoreRun]) -> Fact:
    notes = [n for r in runs[:1] for n in r.notes]
    extra = ("; " + " ".join(notes)) if notes else ""
    floats = {t.name for t in ev.infos if not t.dtype.startswith(("int", "uint", "string", "bool"))}
    if ev.fmt == TF1:
        variables = ev.meta_variables()
        if variables and ev.meta is not None:
            step_names = _meta_collection_names(ev, "global_step")
            state = [v.variable_name.split(":")[0] for v in variables
                     if not v.trainable and v.variable_name.split(":")[0] not in step_names]
            applies = sorted({n.op for n in ev.meta.graph_def.node if n.op.startswith(("Apply", "ResourceApply"))})
            how = f"the train op runs {', '.join(applies)}" if applies else "the graph has no optimizer update op"
            if state:
                return Fact(True, tuple(state),
                            f"the .meta lists {len(state)} non-trainable variables besides the step, all stored in "
                            f"the bundle: {_names(state)}; {how}{extra}")
            return Fact(False, (), f"the only non-trainable variables are the step ({_names(sorted(step_names))}); "
                                   f"{how}, which keeps no other state{extra}")
        names = [t.name for t in ev.infos]
        slots = [n for n in names if any(n.startswith(o + "/") for o in names if o != n)]
        return Fact(bool(slots), tuple(slots),
                    f"no .meta graph; names extending another variable's name (slot variables): "
                    f"{_names(slots) or 'none'}{extra}")
    if ev.fmt == TF2:
        state = [key for key, ref in ev.refs.items()
                 if key in floats and ref.paths and all(p.startswith("optimizer/") for p in ref.paths)]
        slots = [key for key, ref in ev.refs.items() if ref.slot_of]
        if state or slots:
            shown = sorted(set(state) | set(slots))
            paths = [" = ".join(ev.refs[k].paths) for k in shown]
            return Fact(True, tuple(shown),
                        f"the object graph reaches {len(shown)} float tensors only through the optimizer "
                        f"(paths: {_names(paths, 4)}); {len(slots)} are registered as slot variables{extra}")
        return Fact(False, (), "no stored tensor is reached only through an optimizer object" + extra)
    state = [t.name for t in ev.infos
             if t.name in floats and t.name.startswith(("optimizer/", "optimizer_weights/"))]
    if state:
        return Fact(True, tuple(state), f"{len(state)} float tensors in the optimizer's group: {_names(state)}{extra}")
    return Fact(False, (), "no optimizer group with float tensors in the file" + extra)


def _meta_collection_names(ev: _Evidence, key: str) -> set[str]:
    if ev.meta is None or key not in ev.meta.collection_def:
        return set()
    from tensorflow.core.framework import variable_pb2

    names = set()
    for raw in ev.meta.collection_def[key].bytes_list.value:
        var = variable_pb2.VariableDef()
        var.ParseFromString(raw)
        names.add(var.variable_name.split(":")[0])
    return names


def _step_fact(ev: _Evidence) -> Fact:
    counters = ev.integer_scalars()
    if not counters:
        return Fact(False, (), "no integer scalar is stored: nothing counts steps")
    values = "; ".join(f"{t.name} = {_value_text(ev.stored[t.name])}" for t in counters)
    also = ""
    if ev.fmt == TF1:
        marked = _meta_collection_names(ev, "global_step")
        if marked:
            also = f"; the .meta marks {_names(sorted(marked))} as the global step"
    return Fact(True, tuple(t.name for t in counters), f"integer scalars: {values}{also}")


def _trainable_fact(ev: _Evidence) -> Fact:
    if ev.fmt == TF1:
        variables = ev.meta_variables()
        if not variables:
            return Fact(False, (), "no .meta graph beside the bundle; the bundle stores no trainable flag")
        trainable = [v.variable_name.split(":")[0] for v in variables if v.trainable]
        frozen = [v.variable_name.split(":")[0] for v in variables if not v.trainable]
        return Fact(True, (f"{ev.meta_name}: trainable_variables collection",),
                    f"{len(trainable)} of {len(variables)} variables are marked trainable in the .meta "
                    f"({_names(trainable)}); not trainable: {_names(frozen) or 'none'}; the bundle stores no flag")
    if ev.fmt == TF2:
        listed = sorted({p for r in ev.refs.values() for p in r.paths if "trainable" in p.lower()})
        note = (f"; the optimizer's own list of the variables it updates is tracked ({_names(listed, 4)}) — "
                f"which variables one optimizer was built with, not a flag per variable") if listed else ""
        return Fact(False, (), f"neither bundle entries nor the object graph carry a trainable flag; a restored "
                               f"variable is trainable or not as the code that creates it says{note}")
    flags = []
    for layer in _config_layers(ev.config):
        cfg = layer.get("config", {})
        if isinstance(cfg, dict) and "trainable" in cfg:
            flags.append(f"{_layer_name(layer)}={cfg['trainable']}")
    if flags:
        return Fact(True, (f"{ev.config_where}: layers[].config.trainable",),
                    f"the config gives each layer's trainable flag: {_names(flags)}")
    in_weights = [w for w in ev.hdf5_words if "trainable" in w.lower()]
    return Fact(bool(in_weights), tuple(in_weights),
                "no model config; the HDF5 weights "
                + (f"mention: {_names(in_weights)}" if in_weights else "carry no trainable flag"))


def _architecture_fact(ev: _Evidence) -> Fact:
    def label(t: TensorInfo) -> str:
        # A TF2 key is easier read as its object path through the model, when it has one.
        paths = ev.refs[t.name].paths if t.name in ev.refs else ()
        return next((p for p in paths if not p.startswith("optimizer/")), t.name)

    shapes = _names([f"{label(t)} {list(t.shape)}" for t in ev.infos if t.name != OBJECT_GRAPH_KEY], 4)
    if ev.fmt == TF1 and ev.meta is not None:
        ops = collections.Counter(n.op for n in ev.meta.graph_def.node)
        compute = [f"{op} x{ops[op]}" for op in ("Placeholder", "MatMul", "BiasAdd", "Relu") if op in ops]
        return Fact(True, (f"{ev.meta_name}: graph_def",),
                    f"the .meta graph holds the computation as {sum(ops.values())} TensorFlow ops "
                    f"(forward, gradients, optimizer updates), among them {', '.join(compute)}; "
                    f"not layer objects")
    layers = _config_layers(ev.config)
    if layers:
        described = []
        for layer in layers:
            cfg = layer.get("config", {}) if isinstance(layer.get("config"), dict) else {}
            keys = [f"{k}={cfg[k]}" for k in ("units", "activation", "batch_shape") if k in cfg]
            described.append(f"{layer.get('class_name')}({', '.join(keys)})")
        model_class = ev.config.get("class_name") if isinstance(ev.config, dict) else "?"
        return Fact(True, (f"{ev.config_where}",),
                    f"{model_class} of {len(layers)} layers: {'; '.join(described)}")
    return Fact(False, (), f"only tensor names and shapes ({shapes}): no layer types, activations or connections")


def _code_fact(ev: _Evidence) -> Fact:
    if ev.fmt == TF1 and ev.meta is not None:
        py = sorted({n.name for n in ev.meta.graph_def.node if n.op in PY_FUNC_OPS})
        if py:
            return Fact(True, tuple(py), f"the graph calls Python through {_names(py)}; that Python is not "
                                         f"stored, only a reference to it")
        return Fact(False, (), f"the .meta graph holds TensorFlow ops only ({len(ev.meta.graph_def.node)} ops, no "
                               f"PyFunc); the Python that built the graph is not saved")
    if ev.config is not None:
        lambdas = [_layer_name(layer) for layer in _config_layers(ev.config)
                   if layer.get("class_name") == "Lambda" or "function" in (layer.get("config") or {})]
        if lambdas:
            return Fact(True, tuple(lambdas), f"Lambda layers store their function: {_names(lambdas)}")
        modules = sorted({str(layer.get("module")) for layer in _config_layers(ev.config) if layer.get("module")})
        imported = f" by module ({', '.join(modules)})" if modules else ""
        return Fact(False, (), f"the config names each layer class{imported} and loading imports it; no code or "
                               f"bytecode is stored")
    return Fact(False, (), "tensors only: no graph, no config, no code")

