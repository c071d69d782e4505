"""A plain training loop's gate: diagnose the model and raise InitError before it trains badly."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from torch import nn

from .findings import Severity

if TYPE_CHECKING:
    from .records import ReportData as Report  # the records alone: report.Report imports this module

FAIL_ON = ("info", "warning", "error", "never")


class InitError(Exception):
    """Findings at or above the threshold; `.report` holds the whole diagnosis, `str(err)` one line
    with the count and the worst finding."""

    def __init__(self, report: Report, fail_on: str):
        self.report = report
        self.fail_on = fail_on
        floor = Severity.parse(fail_on)
        failing = [f for f in report.findings if f.severity >= floor]
        first = max(failing, key=lambda f: f.severity.rank)
        more = f" (+{len(failing) - 1} more: print(err.report))" if len(failing) > 1 else ""
        super().__init__(f"{report.target}: {len(failing)} finding{'s' if len(failing) != 1 else ''} at or above "
                         f"{floor.value}; {first.code}: {first.message}{more}")


class Guard:
    """What guard() returns once the model passed: its report, usable as a context manager."""

    def __init__(self, report: Report):
        self.report = report

    def __enter__(self) -> Report:
        return self.report

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        return None  # exceptions from the guarded block pass through unchanged


def check(report: Report, fail_on: str = "error") -> Report:
    """Raise InitError when `report` has a finding at or above `fail_on` ("never": never raise)."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"unknown fail_on {fail_on!r}; expected one of {', '.join(FAIL_ON)}")
    if report.fails(fail_on):
        raise InitError(report, fail_on)
    return report


def guard(model: nn.Module, example_inputs: Any = None, fail_on: str = "error", **options: Any) -> Guard:
    """Diagnose `model` now and raise InitError (with `.report`) when a finding at or above
    `fail_on` exists; otherwise return a Guard holding the report. Either style:

        initcheck.guard(model)                 # raises before the loop
        with initcheck.guard(model) as report:  # the same check, scoped to the loop
            train(model)

    options: passed to diagnose() (select, ignore, per_layer_ignore, target). The model is not changed."""
    from .api import diagnose

    if fail_on not in FAIL_ON:
        raise ValueError(f"unknown fail_on {fail_on!r}; expected one of {', '.join(FAIL_ON)}")
    return Guard(check(diagnose(model, example_inputs, **options), fail_on))
