"""The tutorials' picture, drawn from a probe's report: per weight layer, a histogram of its measured
activations and one of the gradients reaching it, shared axes along each row, the dead and
saturated fractions written on each panel. No model is run here: the probe binned the values
(initcheck/histogram.py) and the report carries the counts."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import require
from ..histogram import DECADES, LINEAR_BINS, LOG_BINS, PER_DECADE, Histogram

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..records import ProbeLayer
    from ..records import ReportData as Report  # the records alone: report.Report imports this module
from .files import check_path, save, short_name
from .signal import ACTUAL

GRADIENT = "#9467bd"
Run = tuple[str, "Sequence[ProbeLayer]"]  # a row label and the probed layers it draws


def histogram_plot(report: Report, path: str | os.PathLike[str] | None = None, *, title: str | None = None) -> Figure:
    """A probed report's histograms (initcheck.probe(model, batch)): activations in the top row,
    log10 |gradient| in the second, one panel a layer. Saved to `path` (.png, .svg, .pdf) when
    given; the Figure is returned either way."""
    return compare(report, None, path, title=title)


def compare(before: Report, after: Report | None, path: str | os.PathLike[str] | None = None, *,
            labels: tuple[str, str] = ("before", "after"), title: str | None = None) -> Figure:
    """Two probed reports of one model, e.g. before and after initcheck.fix, as two pairs of rows
    on the same axes, so the repair is seen:

        before = initcheck.probe(model, batch)
        initcheck.fix(model, batch, data_driven=True)
        plots.compare(before, initcheck.probe(model, batch), "repair.png")
    """
    check_path(path)
    require("matplotlib", "plot")
    runs: list[Run] = [(labels[0], _probed(before))]
    if after is not None:
        runs.append((labels[1], _probed(after)))
    fig = histogram_figure(runs, title=title or (before.target or None))
    if path is not None:
        save(fig, path)
    return fig


def _probed(report: Report) -> Sequence[ProbeLayer]:
    if not report.probe:
        raise ValueError(f"{report.target or 'this report'} was not probed: the histograms are measured by "
                         "initcheck.probe(model, batch) (or --probe)")
    return report.probe


def histogram_figure(runs: list[Run], title: str | None = None) -> Figure:
    """Draw probed layers: per run, a row of activation histograms and a row of gradient ones."""
    from matplotlib.figure import Figure

    cols = max((len(s) for _, s in runs), default=1) or 1
    with_grads = [any(p.gradients is not None for p in s) for _, s in runs]
    rows = sum(2 if g else 1 for g in with_grads)
    width, height = 1.9 * cols + 0.9, 1.75 * rows + 0.6
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    # a regular grid needs no layout engine (constrained layout costs seconds on 40 panels):
    # fixed margins in inches, converted to figure fractions
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.1 / width, bottom=0.35 / height, top=1 - 0.55 / height,
                        wspace=0.3, hspace=0.55)
    act_edges = _linear_edges([p.activations for _, s in runs for p in s])
    grad_edges = _log_edges([p.gradients for _, s in runs for p in s])
    act_axes: list[Axes] = []
    grad_axes: list[Axes] = []
    r = 0
    for (label, layers), has_grad in zip(runs, with_grads):
        prefix = f"{label}:\n" if len(runs) > 1 else ""
        act_axes += _hist_row(axes[r], layers, "activations", act_edges, f"{prefix}activations")
        r += 1
        if has_grad:
            grad_axes += _hist_row(axes[r], layers, "gradients", grad_edges, f"{prefix}log10 |gradient|")
            r += 1
    _share(act_axes)
    _share(grad_axes)
    fig.suptitle((title or "measured per layer (one batch)") + "; bars: fraction of values", fontsize=10)
    return fig


def _linear_edges(hists: list[Histogram | None]) -> list[float]:
    """One symmetric span for every activation panel: the widest layer's."""
    top = max((h.high for h in hists if h is not None), default=1.0)
    return [-top + 2 * top * i / LINEAR_BINS for i in range(LINEAR_BINS)] + [top]


def _log_edges(hists: list[Histogram | None]) -> list[float]:
    """The union of the gradient windows, in bins of whole probed bins (quarter decades, on one grid
    for every layer), so every probed bin falls inside one drawn bin."""
    shown = [h for h in hists if h is not None]
    low = min((h.low for h in shown), default=-float(DECADES))
    high = max((h.high for h in shown), default=0.0)
    fine = round((high - low) * PER_DECADE)
    step = math.ceil(fine / LOG_BINS)  # probed bins a drawn bin
    return [low + i * step / PER_DECADE for i in range(math.ceil(fine / step) + 1)]


def rebin(h: Histogram, edges: list[float]) -> list[float]:
    """h's counts on the drawn edges, as fractions of every value measured: each probed bin is
    spread over the drawn bins it overlaps, in proportion to the overlap (uniform within its bin),
    so narrow probed bins merged into wide drawn ones leave no comb of alternating heights. The
    bars of one panel sum to the share of values that were binned."""
    out = [0.0] * (len(edges) - 1)
    lo, width = edges[0], (edges[-1] - edges[0]) / (len(edges) - 1)
    mine = h.edges
    total = max(h.total, 1)
    for i, c in enumerate(h.counts):
        a, b = mine[i], mine[i + 1]
        if not c:
            continue
        first = min(max(math.floor((a - lo) / width), 0), len(out) - 1)
        last = min(max(math.ceil((b - lo) / width) - 1, first), len(out) - 1)
        overlaps = [max(min(b, lo + (j + 1) * width) - max(a, lo + j * width), 0.0) for j in range(first, last + 1)]
        covered = sum(overlaps)
        for j, overlap in zip(range(first, last + 1), overlaps):
            # a bin past the drawn span (rounding at its ends) goes whole to the nearest drawn bin
            out[j] += c / total * (overlap / covered if covered > 0 else 1.0 / len(overlaps))
    return out


def _hist_row(row: Any, layers: Sequence[ProbeLayer], what: str, edges: list[float], ylabel: str) -> list[Axes]:
    used = []
    for ax, layer in zip(row, layers):
        h: Histogram | None = getattr(layer, what)
        if h is None:
            ax.set_visible(False)
            continue
        if sum(h.counts) == 0:
            ax.text(0.5, 0.5, "all zero" if h.zeros else "nothing measured", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8)
        # one filled outline a panel: one artist instead of a patch per bin
        ax.stairs(rebin(h, edges), edges, fill=True, color=ACTUAL if what == "activations" else GRADIENT)
        ax.set_title(f"{short_name(layer.name)} ({layer.activation})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.text(0.97, 0.95, panel_note(layer, what), transform=ax.transAxes, ha="right", va="top", fontsize=7,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7, "lw": 0})
        used.append(ax)
    for ax in row[len(layers):]:
        ax.set_visible(False)
    if used:
        used[0].set_ylabel(ylabel, fontsize=8)
    return used


def panel_note(layer: ProbeLayer, what: str) -> str:
    """The numbers written on a panel: the pre-activation's std and the dead and saturated fractions
    (activations), the shares of exact zeros and of values under the window (gradients), and any
    non-finite values."""
    h: Histogram | None = getattr(layer, what)
    assert h is not None
    lines = []
    if what == "activations":
        lines.append(f"z std {layer.std:.2g}")
        if layer.dead_fraction is not None:
            lines.append(f"dead {layer.dead_fraction:.0%}")
        if layer.saturated_fraction is not None:
            lines.append(f"saturated {layer.saturated_fraction:.0%}")
    else:
        if h.zeros / max(h.total, 1) >= 0.005:
            lines.append(f"zero {h.zeros / h.total:.0%}")
        if h.below / max(h.total, 1) >= 0.005:
            lines.append(f"< 1e{h.low:.0f}: {h.below / h.total:.0%}")
    if h.nonfinite:
        lines.append(f"non-finite {h.nonfinite}")
    return "\n".join(lines)


def _share(axes: list[Axes]) -> None:
    """Same x and y limits along a row type, so the panels compare at a glance."""
    if len(axes) < 2:
        return
    top = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(0, top)
    for ax in axes[1:]:
        ax.sharex(axes[0])
