"""Model -> text. Every function returns a string (tables through tabulate) or a JSON-ready dict; none prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ckptcheck.model import (
    SAVEDMODEL,
    TF1,
    TF2,
    Architecture,
    CheckpointEntry,
    CheckpointInfo,
    ObjectRef,
    TensorInfo,
    TensorStats,
)

INSPECT_SCHEMA = "ckptcheck.inspect/1"
STATE_SCHEMA = "ckptcheck.checkpoints/1"
TENSOR_SCHEMA = "ckptcheck.tensor/1"

FORMAT_TITLES = {
    TF1: "TF1 name-based checkpoint (tf.compat.v1.train.Saver)",
    TF2: "TF2 object-based checkpoint (tf.train.Checkpoint)",
    SAVEDMODEL: "SavedModel variables",
    "keras": "Keras 3 archive (.keras)",
    "keras-weights": "Keras 3 weights (.weights.h5)",
    "keras-h5": "Keras legacy HDF5 (.h5)",
}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    from tabulate import tabulate

    # disable_numparse: names and shapes stay as written, and tabulate skips its slow number sniffing.
    return str(tabulate(rows, headers=list(headers), tablefmt="simple", disable_numparse=True))


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


# --- inspect ---------------------------------------------------------------------------------------------------


def inspect_header(info: CheckpointInfo, shown: int) -> str:
    lines = [
        f"format:   {info.format} — {FORMAT_TITLES.get(info.format, info.format)}",
        f"location: {info.location}",
    ]
    files = list(info.files)
    if len(files) > 4:
        files = [*files[:3], f"... {len(files) - 3} more"]
    lines.append("files:    " + ("\n          ".join(files)))
    if info.shards is not None:
        lines.append(f"shards:   {info.shards}")
    count = f"{len(info.tensors)}" + (f" ({shown} shown)" if shown != len(info.tensors) else "")
    lines.append(f"tensors:  {count}, {human_bytes(info.total_bytes)} ({info.total_bytes} bytes)")
    if info.writer:
        lines.append(f"writer:   {info.writer}")
    for key, value in sorted(info.metadata.items()):
        lines.append(f"{key + ':':<10}{value}")
    return "\n".join(lines)


def tensors_table(
    tensors: Sequence[TensorInfo],
    stats: dict[str, TensorStats] | None = None,
    objects: dict[str, ObjectRef] | None = None,
) -> str:
    headers = ["name", "dtype", "shape", "size"]
    if any(t.slices for t in tensors):
        headers.append("slices")
    with_slots = objects is not None and any(r.slot_of for r in objects.values())
    if objects is not None:
        headers += ["object paths"] + (["optimizer slot of"] if with_slots else [])
    if stats is not None:
        headers += ["min", "max", "mean", "std", "nan", "inf", "note"]
    rows = []
    for t in tensors:
        row: list[Any] = [t.name, t.dtype, shape_text(t.shape), human_bytes(t.nbytes)]
        if "slices" in headers:
            row.append(str(t.slices) if t.slices else "")
        if objects is not None:
            ref = objects.get(t.name)
            row.append("\n".join(ref.paths) if ref else "")
            if with_slots:
                row.append(f"{ref.slot_of} ({ref.slot_name})" if ref and ref.slot_of else "")
        if stats is not None:
            s = stats.get(t.name)
            if s is None:
                row += [""] * 7
            else:
                row += [number(s.min), number(s.max), number(s.mean), number(s.std),
                        str(s.nan) if s.nan else "", str(s.inf) if s.inf else "", s.note or ""]
        rows.append(row)
    return table(headers, rows)


def architecture_text(arch: Architecture) -> str:
    title = f"architecture (from {arch.source}): {arch.model_class}"
    if arch.model_name:
        title += f" '{arch.model_name}'"
    rows = []
    for layer in arch.layers:
        details = ", ".join(f"{k}={v}" for k, v in layer.details.items())
        rows.append([layer.name, layer.class_name, details])
    parts = [title, table(["layer", "class", "config"], rows) if rows else "(no layers recorded)"]
    if arch.findings:
        parts.append("WARNING: loading this model would run code or import modules outside Keras:")
        parts += [f"  - {f.location}: {f.message}" for f in arch.findings]
    return "\n".join(parts)


def stats_dict(s: TensorStats) -> dict[str, Any]:
    def clean(v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    return {"count": s.count, "min": clean(s.min), "max": clean(s.max), "mean": clean(s.mean),
            "std": clean(s.std), "nan": s.nan, "inf": s.inf, "note": s.note}


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
) -> dict[str, Any]:
    rows = []
    for t in tensors:
        row: dict[str, Any] = {
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "nbytes": t.nbytes,
            "slices": t.slices,
            "file": t.file,
        }
        if objects is not None:
            ref = objects.get(t.name)
            row["object_paths"] = list(ref.paths) if ref else []
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
        "tensors": rows,
    }


# --- checkpoints named by a state file --------------------------------------------------------------------------


def state_table(entries: Sequence[CheckpointEntry]) -> str:
    rows = [
        [str(e.step) if e.step is not None else "", e.prefix, "yes" if e.exists else "MISSING",
         "latest" if e.latest else ""]
        for e in entries
    ]
    return table(["step", "checkpoint", "present", ""], rows)


def state_dict(directory: str, entries: Sequence[CheckpointEntry]) -> dict[str, Any]:
    return {
        "schema": STATE_SCHEMA,
        "path": directory,
        "checkpoints": [
            {"prefix": e.prefix, "step": e.step, "exists": e.exists, "latest": e.latest} for e in entries
        ],
    }


# --- one tensor's values ----------------------------------------------------------------------------------------


def _plain(values: np.ndarray) -> np.ndarray:
    """Arrays numpy can print and JSON can hold: ml_dtypes become float32, strings become text."""
    if values.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "backslashreplace") if isinstance(b, bytes) else str(b),
                            otypes=[object])(values) if values.size else values
    if values.dtype.name not in np.sctypeDict:
        return values.astype(np.float32)
    return values


def tensor_text(info: TensorInfo, values: np.ndarray) -> str:
    header = f"{info.name}: {info.dtype} {shape_text(info.shape)}"
    with np.printoptions(threshold=2000, edgeitems=5, linewidth=120):
        return header + "\n" + np.array2string(_plain(values), separator=", ")


def tensor_dict(info: TensorInfo, values: np.ndarray) -> dict[str, Any]:
    plain = _plain(values)
    if plain.dtype.kind == "c":
        data: Any = np.stack([plain.real, plain.imag], axis=-1).tolist()
    else:
        data = plain.tolist()
    return {"schema": TENSOR_SCHEMA, "name": info.name, "dtype": info.dtype, "shape": list(info.shape),
            "values": _json_safe(data), "complex_as_pairs": plain.dtype.kind == "c"}


def _json_safe(data: Any) -> Any:
    """NaN and Inf are not JSON: write them as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(data, list):
        return [_json_safe(x) for x in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
    return data
