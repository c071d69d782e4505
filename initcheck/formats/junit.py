"""The `junit` format: JUnit XML for CI dashboards, one testcase per model (a failure when it has a
finding at or above --fail-on; an error when it could not be loaded)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .base import Run, location


def write(run: Run) -> str:
    suite = ET.Element("testsuite", name="initcheck")
    failed = errors = 0
    for report in run.reports:
        case = ET.SubElement(suite, "testcase", classname="initcheck", name=report.target)
        if report.fails(run.fail_on):
            failed += 1
            bad = [f for f in report.findings if run.fail_on != "never" and f.severity >= run.fail_on]
            body = "\n".join(f"{':'.join(map(str, location(f, report.target)))}: {f.code} [{f.severity}] {f.message}"
                             for f in report.findings)
            node = ET.SubElement(case, "failure", message=f"{len(bad)} finding(s) at or above {run.fail_on}",
                                 type=bad[0].code)
            node.text = body
        elif report.findings:
            ET.SubElement(case, "system-out").text = "\n".join(f"{f.code} [{f.severity}] {f.message}" for f in report.findings)
    for failure in run.failures:
        errors += 1
        case = ET.SubElement(suite, "testcase", classname="initcheck", name=failure.target)
        ET.SubElement(case, "error", message=failure.reason, type="load")
    suite.set("tests", str(len(run.reports) + len(run.failures)))
    suite.set("failures", str(failed))
    suite.set("errors", str(errors))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
