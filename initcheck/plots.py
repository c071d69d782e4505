"""Pictures of a diagnosis: the predicted signal per layer, and measured histograms per layer.

matplotlib is an optional extra (`pip install initcheck[plot]`), imported only when a picture is
drawn. Figures are built without pyplot (no global figure registry, no backend switch) and saved
without timestamps, so the same model gives the same file.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import theory
from .errors import UsageError
from .findings import Severity
from .integrations import require
from .report import Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .api import Analysis
    from .facts import LayerFacts

VANISH, EXPLODE = 0.01, 10.0  # the forward bands of IC202 and IC201 (rules.VANISH_RMS, EXPLODE_RMS)
GRADIENT_BAND = 1e3  # IC204/IC205: the gradient within 1000x of the recommended one
COLORS = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#1f77b4"}
ACTUAL, RECOMMENDED, BAD = "#1f77b4", "#2ca02c", "#d62728"
FORMATS = {".png", ".svg", ".pdf"}
HIST_BINS = 41
HIST_SAMPLES = 20_000  # values kept per panel: plenty for a 41-bin histogram, small enough to copy


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


def signal_series(source: Report | Analysis | nn.Module) -> SignalSeries:
    """The series from an Analysis (everything), a Report (what its layers carry) or a model (analyzed here)."""
    if isinstance(source, nn.Module):
        from .api import analyze

        source = analyze(source)
    if isinstance(source, Report):
        return _from_report(source)
    return _from_analysis(source)


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


def signal_plot(source: Report | Analysis | nn.Module, path: str | os.PathLike[str] | None = None, *,
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
    ax.set_xticklabels([_short(names[i]) for i in ticks], rotation=45, ha="right", fontsize=8)


def _short(qualname: str) -> str:
    return qualname.removesuffix(".weight")


def check_path(path: str | os.PathLike[str] | None) -> None:
    """Raise UsageError unless `path` ends in a format we write (the CLI checks before any work)."""
    if path is not None and os.path.splitext(os.fspath(path))[1].lower() not in FORMATS:
        raise UsageError("initcheck", f"cannot draw {os.fspath(path)}: the picture's name must end in .png, .svg or .pdf")


def save(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Write `fig` by its extension, with no date or version in the file: same figure, same bytes."""
    check_path(path)
    import matplotlib

    ext = os.path.splitext(os.fspath(path))[1].lower()
    metadatas: dict[str, dict[str, Any]] = {
        ".png": {"Software": "initcheck"},
        ".svg": {"Date": None, "Creator": "initcheck"},
        ".pdf": {"CreationDate": None, "Creator": "initcheck", "Producer": "initcheck"},
    }
    metadata = metadatas[ext]
    with matplotlib.rc_context({"svg.hashsalt": "initcheck", "svg.fonttype": "path"}):
        fig.savefig(path, metadata=metadata, dpi=dpi)


# --- measured histograms (the tutorials' picture) ------------------------------------------------


@dataclass(frozen=True)
class LayerSample:
    """What one weight layer's output looked like on a real batch, on the CPU.

    values: its activation's output f(z) (z: the layer's output), a subsample; grads: the gradient
    reaching z when every model output receives a unit-variance random gradient; dead: ReLU family, the fraction of units
    never positive on the batch; saturated: saturating activations, the fraction of z past the knee."""

    name: str
    activation: str
    values: torch.Tensor
    grads: torch.Tensor | None
    dead: float | None
    saturated: float | None


def measure(model: nn.Module, batch: Any = None) -> tuple[LayerSample, ...]:
    """One forward and backward pass on a copy of `model`: per weight layer, in execution order,
    the activations and gradients the histograms show. The model itself is untouched (weights,
    gradients, mode, buffers) and the global RNG is restored."""
    from .api import analyze, run_forward
    from .probe import DEAD_BELOW, DEAD_MIN_SAMPLES, PROBE_BATCH, SATURATION
    from .trace import tensors_in

    analysis = analyze(model, batch)
    args, kwargs = analysis.inputs(batch, batch=PROBE_BATCH)
    work = copy.deepcopy(model).cpu()
    modules = dict(work.named_modules())
    wanted: dict[str, LayerFacts] = {}  # module name -> the facts of its weight, in execution order
    for lf in analysis.layers:
        if lf.name in modules and lf.name not in wanted and lf.param == "weight":
            wanted[lf.name] = lf
    outs: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, out: Any) -> None:
            y = out[0] if isinstance(out, tuple) else out
            if name in outs or not isinstance(y, torch.Tensor) or not y.is_floating_point():
                return  # a shared layer: its first call
            outs[name] = y.detach()
            if y.requires_grad:
                def keep(g: torch.Tensor) -> None:
                    grads[name] = g.detach()

                y.register_hook(keep)  # type: ignore[no-untyped-call]
        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in wanted]
    try:
        with torch.random.fork_rng(devices=[]):
            for p in work.parameters():
                p.requires_grad_(True)
            out = run_forward(analysis.report.target, work, args, kwargs)
            ends = [t for t in tensors_in(out) if t.is_floating_point() and t.requires_grad]
            # each output receives a unit-variance gradient (the signal model's convention), drawn
            # from a private generator: the same batch gives the same histograms
            g = torch.Generator().manual_seed(0)
            if ends:
                torch.autograd.backward(ends, [torch.randn(t.shape, generator=g).to(t) for t in ends])
    finally:
        for h in handles:
            h.remove()
    samples = []
    for name, lf in wanted.items():
        if name not in outs:
            continue
        act = lf.activation
        z = outs[name].float()
        fn = theory.activation_fn(act, lf.activation_param)
        units = _units(modules[name], z)
        dead = None
        if act in DEAD_BELOW and units.shape[0] >= DEAD_MIN_SAMPLES:
            dead = float((units <= DEAD_BELOW[act]).all(0).float().mean())
        knee = SATURATION.get(act)
        sat = float((z.abs() > knee).float().mean()) if knee is not None else None
        grad = grads.get(name)
        samples.append(LayerSample(lf.qualname, act, _subsample(fn(z) if fn is not None else z),
                                   None if grad is None else _subsample(grad.float()), dead, sat))
    return tuple(samples)


def _units(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """[samples, units]: channels for a convolution, the last dimension otherwise."""
    if isinstance(module, nn.modules.conv._ConvNd) and z.dim() > 2:
        return z.transpose(0, 1).reshape(z.shape[1], -1).T
    return z.reshape(-1, z.shape[-1]) if z.dim() > 1 else z.reshape(-1, 1)


def _subsample(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1).cpu()
    if flat.numel() <= HIST_SAMPLES:
        return flat.clone()
    step = flat.numel() // HIST_SAMPLES  # an even stride: deterministic, no RNG touched
    return flat[::step][:HIST_SAMPLES].clone()


def probe_histograms(model: nn.Module, batch: Any = None, path: str | os.PathLike[str] | None = None, *,
                     after: nn.Module | None = None, labels: tuple[str, str] = ("before", "after"),
                     title: str | None = None) -> Figure:
    """The tutorials' picture: one histogram per weight layer of its activations on a real batch
    (top row) and of the gradients reaching it (second row), shared axes along each row, the dead
    and saturated fractions written on each panel. With `after` (the same model fixed), two more
    rows show it, on the same axes, so the repair is seen. `batch`: as example_inputs (a tensor,
    tuple or dict); None builds a synthetic one."""
    check_path(path)
    require("matplotlib", "plot")
    runs = [(labels[0], measure(model, batch))]
    if after is not None:
        runs.append((labels[1], measure(after, batch)))
    fig = histogram_figure(runs, title=title)
    if path is not None:
        save(fig, path)
    return fig


def histogram_figure(runs: list[tuple[str, tuple[LayerSample, ...]]], title: str | None = None) -> Figure:
    """Draw measured samples: per run, a row of activation histograms and a row of gradient ones."""
    from matplotlib.figure import Figure

    cols = max((len(s) for _, s in runs), default=1) or 1
    with_grads = [any(x.grads is not None for x in s) for _, s in runs]
    rows = sum(2 if g else 1 for g in with_grads)
    width, height = 1.9 * cols + 0.9, 1.75 * rows + 0.6
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    # a regular grid needs no layout engine (constrained layout costs seconds on 40 panels):
    # fixed margins in inches, converted to figure fractions
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.1 / width, bottom=0.35 / height, top=1 - 0.55 / height,
                        wspace=0.3, hspace=0.55)
    act_range = _range([_shown(x, "values") for _, s in runs for x in s])
    grad_range = _range([_shown(x, "grads") for _, s in runs for x in s if x.grads is not None])
    act_axes, grad_axes = [], []
    r = 0
    for (label, samples), has_grad in zip(runs, with_grads):
        prefix = f"{label}:\n" if len(runs) > 1 else ""
        act_axes += _hist_row(axes[r], samples, "values", act_range, f"{prefix}activations")
        r += 1
        if has_grad:
            grad_axes += _hist_row(axes[r], samples, "grads", grad_range, f"{prefix}log10 |gradient|")
            r += 1
    _share(act_axes)
    _share(grad_axes)
    fig.suptitle((title or "measured per layer (one batch)") + "; bars: fraction of values", fontsize=10)
    return fig


def _shown(sample: LayerSample, what: str) -> torch.Tensor:
    """What a panel bins: activations as they are; gradients as log10 |g|, so that a gradient
    shrinking layer after layer moves left by decades instead of collapsing into one bin. Exact
    zeros (a ReLU's inactive units, a saturated tanh's flat tail) have no logarithm: the panel's
    note counts them instead."""
    if what == "values":
        return sample.values
    assert sample.grads is not None
    g = sample.grads
    return g[g != 0].abs().log10()


def _hist_row(row: Any, samples: tuple[LayerSample, ...], what: str, span: tuple[float, float], ylabel: str) -> list[Axes]:
    used = []
    for ax, sample in zip(row, samples):
        if getattr(sample, what) is None:
            continue
        shown = _shown(sample, what).double().clamp(*span)  # outliers land in the edge bins, not off the axes
        if not shown.numel():
            ax.text(0.5, 0.5, "all zero", transform=ax.transAxes, ha="center", va="center", fontsize=8)
        # binned here and drawn as one filled outline: one artist per panel instead of a patch per bin
        counts = torch.histc(shown, bins=HIST_BINS, min=span[0], max=span[1]) / max(shown.numel(), 1)
        edges = torch.linspace(span[0], span[1], HIST_BINS + 1, dtype=torch.float64)
        ax.stairs(counts.tolist(), edges.tolist(), fill=True, color=ACTUAL if what == "values" else "#9467bd")
        ax.set_title(f"{_short(sample.name)} ({sample.activation})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.text(0.97, 0.95, _panel_note(sample, what), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})
        used.append(ax)
    for ax in row[len(samples):]:
        ax.set_visible(False)
    if used:
        used[0].set_ylabel(ylabel, fontsize=8)
    return used


def _panel_note(sample: LayerSample, what: str) -> str:
    data = sample.values if what == "values" else sample.grads
    assert data is not None
    if what == "grads":
        zero = float((data == 0).float().mean()) if data.numel() else 0.0
        return f"rms {float(data.pow(2).mean().sqrt()):.2g}" + (f"\nzero {zero:.0%}" if zero >= 0.005 else "")
    lines = [f"std {float(data.std()):.2g}" if data.numel() > 1 else "std -"]
    if sample.dead is not None:
        lines.append(f"dead {sample.dead:.0%}")
    if sample.saturated is not None:
        lines.append(f"saturated {sample.saturated:.0%}")
    return "\n".join(lines)


def _range(tensors: list[torch.Tensor]) -> tuple[float, float]:
    """A shared x range that holds the bulk of every panel: from the lowest per-panel 0.5th
    percentile to the highest 99.5th (a pooled one would clip the widest panel into its edge bins)."""
    lows, highs = [], []
    for t in tensors:
        t = t[torch.isfinite(t)].double()
        if t.numel():
            lows.append(float(torch.quantile(t, 0.005)))
            highs.append(float(torch.quantile(t, 0.995)))
    if not lows:
        return -1.0, 1.0
    lo, hi = min(lows), max(highs)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0  # a constant everywhere (all zeros): a visible spike
    return lo, hi


def _share(axes: list[Axes]) -> None:
    """Same x and y limits along a row type, so the panels compare at a glance."""
    if len(axes) < 2:
        return
    top = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(0, top)
    for ax in axes[1:]:
        ax.sharex(axes[0])
