"""The `github` format: GitHub Actions workflow commands, which show as annotations on the diff:
`::error file=model.py,line=12,title=IC101::message`."""

from __future__ import annotations

from ..findings import Severity
from .base import Run, findings, location, target_file

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _data(text: str) -> str:
    """Escape a message the way the runner unescapes it (%, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a property value: also ':' and ',' that separate properties."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def write(run: Run) -> str:
    lines = []
    for report, f in findings(run):
        path, line = location(f, report.target)
        message = f.message  # names the layer already
        if f.fix:
            message += f"\nfix: {f.fix}"
        lines.append(f"::{_LEVEL[f.severity]} file={_prop(path)},line={line},title={_prop(f.code + ' ' + f.name)}"
                     f"::{_data(message)}")
    for failure in run.failures:
        lines.append(f"::error file={_prop(target_file(failure.target))},line=1,title=initcheck::{_data(failure.reason)}")
    return "".join(line + "\n" for line in lines)
