"""Every output format, through the command line: what a CI, an editor or a dashboard reads."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from initcheck.cli import main
from initcheck.findings import RULES
from initcheck.formats import WRITERS, Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "examples", "seeds.py")


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(SEEDS, tmp_path / "seeds.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def line_of(text):
    with open(SEEDS) as f:
        return next(n for n, line in enumerate(f, 1) if text in line)


UNIFORM_LINE = line_of("nn.init.uniform_(layer.weight, 0.0, 1.0)")


def test_every_format_is_registered():
    assert set(WRITERS) == {"full", "concise", "json", "json-lines", "sarif", "github", "junit"}
    for writer in WRITERS.values():
        assert isinstance(writer(Run(())), str)


def test_concise_is_one_line_a_finding_with_path_line_col(project):
    r = cli("seeds.py:Uniform01", "--output-format", "concise")
    assert r.exit_code == 1
    lines = r.output.splitlines()
    # three IC102, one IC201, three IC103 (one per Linear), each at the line that drew the weights
    assert len(lines) == 7
    assert all(line.startswith(f"seeds.py:{UNIFORM_LINE}:1: IC") for line in lines)
    assert lines[0].startswith(f"seeds.py:{UNIFORM_LINE}:1: IC102 [error] net.0 (Linear 784→256")


def test_json_has_versions_rule_urls_and_failed_targets(project):
    r = cli("seeds.py:Uniform01", "seeds.py:Nope", "--output-format", "json")
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    import torch

    import initcheck
    assert data["tool"] == {"initcheck": initcheck.__version__, "torch": torch.__version__}
    assert [m["target"] for m in data["models"]] == ["seeds.py:Uniform01"]
    f = data["models"][0]["findings"][0]
    assert f["url"].endswith(f"/docs/rules/{f['code']}.md") and f["line"] == UNIFORM_LINE
    assert os.path.isfile(os.path.join(ROOT, "docs", "rules", f"{f['code']}.md"))  # the URL's page exists here
    assert data["failed"] == [{"target": "seeds.py:Nope", "reason": "seeds.py has no attribute 'Nope' (check the name after the colon)"}]


def test_format_json_alias_and_table_alias(project):
    assert json.loads(cli("seeds.py:He", "--format", "json").output)["models"][0]["target"] == "seeds.py:He"
    assert cli("seeds.py:He", "--format", "table").output == cli("seeds.py:He", "--output-format", "full").output


def test_json_lines_is_one_object_per_finding(project):
    r = cli("seeds.py:Zeros", "--output-format", "json-lines")
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [(row["code"], row["layer"]) for row in rows] == [("IC101", "net.0.weight"), ("IC101", "net.2.weight")]
    assert all(row["target"] == "seeds.py:Zeros" for row in rows)


SARIF_LEVELS = {"none", "note", "warning", "error"}


def test_sarif_has_every_field_code_scanning_requires(project):
    r = cli("seeds.py:Uniform01", "seeds.py:PyTorchDefault", "--output-format", "sarif")
    sarif = json.loads(r.output)
    assert sarif["version"] == "2.1.0" and sarif["$schema"].endswith("sarif-2.1.0.json")
    (run,) = sarif["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "initcheck" and driver["version"] and driver["informationUri"].startswith("https://")
    ids = [rule["id"] for rule in driver["rules"]]
    assert set(ids) == set(RULES)
    for rule in driver["rules"]:
        assert rule["name"] == RULES[rule["id"]].name
        assert rule["shortDescription"]["text"] == RULES[rule["id"]].summary
        assert rule["helpUri"].startswith("https://") and rule["helpUri"].endswith(f"{rule['id']}.md")
    results = run["results"]
    assert len(results) == 7 + 2  # Uniform01's seven, PyTorchDefault's two IC103 warnings
    for result in results:
        assert result["ruleId"] in ids and result["level"] in SARIF_LEVELS and result["message"]["text"]
        (loc,) = result["locations"]
        phys = loc["physicalLocation"]
        assert phys["artifactLocation"]["uri"] == "seeds.py"  # relative to the repository root
        assert isinstance(phys["region"]["startLine"], int) and phys["region"]["startLine"] >= 1
    assert {r["level"] for r in results} == {"error", "warning"}


def test_sarif_validates_against_the_schema(project):
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = os.path.join(os.path.dirname(__file__), "data", "sarif-2.1.0-subset.json")
    with open(schema_path) as fh:
        schema = json.load(fh)
    sarif = json.loads(cli("seeds.py:Uniform01", "--output-format", "sarif").output)
    jsonschema.validate(sarif, schema)
    sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sarif, schema)


def test_github_annotations(project):
    r = cli("seeds.py:Zeros", "--output-format", "github")
    lines = r.output.splitlines()
    assert len(lines) == 2
    line = line_of("nn.init.zeros_(layer.weight)")
    assert lines[0].startswith(f"::error file=seeds.py,line={line},title=IC101 constant-weights::net.0 (Linear 784→256")
    assert "%0Afix: " in lines[0]  # the fix on its own line of the annotation


def test_findings_without_a_source_point_at_the_target_file_line_1():
    import torch

    from initcheck import diagnose
    from initcheck.formats import concise, github, sarif

    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.nn.init.zeros_(net[0].weight)
    report = diagnose(net, target="pkg/inst.py:net")  # built here, not by the CLI: no source line known
    assert report.findings and all(f.source is None for f in report.findings)
    assert github.write(Run((report,))).startswith("::error file=pkg/inst.py,line=1,title=IC101")
    assert concise.write(Run((report,))).startswith("pkg/inst.py:1:1: IC101")
    phys = json.loads(sarif.write(Run((report,))))["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert phys == {"artifactLocation": {"uri": "pkg/inst.py"}, "region": {"startLine": 1}}


def test_junit_has_one_testcase_per_model(project):
    r = cli("seeds.py:He", "seeds.py:Zeros", "seeds.py:Nope", "--output-format", "junit")
    suite = ET.fromstring(r.stdout)  # the load error's line went to stderr
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"seeds.py:He", "seeds.py:Zeros", "seeds.py:Nope"}
    assert cases["seeds.py:He"].find("failure") is None
    assert "IC101" in cases["seeds.py:Zeros"].find("failure").text
    assert cases["seeds.py:Nope"].find("error") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")


def test_output_file_quiet_and_statistics(project):
    r = cli("seeds.py:Uniform01", "--output-format", "json", "--output-file", "report.json")
    assert r.exit_code == 1 and r.output == ""
    assert json.loads((project / "report.json").read_text())["models"][0]["target"] == "seeds.py:Uniform01"
    quiet = cli("seeds.py:Uniform01", "--quiet")
    assert "rec std" not in quiet.output and "errors," not in quiet.output and "IC102 [error]" in quiet.output
    stats = cli("seeds.py:Uniform01", "--statistics")
    assert stats.output.splitlines() == ["    3  IC102  [error] non-centered-weights",
                                         "    3  IC103  [warning] weight-variance-mismatch",
                                         "    1  IC201  [error] signal-explodes"]


class Tty:
    def isatty(self):
        return True


def test_color_only_when_asked_and_never_with_no_color(project, monkeypatch):
    import sys

    from initcheck.options import settings_from
    from initcheck.run import _color

    assert "\x1b[" not in cli("seeds.py:Zeros").output  # not a terminal
    assert "\x1b[31m" in cli("seeds.py:Zeros", "--color", "always").output  # errors in red
    monkeypatch.setattr(sys, "stdout", Tty())
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _color(settings_from()) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert _color(settings_from()) is False
    assert _color(settings_from(None, {"color": "never"})) is False


def test_output_file_is_replaced_whole_and_leaves_no_temporary_file(project):
    report = project / "report.json"
    report.write_text("an older report, longer than nothing\n" * 1000)
    r = cli("seeds.py:Uniform01", "--output-format", "json", "--output-file", "report.json")
    assert r.exit_code == 1
    assert json.loads(report.read_text())["models"][0]["target"] == "seeds.py:Uniform01"
    assert sorted(p.name for p in project.iterdir() if "initcheck-tmp" in p.name) == []


def test_output_file_into_a_missing_folder_is_one_line(project):
    r = cli("seeds.py:Uniform01", "--output-file", "no/such/dir/report.txt")
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"initcheck: {os.path.join('no', 'such', 'dir', 'report.txt')}: cannot be written: its directory does not exist"]


def test_json_writes_number_arrays_on_one_line_and_never_touches_a_string():
    from initcheck.formats.json_report import _flat_number_lists

    payload = {"shape": [256, 784], "counts": [0, 3, -1.5e-07, None], "message": "net[1,2] and\\n[3,\n4]",
               "nested": [[1, 2], ["a", 1]]}
    text = _flat_number_lists(json.dumps(payload, indent=2))
    assert json.loads(text) == payload
    assert '"shape": [256, 784]' in text and '"counts": [0, 3, -1.5e-07, null]' in text
    assert json.dumps(payload["message"]) in text  # the string, escapes and all, as json wrote it
