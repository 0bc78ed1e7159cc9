"""`verify` and `diff` reports in text and JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ckptcheck.records import (
    KERAS_WEIGHTS,
    TensorInfo,
)
from ckptcheck.render.tables import human_bytes, number, shape_text, table

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    from ckptcheck.diff import DiffReport, TensorChange
    from ckptcheck.verify import Problem, VerifyReport

if TYPE_CHECKING:
    pass

# --- verify / manifest / diff -----------------------------------------------------------------------------------

VERIFY_SCHEMA = "ckptcheck.verify/1"
DIFF_SCHEMA = "ckptcheck.diff/1"


def verify_text(report: VerifyReport) -> str:
    status = "OK" if report.ok else "DAMAGED" if report.problems else "DIFFERENT FROM MANIFEST"
    # HDF5 holds no checksum of the values: without a manifest to compare with, they were read, not checked.
    verb = ("read" if report.format in (KERAS_WEIGHTS, "keras-h5", "safetensors") and report.against is None
            else "checked")
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
