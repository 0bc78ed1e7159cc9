"""``ckptcheck history``'s report as text, as JSON (schema ckptcheck.history/1) and as a self-contained HTML page
(inline SVG drawn here, inline CSS and a few lines of JavaScript: nothing is fetched). Returns strings and dicts;
never prints."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from ckptcheck.history import SCHEMA, Finding, HistoryReport, RunCheckpoint, Series, at, ratio_text
from ckptcheck.render.tables import shape_text, table
from ckptcheck.summary import KIND_TITLES

NONFINITE_MARK = "*"


def _n(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def history_header(report: HistoryReport) -> str:
    n = len(report.checkpoints)
    span = report.span if report.readable and report.span != "the run" else ""
    what = "layers" if report.grouped else "variables"
    kinds = ", ".join(KIND_TITLES[k] for k in report.kinds)
    line = (f"history of {report.directory}: {n} checkpoint{'s' if n != 1 else ''}{f' ({span})' if span else ''}; "
            f"{kinds}: {len(report.series)} {what}")
    if report.filter:
        line += f" matching {report.filter!r}"
    return line


def findings_text(found: Sequence[Finding]) -> str:
    if not found:
        return "findings: none (every value finite, every checkpoint read, every variable changed)"
    return "findings:\n" + "\n".join(f"  {'!' if f.problem else '-'} {f.message}" for f in found)


def checkpoints_table(report: HistoryReport) -> str:
    rows = []
    for c in report.checkpoints:
        status = ("unreadable" if c.error is not None else
                  f"damaged ({len(c.damaged)} unreadable)" if c.damaged else "read")
        named = "named" if c.named else "not named"
        rows.append([str(c.step) if c.step is not None else "?", c.name, c.step_source or "", c.format or ""]
                    + ([named] if report.state_file else []) + [status])
    headers = ["step", "checkpoint", "step from", "format"] + (["state file"] if report.state_file else []) + ["read"]
    return table(headers, rows)


def _largest_change(s: Series, report: HistoryReport) -> str:
    best = max(((r, i) for i, r in enumerate(s.relative) if r is not None), default=None)
    if best is None:
        return "-"
    if best[0] == 0:
        return "0"
    return f"{_n(best[0], 3)} ({report.labels[best[1]]})"


def _ends(s: Series) -> tuple[int | None, int | None]:
    present = [i for i, w in enumerate(s.norm) if w is not None]
    return (present[0], present[-1]) if present else (None, None)


def _bad(s: Series, i: int) -> bool:
    return bool((s.nan[i] or 0) + (s.inf[i] or 0))


def _norm_cell(s: Series, i: int | None) -> str:
    if i is None:
        return "-"
    return _n(s.norm[i]) + (NONFINITE_MARK if _bad(s, i) else "")


def series_table(report: HistoryReport) -> str:
    rows = []
    for s in report.series:
        first, last = _ends(s)
        ratio = "-"
        if first is not None and last is not None and first != last and not (_bad(s, first) or _bad(s, last)):
            w0, w1 = s.norm[first], s.norm[last]
            ratio = ratio_text(w1 / w0) if w0 and w1 is not None else "-"
        i = s.first_nonfinite
        nonfinite = report.labels[i] if i is not None else "-"
        shape = shape_text(s.shape) if s.shape is not None else f"{len(s.variables)} var"
        rows.append([s.name, shape, _norm_cell(s, first), _norm_cell(s, last), ratio, _largest_change(s, report),
                     "never" if s.never_changed else "", nonfinite])
    label = "layer" if report.grouped else "variable"
    return table([label, "shape" if not report.grouped else "holds", "norm first", "norm last", "norm change",
                  "largest change (step)", "changed", "NaN/Inf from"], rows)


def change_table(report: HistoryReport) -> str:
    """The relative change of every variable (or layer) at every checkpoint after the first read, one column per
    checkpoint: 0 where every value is the same, - where there is nothing to compare, * where it holds NaN/Inf."""
    columns = list(report.readable[1:])
    if not columns:
        return ""
    rows = []
    for s in report.series:
        cells = []
        for i in columns:
            cell = "0" if s.same[i] else _n(s.relative[i], 3)
            if (s.nan[i] or 0) + (s.inf[i] or 0):
                cell += NONFINITE_MARK
            cells.append(cell)
        rows.append([s.name, *cells])
    headers = ["layer" if report.grouped else "variable"] + [report.labels[i] for i in columns]
    return (f"relative change ||w - w_prev|| / ||w|| at each step (0: the same values; {NONFINITE_MARK}: holds "
            "NaN/Inf):\n" + table(headers, rows))


def history_text(report: HistoryReport) -> str:
    parts = [history_header(report), "", findings_text(report.findings), "", checkpoints_table(report)]
    if report.series:
        parts += ["", series_table(report)]
        changes = change_table(report)
        if changes:
            parts += ["", changes]
    return "\n".join(parts)


def errors_lines(report: HistoryReport) -> list[str]:
    """One line per checkpoint that could not be read (or not whole), for stderr."""
    lines = [f"{c.path}: {c.error}" for c in report.checkpoints if c.error is not None]
    lines += [f"{c.path}: {c.damaged[0][1]}" for c in report.checkpoints if c.damaged]
    return lines


# --- JSON ---------------------------------------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _series_dict(s: Series, grouped: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"name": s.name, "kind": s.kind}
    if grouped:
        d["variables"] = list(s.variables)
    else:
        d["dtype"] = s.dtype
        d["shape"] = list(s.shape) if s.shape is not None else None
    d.update({
        "norm": [_finite(x) for x in s.norm], "change": [_finite(x) for x in s.change],
        "relative": [_finite(x) for x in s.relative], "nan": list(s.nan), "inf": list(s.inf), "same": list(s.same),
        "first_nonfinite": s.first_nonfinite, "never_changed": s.never_changed,
    })
    return d


def _checkpoint_dict(c: RunCheckpoint) -> dict[str, Any]:
    return {"path": c.path, "name": c.name, "step": c.step, "step_source": c.step_source, "counters": c.counters,
            "format": c.format, "named": c.named, "error": c.error,
            "damaged": [{"variable": v, "error": e} for v, e in c.damaged]}


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {"kind": f.kind, "problem": f.problem, "message": f.message, "names": list(f.names),
            "checkpoint": f.checkpoint, "step": f.step}


def history_dict(report: HistoryReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "directory": report.directory,
        "kinds": list(report.kinds),
        "group": report.grouped,
        "filter": report.filter,
        "state_file": report.state_file,
        "exit_code": report.exit_code,
        "findings": [_finding_dict(f) for f in report.findings],
        "checkpoints": [_checkpoint_dict(c) for c in report.checkpoints],
        "variables": [_series_dict(s, False) for s in report.variables],
        "layers": [_series_dict(s, True) for s in report.layers],
    }


# --- HTML ---------------------------------------------------------------------------------------------------------

# The relative change's colour scale: log10 from LOW to HIGH, over these stops (a perceptually even ramp, light to
# dark, as viridis runs), so a change of 1e-3 reads darker than one of 1e-5 in print and to colour-blind eyes.
LOW, HIGH = -6.0, 0.0
_RAMP = ((0.993, 0.906, 0.144), (0.369, 0.788, 0.384), (0.128, 0.567, 0.551), (0.230, 0.322, 0.546),
         (0.267, 0.005, 0.329))
SAME_COLOUR = "#d9dde3"  # every value as before: the colour frozen rows are made of
NONE_COLOUR = "#ffffff"
NAN_COLOUR = "#d62728"
NONFINITE_FILL = "#f6c9c6"  # holds NaN/Inf and no change can be measured (nothing finite on both sides)
_CELL_W, _CELL_H, _LABEL_W = 34, 16, 12
MAX_ROWS = 2000  # rows of a heatmap, lines of the chart: past this the page says so (the JSON has every series)


def _ramp(t: float) -> str:
    t = min(max(t, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    f = t - i
    rgb = [a + (b - a) * f for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True)]
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def change_colour(relative: float | None, same: bool | None) -> str:
    if same:
        return SAME_COLOUR
    if relative is None:
        return NONE_COLOUR
    if relative <= 0:
        return _ramp(0.0)
    return _ramp((math.log10(relative) - LOW) / (HIGH - LOW))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _too_many(series: Sequence[Series]) -> str:
    return (f'<p class="sub">{len(series)} series: too many to draw here (at most {MAX_ROWS}); --group draws one per '
            "layer, --filter fewer, and --json holds every series.</p>")


def _heatmap(report: HistoryReport, series: Sequence[Series], title: str, css_id: str) -> str:
    if len(series) > MAX_ROWS:
        return _too_many(series)
    cps = report.checkpoints
    label_w = _LABEL_W + 7 * max((len(s.name) for s in series), default=4)
    label_w = min(label_w, 420)
    top = 40
    width = label_w + _CELL_W * len(cps) + 10
    height = top + _CELL_H * len(series) + 10
    out = [f'<svg id="{css_id}" class="heatmap" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="{_e(title)}">']
    for j, c in enumerate(cps):
        x = label_w + j * _CELL_W + _CELL_W / 2
        out.append(f'<text class="col" x="{x:.1f}" y="{top - 8}" text-anchor="middle">{_e(report.labels[j])}'
                   f'<title>{_e(at(c))}</title></text>')
    for r, s in enumerate(series):
        y = top + r * _CELL_H
        frozen = s.never_changed
        first = s.first_nonfinite
        name = s.name if len(s.name) * 7 <= label_w - _LABEL_W else "…" + s.name[-((label_w - _LABEL_W) // 7 - 1):]
        out.append(f'<g class="row{" frozen" if frozen else ""}" data-name="{_e(s.name)}">')
        out.append(f'<text class="label" x="{label_w - 6}" y="{y + _CELL_H - 4}" text-anchor="end">{_e(name)}'
                   f'<title>{_e(s.name)}</title></text>')
        for j, c in enumerate(cps):
            x = label_w + j * _CELL_W
            bad = (s.nan[j] or 0) + (s.inf[j] or 0)
            # Where it holds NaN/Inf, a colour of the scale only for a change its finite values measurably made.
            colour = (NONE_COLOUR if not c.readable else NONFINITE_FILL if bad and not s.relative[j]
                      else change_colour(s.relative[j], None if bad else s.same[j]))
            tip = [f"{s.name} at {at(c)}"]
            if not c.readable:
                tip.append("checkpoint unreadable")
            elif s.norm[j] is None:
                tip.append("not in this checkpoint" if not any(v for v, _e in c.damaged if v in s.variables)
                           else "values unreadable")
            else:
                tip.append(f"norm {_n(s.norm[j])}")
                tip.append("no change" if s.same[j] else f"relative change {_n(s.relative[j], 3)}"
                           if s.relative[j] is not None else "first checkpoint read")
                if bad:
                    tip.append(f"NaN {s.nan[j]}, Inf {s.inf[j]}")
            classes = "cell" + (" nonfinite" if bad else "") + (" unreadable" if not c.readable else "")
            out.append(f'<rect class="{classes}" x="{x}" y="{y}" width="{_CELL_W - 1}" height="{_CELL_H - 1}" '
                       f'fill="{colour}" data-col="{j}"><title>{_e("; ".join(tip))}</title></rect>')
            if first == j:
                cx, cy = x + (_CELL_W - 1) / 2, y + (_CELL_H - 1) / 2
                out.append(f'<path class="marker nan-start" d="M{cx - 4:.1f} {cy - 4:.1f}L{cx + 4:.1f} {cy + 4:.1f}'
                           f'M{cx + 4:.1f} {cy - 4:.1f}L{cx - 4:.1f} {cy + 4:.1f}" stroke="{NAN_COLOUR}" '
                           f'stroke-width="2.5"><title>{_e(f"NaN/Inf first at {at(c)}")}</title></path>')
        if frozen:
            out.append(f'<rect class="marker frozen-mark" x="{label_w + len(cps) * _CELL_W + 2}" y="{y + 3}" '
                       f'width="6" height="{_CELL_H - 7}" fill="#1f77b4"><title>{_e(s.name)} never changed'
                       '</title></rect>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _legend() -> str:
    stops = "".join(f'<rect x="{i * 4}" y="0" width="4" height="12" fill="{_ramp(i / 49)}"/>' for i in range(50))
    return (f'<div class="legend"><svg width="230" height="30" role="img" aria-label="colour scale">{stops}'
            f'<text x="0" y="26">1e{int(LOW)}</text><text x="200" y="26" text-anchor="end">1</text></svg>'
            f'<span><i style="background:{SAME_COLOUR}"></i>no change</span>'
            f'<span><i style="background:{NONE_COLOUR};border:1px solid #999"></i>nothing to compare</span>'
            f'<span><i style="background:{NONFINITE_FILL};border:1px solid {NAN_COLOUR}"></i>holds NaN/Inf</span>'
            f'<span><b style="color:{NAN_COLOUR}">×</b> NaN/Inf began</span>'
            '<span><i style="background:#1f77b4;width:6px"></i>never changed</span></div>')


FROZEN_COLOUR = "#8a8f98"


def _palette(i: int) -> str:
    """Distinct hues by the golden angle, clear of the reds NaN/Inf markers are drawn in."""
    return f"hsl({30 + (i * 137.508) % 300:.0f} 65% 40%)"


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 4)) if span > 0 else 1.0
    step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= 6)
    return [k * step for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)]


def _norm_chart(report: HistoryReport, series: Sequence[Series], *, relative: bool) -> str:
    """Each series' norm over the steps: as it is (log scale when the norms span more than a hundredfold), or
    ``relative`` to the series' first finite norm, in percent. A line stops where its values hold NaN/Inf (the
    norm then counts only the finite ones) and a red dot marks where that began; a red dashed line the checkpoint
    where NaN/Inf first appear anywhere; what never changed is grey and dashed."""
    if len(series) > MAX_ROWS:
        return _too_many(series) if relative else ""
    cps = report.checkpoints
    readable = list(report.readable)
    steps = [cps[i].step for i in readable]
    use_steps = all(s is not None for s in steps) and len(set(steps)) == len(steps)
    xs = {i: float(cps[i].step if use_steps else k) for k, i in enumerate(readable)}  # type: ignore[arg-type]

    def finite_at(s: Series, i: int) -> bool:
        return s.norm[i] is not None and not (s.nan[i] or s.inf[i])

    def value(s: Series, i: int) -> float | None:
        w = s.norm[i]
        if w is None or not finite_at(s, i):
            return None
        if not relative:
            return w if w > 0 else None
        base = next((s.norm[j] for j in readable if finite_at(s, j)), None)
        return (w / base - 1) * 100 if base else None

    values = [v for s in series for i in readable if (v := value(s, i)) is not None]
    chart_id = "norms-relative" if relative else "norms"
    width, height, left, right, top, bottom = 760, 320, 70, 16, 12, 36
    out = [f'<svg id="{chart_id}" class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="norm of each series over the steps">']
    if not values:
        out.append(f'<text x="{left}" y="{height / 2}">no norm to draw</text></svg>')
        return "".join(out)
    lo, hi = min(values), max(values)
    log = not relative and hi / lo > 100
    if not log and hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    ticks = _ticks(lo, hi, log)
    lo, hi = min(ticks[0], lo), max(ticks[-1], hi)
    x0, x1 = min(xs.values()), max(xs.values())
    span = (x1 - x0) or 1.0

    def px(x: float) -> float:
        return left + (x - x0) / span * (width - left - right)

    def py(v: float) -> float:
        f = (math.log10(hi) - math.log10(v)) / (math.log10(hi) - math.log10(lo)) if log else (hi - v) / (hi - lo)
        return top + f * (height - top - bottom)

    out.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
               'fill="none" stroke="#bbb"/>')
    for t in ticks:
        label = f"1e{round(math.log10(t))}" if log else (f"{t:+.3g} %" if relative else f"{t:.3g}")
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text class="axis" x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{label}</text>')
    for i in readable:
        out.append(f'<text class="axis" x="{px(xs[i]):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                   f'{_e(report.labels[i])}</text>')
    axis = "step" if use_steps else "checkpoint"
    out.append(f'<text class="axis" x="{(left + width - right) / 2}" y="{height - 4}" text-anchor="middle">{axis}'
               f'{" (norm relative to its first checkpoint)" if relative else ""}</text>')
    starts = sorted({f for s in series if (f := s.first_nonfinite) is not None})
    if starts and starts[0] in xs:
        x = px(xs[starts[0]])
        out.append(f'<line class="marker nan-line" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" '
                   f'stroke="{NAN_COLOUR}" stroke-width="2" stroke-dasharray="6 3"><title>'
                   f'{_e(f"NaN/Inf first appear at {at(cps[starts[0]])}")}</title></line>'
                   f'<text class="marker-label" x="{x + 4:.1f}" y="{top + 14}" fill="{NAN_COLOUR}">NaN/Inf</text>')
    for n, s in enumerate(series):
        colour = FROZEN_COLOUR if s.never_changed else _palette(n)
        dash = ' stroke-dasharray="4 3"' if s.never_changed else ""
        out.append(f'<g class="line{" frozen" if s.never_changed else ""}" data-name="{_e(s.name)}">')
        segment: list[tuple[float, float]] = []
        last: tuple[float, float] | None = None
        for k in [*readable, None]:
            v = value(s, k) if k is not None else None
            if v is not None and k is not None:
                segment.append((px(xs[k]), py(v)))
                last = segment[-1]
                continue
            if segment:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}>'
                           f'<title>{_e(s.name)}</title></polyline>')
                segment = []
        first = s.first_nonfinite
        if first is not None and first in xs:
            y = last[1] if last is not None else (top + height - bottom) / 2
            out.append(f'<circle class="marker nan-start" cx="{px(xs[first]):.1f}" cy="{y:.1f}" r="4" '
                       f'fill="{NAN_COLOUR}"><title>{_e(f"{s.name}: NaN/Inf from {at(cps[first])}")}</title>'
                       '</circle>')
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _chart_keys(series: Sequence[Series]) -> str:
    if len(series) > MAX_ROWS:
        return ""
    keys = "".join(f'<li data-name="{_e(s.name)}"><i style="background:'
                   f'{FROZEN_COLOUR if s.never_changed else _palette(n)}"></i>{_e(s.name)}'
                   f'{" (never changed)" if s.never_changed else ""}</li>' for n, s in enumerate(series))
    return f'<ul class="keys">{keys}</ul>'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.sub{color:#555}.findings li{margin:4px 0}.findings li.problem{color:#a4161a;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.label{font-family:ui-monospace,Menlo,monospace}
.scroll{overflow-x:auto;border:1px solid #eee;padding:6px}
.legend{display:flex;gap:16px;align-items:center;flex-wrap:wrap;margin:6px 0}
.legend i,.keys i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px}
.keys{columns:3;list-style:none;padding:0;font:12px ui-monospace,Menlo,monospace}
.keys li{cursor:default}
.charts svg#norms{display:none}.toggle{margin:4px 0 6px}
.dim polyline{opacity:.12}.hl polyline{stroke-width:3.5}
g.row.hl text.label{font-weight:700}
rect.cell.nonfinite{stroke:#d62728;stroke-width:1.5}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eee;padding:3px 10px;text-align:left}
"""

_JS = """
(function(){
  function mark(name,on){
    document.querySelectorAll('svg.chart g.line').forEach(function(g){
      var me=g.getAttribute('data-name')===name;
      g.classList.toggle('hl',on&&me);g.classList.toggle('dim',on&&!me);
    });
    document.querySelectorAll('g.row').forEach(function(g){
      g.classList.toggle('hl',on&&g.getAttribute('data-name')===name);
    });
  }
  document.querySelectorAll('g.row,.keys li,g.line').forEach(function(el){
    var name=el.getAttribute('data-name');
    el.addEventListener('mouseenter',function(){mark(name,true);});
    el.addEventListener('mouseleave',function(){mark(name,false);});
  });
  document.querySelectorAll('.toggle input').forEach(function(input){
    input.addEventListener('change',function(){
      ['norms','norms-relative'].forEach(function(id){
        var svg=document.getElementById(id);
        if(svg)svg.style.display=(id===input.value)?'inline':'none';
      });
    });
  });
  document.body.setAttribute('data-ready','1');
})();
"""


def _status(c: RunCheckpoint) -> str:
    if c.error is not None:
        return c.error
    return f"damaged: {c.damaged[0][1]}" if c.damaged else "read"


def history_html(report: HistoryReport, *, version: str = "") -> str:
    """One self-contained page: findings, the heatmap of relative change (layers by checkpoints; every variable's
    below), the norms over the steps, and the checkpoints. Nothing in it is fetched."""
    cps = report.checkpoints
    title = f"ckptcheck history: {report.directory}"
    findings = "".join(f'<li class="{"problem" if f.problem else "note"}">{_e(f.message)}</li>'
                       for f in report.findings) or "<li>none</li>"
    rows = "".join(
        f"<tr><td>{_e(c.step if c.step is not None else '?')}</td><td>{_e(c.name)}</td><td>{_e(c.step_source or '')}"
        f"</td><td>{_e(c.format or '')}</td><td>{_e(_status(c))}</td></tr>" for c in cps)
    layers_map = _heatmap(report, report.layers, "relative change of each layer at each checkpoint", "heatmap")
    variables_map = _heatmap(report, report.variables, "relative change of each variable at each checkpoint",
                             "heatmap-variables")
    kinds = ", ".join(KIND_TITLES[k] for k in report.kinds)
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        # No request may leave the page: the policy forbids any, whatever a browser would otherwise fetch.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">",
        f"<meta name=\"generator\" content=\"ckptcheck {_e(version)}\"><title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><div class=\"sub\">{_e(history_header(report))}</div>",
        f"<h2>Findings</h2><ul class=\"findings\">{findings}</ul>",
        "<h2>Relative change ‖w<sub>t</sub> − w<sub>t−1</sub>‖ / ‖w<sub>t</sub>‖, by layer</h2>",
        _legend(), f"<div class=\"scroll\">{layers_map}</div>",
        f"<h2>Norm ‖w‖ over the steps, by layer ({_e(kinds)})</h2>",
        "<div class=\"toggle\"><label><input type=\"radio\" name=\"view\" value=\"norms-relative\" checked> "
        "change from the first checkpoint</label> <label><input type=\"radio\" name=\"view\" value=\"norms\"> "
        "norm</label></div>",
        f"<div class=\"scroll charts\">{_norm_chart(report, report.layers, relative=True)}"
        f"{_norm_chart(report, report.layers, relative=False)}{_chart_keys(report.layers)}</div>",
        f"<details><summary>Every variable ({len(report.variables)})</summary><div class=\"scroll\">{variables_map}"
        "</div></details>",
        "<h2>Checkpoints</h2><table><tr><th>step</th><th>checkpoint</th><th>step from</th><th>format</th>"
        f"<th>read</th></tr>{rows}</table>",
        f"<script>{_JS}</script></body></html>\n",
    ])
