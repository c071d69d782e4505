"""Optional extras (matplotlib, Lightning, transformers): imported only when used; the one-line
error that says which extra to install when one is missing; what the training callbacks share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import MissingExtra as MissingExtra  # re-exported: the callbacks and their tests name them here
from ..errors import require as require
from ..findings import summary
from ..guard import FAIL_ON

if TYPE_CHECKING:
    from ..records import ReportData as Report  # the records alone: report.Report imports this module

# extra name in pyproject.toml -> the module it provides
EXTRAS = {"plot": "matplotlib", "lightning": "lightning", "hf": "transformers"}


def validate(fail_on: str) -> str:
    if fail_on not in FAIL_ON:
        raise ValueError(f"unknown fail_on {fail_on!r}; expected one of {', '.join(FAIL_ON)}")
    return fail_on


def judge(model: nn.Module, example_inputs: Any, fail_on: str, fix: bool, target: str) -> tuple[Report, list[str]]:
    """Diagnose `model`; with `fix`, repair it in place when it fails (static fix: no data, no
    extra forward passes). Returns the final report and the log lines to write; `check(report,
    fail_on)` then raises InitError if findings at or above `fail_on` remain.

    Sharded (DTensor) parameters are judged whole: diagnose reduces their statistics over the
    ranks, so every rank must call this together. They are not repaired: the fix draws whole
    tensors, and gathering a sharded model on every rank is what sharding avoids."""
    from ..api import diagnose
    from ..fix import fix as fix_model

    report = diagnose(model, example_inputs, target=target)
    lines = [f"initcheck: {target}: {summary(report.findings)}"]
    if fix and report.fails(fail_on) and sharded(model):
        lines.append(f"initcheck: {target}: fix=True does not repair sharded (DTensor) parameters: call "
                     "initcheck.fix on the module in configure_model before sharding it")
    elif fix and report.fails(fail_on):
        after = fix_model(model, target=target)
        changed = after.fix.reinitialized if after.fix else ()
        lines.append(f"initcheck: reinitialized {len(changed)} weight(s) ({', '.join(changed[:5])}"
                     f"{', ...' if len(changed) > 5 else ''}); now {summary(after.findings)}")
        report = after
    return report, lines


def sharded(model: nn.Module) -> bool:
    """Whether any parameter is a DTensor shard (FSDP2's fully_shard, tensor parallelism)."""
    return any(callable(getattr(p, "full_tensor", None)) for p in model.parameters())


def counts(report: Report) -> dict[str, float]:
    """Metrics for a logger: how many findings of each severity."""
    out = {"initcheck/errors": 0.0, "initcheck/warnings": 0.0, "initcheck/infos": 0.0}
    for f in report.findings:
        out[f"initcheck/{f.severity.value}s"] += 1.0
    return out
