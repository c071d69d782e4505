import os

from initcheck.docs import rules_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rules_doc_is_generated_from_the_registry():
    with open(os.path.join(ROOT, "docs", "rules.md"), encoding="utf-8") as fh:
        assert fh.read() == rules_markdown(), "run: python -m initcheck.docs > docs/rules.md"


def test_readme_commands_match_ci():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    test_cmd = 'pip install -q -e ".[test]" && python -m pytest -q'
    assert test_cmd in readme and test_cmd in ci
