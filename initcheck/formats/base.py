"""What every writer takes (one Run: the reports, the targets that failed, the options that shape
output) and the helpers they share: a finding's location, the tool's versions, rule URLs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from ..findings import Finding

if TYPE_CHECKING:
    from ..records import ReportData as Report  # the records alone: report.Report imports this module

HOME = "https://github.com/initcheck/initcheck"
DOCS = f"{HOME}/blob/main/docs/rules"


@dataclass(frozen=True)
class Failure:
    """A target that could not be checked, and the one line that says why."""

    target: str
    reason: str


@dataclass(frozen=True)
class Run:
    """One invocation's results, as every writer receives them."""

    reports: tuple[Report, ...]
    failures: tuple[Failure, ...] = ()
    fail_on: str = "error"
    color: bool = False
    quiet: bool = False
    show_suppressed: bool = False
    versions: dict[str, str] = field(default_factory=dict)


Writer = Callable[[Run], str]  # a format: the whole output for one run, as text


def rule_url(code: str) -> str:
    return f"{DOCS}/{code}.md"


def versions() -> dict[str, str]:
    """initcheck's and torch's versions, read from the installed metadata (torch is not imported)."""
    from .. import __version__

    out = {"initcheck": __version__}
    try:
        out["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        out["torch"] = "not installed"
    return out


def target_file(target: str) -> str:
    """The file a target names ("model.py:Net" -> "model.py"); a module path as given."""
    head = target.rsplit(":", 1)[0] if target.count(":") and not _is_drive(target) else target
    return head


def _is_drive(target: str) -> bool:
    return len(target) > 1 and target[1] == ":" and target.count(":") == 1


def location(finding: Finding, target: str) -> tuple[str, int]:
    """Where a finding points: its source line, else the target's file at line 1 (SARIF, GitHub and
    editors all need a file and a line)."""
    if finding.source:
        path, sep, line = finding.source.rpartition(":")
        if sep and line.isdigit():
            return relative(path), int(line)
    return relative(target_file(target)), 1


def relative(path: str) -> str:
    """A path as code scanning and editors want it: relative to the current folder when inside it."""
    if os.path.isabs(path):
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return path.replace(os.sep, "/")


def findings(run: Run) -> Iterator[tuple[Report, Finding]]:
    for report in run.reports:
        for f in report.findings:
            yield report, f


def suppressed(report: Report) -> list[dict[str, str | None]]:
    """The findings an inline comment suppressed, with its reason (--show-suppressed)."""
    return [{"code": f.code, "severity": f.severity.value, "layer": f.layer, "message": f.message,
             "source": f.source, "reason": reason} for f, reason in report.suppressed]

