"""Inline suppressions: `# initcheck: ignore[IC103] reason` on the line that last wrote a weight (or
built its layer) drops that finding for that parameter; a comment that drops nothing is itself a
finding (IC003), so suppressions do not outlive the code they excused. Runs after the rules."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from .findings import Finding, Severity, rule

UNUSED = "IC003"

# `ignore` alone suppresses every code; codes are a comma list in brackets; anything after is the reason
_COMMENT = re.compile(r"#\s*initcheck:\s*ignore(?:\[(?P<codes>[^\]]*)\])?(?P<reason>[^#]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Suppression:
    """One `# initcheck: ignore[...]` comment."""

    path: str
    line: int
    codes: tuple[str, ...]  # empty: every code
    reason: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def covers(self, code: str) -> bool:
        return not self.codes or any(code.startswith(c) for c in self.codes)


@dataclass(frozen=True)
class Suppressed:
    """What `apply` returns: the findings kept, those suppressed (with their comment), and one
    IC003 finding per comment that suppressed nothing."""

    kept: tuple[Finding, ...]
    suppressed: tuple[tuple[Finding, Suppression], ...]
    unused: tuple[Finding, ...]


@rule(UNUSED, "unused-suppression", Severity.WARNING,
      "An `# initcheck: ignore[...]` comment on a line that wrote a weight suppressed no finding.",
      "A suppression outlives the init it excused (the weight was fixed, the layer renamed) and would "
      "silently hide the next real problem on that line; ruff's RUF100 does the same for `# noqa`.",
      example="nn.init.kaiming_normal_(layer.weight)  # initcheck: ignore[IC103]   (nothing to suppress)",
      fix="Delete the comment, or narrow it to the codes that the line still triggers.")
def _post_stage(_context: object) -> Iterable[Finding]:
    """Runs as a post-stage (suppressions.apply, after every rule): a rule's check sees one model's
    facts, not the findings of the others or the comments, so this check itself yields nothing."""
    return ()


def parse_line(text: str) -> tuple[tuple[str, ...], str] | None:
    """The codes and reason of a suppression comment on this source line, or None."""
    m = _COMMENT.search(text)
    if m is None:
        return None
    codes = tuple(c.strip().upper() for c in (m.group("codes") or "").split(",") if c.strip())
    return codes, m.group("reason").strip()


def comments(path: str) -> Iterator[Suppression]:
    """Every suppression comment in a Python file (none if it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for n, text in enumerate(lines, 1):
        if "#" in text:
            parsed = parse_line(text)
            if parsed is not None:
                yield Suppression(path, n, *parsed)


def _split(source: str) -> tuple[str, int] | None:
    path, sep, line = source.rpartition(":")
    return (path, int(line)) if sep and line.isdigit() else None


def apply(findings: Iterable[Finding], files: Iterable[str] | None = None,
          built: Mapping[str, str] | None = None) -> Suppressed:
    """Drop the findings whose source line carries a matching comment.

    files: what is judged for unused comments: "path" (every comment in the file) or "path:line"
    (the comment on that line), typically the "path:line" of every parameter the model wrote, so a
    file with several models does not blame one model for another's comments. None: the source
    lines of the findings themselves (and their `built` lines).
    built: parameter name -> "path:line" that created it, when known: a comment on the line that
    built the layer suppresses too, even after a later line rewrote the weight."""
    findings = tuple(findings)
    built = built or {}
    scope = list(files) if files is not None else [
        site for f in findings for site in (f.source, built.get(f.layer)) if site]
    by_file: dict[str, dict[int, Suppression]] = {}

    def at(path: str) -> dict[int, Suppression]:
        if path not in by_file:
            by_file[path] = {s.line: s for s in comments(path)}
        return by_file[path]

    kept: list[Finding] = []
    suppressed: list[tuple[Finding, Suppression]] = []
    used: dict[tuple[str, int], set[str]] = {}  # comment -> the codes of the findings it suppressed
    for f in findings:
        s = next((s for site in (f.source, built.get(f.layer)) if site and (s := _comment(at, site)) is not None
                  and s.covers(f.code)), None) if f.code != UNUSED else None
        if s is not None:
            suppressed.append((f, s))
            used.setdefault((s.path, s.line), set()).add(f.code)
        else:
            kept.append(f)

    judged: dict[tuple[str, int], Suppression] = {}
    for item in scope:
        where = _split(item)
        if where is None:
            judged.update(((s.path, s.line), s) for s in at(item).values())
        elif where[1] in at(where[0]):
            judged[where] = at(where[0])[where[1]]
    unused = tuple(u for key, s in sorted(judged.items()) if (u := _unused(s, used.get(key, set()))) is not None)
    return Suppressed(tuple(kept), tuple(suppressed), unused)


def _comment(at: Callable[[str], dict[int, Suppression]], site: str) -> Suppression | None:
    where = _split(site)
    return at(where[0]).get(where[1]) if where else None


def _unused(s: Suppression, used: set[str]) -> Finding | None:
    """IC003 for a comment that suppressed nothing, or for the codes of its list that matched no
    finding (`ignore[IC103,IC101]` where only IC103 fired: IC101 is stale), as ruff's RUF100 does."""
    what = f"ignore[{','.join(s.codes)}]" if s.codes else "ignore"
    if not used:
        return Finding(UNUSED, Severity.WARNING, "", f"`# initcheck: {what}` suppressed no finding",
                       f"remove the comment at {s.where}", s.where)
    stale = [c for c in s.codes if not any(code.startswith(c) for code in used)]
    if not stale:
        return None
    return Finding(UNUSED, Severity.WARNING, "", f"{', '.join(stale)} in `# initcheck: {what}` suppressed no finding",
                   f"remove {', '.join(stale)} from the comment at {s.where}", s.where)
