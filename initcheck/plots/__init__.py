"""Pictures of a diagnosis: the predicted signal per layer (signal.py), and a probe's measured
histograms per layer (histograms.py).

matplotlib is an optional extra (`pip install initcheck[plot]`), imported only when a picture is
drawn. Figures are built without pyplot (no global figure registry, no backend switch) and saved
without timestamps (files.py), so the same model gives the same file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from torch import nn

from .files import FORMATS, check_path, save
from .histograms import compare, histogram_figure, histogram_plot, probe_histograms
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
