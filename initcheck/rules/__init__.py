"""The checks, one module per family: unjudged.py (IC0xx), weights.py (IC1xx), signal.py (IC2xx),
probe.py (IC3xx). Each rule registers itself in findings.RULES with its documentation beside its
check; docs/rules.md is generated from that registry, so the two cannot drift."""

from __future__ import annotations

import functools

from ..findings import RULES, Finding, Selection
from . import params, probe, signal, unjudged, weights  # noqa: F401  (importing registers the rules)
from .context import Context

__all__ = ["Context", "run"]


def run(ctx: Context, selection: Selection | None = None) -> tuple[Finding, ...]:
    """Every selected rule's findings, in registry order."""
    selection = selection or Selection()
    out: list[Finding] = []
    for code, r in RULES.items():
        if _selects(selection, code):
            out.extend(r.check(ctx))
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _selects(selection: Selection, code: str) -> bool:
    """selection.selects(code), its prefix matching done once per selection (a Selection is frozen
    data): every diagnose asks it of every rule."""
    return selection.selects(code)
