"""The `concise` format: `path:line:col: CODE [severity] message`, one line a finding, as editors
and grep expect (col is always 1: initcheck knows the line, not the column)."""

from __future__ import annotations

from .base import Run, findings, location


def write(run: Run) -> str:
    lines = []
    for report, f in findings(run):
        path, line = location(f, report.target)
        lines.append(f"{path}:{line}:1: {f.code} [{f.severity}] {f.message}")
    return "\n".join(lines) + ("\n" if lines else "")
