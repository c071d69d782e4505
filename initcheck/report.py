"""Report: the report's records (records.py) with the methods a user calls on it: print it, turn it
into JSON, show it in a notebook, draw it. Those delegate to formats/, notebook.py and plots.py, which
read the records alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .formats.full import format_text
from .formats.json_report import report_dict
from .notebook import report_html, report_repr
from .records import LayerReport, ParamReport, ReportData

__all__ = ["LayerReport", "ParamReport", "Report", "ReportData"]


@dataclass(frozen=True, repr=False)
class Report(ReportData):
    def to_dict(self) -> dict[str, Any]:
        """This report as the JSON format writes it (plain types, NaN as None)."""
        return report_dict(self)

    def __str__(self) -> str:
        """The table and the findings, as the `full` format prints them."""
        return format_text(self)

    def __repr__(self) -> str:
        return report_repr(self)

    def _repr_html_(self) -> str:
        return report_html(self)

    def plot(self, path: Any = None, kind: str | None = None, *, title: str | None = None) -> Any:
        """The picture of this report, saved to `path` (.png/.svg/.pdf) when given; the Figure is
        returned. kind "histograms" (the default for a probed report): the measured activations and
        gradients per layer (initcheck.plots.histogram_plot); "signal" (the default otherwise): the
        predicted signal per layer (initcheck.plots.signal_plot). Both draw from the records alone."""
        if kind not in (None, "signal", "histograms"):
            raise ValueError(f"unknown kind {kind!r}; expected 'signal' or 'histograms'")
        if kind == "histograms" or (kind is None and self.probe):
            from .plots.histograms import histogram_plot

            return histogram_plot(self, path, title=title)
        from .plots.signal import signal_plot

        return signal_plot(self, path, title=title)
