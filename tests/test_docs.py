"""Rule documentation: generated from the registry fields, never drifting; `initcheck rule CODE`."""

import os

import pytest
from click.testing import CliRunner

from initcheck import docs, findings
from initcheck.cli import main
from initcheck.findings import RULES, Setting, Severity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rules_docs_are_generated_from_the_registry():
    pages = docs.pages()
    for name, text in pages.items():
        with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as fh:
            assert fh.read() == text, f"{name} is stale: run python -m initcheck.docs"
    on_disk = {f"rules/{n}" for n in os.listdir(os.path.join(ROOT, "docs", "rules"))}
    assert on_disk == {n for n in pages if n.startswith("rules/")}, "a page for a rule that no longer exists"
    assert {n[len("rules/"):-3] for n in pages if n.startswith("rules/")} == set(RULES)


def test_generator_writes_every_page(tmp_path):
    docs.main([str(tmp_path)])
    assert (tmp_path / "rules.md").read_text() == docs.pages()["rules.md"]
    assert sorted(os.listdir(tmp_path / "rules")) == sorted(f"{code}.md" for code in RULES)


@pytest.fixture
def documented_rule():
    """A rule with every documentation field set, registered for this test only."""
    setting = Setting("test-spread", 2.5, "how far is too far")
    findings.rule("IC998", "test-rule", Severity.INFO, "Checks nothing.", "Because tests need it.",
                  example="nn.init.zeros_(layer.weight)", fix="nn.init.kaiming_normal_(layer.weight)",
                  settings=(setting,))(lambda ctx: ())
    yield RULES["IC998"]
    del RULES["IC998"]
    del findings.SETTINGS["test-spread"]


def test_a_page_renders_every_field(documented_rule):
    page = docs.rule_page(documented_rule)
    for text in ("IC998", "test-rule", "Checks nothing.", "Because tests need it.", "nn.init.zeros_(layer.weight)",
                 "nn.init.kaiming_normal_(layer.weight)", "`test-spread` | 2.5 | how far is too far"):
        assert text in page


@pytest.mark.parametrize("args", [["rule", "IC103"], ["--explain", "ic103"]])
def test_rule_command_prints_the_page(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rule = RULES["IC103"]
    assert r.output == docs.rule_page(rule)
    assert rule.summary in r.output and rule.why in r.output


def test_rule_command_shows_a_settings_default(documented_rule):
    r = CliRunner().invoke(main, ["rule", "IC998"])
    assert "| `test-spread` | 2.5 |" in r.output


def test_an_unknown_rule_is_exit_2_with_the_valid_codes():
    r = CliRunner().invoke(main, ["rule", "IC999"])
    assert r.exit_code == 2 and "valid codes: IC001" in r.output and len(r.output.strip().splitlines()) == 1


def test_readme_commands_match_ci():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    test_cmd = 'pip install -q torch==2.13.0 -e ".[test]" && python -m pytest -q'
    assert test_cmd in readme and test_cmd in ci
    slow_step = "python -m pytest -q -m slow"
    assert slow_step in readme and slow_step in ci


def test_the_readme_shows_what_the_command_prints(monkeypatch):
    """The README's "What it prints" block is the command's real output, byte for byte (the report
    on stdout and the summary line), so the docs cannot drift from the tool."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    start = readme.index("`initcheck examples/seeds.py:TanhNormal001`")
    start = readme.index("```\n", start) + 4
    shown = readme[start:readme.index("```", start)]
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["examples/seeds.py:TanhNormal001"])
    assert result.exit_code == 1
    assert result.output.strip() == shown.strip()


def test_the_readme_findings_table_names_every_rule():
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        table = fh.read().split("## Findings", 1)[1].split("\n\n", 2)[1]
    named: set[str] = set()
    for first, last in re.findall(r"\b(IC\d{3})(?:\s*[–/-]\s*(IC\d{3}))?", table):
        lo, hi = int(first[2:]), int((last or first)[2:])
        named |= {f"IC{n:03d}" for n in range(lo, hi + 1)}
    from initcheck.options import load_rules

    load_rules()  # every rule module imported: the registry is whole
    assert named == set(RULES)
