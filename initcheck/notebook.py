"""Notebook renderers: a one-line repr and a compact HTML view of a Report (no dependency beyond
the standard library; the sparkline is inline SVG)."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

from .findings import Finding, Severity

if TYPE_CHECKING:
    from .records import LayerReport
    from .records import ReportData as Report  # the records alone: report.Report imports this module

COLORS = {Severity.ERROR: "#c62828", Severity.WARNING: "#e65100", Severity.INFO: "#1565c0"}
OK_COLOR = "#2e7d32"
VANISH, EXPLODE = 0.01, 10.0  # the bands of IC202/IC201, drawn on the sparkline
MAX_FINDINGS = 20  # the HTML lists this many findings, then a count (str(report) has them all)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report_repr(report: Report) -> str:
    """`<Report Net: 6 weights, 2 errors, 5 warnings>` (infos only when there are some)."""
    n = {s: sum(1 for f in report.findings if f.severity == s) for s in Severity}
    parts = [_plural(len(report.layers), "weight"), _plural(n[Severity.ERROR], "error"), _plural(n[Severity.WARNING], "warning")]
    if n[Severity.INFO]:
        parts.append(_plural(n[Severity.INFO], "info"))
    if report.probe:
        parts.append("probed")
    return f"<Report {report.target}: {', '.join(parts)}>"


def _num(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def _severity_of(verdict: str) -> Severity | None:
    head = verdict.split(" ", 1)[0]
    return Severity(head) if head in {s.value for s in Severity} else None


def _verdict_cell(lr: LayerReport) -> str:
    sev = _severity_of(lr.verdict)
    color = COLORS[sev] if sev is not None else OK_COLOR
    return f'<td class="verdict" data-severity="{sev.value if sev else "ok"}" style="color:{color};font-weight:bold">{escape(lr.verdict)}</td>'


def _row(lr: LayerReport) -> str:
    cells = [escape(lr.qualname), escape(lr.kind), escape(lr.activation), escape(lr.scheme),
             _num(lr.actual_std), _num(lr.recommended_std), _num(lr.predicted_rms)]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + _verdict_cell(lr) + "</tr>"


def _finding(f: Finding) -> str:
    fix = f"<br><code>{escape(f.fix)}</code>" if f.fix else ""
    return (f'<li data-code="{escape(f.code)}"><b style="color:{COLORS[f.severity]}">{escape(f.code)} [{f.severity.value}]</b> '
            f"{escape(f.message)}{fix}</li>")


def sparkline(values: list[float | None], width: int = 240, height: int = 48) -> str:
    """Inline SVG: log10 of the predicted rms per layer, with the 0.01 and 10 bands as dashed lines."""
    logs = [math.log10(v) if v is not None and v > 0 and math.isfinite(v) else None for v in values]
    known = [v for v in logs if v is not None]
    if not known:
        return ""
    lo = min([*known, math.log10(VANISH)]) - 0.5
    hi = max([*known, math.log10(EXPLODE)]) + 0.5
    step = width / max(len(logs) - 1, 1)

    def y(v: float) -> float:
        return round(height - (v - lo) / (hi - lo) * height, 1)

    points = " ".join(f"{round(i * step, 1)},{y(v)}" for i, v in enumerate(logs) if v is not None)
    bands = "".join(f'<line class="band" x1="0" x2="{width}" y1="{y(math.log10(b))}" y2="{y(math.log10(b))}" '
                    f'stroke="#c62828" stroke-dasharray="3,3" stroke-width="1"/>' for b in (VANISH, EXPLODE))
    return (f'<svg class="sparkline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>predicted pre-activation rms per layer (log scale; dashed: 0.01 and 10)</title>'
            f'{bands}<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{points}"/></svg>')


def _probe_table(report: Report) -> str:
    if not report.probe:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("layer", "activation", "predicted rms", "measured std", "dead", "saturated", "grad/weight"))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    rows = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in (escape(p.name), escape(p.activation), _num(p.predicted_rms), _num(p.std),
                                                   pct(p.dead_fraction), pct(p.saturated_fraction), _num(p.grad_ratio))) + "</tr>"
        for p in report.probe)
    return f'<table class="probe"><caption>measured on a batch</caption><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def report_html(report: Report) -> str:
    """The notebook view: a summary line and sparkline, one row per weight (std beside the
    recommended one, the verdict colored by severity), the probe table when probed, the findings."""
    head = "".join(f"<th>{h}</th>" for h in ("layer", "kind", "activation", "scheme", "std", "recommended", "pre rms", "verdict"))
    rows = "".join(_row(lr) for lr in report.layers)
    shown = report.findings[:MAX_FINDINGS]
    more = len(report.findings) - len(shown)
    findings = "".join(_finding(f) for f in shown)
    if more:
        findings += f"<li>... and {more} more (print(report) lists them all)</li>"
    summary = escape(report_repr(report)[1:-1])
    fixed = report.fix.reinitialized if report.fix else ()
    fixed_line = (f'<p class="fixed">reinitialized by fix(): {escape(", ".join(map(str, fixed)))}</p>' if fixed else "")
    return (f'<div class="initcheck-report"><p><b>{summary}</b> <small>(traced with {escape(report.tracer)})</small></p>'
            f"{fixed_line}{sparkline([lr.predicted_rms for lr in report.layers])}"
            f'<table class="layers"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
            f"{_probe_table(report)}"
            + (f'<ul class="findings">{findings}</ul>' if findings else '<p class="findings">no findings</p>')
            + "</div>")
