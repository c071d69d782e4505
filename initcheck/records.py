"""The report's records: one model's layers, parameters and findings, as plain frozen data. The
presentation modules (formats/, notebook.py, plots.py) read these; report.Report adds the methods
that call them, so the dependency runs one way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .findings import Finding, Severity


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
    predicted_rms: float | None  # rms of the weight op's raw output (bias aside, before any norm) predicted
    # from unit-variance inputs: what --probe measures
    aliases: tuple[str, ...] = ()
    convention: str | None = None
    verdict: str = "ok"
    source: str | None = None  # "path:line" that last wrote it, when initcheck built the model
    driven_rms: float | None = None  # the input-driven part of predicted_rms (biases aside)
    reference_rms: float | None = None  # predicted_rms under the recommended schemes
    grad_rms: float | None = None  # predicted gradient rms at the layer's output (output gradient 1)
    reference_grad_rms: float | None = None  # the same under the recommended schemes
    preact_rms: float | None = None  # rms of what the activation receives (after a norm, bias included)

    @property
    def qualname(self) -> str:
        return f"{self.name}.{self.param}" if self.name else self.param


@dataclass(frozen=True)
class ParamReport:
    """Every parameter of the model: what kind it is, its statistics, and how it was judged."""

    name: str
    kind: str  # facts.params.ParamKind's value: weight, norm-weight, norm-bias, bias, token, position, ...
    shape: tuple[int, ...]
    std: float | None
    mean: float | None
    max_abs: float | None
    note: str  # how it is judged, or why it is not
    verdict: str = "ok"


@dataclass(frozen=True)
class ReportData:
    target: str
    tracer: str
    layers: tuple[LayerReport, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    probe: tuple[Any, ...] = ()  # probe.ProbeLayer, one per weight module, when a real batch was run
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    params: tuple[ParamReport, ...] = ()  # every parameter (tied ones once), fan weights included
    suppressed: tuple[tuple[Finding, str], ...] = ()  # findings an `# initcheck: ignore` comment dropped, with its reason

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
