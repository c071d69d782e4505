"""The `json-lines` format: one JSON object per finding (and per target that failed to load)."""

from __future__ import annotations

import json

from .base import Run, findings, location, rule_url


def write(run: Run) -> str:
    lines = []
    for report, f in findings(run):
        path, line = location(f, report.target)
        lines.append(json.dumps({"target": report.target, "code": f.code, "name": f.name, "severity": f.severity.value,
                                 "layer": f.layer, "message": f.message, "fix": f.fix, "source": f.source,
                                 "path": path, "line": line, "url": rule_url(f.code)}))
    lines += [json.dumps({"target": f.target, "error": f.reason}) for f in run.failures]
    return "".join(line + "\n" for line in lines)
