"""The `sarif` format: SARIF 2.1.0, as GitHub code scanning accepts it (tool.driver with its rules,
results with ruleId, level, message and a physical location)."""

from __future__ import annotations

import json
from typing import Any

from ..findings import RULES, Severity
from .base import HOME, Run, findings, location, rule_url, target_file, versions

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _rules() -> list[dict[str, Any]]:
    return [{
        "id": r.code,
        "name": r.name,
        "shortDescription": {"text": r.summary},
        "fullDescription": {"text": r.why or r.summary},
        "helpUri": rule_url(r.code),
        "help": {"text": r.fix or r.summary},
        "defaultConfiguration": {"level": _LEVEL[r.severity]},
    } for _, r in sorted(RULES.items())]


def _result(target: str, code: str, level: str, message: str, path: str, line: int) -> dict[str, Any]:
    return {
        "ruleId": code,
        "level": level,
        "message": {"text": message},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": path}, "region": {"startLine": line}}}],
        "properties": {"target": target},
    }


def write(run: Run) -> str:
    results = []
    for report, f in findings(run):
        path, line = location(f, report.target)
        text = f.message  # names the layer already
        if f.fix:
            text += f" Fix: {f.fix}"
        results.append(_result(report.target, f.code, _LEVEL[f.severity], text, path, line))
    notifications = [{"level": "error", "message": {"text": f"{failure.target}: {failure.reason}"},
                      "locations": [{"physicalLocation": {"artifactLocation": {"uri": target_file(failure.target)}}}]}
                     for failure in run.failures]
    tool = run.versions or versions()
    sarif = {
        "version": "2.1.0",
        "$schema": SCHEMA,
        "runs": [{
            "tool": {"driver": {"name": "initcheck", "version": tool["initcheck"], "informationUri": HOME,
                                "rules": _rules()}},
            "results": results,
            "invocations": [{"executionSuccessful": not run.failures, "toolExecutionNotifications": notifications}],
        }],
    }
    return json.dumps(sarif, indent=2) + "\n"
