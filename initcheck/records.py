"""The report's records: one model's layers, parameters, findings, what the probe measured and what
fix() did, as plain frozen data (no torch). The stages build them (api.py, probe.py, fix/), the
presentation modules (formats/, notebook.py, plots/) read them; report.Report adds the methods that
call those, so the dependency runs one way."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cached_property
from typing import Any

from .findings import Finding, Severity


@dataclass(frozen=True)
class WeightSite:
    """What a weight tensor is and where it sits: the fields facts.LayerFacts (the analysis) and
    LayerReport (the report) share, declared once here so that neither retypes the other."""

    name: str  # qualified module name as in named_modules() ("" for the root)
    param: str  # the parameter's path inside that module ("weight", "in_proj_weight")
    kind: str  # module class ("Linear") or function ("linear"): an open set, kept as text
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    activation: str
    activation_param: float | None
    normalized: bool
    residual_end: bool
    is_output: bool
    gain: float
    recommended_std: float

    @cached_property
    def qualname(self) -> str:  # asked thousands of times per analysis (every sweep, rule and row)
        return f"{self.name}.{self.param}" if self.name else self.param


@dataclass(frozen=True)
class LayerReport(WeightSite):
    """One weight as reported: its site, how it was judged, and the predicted signal around it."""

    scheme: str = ""  # theory.Family's value
    actual_std: float | None = None
    actual_mean: float | None = None
    variance_ratio: float | None = None
    predicted_rms: float | None = None  # rms of the weight op's raw output (bias aside, before any norm)
    # predicted from unit-variance inputs: what --probe measures
    aliases: tuple[str, ...] = ()
    convention: str | None = None
    verdict: str = "ok"
    source: str | None = None  # "path:line" that last wrote it, when initcheck built the model
    driven_rms: float | None = None  # the input-driven part of predicted_rms (biases aside)
    reference_rms: float | None = None  # predicted_rms under the recommended schemes
    grad_rms: float | None = None  # predicted gradient rms at the layer's output (output gradient 1)
    reference_grad_rms: float | None = None  # the same under the recommended schemes
    preact_rms: float | None = None  # rms of what the activation receives (after a norm, bias included)


def site_of(site: WeightSite) -> dict[str, Any]:
    """The WeightSite fields of `site` (a LayerFacts, say), to build a LayerReport from."""
    return {name: getattr(site, name) for name in _SITE_FIELDS}


_SITE_FIELDS = tuple(f.name for f in fields(WeightSite))  # once, not per row


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
class FixDraw:
    """How fix's static step drew the weights it replaced, and why (fix.static.choose_draw)."""

    scheme: str | None  # schemes.Scheme's value; None: each layer's recommended Gaussian/uniform scheme
    forced: bool  # the caller asked for it (scheme=)
    depth: int  # weight layers on the longest path
    near_linear: bool  # the trunk's activations are near-linear at 0
    reason: str


@dataclass(frozen=True)
class Scaled:
    """One parameter of the data-driven pass: its target, its std at its first use before and
    after, the factor applied, and the std at every use after the fix (the verifying pass)."""

    name: str  # the module that uses it first
    param: str  # the parameter's qualified name
    target: float
    before: float
    after: float
    factor: float
    uses: tuple[float, ...] = ()  # std / target at every use, measured after the fix


@dataclass(frozen=True)
class DataDriven:
    """The data-driven pass: how many forward passes, what it aimed at, the worst error measured
    after it over every use of every parameter, and each parameter scaled."""

    forward_passes: int
    target_std: float | None  # None: each parameter's own target
    worst_rel_error: float  # max |std/target - 1| over every use, measured after the fix
    layers: tuple[Scaled, ...]


@dataclass(frozen=True)
class FixResult:
    """What fix() did: the draw, the weights reinitialized, the parameters reset, the residual
    branches scaled, the data-driven pass when it ran, the severity it acted on, and the query
    projections scaled to unsaturate an attention."""

    draw: FixDraw
    reinitialized: tuple[str, ...] = ()
    reset: tuple[str, ...] = ()  # norm scales set to 1, shifts and biases to 0, tied embeddings redrawn
    branches_scaled: tuple[str, ...] = ()
    data_driven: DataDriven | None = None
    acted_on: Severity | None = None  # the worst severity among the findings it acted on
    queries_scaled: tuple[str, ...] = ()  # query projections that fold in a missing 1/sqrt(d_head) (IC207)


class Scale(StrEnum):
    LINEAR = "linear"
    LOG10_ABS = "log10_abs"


@dataclass(frozen=True)
class Histogram:
    """Counts over equal bins (LINEAR_BINS or LOG_BINS) from `low` to `high` (of x for LINEAR, of
    log10|x| for LOG10_ABS). LOG10_ABS only, not in `counts`: `zeros`, the exact zeros, and `below`,
    the nonzero values under `low`. `nonfinite`: inf and NaN values, never in `counts`."""

    scale: Scale
    low: float
    high: float
    counts: tuple[int, ...]
    zeros: int = 0
    below: int = 0
    nonfinite: int = 0

    @property
    def edges(self) -> tuple[float, ...]:
        step = (self.high - self.low) / len(self.counts)
        return tuple(self.low + i * step for i in range(len(self.counts))) + (self.high,)

    @property
    def total(self) -> int:
        """How many values were measured: every one is counted once, in a bin or apart."""
        return sum(self.counts) + self.zeros + self.below + self.nonfinite


@dataclass(frozen=True)
class ProbeLayer:
    """One weight module measured on a real batch by probe.py: pre-activation moments, dead and
    saturated fractions, the gradient, and the histograms of the picture."""

    name: str  # qualified parameter name
    activation: str
    mean: float  # pre-activation mean on the batch
    std: float  # pre-activation std on the batch
    predicted_rms: float | None  # the static prediction of measured_rms, for unit-variance inputs
    dead_fraction: float | None  # ReLU family: units never positive on the batch
    saturated_fraction: float | None  # saturating activations: pre-activations past the knee
    grad_norm: float  # ||dL/dW|| for L = mean of squared outputs
    grad_ratio: float  # ||dL/dW|| / ||W||
    measured_rms: float | None = None  # rms of the layer's raw output on the batch, bias aside
    # the histogram picture's data: the activation's output f(z) (LINEAR: symmetric bins over its
    # max |x|) and the gradient of the probe's loss reaching z (LOG10_ABS), each of at most
    # histogram.SAMPLE values; None where not measured
    activations: Histogram | None = None
    gradients: Histogram | None = None


@dataclass(frozen=True)
class ReportData:
    target: str
    tracer: str
    layers: tuple[LayerReport, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    probe: tuple[ProbeLayer, ...] = ()  # one per weight module, when a real batch was run (probe.py)
    fix: FixResult | None = None  # what fix() did, on the report it returns
    params: tuple[ParamReport, ...] = ()  # every parameter (tied ones once), fan weights included
    suppressed: tuple[tuple[Finding, str], ...] = ()  # findings an `# initcheck: ignore` comment dropped, with its reason
    mode: str = "train"  # the forward judged: "train" (BatchNorm on batch statistics, dropout on) or "eval"

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
