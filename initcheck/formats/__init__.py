"""Report writers: one module per output format behind one interface (`Writer`: a Run -> text).
A new format is one module and one line in WRITERS."""

from __future__ import annotations

from . import concise, full, github, json_lines, json_report, junit, sarif
from .base import Failure, Run, Writer

WRITERS: dict[str, Writer] = {
    "full": full.write,  # the table, the probe table and the findings (the default)
    "concise": concise.write,  # path:line:col: CODE [severity] message, one line a finding
    "json": json_report.write,  # {"version", "tool", "models", "failed"}
    "json-lines": json_lines.write,  # one JSON object per finding
    "sarif": sarif.write,  # SARIF 2.1.0 for GitHub code scanning
    "github": github.write,  # GitHub Actions workflow annotations
    "junit": junit.write,  # JUnit XML, one testcase per model
}


def write(name: str, run: Run) -> str:
    """The text of format `name` for this run."""
    return WRITERS[name](run)


__all__ = ["WRITERS", "Failure", "Run", "Writer", "write"]
