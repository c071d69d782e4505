"""Pictures of a diagnosis: the predicted signal per layer (signal.py), and a probe's measured
histograms per layer (histograms.py).

matplotlib is an optional extra (`pip install initcheck[plot]`), imported only when a picture is
drawn. Figures are built without pyplot (no global figure registry, no backend switch) and saved
without timestamps (files.py), so the same model gives the same file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch import nn

from .files import FORMATS, check_path, save
from .histograms import compare, histogram_figure, histogram_plot
from .signal import SignalSeries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..api import Analysis
    from ..records import ReportData as Report

__all__ = ["FORMATS", "SignalSeries", "check_path", "compare", "histogram_figure", "histogram_plot", "probe_histograms",
           "save", "signal_plot", "signal_series"]


def signal_series(source: Report | Analysis | nn.Module) -> SignalSeries:
    """signal.signal_series for a report or an analysis; a model is analyzed first."""
    from . import signal

    if isinstance(source, nn.Module):
        from ..api import analyze

        source = analyze(source)
    return signal.signal_series(source)


def signal_plot(source: Report | Analysis | nn.Module, path: str | os.PathLike[str] | None = None, *,
                title: str | None = None) -> Figure:
    """signal.signal_plot for a report or an analysis; a model is analyzed first."""
    from . import signal

    if isinstance(source, nn.Module):
        from ..api import analyze

        source = analyze(source)
    return signal.signal_plot(source, path, title=title)


def probe_histograms(model: nn.Module, batch: Any = None, path: str | os.PathLike[str] | None = None, *,
                     after: nn.Module | None = None, labels: tuple[str, str] = ("before", "after"),
                     title: str | None = None) -> Figure:
    """Probe `model` (and `after`, the same model fixed) on `batch` and draw the histograms:
    compare(probe(model, batch), probe(after, batch)). `batch`: as example_inputs (a tensor, tuple
    or dict); None builds a synthetic one."""
    from ..errors import require
    from ..probe import probe  # runs the model: here, not in histograms.py, which draws records only

    check_path(path)
    require("matplotlib", "plot")

    second = probe(after, batch) if after is not None else None
    return compare(probe(model, batch), second, path, labels=labels, title=title)
