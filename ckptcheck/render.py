"""Model -> text. Every function returns a string (tables through tabulate) or a JSON-ready dict; none prints."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

from ckptcheck.formats.tensorflow.keys import VALUE_SUFFIX
from ckptcheck.model import (
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

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered
    import numpy as np

    from ckptcheck.diff import DiffReport, TensorChange
    from ckptcheck.stats import TensorStats
    from ckptcheck.verify import Problem, VerifyReport

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


# Set by the CLI when stdout is a terminal: tables are then fitted to its width (piped output stays whole).
fit_width: int | None = None
_MIN_COLUMN = 12  # a column is not elided below this many characters
_MIN_NAME = 36  # nor the first, which names the row
_ELLIPSIS = "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:

    # disable_numparse: names and shapes stay as written, and tabulate skips its slow number sniffing.
    cells = [list(map(str, row)) for row in rows]
    left_out: list[str] = []
    if fit_width is not None:
        headers, cells, left_out = _fit(list(headers), cells, fit_width)
    text = _layout(headers, cells)
    if left_out:
        import textwrap

        note = (f"({len(left_out)} column(s) left out to fit the terminal: {', '.join(left_out)}; pipe the output "
                "or use --json for all)")
        text += "\n" + textwrap.fill(note, width=max(fit_width or 0, 40))
    return text


def _layout(headers: Sequence[str], cells: list[list[str]]) -> str:
    # Plain cells (printable ASCII, no surrounding whitespace: nearly every table) are laid out here, as tabulate
    # lays them out (tested against it), without importing tabulate (~25 ms with wcwidth, on every command that
    # prints a table); anything else by tabulate itself. Checked and laid out a column at a time, in loops that run
    # in C (map, join): per cell, Python-level loops took 60 ms of a 20,000-row listing.
    if cells and len(headers) == len(cells[0]) and len(set(map(len, cells))) == 1:
        columns = [list(col) for col in zip(*cells, strict=True)]
        if _plain_column(headers) and all(map(_plain_column, columns)):
            return _plain_table(list(headers), columns)
    from tabulate import tabulate

    return str(tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True))


def _fit(headers: list[str], cells: list[list[str]], width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Elide cells to fit ``width``; when even that is not enough, leave out columns from the right (the first
    three, which name the tensor, always stay). Measured on tabulate's own layout (its padding included). Returns
    the headers and cells to show and the headers left out."""
    left_out: list[str] = []
    budget = width
    for _ in range(4 * len(headers) + 8):  # bounded: each round narrows the budget or drops a column
        fitted = fit_cells(headers, cells, budget)
        over = max((len(line) for line in _layout(headers, fitted).split("\n")), default=0) - width
        if over <= 0:
            return headers, fitted, left_out
        if fit_cells(headers, cells, budget - over) != fitted:
            budget -= over  # tabulate's padding took the rest: elide that much more
            continue
        if len(headers) <= 3:
            break
        left_out.insert(0, headers[-1])
        headers, cells, budget = headers[:-1], [row[:-1] for row in cells], width
    return headers, fit_cells(headers, cells, budget), left_out


def fit_cells(headers: list[str], cells: list[list[str]], width: int) -> list[list[str]]:
    """Cells elided (``head...tail``) in the widest columns, widest first and no column below _MIN_COLUMN, until the
    table's lines fit in ``width``; unchanged when they already do (or cannot)."""
    if not cells:
        return cells
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    caps = list(widths)
    # The first column names the row: it keeps more (columns to its right are left out first).
    floors = [max(_MIN_NAME if i == 0 else _MIN_COLUMN, len(h)) for i, h in enumerate(headers)]
    # One character at a time from whichever column is widest, so the wide columns end up alike.
    while excess > 0:
        widest = max(range(len(caps)), key=lambda i: caps[i] - floors[i])
        if caps[widest] <= floors[widest]:
            break
        caps[widest] -= 1
        excess -= 1
    if caps == widths:
        return cells

    def elide(text: str, cap: int) -> str:
        if len(text) <= cap:
            return text
        keep = cap - len(_ELLIPSIS)  # mostly the head: a key's distinctive part rarely comes last
        return text[: keep - keep // 4] + _ELLIPSIS + text[len(text) - keep // 4 :]

    return [[elide(c, cap) for c, cap in zip(row, caps, strict=True)] for row in cells]


def _plain_table(headers: list[str], columns: list[list[str]]) -> str:
    """tabulate's ``simple`` layout of plain cells, left-aligned (disable_numparse): each column as wide as its widest
    cell, or as its header and tabulate's padding of 2; cells two spaces apart; the header, a rule of dashes, then
    the rows, each line without trailing spaces."""
    widths = [max(len(h) + 2, max(map(len, col))) for h, col in zip(headers, columns, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    padded = [list(map(str.ljust, col, repeat(w))) for col, w in zip(columns, widths, strict=True)]
    return "\n".join(lines + list(map(str.rstrip, map("  ".join, zip(*padded, strict=True)))))


_EDGE_SPACE = re.compile(r"(?:^|\x00)\s|\s(?:\x00|$)")


def _plain_column(col: Sequence[str]) -> bool:
    """Every cell printable ASCII (so one line), without surrounding whitespace."""
    text = "\x00".join(col)
    # Printable too: tabulate treats escape sequences as invisible, so their cells would be laid out differently.
    return text.isascii() and all(map(str.isprintable, col)) and _EDGE_SPACE.search(text) is None


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


def aligned_fields(pairs: Sequence[tuple[str, Sequence[str]]], min_width: int = 10) -> str:
    """``key: value`` lines with every value starting in one column (at least ``min_width``, wider when a key is
    longer); a field of several values continues on lines indented to that column."""
    width = max([min_width, *(len(key) + 2 for key, _ in pairs)])
    lines = []
    for key, values in pairs:
        values = list(values) or [""]
        lines.append(f"{key + ':':<{width}}{values[0]}".rstrip())
        lines += [" " * width + v for v in values[1:]]
    return "\n".join(lines)


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
    def clean(v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    return {"count": s.count, "min": clean(s.min), "max": clean(s.max), "mean": clean(s.mean),
            "std": clean(s.std), "nan": s.nan, "inf": s.inf, "note": s.note,
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
) -> dict[str, Any]:
    """``extra``: added keys (``summary``, ``groups``), placed before ``tensors``, which stays last."""
    rows = []
    for t in tensors:
        row: dict[str, Any] = {
            "name": t.name,
            "dtype": t.dtype,
            "shape": list(t.shape),
            "nbytes": t.nbytes,
            "slices": t.slices,
            "file": t.file,
            "variable": t.variable,
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


def inspect_json(info: CheckpointInfo, tensors: Sequence[TensorInfo], *, extra: dict[str, Any] | None = None) -> str:
    """``json.dumps(inspect_dict(info, tensors), ensure_ascii=False)``, the same text, written row by row."""
    return "".join(inspect_json_pieces(info, tensors, extra=extra))


def inspect_json_pieces(info: CheckpointInfo, tensors: Sequence[TensorInfo], *, extra: dict[str, Any] | None = None,
                        rows_per_piece: int = 4096) -> Iterator[str]:
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
    return chain((head[: -len(empty)] + '"tensors": [',), _json_rows(tensors, rows_per_piece), ("]}",))


def _json_rows(tensors: Sequence[TensorInfo], rows_per_piece: int) -> Iterator[str]:
    from json.encoder import encode_basestring

    middles: dict[tuple[str, tuple[int, ...]], str] = {}
    ends: dict[tuple[int, str | None], str] = {}
    for first in range(0, len(tensors), rows_per_piece):
        rows = []
        for t in tensors[first : first + rows_per_piece]:
            middle = middles.get((t.dtype, t.shape))
            if middle is None:
                shape = ", ".join(str(int(d)) for d in t.shape)
                middle = middles[(t.dtype, t.shape)] = (
                    f', "dtype": {encode_basestring(t.dtype)}, "shape": [{shape}], "nbytes": '
                )
            end = ends.get((t.slices, t.file))
            if end is None:
                file = "null" if t.file is None else encode_basestring(t.file)
                end = ends[(t.slices, t.file)] = f', "slices": {int(t.slices)}, "file": {file}, "variable": '
            variable = "null" if t.variable is None else encode_basestring(t.variable)
            rows.append(f'{{"name": {encode_basestring(t.name)}{middle}{t.nbytes}{end}{variable}}}')  # (nbytes: an int)
        yield (", " if first else "") + ", ".join(rows)


_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """JSON ``text`` with each lone surrogate written as its escape: a name or path that is not valid UTF-8 holds
    its undecodable bytes as lone surrogates (surrogateescape); escaped as \\udcXX, the output stays valid UTF-8
    and loads back to the same string. (An ASCII text is known to hold none without looking at it.)"""
    if text.isascii():
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- parameter summary and grouped view ---------------------------------------------------------------------------

if TYPE_CHECKING:
    from ckptcheck.summary import Count, Group, Summary


def _count_dict(c: Count) -> dict[str, int]:
    return {"tensors": c.tensors, "elements": c.elements, "bytes": c.nbytes}


def summary_dict(s: Summary) -> dict[str, Any]:
    """``{"weights": COUNT, "optimizer": COUNT, "other": COUNT, "total": COUNT}``, COUNT ``{"tensors", "elements",
    "bytes"}``."""
    return {**{kind: _count_dict(c) for kind, c in s.kinds.items()}, "total": _count_dict(s.total)}


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


# --- verify / manifest / diff -----------------------------------------------------------------------------------

VERIFY_SCHEMA = "ckptcheck.verify/1"
DIFF_SCHEMA = "ckptcheck.diff/1"


def verify_text(report: VerifyReport) -> str:
    status = "OK" if report.ok else "DAMAGED" if report.problems else "DIFFERENT FROM MANIFEST"
    # HDF5 holds no checksum of the values: without a manifest to compare with, they were read, not checked.
    verb = "read" if report.format in (KERAS_WEIGHTS, "keras-h5") and report.against is None else "checked"
    lines = [f"{status}: {report.path} ({report.format}): {report.tensors_checked} tensors, "
             f"{human_bytes(report.bytes_checked)} {verb}"]
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {p}" for p in report.problems]
    lines += [f"note: {note}" for note in report.notes]
    if report.against is not None:
        if report.differences:
            lines.append(f"{len(report.differences)} difference(s) from {report.against}:")
            lines += [f"  - {d.kind}: `{d.tensor}`: {d.message}" for d in report.differences]
        else:
            tail = " (damaged tensors not compared)" if any(p.tensor for p in report.problems) else ""
            lines.append(f"matches {report.against}{tail}")
    return "\n".join(lines)


def _problem_dict(p: Problem) -> dict[str, Any]:
    return {"kind": p.kind, "message": p.message, "file": p.file, "tensor": p.tensor}


def verify_dict(report: VerifyReport) -> dict[str, Any]:
    return {
        "schema": VERIFY_SCHEMA,
        "path": report.path,
        "format": report.format,
        "ok": report.ok,
        "files": list(report.files),
        "tensors_checked": report.tensors_checked,
        "bytes_checked": report.bytes_checked,
        "problems": [_problem_dict(p) for p in report.problems],
        "against": report.against,
        "differences": [_problem_dict(d) for d in report.differences],
        "notes": list(report.notes),
    }


def _change_text(c: TensorChange) -> str:
    parts = []
    if "dtype" in c.kinds:
        parts.append(f"dtype {c.dtype_a} -> {c.dtype_b}")
    if "shape" in c.kinds:
        parts.append(f"shape {shape_text(c.shape_a)} -> {shape_text(c.shape_b)}")
    if c.values is not None and not c.values.equal:
        v = c.values
        parts.append(f"{v.differing} of {v.count} elements differ")
    return "; ".join(parts)


def diff_text(report: DiffReport, unchanged: bool = False) -> str:
    """The verdict, then tables of changed, removed and added tensors; then the unchanged ones: their count, or
    (``unchanged``) their names."""
    warnings = [f"WARNING: {w}" for w in report.warnings]
    return "\n".join([*warnings, _diff_body(report), *_unchanged_lines(report, unchanged)])


def _unchanged_lines(report: DiffReport, listed: bool) -> list[str]:
    if not report.unchanged:
        return []
    if listed:
        return ["", table([f"unchanged ({len(report.unchanged)}, equal in A and B)"],
                          [[name] for name in report.unchanged])]
    return ["", f"unchanged: {len(report.unchanged)} tensors, equal in A and B (--unchanged lists them)"]


def _diff_body(report: DiffReport) -> str:
    verdict = "same" if report.same else "different"
    tol = f" (atol={report.atol:g}, rtol={report.rtol:g})" if report.atol or report.rtol else " (exact)"
    lines = [f"{verdict}{tol}: {len(report.unchanged)} unchanged, {len(report.changed)} changed, "
             f"{len(report.removed)} removed, {len(report.added)} added",
             f"A: {report.a} ({report.format_a})", f"B: {report.b} ({report.format_b})"]
    if report.matching != "names":
        lines.append(f"tensors matched by {report.matching}")
    if report.note:
        lines.append(f"note: {report.note}")
    if report.graph_differences:
        lines.append(f"the object graphs place {len(report.graph_differences)} tensor(s) differently:")
        lines += [f"  - {d}" for d in report.graph_differences[:10]]
        if len(report.graph_differences) > 10:
            lines.append(f"  ... {len(report.graph_differences) - 10} more (--json lists them all)")
    if report.bookkeeping:
        shown = ", ".join(f"{t.name} {t.variable}" if t.variable and t.variable != t.name else t.name
                          for t in report.bookkeeping[:4])
        more = f", ... {len(report.bookkeeping) - 4} more" if len(report.bookkeeping) > 4 else ""
        lines.append(f"not compared (format bookkeeping, no part of the verdict): {shown}{more}")
    if report.changed:
        rows = []
        for c in report.changed:
            keys = c.name if c.name == c.name_b else f"{c.name} ~ {c.name_b}"
            variable = c.variable or c.name
            if c.variable_b not in (None, variable):
                variable = f"{variable} ~ {c.variable_b}"
            v = c.values
            rows.append([variable, keys if keys != c.variable else "", ", ".join(c.kinds),
                         _change_text(c), number(v.max_abs) if v else "", number(v.max_rel) if v else ""])
        lines += ["", table(["changed", "key", "what", "detail", "max abs diff", "max rel diff"], rows)]
    for title, side in (("removed (only in A)", report.removed), ("added (only in B)", report.added)):
        if side:
            lines += ["", table([title, "variable", "dtype", "shape"],
                                [[t.name, t.variable if t.variable != t.name else "", t.dtype, shape_text(t.shape)]
                                 for t in side])]
    return "\n".join(lines)


def diff_dict(report: DiffReport) -> dict[str, Any]:
    def brief(t: TensorInfo) -> dict[str, Any]:
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "variable": t.variable}

    return {
        "schema": DIFF_SCHEMA,
        "a": report.a,
        "b": report.b,
        "format_a": report.format_a,
        "format_b": report.format_b,
        "same": report.same,
        "atol": report.atol,
        "rtol": report.rtol,
        "matching": report.matching,
        "note": report.note,
        "warnings": list(report.warnings),
        "graph_differences": list(report.graph_differences),
        "unchanged": list(report.unchanged),
        "removed": [brief(t) for t in report.removed],
        "added": [brief(t) for t in report.added],
        "changed": [
            {
                "name": c.name,
                "name_b": c.name_b,
                "kinds": list(c.kinds),
                "dtype": [c.dtype_a, c.dtype_b],
                "shape": [list(c.shape_a), list(c.shape_b)],
                "elements": c.values.count if c.values else None,
                "differing": c.values.differing if c.values else None,
                "max_abs_diff": c.values.max_abs if c.values else None,
                "max_rel_diff": c.values.max_rel if c.values else None,
                "variable": c.variable,
                "variable_b": c.variable_b,
            }
            for c in report.changed
        ],
        "bookkeeping": [brief(t) for t in report.bookkeeping],
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
            "values": _json_safe(data), "complex_as_pairs": plain.dtype.kind == "c", "variable": info.variable}


def _json_safe(data: Any) -> Any:
    """NaN and Inf are not JSON: write them as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(data, list):
        return [_json_safe(x) for x in data]
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else ("Infinity" if data > 0 else "-Infinity")
    return data


# --- generate / roundtrip ---------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from ckptcheck.lab.reports import Fact, GenerateOptions, GenerateReport, RoundTripReport

GENERATE_SCHEMA = "ckptcheck.lab.generate/1"
ROUNDTRIP_SCHEMA = "ckptcheck.lab.roundtrip/1"
EVIDENCE_WIDTH = 110


def options_dict(options: GenerateOptions) -> dict[str, Any]:
    return {
        "format": options.format,
        "layers": list(options.layers),
        "inputs": options.inputs,
        "train_steps": options.train_steps,
        "optimizer": options.optimizer,
        "learning_rate": options.learning_rate,
        "seed": options.seed,
        "init": {"kernel": options.init.kernel.text(), "bias": options.init.bias.text()},
        "batch_size": options.batch_size,
    }


def _options_line(options: GenerateOptions) -> str:
    return (f"layers {','.join(str(u) for u in options.layers)}, inputs {options.inputs}, init "
            f"{options.init.text()}, {options.optimizer} lr {options.learning_rate:g}, seed {options.seed}")


def generate_text(report: GenerateReport) -> str:
    options = report.options
    lines = [f"wrote {options.format} — {FORMAT_TITLES.get(options.format, options.format)}",
             f"checkpoint: {report.location}",
             f"model:      {_options_line(options)}"]
    if report.losses:
        lines.append(f"training:   {len(report.losses)} steps on {options.batch_size} examples, loss "
                     f"{number(report.losses[0])} -> {number(report.losses[-1])} (before each step's update)")
    else:
        lines.append("training:   none (--train-steps 0): the saved values are the initial values")
    lines += ["", table(["file", "size"], [[f.path, f"{human_bytes(f.bytes)} ({f.bytes} bytes)"]
                                            for f in report.files])]
    lines += ["", tensors_table(report.tensors)]
    return "\n".join(lines)


def generate_dict(report: GenerateReport) -> dict[str, Any]:
    return {
        "schema": GENERATE_SCHEMA,
        "format": report.options.format,
        "out": report.out,
        "location": report.location,
        "options": options_dict(report.options),
        "files": [{"path": f.path, "bytes": f.bytes} for f in report.files],
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "nbytes": t.nbytes}
                    for t in report.tensors],
        "losses": [v if math.isfinite(v) else None for v in report.losses],
    }


def fact_dict(fact: Fact) -> dict[str, Any]:
    return {"recorded": fact.recorded, "where": list(fact.where), "evidence": fact.evidence}


def roundtrip_dict(report: RoundTripReport) -> dict[str, Any]:
    return {
        "schema": ROUNDTRIP_SCHEMA,
        "format": report.format,
        "ok": report.ok,
        "source": report.source,
        "generated": report.generated,
        "options": options_dict(report.options),
        "restores": [{"label": r.label, "init": r.init, "seed": r.seed, "method": r.method, "notes": list(r.notes)}
                     for r in report.runs],
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
                     "restored_exactly": t.restored_exactly, "max_abs_diff": t.max_abs_diff,
                     "differed_before": t.differed_before, "problem": t.problem}
                    for t in report.tensors],
        "facts": {name: fact_dict(fact) for name, fact in report.facts.items()},
        "kept": report.kept,
    }


def _wrap(text: str, indent: str) -> str:
    import textwrap

    return textwrap.fill(text, width=EVIDENCE_WIDTH, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)


def roundtrip_text(report: RoundTripReport) -> str:
    bad = [t for t in report.tensors if not t.restored_exactly]
    verdict = (f"OK: all {len(report.tensors)} tensors restored bit for bit" if report.ok
               else f"NOT RESTORED EXACTLY: {len(bad)} of {len(report.tensors)} tensors")
    origin = "generated" if report.generated else "given"
    lines = [f"{verdict} — {report.format}, {FORMAT_TITLES.get(report.format, report.format)}",
             f"checkpoint: {report.source} ({origin})",
             f"model:      {_options_line(report.options)}"]
    for run in report.runs:
        lines.append(f"restored:   into a fresh model initialized with {run.init} (seed {run.seed}) by {run.method}")
        lines += [_wrap(note, "            note: ") for note in run.notes]
    if report.kept:
        lines.append(f"kept:       {report.kept}")
    runs = len(report.runs)
    rows = [[t.name, t.dtype, shape_text(t.shape), "yes" if t.restored_exactly else "NO",
             number(t.max_abs_diff) if t.max_abs_diff is not None else "-",
             f"{t.differed_before}/{runs}", t.problem or ""]
            for t in report.tensors]
    lines += ["", table(["tensor", "dtype", "shape", "restored exactly", "max abs diff",
                         "differed before restore", "problem"], rows)]
    lines += ["", "facts (from the files and the restore experiment):"]
    for name, fact in report.facts.items():
        lines.append(f"  {name}: {'RECORDED' if fact.recorded else 'not recorded'}"
                     + (f" — {_names_short(fact.where)}" if fact.where else ""))
        lines.append(_wrap(fact.evidence, "      "))
    return "\n".join(lines)


def _names_short(items: Sequence[str], limit: int = 3) -> str:
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"


def roundtrip_matrix(reports: Sequence[RoundTripReport]) -> str:
    """One row per format, one column per fact: recorded or not; then where each recorded fact is."""
    facts = list(reports[0].facts) if reports else []
    rows = [[r.format, "yes" if r.ok else "NO"] + ["yes" if r.facts[f].recorded else "no" for f in facts]
            for r in reports]
    lines = [table(["format", "restored exactly", *facts], rows), "", "where:"]
    for r in reports:
        for name, fact in r.facts.items():
            if fact.recorded and name != "values":
                lines.append(f"  {r.format} {name}: {_names_short(fact.where, 2)}")
    lines += ["", "run `ckptcheck roundtrip --format FORMAT` for the evidence behind each answer"]
    return "\n".join(lines)


# --- explain ---

if TYPE_CHECKING:
    from ckptcheck.lab.reports import Answer, Evidence, Question

EXPLAIN_SCHEMA = "ckptcheck.explain/1"
QUESTIONS_SCHEMA = "ckptcheck.questions/1"
CELL_WIDTH = 28  # longer cells of an evidence table wrap onto more lines
MAX_FILES_SHOWN = 6


def questions_table(questions: Sequence[Question]) -> str:
    return table(["#", "name", "claim", "experiment"],
                 [[str(q.number), q.slug, q.claim, _wrap_cell(q.experiment, 60)] for q in questions])


def questions_dict(questions: Sequence[Question]) -> dict[str, Any]:
    return {"schema": QUESTIONS_SCHEMA,
            "questions": [{"number": q.number, "slug": q.slug, "claim": q.claim, "experiment": q.experiment}
                          for q in questions]}


def _json_ready(value: Any) -> Any:
    """Figures and rows as JSON: numpy scalars as numbers, tuples as lists, NaN and Inf as null."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evidence_dict(e: Evidence) -> dict[str, Any]:
    return {"title": e.title, "text": e.text, "figures": _json_ready(e.figures),
            "rows": _json_ready(list(e.rows)), "files": list(e.files)}


def answer_dict(a: Answer) -> dict[str, Any]:
    q = a.question
    return {"number": q.number, "slug": q.slug, "claim": q.claim, "verdict": a.verdict, "depends_on": a.depends_on,
            "conclusion": a.conclusion, "evidence": [evidence_dict(e) for e in a.evidence],
            "seconds": a.seconds, "kept": a.kept}


def explain_dict(answers: Sequence[Answer]) -> dict[str, Any]:
    return {"schema": EXPLAIN_SCHEMA, "answers": [answer_dict(a) for a in answers]}


def _wrap_cell(text: str, width: int = CELL_WIDTH, break_words: bool = True) -> str:
    import textwrap

    if len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width=width, break_on_hyphens=False, break_long_words=break_words))


def _cell(value: Any) -> str:
    import numpy as np

    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return str(int(v)) if math.isfinite(v) and v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    if isinstance(value, (list, tuple)):
        return _wrap_cell("[" + ", ".join(_cell(v) for v in value) + "]")
    return _wrap_cell(str(value))


def evidence_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> str:
    headers = list(columns) or list(dict.fromkeys(key for row in rows for key in row))
    return table([_wrap_cell(h.replace("_", " "), 10, break_words=False) for h in headers],
                 [[_cell(row.get(h)) for h in headers] for row in rows])


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def answer_text(a: Answer) -> str:
    q = a.question
    verdict = a.verdict.upper() + (f" on {a.depends_on}" if a.depends_on else "")
    lines = [f"{q.number}. \"{q.claim}\"  ({q.slug})", f"   verdict: {verdict}", _wrap(a.conclusion, "   "),
             "", "   evidence:"]
    for e in a.evidence:
        lines.append(_wrap(f"- {e.title}", "   ").replace("\n   ", "\n     "))
        lines.append(_wrap(e.text, "     "))
        if e.rows:
            lines += ["", _indent(evidence_table(e.rows, e.columns), "     ")]
        if e.files:
            shown = list(e.files[:MAX_FILES_SHOWN])
            more = f", ... ({len(e.files)} in all)" if len(e.files) > MAX_FILES_SHOWN else ""
            lines.append(_wrap(f"files: {', '.join(shown)}{more}", "     "))
        lines.append("")
    where = f"; files kept in {a.kept}" if a.kept else "; its files were removed (--keep DIR keeps them)"
    lines.append(f"   ran in {a.seconds:.1f} s{where}")
    return "\n".join(lines)


def explain_text(answers: Sequence[Answer]) -> str:
    return "\n\n".join(answer_text(a) for a in answers)


# --- restore-check ---

if TYPE_CHECKING:
    from ckptcheck.restore_check.report import RestoreCheckReport, StoredValueUse, VariableCheck

RESTORE_CHECK_SCHEMA = "ckptcheck.restore-check/1"
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
    if report.ok:
        head = f"OK: all {len(counted)} variables restored, values equal to the checkpoint's"
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
    tail = " (TF2 keys shown without /.ATTRIBUTES/VARIABLE_VALUE)" if report.format in (TF2, SAVEDMODEL) else ""
    if report.mismatches:
        lines += ["", "dtype and shape mismatches:"]
        for m in report.mismatches:
            parts = [f"{kind} {_pair_text(kind, m)}" for kind in m.kinds]
            lines.append(f"  {m.variable} <- {_key_text(m.key)}: " + "; ".join(parts))
    left = set(stop.left_behind) if stop is not None and not verbose else set()
    bad = [v for v in report.not_restored if v.variable not in left]
    if bad:
        lines += ["", f"variables not restored: {len(report.not_restored)}"
                  + (f" ({len(left)} left behind by the stop, named above)" if left else "") + tail,
                  table(_VARIABLE_HEADERS, _variable_rows(bad))]
    others = [v for v in report.variables if v.from_another_name]
    if others:
        lines += ["", f"restored from a value saved under another name: {len(others)} variables (the format matches "
                      f"by path or position, not by name): " + _names_text(
                          tuple(f"{v.variable} <- {v.source_variable}" for v in others), verbose)]
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
        if shown:
            lines.append(table(headers, _value_rows(shown, with_variable)))
    suggestions = [s for s in report.suggestions if s.variable not in left]
    if len(suggestions) < len(report.suggestions):
        lines += ["", f"likely matches: each of the {len(report.suggestions) - len(suggestions)} variables left behind "
                      f"is suggested the value saved under its own name (--rename-map FILE writes them; --verbose "
                      f"lists them)"]
    if suggestions:
        rows = [[s.variable, "<-", _key_text(s.key), shape_text(s.shape), s.stored_variable or "", s.evidence]
                for s in suggestions]
        lines += ["", "likely matches (the value saved under the variable's own name, or under it with a layer "
                      "renamed; same dtype and shape):",
                  table(["variable", "", "stored value", "shape", "saved as", "evidence"], rows)]
        renames = _rename_counts(report)
        if renames:
            lines.append("renames: " + ", ".join(f"{_rename_text((a, b))} ({n} values)" for (a, b), n in renames))
        lines.append("write them as a mapping to review with --rename-map FILE; check it with --apply-rename-map FILE")
    weights = [v for v in report.variables if v.kind != "optimizer"]
    optimizer = [v for v in report.variables if v.kind == "optimizer"]
    ignored = " — not counted (--ignore-optimizer)" if report.ignore_optimizer else ""
    stored_weights = [s for s in report.values if s.kind == "weight"]
    state = [s for s in report.values if s.kind != "weight"]
    if not verbose:
        lines += ["", f"model variables: {_count_text(weights) if weights else 'none'}"]
        if optimizer:
            lines.append(f"optimizer variables: {_count_text(optimizer)}{ignored}")
        if stored_weights:
            lines.append(f"checkpoint weights: {_use_text(stored_weights)}")
        if state:
            lines.append(f"checkpoint optimizer state and counters: {_use_text(state)}{ignored}")
        lines.append("(--verbose lists every variable and stored value; --json has everything)")
        return "\n".join(lines)
    if weights:
        lines += ["", f"model variables: {_count_text(weights)}{tail}",
                  table(_VARIABLE_HEADERS, _variable_rows(weights))]
    else:
        lines += ["", "model variables: none"]
    if optimizer:
        lines += ["", f"optimizer variables: {_count_text(optimizer)}{ignored}",
                  table(_VARIABLE_HEADERS, _variable_rows(optimizer))]
    if stored_weights:
        lines += ["", f"checkpoint weights: {_use_text(stored_weights)}",
                  table(headers, _value_rows(stored_weights, with_variable))]
    if state:
        lines += ["", f"checkpoint optimizer state and counters: {_use_text(state)}{ignored}",
                  table(headers, _value_rows(state, with_variable))]
    return "\n".join(lines)


def _names_text(names: Sequence[str], verbose: bool) -> str:
    if verbose or len(names) <= MAX_NAMED:
        return ", ".join(names)
    return ", ".join(names[:MAX_NAMED]) + f", ... and {len(names) - MAX_NAMED} more (--verbose, --json)"


def _labelled(text: str, label: str) -> str:
    import textwrap

    return textwrap.fill(text, width=EVIDENCE_WIDTH, initial_indent=label, subsequent_indent=" " * len(label),
                         break_on_hyphens=False, break_long_words=False)


def _count_text(variables: Sequence[VariableCheck]) -> str:
    restored = sum(1 for v in variables if v.restored)
    return f"{restored} of {len(variables)} restored"


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
    }
