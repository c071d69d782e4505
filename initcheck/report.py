"""The report types and the one place that formats them (table, JSON, findings)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tabulate import tabulate

from .findings import Finding, Severity, summary

JSON_VERSION = 1


@dataclass(frozen=True)
class LayerReport:
    name: str
    param: str
    kind: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    activation: str
    activation_param: float | None
    normalized: bool
    residual_end: bool
    is_output: bool
    scheme: str
    gain: float
    recommended_std: float
    actual_std: float | None
    actual_mean: float | None
    variance_ratio: float | None
    predicted_rms: float | None  # pre-activation rms predicted from unit-variance inputs
    aliases: tuple[str, ...] = ()
    convention: str | None = None
    verdict: str = "ok"
    source: str | None = None  # "path:line" that last wrote it, when initcheck built the model

    @property
    def qualname(self) -> str:
        return f"{self.name}.{self.param}" if self.name else self.param


@dataclass(frozen=True)
class Report:
    target: str
    tracer: str
    layers: tuple[LayerReport, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    probe: tuple = ()  # probe.ProbeLayer, one per weight module, when a real batch was run
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        """No error finding."""
        return not any(f.severity == "error" for f in self.findings)

    def fails(self, fail_on: str) -> bool:
        """Whether a finding at or above `fail_on` exists ("never" never fails)."""
        if fail_on == "never":
            return False
        floor = Severity.parse(fail_on)
        return any(f.severity >= floor for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for lr in self.layers:
            d = asdict(lr)
            d["shape"] = list(lr.shape)
            d["aliases"] = list(lr.aliases)
            layers.append({k: _clean(v) for k, v in d.items()})
        return {
            "target": self.target,
            "tracer": self.tracer,
            "notes": list(self.notes),
            "layers": layers,
            "probe": [asdict(p) for p in self.probe],
            "findings": [{"code": f.code, "name": f.name, "severity": f.severity.value, "layer": f.layer,
                          "message": f.message, "fix": f.fix, "source": f.source} for f in self.findings],
            **self.extra,
        }

    def __str__(self) -> str:
        return format_text(self)

    def __repr__(self) -> str:
        from .notebook import report_repr
        return report_repr(self)

    def _repr_html_(self) -> str:
        from .notebook import report_html
        return report_html(self)

    def plot(self, path: Any = None) -> Any:
        """The signal picture (initcheck.plots.signal_plot), saved to `path` (.png/.svg/.pdf) when given."""
        from .plots import signal_plot
        return signal_plot(self, path)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


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
    return tabulate(rows, headers=headers, disable_numparse=True)


COLLAPSE_AFTER = 3  # a run of one code longer than this prints its first findings and a count


def format_probe(report: Report) -> str:
    rows = [[p.name, p.activation, _num(p.predicted_rms), _num(p.std), _num(p.mean),
             "-" if p.dead_fraction is None else f"{p.dead_fraction:.0%}",
             "-" if p.saturated_fraction is None else f"{p.saturated_fraction:.0%}",
             _num(p.grad_norm), _num(p.grad_ratio)] for p in report.probe]
    headers = ["layer", "activation", "predicted rms", "measured std", "mean", "dead", "saturated", "grad norm", "grad/weight"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def format_findings(report: Report) -> str:
    """One line per finding and its fix, headed by the line that last wrote the weight
    (path:line, as linters do) when it is known, else by the target; a long run of one code (19 layers at PyTorch's default)
    shows its first COLLAPSE_AFTER and a count: --format json keeps every one."""
    lines: list[str] = []
    run_code, run_len, hidden = None, 0, []
    for f in report.findings:
        run_len = run_len + 1 if f.code == run_code else 1
        run_code = f.code
        if run_len > COLLAPSE_AFTER:
            hidden.append(f)
            continue
        _flush(lines, report.target, hidden)
        hidden = []
        lines.append(f"{f.source or report.target}: {f.code} [{f.severity}] {f.message}")
        if f.fix:
            lines.append(f"  fix: {f.fix}")
    _flush(lines, report.target, hidden)
    return "\n".join(lines)


def _flush(lines: list[str], target: str, hidden: list[Finding]) -> None:
    if hidden:
        names = ", ".join(f.layer for f in hidden[:4]) + (", ..." if len(hidden) > 4 else "")
        lines.append(f"{target}: {hidden[0].code} [{hidden[0].severity}] ... and {len(hidden)} more like it ({names}); "
                     "--format json lists them all, initcheck.fix(model) repairs them")


def format_text(report: Report) -> str:
    head = f"{report.target}  (traced with {report.tracer}; {len(report.layers)} weight tensors)"
    parts = [head]
    parts.extend(f"  note: {n}" for n in report.notes)
    if report.layers:
        parts.append(format_table(report))
    if report.probe:
        parts.append("")
        parts.append("probe (measured on the example batch):")
        parts.append(format_probe(report))
    findings = format_findings(report)
    parts.append("")
    if findings:
        parts.append(findings)
    parts.append(f"{report.target}: {summary(report.findings)}")
    return "\n".join(parts)


def to_json(reports: list[Report]) -> str:
    return json.dumps({"version": JSON_VERSION, "models": [r.to_dict() for r in reports]}, indent=2)
