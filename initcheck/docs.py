"""Generates docs/rules.md from the rule registry, so the docs cannot drift from the code.

python -m initcheck.docs > docs/rules.md   (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

from . import rules  # noqa: F401  (registers the rules)
from .findings import RULES


def rules_markdown() -> str:
    lines = [
        "# Rules",
        "",
        "Generated from `initcheck/rules.py` by `python -m initcheck.docs > docs/rules.md`; do not edit.",
        "Codes are stable and never reused. Select or ignore them by prefix (`--select IC2`, `--ignore IC103`),",
        "or per layer in `[tool.initcheck.per-layer-ignores]`.",
        "",
        "| code | name | severity | what it says |",
        "|---|---|---|---|",
    ]
    for code, r in RULES.items():
        lines.append(f"| {code} | `{r.name}` | {r.severity.value} | {r.summary} |")
    for code, r in RULES.items():
        lines += ["", f"## {code} `{r.name}` ({r.severity.value})", "", r.summary, "", f"Why: {r.why}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(rules_markdown(), end="")
