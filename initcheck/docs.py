"""Rule documentation from the registry fields (summary, why, example, fix, settings): the page that
`initcheck rule CODE` prints and docs/rules/<CODE>.md, plus the docs/rules.md index. Nothing typed twice.

python -m initcheck.docs [DOCS_DIR]   writes DOCS_DIR/rules.md and DOCS_DIR/rules/*.md (default: docs)
(tests/test_docs.py checks they are current)
"""

from __future__ import annotations

import os
import sys

from .findings import RULES, Rule

GENERATED = "Generated from the rule registry by `python -m initcheck.docs`; do not edit."


def load() -> None:
    """Register every rule: the checks and the post-stage codes."""
    from . import rules, suppressions  # noqa: F401


def rule_page(rule: Rule) -> str:
    """One rule's documentation, as Markdown (also what `initcheck rule CODE` prints)."""
    lines = [f"# {rule.code} `{rule.name}` ({rule.severity.value})", "", rule.summary, "", "## Why", "", rule.why]
    if rule.example:
        lines += ["", "## Example", "", "```python", rule.example.strip("\n"), "```"]
    if rule.fix:
        lines += ["", "## Fix", "", rule.fix]
    if rule.settings:
        lines += ["", "## Settings", "", "In `[tool.initcheck.thresholds]`:", "", "| setting | default | what |",
                  "|---|---|---|"]
        lines += [f"| `{s.name}` | {s.default:g} | {s.doc} |" for s in rule.settings]
    lines += ["", f"Select or ignore it with `--select {rule.code}` / `--ignore {rule.code}`, or on the line that "
              f"wrote the weight with `# initcheck: ignore[{rule.code}]`."]
    return "\n".join(lines) + "\n"


def rules_index() -> str:
    """docs/rules.md: one line a rule, linking its page."""
    lines = [
        "# Rules",
        "",
        GENERATED,
        "Codes are stable and never reused. Select or ignore them by prefix (`--select IC2`, `--ignore IC103`),",
        "per layer in `[tool.initcheck.per-layer-ignores]`, or on the source line (`# initcheck: ignore[IC103]`).",
        "`initcheck rule CODE` prints a rule's page.",
        "",
        "| code | name | severity | what it says |",
        "|---|---|---|---|",
    ]
    lines += [f"| [{c}](rules/{c}.md) | `{r.name}` | {r.severity.value} | {r.summary} |" for c, r in sorted(RULES.items())]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """Every generated file, relative to the docs folder -> its text."""
    load()
    out = {"rules.md": rules_index()}
    out.update({f"rules/{code}.md": f"<!-- {GENERATED} -->\n" + rule_page(r) for code, r in sorted(RULES.items())})
    return out


def main(argv: list[str]) -> None:
    root = argv[0] if argv else "docs"
    os.makedirs(os.path.join(root, "rules"), exist_ok=True)
    for name, text in pages().items():
        with open(os.path.join(root, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    print(f"wrote {len(pages())} files under {root}/")


if __name__ == "__main__":
    main(sys.argv[1:])
