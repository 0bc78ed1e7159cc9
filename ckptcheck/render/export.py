"""`export`'s report as text and as JSON (schema ckptcheck.export/1); never prints."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ckptcheck.export import (
    BOOKKEEPING,
    EXCLUDED,
    EXPORT_SCHEMA,
    FILTERED,
    NOT_KIND,
    UNSUPPORTED,
    ExportReport,
)
from ckptcheck.render.tables import human_bytes, shape_text, table

_KIND_WORDS = {"weights": "weights", "optimizer": "optimizer state", "counters": "counters",
               BOOKKEEPING: "format bookkeeping"}


def _left_out_line(report: ExportReport) -> str | None:
    parts = []
    by_kind = Counter(t.kind for t in report.left_out if t.reason == NOT_KIND)
    for kind, n in by_kind.items():
        why = ("not exported unless --kind bookkeeping asks" if kind == BOOKKEEPING and BOOKKEEPING not in
               report.kinds else f"--kind {' '.join(report.kinds)}")
        parts.append(f"{n} {_KIND_WORDS.get(kind, kind)} ({why})")
    filtered = sum(1 for t in report.left_out if t.reason == FILTERED)
    if filtered:
        parts.append(f"{filtered} not matching --filter {report.filter}")
    excluded = sum(1 for t in report.left_out if t.reason == EXCLUDED)
    if excluded:
        parts.append(f"{excluded} matching --exclude")
    return "left out: " + "; ".join(parts) if parts else None


def export_text(report: ExportReport, verbose: bool = False) -> str:
    data = sum(t.nbytes for t in report.tensors)
    named = "named by variable" if report.names == "variable" else "named by key"
    lines = [f"wrote {report.out} ({report.out_format}): {len(report.tensors)} tensors, {human_bytes(data)} of "
             f"values ({human_bytes(report.bytes_written)} file), {named}, from {report.source} "
             f"({report.source_format})"]
    left = _left_out_line(report)
    if left:
        lines.append(left)
    skipped = report.skipped
    if skipped:
        lines.append(f"skipped: {len(skipped)} tensor(s) of a dtype {report.out_format} cannot hold "
                     "(--skip-unsupported):")
        lines += [f"  - {t.key} ({t.dtype}, {shape_text(t.shape)})" for t in skipped]
    if report.rename_map is not None:
        lines.append(f"renamed: {report.renamed} tensor(s), by {report.rename_map}")
    if verbose and report.tensors:
        with_key = any(t.key != t.name for t in report.tensors)
        headers = ["name", *(["from key"] if with_key else []), "kind", "dtype", "shape", "size"]
        rows = [[t.name, *([t.key] if with_key else []), t.kind, t.dtype, shape_text(t.shape),
                 human_bytes(t.nbytes)] for t in report.tensors]
        lines += ["", table(headers, rows)]
    return "\n".join(lines)


def export_dict(report: ExportReport) -> dict[str, Any]:
    return {
        "schema": EXPORT_SCHEMA,
        "source": report.source,
        "source_format": report.source_format,
        "out": report.out,
        "out_format": report.out_format,
        "names": report.names,
        "kinds": list(report.kinds),
        "filter": report.filter,
        "exclude": list(report.exclude),
        "rename_map": report.rename_map,
        "renamed": report.renamed,
        "tensor_count": len(report.tensors),
        "value_bytes": sum(t.nbytes for t in report.tensors),
        "bytes_written": report.bytes_written,
        "tensors": [{"name": t.name, "key": t.key, "variable": t.variable, "kind": t.kind, "dtype": t.dtype,
                     "shape": list(t.shape), "nbytes": t.nbytes} for t in report.tensors],
        "left_out": [{"key": t.key, "variable": t.variable, "kind": t.kind, "dtype": t.dtype,
                      "shape": list(t.shape), "reason": t.reason} for t in report.left_out],
        "skipped": [t.key for t in report.left_out if t.reason == UNSUPPORTED],
    }
