"""--statistics: a count per code instead of the findings (not an --output-format: it takes any run)."""

from __future__ import annotations

from ..findings import RULES
from .base import Run


def write(run: Run) -> str:
    """--statistics: a count per code, most frequent first (as ruff prints it)."""
    counts: dict[str, int] = {}
    for report in run.reports:
        for f in report.findings:
            counts[f.code] = counts.get(f.code, 0) + 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return "".join(f"{n:>5}  {code}  [{RULES[code].severity}] {RULES[code].name}\n" for code, n in rows)
