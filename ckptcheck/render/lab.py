"""`generate`, `roundtrip` and `explain` reports in text and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckptcheck.numbers import finite_or_null, number_text
from ckptcheck.render.inspect import FORMAT_TITLES, tensors_table
from ckptcheck.render.tables import human_bytes, number, shape_text, table

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    pass

if TYPE_CHECKING:
    from ckptcheck.lab.reports import Answer, Evidence, Fact, GenerateOptions, GenerateReport, Question, RoundTripReport

GENERATE_SCHEMA = "ckptcheck.generate/1"
ROUNDTRIP_SCHEMA = "ckptcheck.roundtrip/1"
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
        "losses": [finite_or_null(v) for v in report.losses],
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
    return finite_or_null(value) if isinstance(value, float) else value


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
        return number_text(float(value), 4)
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
