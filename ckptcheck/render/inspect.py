"""`inspect` in text and JSON: the listing, its header, architecture, stats, summary, groups, checkpoints and values."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

from ckptcheck.numbers import finite_or_null, nonfinite_as_strings
from ckptcheck.records import (
    KERAS_WEIGHTS,
    SAVEDMODEL,
    TF1,
    TF2,
    Architecture,
    CheckpointEntry,
    CheckpointInfo,
    ObjectRef,
    TensorInfo,
)
from ckptcheck.render.tables import aligned_fields, human_bytes, number, shape_text, table

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered
    import numpy as np

    from ckptcheck.stats import TensorStats

if TYPE_CHECKING:
    from ckptcheck.summary import Count, Group, Summary

INSPECT_SCHEMA = "ckptcheck.inspect/2"
STATE_SCHEMA = "ckptcheck.checkpoints/1"
TENSOR_SCHEMA = "ckptcheck.tensor/1"

FORMAT_TITLES = {
    TF1: "TF1 name-based checkpoint (tf.compat.v1.train.Saver)",
    TF2: "TF2 object-based checkpoint (tf.train.Checkpoint)",
    SAVEDMODEL: "SavedModel variables",
    "keras": "Keras 3 archive (.keras)",
    "keras-weights": "Keras 3 weights (.weights.h5)",
    "keras-h5": "Keras legacy HDF5 (.h5)",
    "safetensors": "safetensors file (.safetensors)",
}


# --- inspect ---------------------------------------------------------------------------------------------------


def inspect_header(info: CheckpointInfo, shown: int) -> str:
    title = FORMAT_TITLES.get(info.format, info.format)
    if info.format == KERAS_WEIGHTS and info.shards:
        title = "Keras 3 sharded weights (.weights.json and its .weights.h5 shards)"
    files = list(info.files)
    if len(files) > 4:
        files = [*files[:3], f"... {len(files) - 3} more"]
    pairs: list[tuple[str, Sequence[str]]] = [
        ("format", [f"{info.format} — {title}"]),
        ("location", [info.location]),
        ("files", files),
    ]
    if info.shards is not None:
        pairs.append(("shards", [str(info.shards)]))
    count = f"{len(info.tensors)}" + (f" ({shown} shown)" if shown != len(info.tensors) else "")
    pairs.append(("tensors", [f"{count}, {human_bytes(info.total_bytes)} ({info.total_bytes} bytes)"]))
    if info.writer:
        pairs.append(("writer", [info.writer]))
    pairs += [(key, [value]) for key, value in sorted(info.metadata.items())]
    return aligned_fields(pairs)


def tensors_table(
    tensors: Sequence[TensorInfo],
    stats: dict[str, TensorStats] | None = None,
    objects: dict[str, ObjectRef] | None = None,
) -> str:
    headers = ["name", "dtype", "shape", "size"]
    # The variable where it says something the key does not (a TF1 key is the variable's name already).
    with_variable = any(t.variable is not None and t.variable != t.name for t in tensors)
    if with_variable:
        headers.insert(1, "variable")
    if any(t.slices for t in tensors):
        headers.append("slices")
    if len({t.file for t in tensors}) > 1:  # sharded: which file holds each tensor (a slice's: the first)
        headers.append("file")
    with_slots = objects is not None and any(r.slot_of for r in objects.values())
    # The saved name only where it says something the key does not (Keras 3 names every kernel "kernel").
    with_names = objects is not None and any(r.saved_name and r.saved_name not in r.key for r in objects.values())
    if objects is not None:
        headers += ["object paths"] + (["saved name"] if with_names else []) + (
            ["optimizer slot of"] if with_slots else [])
    if stats is not None:
        headers += ["min", "max", "mean", "std", "nan", "inf", "note"]
    rows = []
    with_slices, with_file = "slices" in headers, "file" in headers
    # Models repeat a few shapes and sizes across thousands of tensors: each is spelled once.
    shapes: dict[tuple[int, ...], str] = {}
    sizes: dict[int, str] = {}
    for t in tensors:
        shape = shapes.get(t.shape)
        if shape is None:
            shape = shapes[t.shape] = shape_text(t.shape)
        size = sizes.get(t.nbytes)
        if size is None:
            size = sizes[t.nbytes] = human_bytes(t.nbytes)
        row: list[Any] = ([t.name, t.variable or "", t.dtype, shape, size] if with_variable
                          else [t.name, t.dtype, shape, size])
        if with_slices:
            row.append(str(t.slices) if t.slices else "")
        if with_file:
            row.append(t.file or "")
        if objects is not None:
            ref = objects.get(t.name)
            row.append("\n".join(ref.paths) if ref else "")
            if with_names:
                row.append(ref.saved_name or "" if ref else "")
            if with_slots:
                row.append(f"{ref.slot_of} ({ref.slot_name})" if ref and ref.slot_of else "")
        if stats is not None:
            s = stats.get(t.name)
            if s is None:
                row += [""] * 7
            else:
                row += [number(s.min), number(s.max), number(s.mean), number(s.std),
                        str(s.nan) if s.nan else "", str(s.inf) if s.inf else "", stats_note(s, t.shape)]
        rows.append(row)
    return table(headers, rows)


ARCHITECTURE_WIDTH = 120  # a config cell is cut to keep the architecture table within this many columns
_CONFIG_MIN = 40


def architecture_text(arch: Architecture, layers: Sequence[str] | None = None) -> str:
    """The layers a config records, one line each: a long config is cut (``...``) to keep the table narrow (JSON
    holds it whole). ``layers``: show only these (``--filter``); safety warnings are always shown in full."""
    title = f"architecture (from {arch.source}): {arch.model_class}"
    if arch.model_name:
        title += f" '{arch.model_name}'"
    chosen = [lay for lay in arch.layers if layers is None or lay.name in set(layers)]
    if layers is not None:
        title += f" ({len(chosen)} of {len(arch.layers)} layers shown)"
    name_width = max((len(lay.name) for lay in chosen), default=0)
    class_width = max((len(lay.class_name) for lay in chosen), default=0)
    # tabulate gives a header 2 characters beyond its own width: "layer" and "class" take 7 columns at least.
    room = max(_CONFIG_MIN, ARCHITECTURE_WIDTH - max(name_width, 7) - max(class_width, 7) - 4)
    rows = []
    cut = False
    for layer in chosen:
        details = ", ".join(f"{k}={v}" for k, v in layer.details.items())
        if len(details) > room:
            details = details[: room - 4].rstrip(" ,") + " ..."
            cut = True
        rows.append([layer.name, layer.class_name, details])
    empty = "(no layers recorded)" if not arch.layers else "(no layer matches)"
    parts = [title, table(["layer", "class", "config"], rows) if rows else empty]
    if cut:
        parts.append("(long configs cut at ...: inspect --json holds them whole)")
    if arch.findings:
        parts.append("WARNING: loading this model would run code or import modules outside Keras:")
        parts += [f"  - {f.location}: {f.message}" for f in arch.findings]
    return "\n".join(parts)


def stats_dict(s: TensorStats) -> dict[str, Any]:
    return {"count": s.count, "min": finite_or_null(s.min), "max": finite_or_null(s.max),
            "mean": finite_or_null(s.mean), "std": finite_or_null(s.std), "nan": s.nan, "inf": s.inf, "note": s.note,
            "identical": list(s.identical) if s.identical is not None else None}


def stats_note(s: TensorStats, shape: Sequence[int]) -> str:
    """The note, and identical columns or rows unless every element is one value (the note says so already)."""
    parts = [s.note] if s.note else []
    constant = s.count > 0 and s.nan == 0 and s.inf == 0 and s.min is not None and s.min == s.max
    if s.identical and not constant and len(shape) >= 2:
        rows = math.prod(shape[:-1])
        if "columns" in s.identical:
            parts.append(f"all {shape[-1]} columns (units) identical")
        if "rows" in s.identical:
            parts.append(f"all {rows} rows identical")
    return "; ".join(parts)


def architecture_dict(arch: Architecture) -> dict[str, Any]:
    return {
        "source": arch.source,
        "model_class": arch.model_class,
        "model_name": arch.model_name,
        "layers": [
            {"name": lay.name, "class_name": lay.class_name, "module": lay.module, "config": dict(lay.details)}
            for lay in arch.layers
        ],
        "unsafe": [{"location": f.location, "message": f.message} for f in arch.findings],
    }


def inspect_dict(
    info: CheckpointInfo,
    tensors: Sequence[TensorInfo],
    stats: dict[str, TensorStats] | None = None,
    objects: dict[str, ObjectRef] | None = None,
    *,
    extra: dict[str, Any] | None = None,
    kinds: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``extra``: added keys (``summary``, ``groups``), placed before ``tensors``, which stays last. ``kinds``:
    each tensor's kind (summary.classify_kinds), in order."""
    rows = []
    for i, t in enumerate(tensors):
        row: dict[str, Any] = {
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "nbytes": t.nbytes,
            "slices": t.slices,
            "file": t.file,
            "kind": kinds[i] if kinds is not None else None,
            "variable": variable_name(t.variable),
        }
        if objects is not None:
            ref = objects.get(t.name)
            row["object_paths"] = list(ref.paths) if ref else []
            row["saved_name"] = ref.saved_name if ref else None
            row["slot"] = (
                {"variable": ref.slot_of, "name": ref.slot_name, "optimizer": ref.optimizer}
                if ref and ref.slot_of
                else None
            )
        if stats is not None and t.name in stats:
            row["stats"] = stats_dict(stats[t.name])
        rows.append(row)
    return {
        "schema": INSPECT_SCHEMA,
        "format": info.format,
        "path": info.path,
        "location": info.location,
        "files": list(info.files),
        "shards": info.shards,
        "writer": info.writer,
        "metadata": dict(info.metadata),
        "tensor_count": len(info.tensors),
        "total_bytes": info.total_bytes,
        "architecture": architecture_dict(info.architecture) if info.architecture else None,
        **(extra or {}),
        "tensors": rows,
    }


def variable_name(variable: str | None) -> str | None:
    """A variable as JSON carries it: names only; what a reader labels in parentheses (``(object graph)``, ``(save
    counter)``) is no name (its ``kind`` says ``bookkeeping``)."""
    return None if variable is None or variable.startswith("(") else variable



def inspect_json(info: CheckpointInfo, tensors: Sequence[TensorInfo], *, extra: dict[str, Any] | None = None,
                 kinds: Sequence[str] | None = None) -> str:
    """``json.dumps(inspect_dict(info, tensors), ensure_ascii=False)``, the same text, written row by row."""
    return "".join(inspect_json_pieces(info, tensors, extra=extra, kinds=kinds))


def inspect_json_pieces(info: CheckpointInfo, tensors: Sequence[TensorInfo], *, extra: dict[str, Any] | None = None,
                        kinds: Sequence[str] | None = None, rows_per_piece: int = 4096) -> Iterator[str]:
    """inspect_json's text in pieces of ``rows_per_piece`` rows, for writing as they are made: a listing of a
    million tensors never holds its whole text (it was held whole, then copied twice: bench/NOTES.md).
    The checkpoint's own fields are encoded here, before the first piece: a NaN in a config raises ValueError.

    A listing of 20,000 tensors spent 40 ms building dicts for the encoder and encoding them, ~10 ms this way:
    rows repeat a few (dtype, shape) and (slices, file) fragments, encoded once; names go through json's own
    string encoder.
    """
    from json import dumps

    head = dumps(inspect_dict(info, (), extra=extra), ensure_ascii=False, allow_nan=False)
    empty = '"tensors": []}'
    if not head.endswith(empty):  # "tensors" is inspect_dict's last key
        raise AssertionError("inspect_dict no longer ends with its tensors")
    return chain((head[: -len(empty)] + '"tensors": [',), _json_rows(tensors, kinds, rows_per_piece), ("]}",))


def _json_rows(tensors: Sequence[TensorInfo], kinds: Sequence[str] | None, rows_per_piece: int) -> Iterator[str]:
    from json.encoder import encode_basestring

    middles: dict[tuple[str, tuple[int, ...]], str] = {}
    ends: dict[tuple[int, str | None, str | None], str] = {}
    every: Sequence[str | None] = kinds if kinds is not None else [None] * len(tensors)
    for first in range(0, len(tensors), rows_per_piece):
        rows = []
        for t, kind in zip(tensors[first : first + rows_per_piece], every[first : first + rows_per_piece],
                           strict=True):
            middle = middles.get((t.dtype, t.shape))
            if middle is None:
                shape = ", ".join(str(int(d)) for d in t.shape)
                middle = middles[(t.dtype, t.shape)] = (
                    f', "dtype": {encode_basestring(t.dtype)}, "shape": [{shape}], "nbytes": '
                )
            end = ends.get((t.slices, t.file, kind))
            if end is None:
                file = "null" if t.file is None else encode_basestring(t.file)
                kind_text = "null" if kind is None else encode_basestring(kind)
                end = ends[(t.slices, t.file, kind)] = (f', "slices": {int(t.slices)}, "file": {file}, "kind": '
                                                        f'{kind_text}, "variable": ')
            v = t.variable
            variable = "null" if v is None or v[:1] == "(" else encode_basestring(v)
            rows.append(f'{{"name": {encode_basestring(t.name)}{middle}{t.nbytes}{end}{variable}}}')  # (nbytes: an int)
        yield (", " if first else "") + ", ".join(rows)


def _count_dict(c: Count) -> dict[str, int]:
    return {"tensors": c.tensors, "elements": c.elements, "bytes": c.nbytes}


def summary_dict(s: Summary) -> dict[str, Any]:
    """``{"weights": COUNT, "optimizer": COUNT, "counters": COUNT, "bookkeeping": COUNT, "other": COUNT, "total":
    COUNT}``, COUNT ``{"tensors", "elements", "bytes"}``; ``other`` is counters and bookkeeping together, as
    inspect/1 counted them."""
    from ckptcheck.summary import BOOKKEEPING, COUNTERS, OTHER

    out = {kind: _count_dict(c) for kind, c in s.kinds.items()}
    counters, bookkeeping = s.kinds[COUNTERS], s.kinds[BOOKKEEPING]
    out[OTHER] = {"tensors": counters.tensors + bookkeeping.tensors,
                  "elements": counters.elements + bookkeeping.elements, "bytes": counters.nbytes + bookkeeping.nbytes}
    return {**out, "total": _count_dict(s.total)}


def summary_text(s: Summary, shown: int | None = None) -> str:
    """Parameters by kind, as Keras's model.summary() counts them (elements), with tensors and bytes."""
    from ckptcheck.summary import KIND_TITLES

    rows = [[KIND_TITLES.get(kind, kind), f"{c.elements:,}", f"{c.tensors:,}", human_bytes(c.nbytes)]
            for kind, c in s.kinds.items()]
    rows.append(["total", f"{s.total.elements:,}", f"{s.total.tensors:,}", human_bytes(s.total.nbytes)])
    title = "parameters" if shown is None else f"parameters (of the {shown:,} tensors shown)"
    return table([title, "elements", "tensors", "size"], rows)


def groups_table(rows: Sequence[Group]) -> str:
    from ckptcheck.summary import KIND_TITLES

    return table(["layer or object", "kind", "tensors", "elements", "size"],
                 [[g.name, KIND_TITLES.get(g.kind, g.kind), f"{g.count.tensors:,}", f"{g.count.elements:,}",
                   human_bytes(g.count.nbytes)] for g in rows])


def groups_dicts(rows: Sequence[Group]) -> list[dict[str, Any]]:
    return [{"group": g.name, "kind": g.kind, **_count_dict(g.count)} for g in rows]


# --- checkpoints named by a state file --------------------------------------------------------------------------


def state_table(entries: Sequence[CheckpointEntry]) -> str:
    rows = [
        [str(e.step) if e.step is not None else "", e.prefix, "yes" if e.exists else "MISSING",
         "yes" if e.latest else "", "" if e.named else "not named"]
        for e in entries
    ]
    return table(["step", "checkpoint", "present", "latest", "state file"], rows)


def state_dict(directory: str, entries: Sequence[CheckpointEntry]) -> dict[str, Any]:
    return {
        "schema": STATE_SCHEMA,
        "path": directory,
        "checkpoints": [
            {"prefix": e.prefix, "step": e.step, "exists": e.exists, "latest": e.latest, "named": e.named}
            for e in entries
        ],
    }


# --- one tensor's values ----------------------------------------------------------------------------------------


def string_element(value: Any) -> Any:
    """One string element for text output: ``str`` when its bytes are valid UTF-8, else the ``bytes`` themselves,
    so that its repr is unambiguous: ``'a\\xea'`` is the text a, backslash, x, e, a; ``b'a\xea'`` is a and the
    byte 0xEA."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return value if isinstance(value, str) else str(value)


def string_json(value: Any) -> Any:
    """One string element for JSON: a JSON string when its bytes are valid UTF-8, else ``{"base64": "..."}``."""
    text = string_element(value)
    if isinstance(text, bytes):
        import base64

        return {"base64": base64.b64encode(text).decode("ascii")}
    return text


def _plain(values: np.ndarray, strings: Any = string_element) -> np.ndarray:
    """Arrays numpy can print and JSON can hold: ml_dtypes become float32, string elements go through
    ``strings``."""
    import numpy as np

    if values.dtype == object or values.dtype.kind in "SU":
        out = np.empty(values.shape, dtype=object)
        for index, element in np.ndenumerate(values):
            out[index] = strings(element)
        return out
    if values.dtype.name not in np.sctypeDict:
        return values.astype(np.float32)
    return values


def tensor_text(info: TensorInfo, values: np.ndarray) -> str:
    """The values as numpy prints them; string elements as Python literals: ``'text'`` for valid UTF-8,
    ``b'...'`` (bytes, with escapes) for anything else."""
    import numpy as np

    header = f"{info.name}: {info.dtype} {shape_text(info.shape)}"
    if info.variable not in (None, info.name):
        header += f" (variable {info.variable})"
    with np.printoptions(threshold=2000, edgeitems=5, linewidth=120):
        return header + "\n" + np.array2string(_plain(values), separator=", ")


def tensor_dict(info: TensorInfo, values: np.ndarray) -> dict[str, Any]:
    import numpy as np

    plain = _plain(values, string_json)
    if plain.dtype.kind == "c":
        data: Any = np.stack([plain.real, plain.imag], axis=-1).tolist()
    else:
        data = plain.tolist()
    return {"schema": TENSOR_SCHEMA, "name": info.name, "dtype": info.dtype, "shape": list(info.shape),
            "values": nonfinite_as_strings(data), "complex_as_pairs": plain.dtype.kind == "c",
            "variable": info.variable}


