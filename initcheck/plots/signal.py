"""The predicted signal per layer: pre-activation rms and gradient rms, actual beside the recommended
schemes, read from a report's records or an analysis (no model is run here)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import require
from ..findings import Severity

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..facts import LayerFacts
    from ..records import ReportData as Report  # the records alone: report.Report imports this module
    from ..rules.context import Context
from ..rules.signal import EXPLODE_RMS, VANISH_RMS
from ..rules.signal import GRADIENT_BAND as GRADIENT_SETTING
from .files import check_path, save, short_name


class Analysis(Protocol):
    """What a picture reads of api.Analysis (named by shape, so this module needs nothing of api)."""

    @property
    def report(self) -> Report: ...

    @property
    def layers(self) -> tuple[LayerFacts, ...]: ...

    @property
    def context(self) -> Context: ...


# the bands the rules draw (their registered defaults: one source for each number)
VANISH, EXPLODE, GRADIENT_BAND = VANISH_RMS.default, EXPLODE_RMS.default, GRADIENT_SETTING.default
ACTUAL, RECOMMENDED, BAD = "#1f77b4", "#2ca02c", "#d62728"
COLORS = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#1f77b4"}


@dataclass(frozen=True)
class SignalSeries:
    """Per weight layer, in execution order: the predicted scales the signal picture draws.

    rms: pre-activation rms for unit-variance model inputs; driven: its input-driven part (biases
    aside); grad: rms of the gradient reaching the layer's output when each model output's
    gradient has unit second moment. `reference_*`: the same under the recommended schemes.
    None where the signal model has no number (an untraced layer, an opaque op)."""

    names: tuple[str, ...]
    rms: tuple[float | None, ...]
    driven: tuple[float | None, ...]
    reference_rms: tuple[float | None, ...]
    grad: tuple[float | None, ...]
    reference_grad: tuple[float | None, ...]
    marks: tuple[tuple[Severity, str] | None, ...]  # worst severity and the codes found at each layer


def signal_series(source: Report | Analysis) -> SignalSeries:
    """The series from an Analysis (everything) or a Report (what its layers carry)."""
    if hasattr(source, "context"):  # an Analysis: the report and the signals behind it
        return _from_analysis(cast("Analysis", source))
    return _from_report(source)


def _from_analysis(analysis: Analysis) -> SignalSeries:
    ctx = analysis.context
    layers = analysis.layers

    def forward(sig: Any, op: int, part: str = "rms") -> float | None:
        m = sig.forward[op] if sig is not None else None
        if m is None:
            return None
        return m.rms if part == "rms" else math.sqrt(max(m.signal, 0.0))

    def backward(sig: Any, op: int) -> float | None:
        return math.sqrt(max(sig.backward[op], 0.0)) if sig is not None else None

    return SignalSeries(
        names=tuple(lf.qualname for lf in layers),
        rms=tuple(forward(ctx.actual, lf.preact_op) for lf in layers),
        driven=tuple(forward(ctx.actual, lf.preact_op, "signal") for lf in layers),
        reference_rms=tuple(forward(ctx.reference, lf.preact_op) for lf in layers),
        grad=tuple(backward(ctx.actual, lf.op) for lf in layers),
        reference_grad=tuple(backward(ctx.reference, lf.op) for lf in layers),
        marks=_marks(analysis.report, [lf.qualname for lf in layers]),
    )


def _from_report(report: Report) -> SignalSeries:
    # A Report carries the actual forward rms; the other series appear when LayerReport gains
    # the fields (reference_rms, driven_rms, grad_rms, reference_grad_rms).
    def field(name: str) -> tuple[float | None, ...]:
        return tuple(getattr(lr, name, None) for lr in report.layers)

    return SignalSeries(
        names=tuple(lr.qualname for lr in report.layers), rms=field("predicted_rms"), driven=field("driven_rms"),
        reference_rms=field("reference_rms"), grad=field("grad_rms"), reference_grad=field("reference_grad_rms"),
        marks=_marks(report, [lr.qualname for lr in report.layers]))


def _marks(report: Report, names: list[str]) -> tuple[tuple[Severity, str] | None, ...]:
    out: list[tuple[Severity, str] | None] = []
    for name in names:
        mine = [f for f in report.findings if f.layer == name]
        if not mine:
            out.append(None)
            continue
        worst = max(mine, key=lambda f: f.severity.rank).severity
        out.append((worst, ",".join(sorted({f.code for f in mine}))))
    return tuple(out)


def signal_plot(source: Report | Analysis, path: str | os.PathLike[str] | None = None, *,
                title: str | None = None) -> Figure:
    """Predicted pre-activation rms (top) and gradient rms (bottom) per weight layer, in execution
    order, on log axes: the actual init beside the recommended schemes, the bands where the
    checks fire shaded, each finding marked at its layer. Saved to `path` (.png, .svg, .pdf)
    when given; the Figure is returned either way.

    `initcheck.api.analyze(model)` (or the model itself) gives every curve; a Report alone gives
    the curves its layers carry."""
    check_path(path)
    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    s = signal_series(source)
    has_grad = any(v is not None for v in s.grad)
    # width: the layers, plus room for the legends beside the axes
    fig = Figure(figsize=(max(4.0, 0.4 * len(s.names) + 1.5) + 2.8, 6.0 if has_grad else 3.6), layout="constrained")
    axes = fig.subplots(2 if has_grad else 1, 1, sharex=True, squeeze=False)[:, 0]
    x = list(range(len(s.names)))
    fwd = axes[0]
    _curve(fwd, x, s.rms, "actual init", ACTUAL, "-")
    if _differs(s.rms, s.driven):
        _curve(fwd, x, s.driven, "actual, input-driven part", ACTUAL, ":")
    _curve(fwd, x, s.reference_rms, "recommended schemes", RECOMMENDED, "--")
    lo, hi = _limits([*s.rms, *s.driven, *s.reference_rms, VANISH, EXPLODE])
    fwd.set_ylim(lo, hi)
    fwd.axhspan(lo, VANISH, color=BAD, alpha=0.08, lw=0, label=f"vanishing (< {VANISH:g})")
    fwd.axhspan(EXPLODE, hi, color=BAD, alpha=0.08, lw=0, label=f"exploding (> {EXPLODE:g})")
    _mark_findings(fwd, x, s, lo, hi)
    fwd.set_ylabel("pre-activation rms")
    fwd.set_title(title or "predicted signal per layer (unit-variance inputs)")
    if has_grad:
        bwd = axes[1]
        _curve(bwd, x, s.grad, "actual init", ACTUAL, "-")
        _curve(bwd, x, s.reference_grad, "recommended schemes", RECOMMENDED, "--")
        glo, ghi = _limits([*s.grad, *s.reference_grad])
        bwd.set_ylim(glo, ghi)
        ref = [v if v is not None and v > 0 else math.nan for v in s.reference_grad]
        if any(not math.isnan(v) for v in ref):
            bwd.fill_between(x, [glo] * len(x), [v / GRADIENT_BAND for v in ref], color=BAD, alpha=0.08, lw=0,
                             label=f"over {GRADIENT_BAND:g}x off the recommended")
            bwd.fill_between(x, [v * GRADIENT_BAND for v in ref], [ghi] * len(x), color=BAD, alpha=0.08, lw=0)
        bwd.set_ylabel("gradient rms (backward)")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside, never over a curve
    axes[-1].set_xlim(-0.7, max(len(s.names) - 0.3, 0.3))  # room for the first and last markers' labels
    _layer_ticks(axes[-1], s.names)
    axes[-1].set_xlabel("weight layer, in execution order")
    if path is not None:
        save(fig, path)
    return fig


def _curve(ax: Axes, x: list[int], ys: tuple[float | None, ...], label: str, color: str, style: str) -> None:
    vals = [v if v is not None and v > 0 else math.nan for v in ys]
    if any(not math.isnan(v) for v in vals):
        ax.plot(x, vals, style, color=color, marker="o" if style == "-" else None, ms=4, label=label)


def _differs(a: tuple[float | None, ...], b: tuple[float | None, ...]) -> bool:
    """Whether the input-driven part is far (2x) below the rms somewhere: biases set a floor."""
    return any(u is not None and v is not None and u > 2 * v for u, v in zip(a, b))


def _limits(values: list[float | None]) -> tuple[float, float]:
    """Log-axis limits covering every positive value with half a decade of room."""
    pos = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not pos:
        return 1e-3, 1e3
    return min(pos) / 3.0, max(pos) * 3.0


def _mark_findings(ax: Axes, x: list[int], s: SignalSeries, lo: float, hi: float) -> None:
    seen: set[Severity] = set()
    for i, mark in zip(x, s.marks):
        if mark is None:
            continue
        severity, codes = mark
        v = s.rms[i]
        y = v if v is not None and v > 0 else math.sqrt(lo * hi)
        label = f"{severity.value} finding" if severity not in seen else None
        seen.add(severity)
        ax.plot([i], [y], "X" if severity == Severity.ERROR else "^", color=COLORS[severity], ms=9,
                ls="none", label=label, zorder=5)
        ax.annotate(codes, (i, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7,
                    color=COLORS[severity])


def _layer_ticks(ax: Axes, names: tuple[str, ...]) -> None:
    step = max(1, math.ceil(len(names) / 30))  # at most ~30 readable labels
    ticks = list(range(0, len(names), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([short_name(names[i]) for i in ticks], rotation=45, ha="right", fontsize=8)
