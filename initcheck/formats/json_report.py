"""The `json` format: {"version", "tool": {initcheck, torch}, "models": [...], "failed": [...]}; every
finding carries its rule's name and documentation URL."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .base import Run, location, rule_url, suppressed, versions

if TYPE_CHECKING:
    from ..records import ReportData as Report  # the records alone: report.Report imports this module

JSON_VERSION = 1


def _clean(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def report_dict(report: Report, show_suppressed: bool = False) -> dict[str, Any]:
    """One model's report as plain JSON types (NaN and inf become null); what fix() did, at the top
    level of the model's entry, when the report is fix's; the suppressed findings on request."""
    layers = []
    for lr in report.layers:
        d = asdict(lr)
        d["shape"] = list(lr.shape)
        d["aliases"] = list(lr.aliases)
        layers.append({k: _clean(v) for k, v in d.items()})
    findings = []
    for f in report.findings:
        path, line = location(f, report.target)
        findings.append({"code": f.code, "name": f.name, "severity": f.severity.value, "layer": f.layer,
                         "message": f.message, "fix": f.fix, "source": f.source, "path": path, "line": line,
                         "url": rule_url(f.code)})
    return {
        "target": report.target,
        "tracer": report.tracer,
        "mode": report.mode,
        "notes": list(report.notes),
        "layers": layers,
        "probe": [asdict(p) for p in report.probe],
        "params": [{k: _clean(v) for k, v in {**asdict(pr), "shape": list(pr.shape)}.items()} for pr in report.params],
        "findings": findings,
        **_fix_dict(report),
        **({"suppressed": suppressed(report)} if show_suppressed and report.suppressed else {}),
    }


def _fix_dict(report: Report) -> dict[str, Any]:
    if report.fix is None:
        return {}
    d = asdict(report.fix)
    d["acted_on"] = None if report.fix.acted_on is None else report.fix.acted_on.value
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def to_json(reports: list[Report]) -> str:
    """The 0.1 API: the JSON of these reports."""
    return write(Run(tuple(reports)))


def write(run: Run) -> str:
    payload = {
        "version": JSON_VERSION,
        "tool": run.versions or versions(),
        "models": [report_dict(r, run.show_suppressed) for r in run.reports],
        "failed": [{"target": f.target, "reason": f.reason} for f in run.failures],
    }
    return _flat_number_lists(json.dumps(payload, indent=2)) + "\n"


# a JSON array of numbers (or nulls) as indent=2 writes it: one element a line. The newlines it
# requires never occur inside a JSON string (they are escaped there), so no message can match.
_NUMBER = r"(?:-?[0-9][0-9.eE+-]*|null)"
_NUMBER_LIST = re.compile(rf"\[\n\s*({_NUMBER}(?:,\n\s*{_NUMBER})*)\n\s*\]")


def _flat_number_lists(text: str) -> str:
    """Arrays of numbers on one line (shapes, the probe's histogram counts): indent=2 gives each
    element a line of its own, which made a probed report half again as long."""
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
