"""The tutorials' picture: measured activations and gradients per layer, one histogram a panel."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import theory
from ..errors import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..facts import LayerFacts
from .files import check_path, save, short_name
from .signal import ACTUAL

HIST_BINS = 41
HIST_SAMPLES = 20_000  # values kept per panel: plenty for a 41-bin histogram, small enough to copy


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
    from ..api import analyze, run_forward
    from ..probe import DEAD_BELOW, DEAD_MIN_SAMPLES, PROBE_BATCH, SATURATION
    from ..trace import tensors_in

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
        ax.set_title(f"{short_name(sample.name)} ({sample.activation})", fontsize=8)
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
