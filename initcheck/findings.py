"""The vocabulary every stage shares: Severity, Finding, Rule (with its documentation and settings),
the rule registry and code selection. A leaf: it imports nothing of initcheck.

Codes are stable and never reused: IC0xx say what could not be judged, IC1xx judge one parameter,
IC2xx the signal through the graph, IC3xx what a real batch measured (--probe).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any


class Severity(str, enum.Enum):
    """Ordered: INFO < WARNING < ERROR. A str enum, so the word itself ("error") is its value at the
    edges (JSON, config, CLI) and compares equal to it; order comes from `rank`, not the alphabet."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        return _RANK[self._value_]  # not .value: Enum's property costs a microsecond per finding sorted

    def __lt__(self, other: object) -> bool:
        return self.rank < Severity(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= Severity(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > Severity(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= Severity(other).rank

    def __hash__(self) -> int:
        return hash(self.value)

    @classmethod
    def parse(cls, text: object) -> Severity:
        """'warning' -> Severity.WARNING; a ValueError naming the valid words otherwise."""
        if isinstance(text, Severity):
            return text
        if isinstance(text, str) and text.strip().lower() in _RANK:
            return cls(text.strip().lower())
        raise ValueError(f"unknown severity {text!r}; expected one of {', '.join(_RANK)}")


_RANK = {"info": 0, "warning": 1, "error": 2}

SEVERITY_WORDS: tuple[str, ...] = tuple(s.label for s in Severity)


@dataclass(frozen=True)
class Finding:
    """One diagnosis: which rule, how bad, on which parameter, a true sentence with its numbers,
    and the exact call that fixes it."""

    code: str
    severity: Severity
    layer: str  # qualified parameter name, or "" for the whole model
    message: str
    fix: str
    source: str | None = None  # "path:line" that last wrote the parameter, when known

    @property
    def name(self) -> str:
        return RULES[self.code].name


@dataclass(frozen=True)
class Setting:
    """A named threshold a rule reads, with its default and what set it."""

    name: str  # kebab-case, as in [tool.initcheck.thresholds]
    default: float
    doc: str


@dataclass(frozen=True)
class Rule:
    """A registered check with everything its documentation (docs/rules.md, `initcheck rule CODE`)
    needs: what it checks, why it matters, an example that triggers it, the fix, its settings."""

    code: str
    name: str
    severity: Severity
    summary: str  # what it checks, one sentence
    why: str  # why it matters, with the numbers behind its threshold
    check: Callable[[Any], Iterable[Finding]] = field(repr=False, compare=False)
    example: str = ""  # code that triggers it
    fix: str = ""  # what to do instead
    settings: tuple[Setting, ...] = ()


RULES: dict[str, Rule] = {}
SETTINGS: dict[str, Setting] = {}


def rule(
    code: str,
    name: str,
    severity: Severity,
    summary: str,
    why: str,
    *,
    example: str = "",
    fix: str = "",
    settings: tuple[Setting, ...] = (),
) -> Callable[[Callable[[Any], Iterable[Finding]]], Callable[[Any], Iterable[Finding]]]:
    """Register the decorated check as rule `code`."""

    def register(fn: Callable[[Any], Iterable[Finding]]) -> Callable[[Any], Iterable[Finding]]:
        old = RULES.get(code)
        if old is not None and (old.check.__module__, old.check.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"rule {code} is registered twice")  # a reimported module re-registers its own rule
        RULES[code] = Rule(code, name, severity, summary, why, fn, example, fix, settings)
        ordered = sorted(RULES.items())  # the registry lists codes in order, whichever module registered first
        RULES.clear()
        RULES.update(ordered)
        for s in settings:
            SETTINGS.setdefault(s.name, s)
        return fn

    return register


def default_thresholds() -> dict[str, float]:
    return {name: s.default for name, s in SETTINGS.items()}


# --- selection ---------------------------------------------------------------------------------

def unknown_codes(codes: Iterable[str]) -> list[str]:
    """The codes or prefixes that match no registered rule ("IC9", "XX1")."""
    return [c for c in codes if not any(code.startswith(c) for code in RULES)]


@dataclass(frozen=True)
class Selection:
    """Which findings a run reports: flake8's prefix matching (the longest matching prefix wins,
    ignore wins a tie), extended from the command line, and per-layer ignores."""

    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    extend_ignore: tuple[str, ...] = ()
    per_layer_ignore: tuple[tuple[str, str], ...] = ()  # (code prefix, fnmatch pattern of the parameter)

    def selects(self, code: str) -> bool:
        """Whether rule `code` runs at all."""
        select = self.select + self.extend_select if self.select else ()
        ignore = self.ignore + self.extend_ignore
        sel = max((len(p) for p in select if code.startswith(p)), default=-1) if select else 0
        sel = max(sel, max((len(p) for p in self.extend_select if code.startswith(p)), default=-1))
        ign = max((len(p) for p in ignore if code.startswith(p)), default=-1)
        return sel > ign

    def keeps(self, finding: Finding) -> bool:
        """Whether a finding survives the selection and the per-layer ignores."""
        if not self.selects(finding.code):
            return False
        return not any(finding.code.startswith(code) and fnmatchcase(finding.layer, pattern)
                       for code, pattern in self.per_layer_ignore)

    def all_codes(self) -> tuple[str, ...]:
        return self.select + self.ignore + self.extend_select + self.extend_ignore + tuple(c for c, _ in self.per_layer_ignore)


def counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    out = dict.fromkeys(Severity, 0)
    for f in findings:
        out[f.severity] += 1
    return out


def summary(findings: Iterable[Finding]) -> str:
    """'1 error, 2 warnings, 0 infos'."""
    c = counts(findings)
    return ", ".join(f"{c[s]} {s.label}{'s' if c[s] != 1 else ''}" for s in sorted(Severity, reverse=True))
