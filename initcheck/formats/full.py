"""The `full` format (the default): per model a header, the layer table, the probe table, the
findings with their fixes (long runs of one code collapsed) and a summary line."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tabulate import tabulate

from ..findings import Finding, Severity, summary
from .base import Run, suppressed

if TYPE_CHECKING:
    from ..records import LayerReport
    from ..records import ReportData as Report  # the records alone: report.Report imports this module

COLLAPSE_AFTER = 3  # a run of one code longer than this prints its first findings and a count
_COLORS = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def write(run: Run) -> str:
    parts = []
    for report in run.reports:
        if run.quiet:
            text = format_findings(report, color=run.color)
            if text:
                parts.append(text)
            continue  # quiet: the findings only, one block a model
        text = format_text(report, color=run.color)
        if run.show_suppressed:
            text += "".join(f"\n{s['source']}: {s['code']} [suppressed] {s['layer']}: {s['message']}"
                            + (f" (reason: {s['reason']})" if s["reason"] else "") for s in suppressed(report))
        parts.append(text + "\n\n")  # a blank line after each model
    return "".join(parts) if not run.quiet else "".join(p + "\n" for p in parts)


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}g}"


def _ratio(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:.2g}"


def _activation(lr: LayerReport) -> str:
    text = lr.activation
    if lr.activation_param is not None and lr.activation in ("leaky_relu", "prelu", "elu", "celu", "softplus"):
        text += f"({lr.activation_param:g})"
    marks = []
    if lr.normalized:
        marks.append("norm")
    if lr.residual_end:
        marks.append("res")
    if lr.is_output:
        marks.append("out")
    return text + (f" [{','.join(marks)}]" if marks else "")


def format_table(report: Report) -> str:
    rows = [
        [lr.qualname, lr.kind, "x".join(map(str, lr.shape)), lr.fan_in, lr.fan_out, _activation(lr),
         lr.scheme, _num(lr.recommended_std), _num(lr.actual_std), _ratio(lr.variance_ratio),
         _num(lr.predicted_rms), lr.verdict]
        for lr in report.layers
    ]
    headers = ["layer", "kind", "shape", "fan_in", "fan_out", "activation", "scheme", "rec std",
               "std", "var ratio", "pre rms", "verdict"]
    return str(tabulate(rows, headers=headers, disable_numparse=True))


def format_probe(report: Report) -> str:
    rows = [[p.name, p.activation, _num(p.predicted_rms), _num(p.measured_rms), _num(p.std), _num(p.mean),
             "-" if p.dead_fraction is None else f"{p.dead_fraction:.0%}",
             "-" if p.saturated_fraction is None else f"{p.saturated_fraction:.0%}",
             _num(p.grad_norm), _num(p.grad_ratio)] for p in report.probe]
    headers = ["layer", "activation", "predicted rms", "measured rms", "measured std", "mean", "dead", "saturated",
               "grad norm", "grad/weight"]
    return str(tabulate(rows, headers=headers, disable_numparse=True))


def _severity(s: Severity, color: bool) -> str:
    if not color:
        return str(s)
    import click

    return click.style(str(s), fg=_COLORS[s], bold=s == Severity.ERROR)


def format_findings(report: Report, color: bool = False) -> str:
    """One line per finding and its fix, headed by the line that last wrote the weight
    (path:line, as linters do) when it is known, else by the target; a long run of one code (19
    layers at PyTorch's default) shows its first COLLAPSE_AFTER and a count: JSON keeps every one."""
    lines: list[str] = []
    run_code, run_len, hidden = None, 0, []
    for f in report.findings:
        run_len = run_len + 1 if f.code == run_code else 1
        run_code = f.code
        if run_len > COLLAPSE_AFTER:
            hidden.append(f)
            continue
        _flush(lines, report.target, hidden, color)
        hidden = []
        lines.append(f"{f.source or report.target}: {f.code} [{_severity(f.severity, color)}] {f.message}")
        if f.fix:
            lines.append(f"  fix: {f.fix}")
    _flush(lines, report.target, hidden, color)
    return "\n".join(lines)


def _flush(lines: list[str], target: str, hidden: list[Finding], color: bool) -> None:
    if hidden:
        names = ", ".join(f.layer for f in hidden[:4]) + (", ..." if len(hidden) > 4 else "")
        lines.append(f"{target}: {hidden[0].code} [{_severity(hidden[0].severity, color)}] ... and {len(hidden)} more "
                     f"like it ({names}); --output-format json lists them all, initcheck.fix(model) repairs them")


def format_text(report: Report, color: bool = False) -> str:
    how = {"fx": "traced with torch.fx", "recorded": "traced by recording a forward pass"}.get(report.tracer, "not traced")
    mode = "; judged in eval mode" if report.mode != "train" else ""  # training's forward unless asked
    head = f"{report.target}  ({how}{mode}; {len(report.layers)} weight tensors)"
    parts = [head]
    parts.extend(f"  note: {n}" for n in report.notes)
    if report.layers:
        parts.append(format_table(report))
    others = [p for p in report.params if p.kind != "weight"]
    if others:
        kinds: dict[str, int] = {}
        for p in others:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        flagged = [p.name for p in others if p.verdict != "ok"]
        plural = {"bias": "biases", "norm-weight": "norm scales", "norm-bias": "norm shifts", "token": "tokens",
                  "position": "position tables", "scale": "scales", "parametrized": "parametrization originals",
                  "unused-weight": "unused weights", "other": "others"}
        listing = ", ".join(f"{n} {plural.get(k, k) if n != 1 else k}" for k, n in sorted(kinds.items()))
        tail = f"; with findings: {', '.join(flagged[:4])}{', ...' if len(flagged) > 4 else ''}" if flagged else ": all ok"
        parts.append(f"other parameters ({listing}){tail} (--output-format json lists each)")
    if report.probe:
        parts.append("")
        parts.append("probe (measured on the example batch):")
        parts.append(format_probe(report))
    findings = format_findings(report, color)
    parts.append("")
    if findings:
        parts.append(findings)
    parts.append(f"{report.target}: {summary(report.findings)}")
    return "\n".join(parts)
