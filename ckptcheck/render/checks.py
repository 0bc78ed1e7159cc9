"""`verify` and `diff` reports in text and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckptcheck.records import (
    KERAS_WEIGHTS,
    TensorInfo,
)
from ckptcheck.render.inspect import variable_name
from ckptcheck.render.tables import human_bytes, number, shape_text, table

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    from ckptcheck.diff import DiffReport, TensorChange
    from ckptcheck.verify import Problem, VerifyReport

if TYPE_CHECKING:
    pass

# --- verify / manifest / diff -----------------------------------------------------------------------------------

VERIFY_SCHEMA = "ckptcheck.verify/2"
DIFF_SCHEMA = "ckptcheck.diff/2"


def verify_text(report: VerifyReport) -> str:
    status = ("OK" if report.ok else "DAMAGED" if report.problems else "DIFFERENT FROM MANIFEST" if report.differences
              else "NON-FINITE VALUES")
    # HDF5 holds no checksum of the values: without a manifest to compare with, they were read, not checked.
    verb = ("read" if report.format in (KERAS_WEIGHTS, "keras-h5", "safetensors") and report.against is None
            else "checked")
    lines = [f"{status}: {report.path} ({report.format}): {report.tensors_checked} tensors, "
             f"{human_bytes(report.bytes_checked)} {verb}"]
    if report.selection is not None:
        lines.append(f"checked: only the tensors {report.selection.text()} selects")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {p}" for p in report.problems]
    if report.finite_checked is not None:
        if report.nonfinite:
            lines.append(f"{len(report.nonfinite)} of {report.finite_checked} floating-point tensor(s) hold NaN or "
                         "Inf:")
            lines += [f"  - {_labelled_name(n.variable, n.key, n.kind)}: {n.text}" for n in report.nonfinite]
        else:
            lines.append(f"finite: all {report.finite_checked} floating-point tensors hold only finite values")
    lines += [f"note: {note}" for note in report.notes]
    if report.against is not None:
        if report.differences:
            lines.append(f"{len(report.differences)} difference(s) from {report.against}:")
            lines += [f"  - {d.kind}: {_labelled_name(d.variable, d.tensor, d.tensor_kind)}: {d.message}"
                      for d in report.differences]
        else:
            tail = " (damaged tensors not compared)" if any(p.tensor for p in report.problems) else ""
            lines.append(f"matches {report.against}{tail}")
    return "\n".join(lines)


def _problem_dict(p: Problem) -> dict[str, Any]:
    return {"kind": p.kind, "message": p.message, "file": p.file, "tensor": p.tensor}


def _labelled_name(variable: str | None, key: str | None, kind: str | None) -> str:
    """``layer_0_output/kernel (weights)``; a tensor without a variable by its key, in backquotes."""
    name = variable if variable else f"`{key}`"
    return f"{name} ({kind})" if kind else name



def _difference_dict(p: Problem) -> dict[str, Any]:
    return {**_problem_dict(p), "key": p.tensor, "variable": p.variable, "tensor_kind": p.tensor_kind}



def verify_dict(report: VerifyReport) -> dict[str, Any]:
    finite = None
    if report.finite_checked is not None:
        finite = {"checked": report.finite_checked,
                  "nonfinite": [{"variable": n.variable, "key": n.key, "kind": n.kind, "count": n.count,
                                 "nan": n.nan, "inf": n.inf} for n in report.nonfinite]}
    return {
        "schema": VERIFY_SCHEMA,
        "path": report.path,
        "format": report.format,
        "ok": report.ok,
        "files": list(report.files),
        "tensors_checked": report.tensors_checked,
        "bytes_checked": report.bytes_checked,
        "selection": report.selection.describe() if report.selection is not None else None,
        "problems": [_problem_dict(p) for p in report.problems],
        "against": report.against,
        "differences": [_difference_dict(d) for d in report.differences],
        "finite": finite,
        "notes": list(report.notes),
    }


def nonfinite_text(what: str, counts: tuple[int, int] | None, total: int) -> str | None:
    """``NaN appeared (0 -> 1 of 32768)``, ``Inf went (2 -> 0 of 10)``, ``NaN 2 -> 5 of 10``; None when the count
    did not change."""
    if counts is None or counts[0] == counts[1]:
        return None
    before, after = counts
    verb = " appeared" if before == 0 else " went" if after == 0 else ""
    return f"{what}{verb} ({before} -> {after} of {total})" if verb else f"{what} {before} -> {after} of {total}"



def _change_text(c: TensorChange) -> str:
    parts = []
    if "dtype" in c.kinds:
        parts.append(f"dtype {c.dtype_a} -> {c.dtype_b}")
    if "shape" in c.kinds:
        parts.append(f"shape {shape_text(c.shape_a)} -> {shape_text(c.shape_b)}")
    if c.values is not None and not c.values.equal:
        v = c.values
        parts += [t for t in (nonfinite_text("NaN", v.nan, v.count), nonfinite_text("Inf", v.inf, v.count)) if t]
        parts.append(f"{v.differing} of {v.count} elements differ")
    return "; ".join(parts)


def diff_text(report: DiffReport, unchanged: bool = False) -> str:
    """The verdict, then tables of changed, removed and added tensors; then the unchanged ones: their count, or
    (``unchanged``) their variables."""
    warnings = [f"WARNING: {w}" for w in report.warnings]
    return "\n".join([*warnings, _diff_body(report), *_unchanged_lines(report, unchanged)])


def _unchanged_lines(report: DiffReport, listed: bool) -> list[str]:
    if not report.unchanged:
        return []
    if listed:
        return ["", table([f"unchanged ({len(report.unchanged)}, equal in A and B)"],
                          [[name] for name in report.unchanged_names])]
    return ["", f"unchanged: {len(report.unchanged)} tensors, equal in A and B (--unchanged lists them)"]


def _by_kind(report: DiffReport, tensors: Sequence[TensorInfo], side: str) -> str:
    """`` (4 optimizer)``, ``(2 weights, 4 optimizer)``: how many of each kind; empty for none."""
    from ckptcheck.summary import KINDS

    found = [report.kind_of(t, side) for t in tensors]
    counts = [f"{found.count(kind)} {kind}" for kind in KINDS if kind in found]
    return f" ({', '.join(counts)})" if counts else ""



def _variable_cell(t: TensorInfo) -> str:
    """A tensor as reports name it: its variable, else its key."""
    v = t.variable
    return v if v is not None and not v.startswith("(") else t.name



def _diff_body(report: DiffReport) -> str:
    verdict = "same" if report.same else "different"
    tol = f" (atol={report.atol:g}, rtol={report.rtol:g})" if report.atol or report.rtol else " (exact)"
    lines = [f"{verdict}{tol}: {len(report.unchanged)} unchanged, {len(report.changed)} changed, "
             f"{len(report.removed)} removed{_by_kind(report, report.removed, 'a')}, "
             f"{len(report.added)} added{_by_kind(report, report.added, 'b')}",
             f"A: {report.a} ({report.format_a})", f"B: {report.b} ({report.format_b})"]
    if not report.selection.everything:
        a, total_a, b, total_b = report.selected
        lines.append(f"compared: {a} of A's {total_a} tensors and {b} of B's {total_b}, those "
                     f"{report.selection.text()} selects")
    optimizers_a, optimizers_b = report.optimizers
    carried = any(report.kinds.get(r.name_a) == "optimizer" for r in report.renamed)  # paired by a rename map
    if optimizers_a != optimizers_b and not carried:
        lines.append(f"optimizer: {', '.join(optimizers_a) or 'none'} in A, {', '.join(optimizers_b) or 'none'} in "
                     "B: its state is reported removed and added, not compared")
    if report.matching != "variables":
        lines.append(f"tensors matched by {report.matching}")
    lines += _renamed_lines(report)
    if report.note:
        lines.append(f"note: {report.note}")
    if report.moved:
        from ckptcheck.pairing import normalize_name

        variable, key_a, key_b = report.moved[0]
        more = f", ... {len(report.moved) - 1} more" if len(report.moved) > 1 else ""
        lines.append(f"stored elsewhere: {len(report.moved)} variable(s) are stored under other keys in B "
                     f"({variable}: {normalize_name(key_a)} -> {normalize_name(key_b)}{more}); where a value is "
                     "stored is no change of the model")
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
            variable = c.identity
            if c.variable_b not in (None, c.variable):
                variable = f"{variable} ~ {c.variable_b}"
            v = c.values
            only_nonfinite = v is not None and v.nonfinite_changed and v.max_abs == 0.0
            rows.append([variable, c.kind or "", ", ".join(c.kinds), _change_text(c),
                         number(v.max_abs) if v and not only_nonfinite else "",
                         number(v.max_rel) if v and not only_nonfinite else ""])
        lines += ["", table(["changed", "kind", "what", "detail", "max abs diff", "max rel diff"], rows)]
    for title, side, tensors in (("removed (only in A)", "a", report.removed),
                                 ("added (only in B)", "b", report.added)):
        if tensors:
            lines += ["", table([title, "kind", "dtype", "shape"],
                                [[_variable_cell(t), report.kind_of(t, side) or "", t.dtype, shape_text(t.shape)]
                                 for t in tensors])]
    return "\n".join(lines)


def _renamed_lines(report: DiffReport) -> list[str]:
    """Tensors paired under another name (renames.py), one line per kind of rename with an example."""
    if not report.renamed:
        return []
    groups: dict[str, list[Any]] = {}
    for r in report.renamed:
        groups.setdefault(r.rule, []).append(r)
    lines = [f"renamed: {len(report.renamed)} tensors paired under another name (counted above as unchanged or "
             f"changed; --json lists them):"]
    for rule, rs in groups.items():
        r = rs[0]
        lines.append(f"  {rule}: {len(rs)} (e.g. {r.variable_a} -> {r.variable_b}: {r.evidence})")
    return lines


def diff_dict(report: DiffReport) -> dict[str, Any]:
    def brief(t: TensorInfo, side: str) -> dict[str, Any]:
        return {"variable": variable_name(t.variable), "name": t.name, "kind": report.kind_of(t, side),
                "dtype": t.dtype, "shape": list(t.shape)}

    return {
        "schema": DIFF_SCHEMA,
        "a": report.a,
        "b": report.b,
        "format_a": report.format_a,
        "format_b": report.format_b,
        "same": report.same,
        "atol": report.atol,
        "rtol": report.rtol,
        "selection": report.selection.describe(),
        "matching": report.matching,
        "note": report.note,
        "warnings": list(report.warnings),
        "optimizers": {"a": list(report.optimizers[0]), "b": list(report.optimizers[1])},
        "moved": [{"variable": v, "key_a": ka, "key_b": kb} for v, ka, kb in report.moved],
        "graph_differences": list(report.graph_differences),
        "unchanged": list(report.unchanged_names),
        "unchanged_keys": list(report.unchanged),
        "removed": [brief(t, "a") for t in report.removed],
        "added": [brief(t, "b") for t in report.added],
        "changed": [
            {
                "variable": variable_name(c.variable),
                "variable_b": variable_name(c.variable_b),
                "name": c.name,
                "name_b": c.name_b,
                "kind": c.kind,
                "changes": list(c.kinds),
                "dtype": [c.dtype_a, c.dtype_b],
                "shape": [list(c.shape_a), list(c.shape_b)],
                "elements": c.values.count if c.values else None,
                "differing": c.values.differing if c.values else None,
                "max_abs_diff": c.values.max_abs if c.values else None,
                "max_rel_diff": c.values.max_rel if c.values else None,
                "nan": list(c.values.nan) if c.values and c.values.nan else None,
                "inf": list(c.values.inf) if c.values and c.values.inf else None,
            }
            for c in report.changed
        ],
        "bookkeeping": [{**brief(t, "a"), "kind": "bookkeeping"} for t in report.bookkeeping],
        "renamed": [{"name": r.name_a, "name_b": r.name_b, "variable": r.variable_a, "variable_b": r.variable_b,
                     "rule": r.rule, "evidence": r.evidence} for r in report.renamed],
    }
