"""Inline suppressions: `# initcheck: ignore[CODE] reason` on the line that wrote the weight."""

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from initcheck import fix
from initcheck.cli import main
from initcheck.findings import RULES, Finding, Severity
from initcheck.provenance import recorded
from initcheck.suppressions import UNUSED, apply, parse_line

MODEL = """
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = nn.Linear(16, 4)
            nn.init.uniform_(self.a.weight, 0.0, 1.0){a_comment}
            nn.init.normal_(self.b.weight, 0.0, 1.0){b_comment}

        def forward(self, x):
            return self.b(self.a(x).relu())
"""


def model(tmp_path, a_comment="", b_comment=""):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(MODEL.format(a_comment=a_comment, b_comment=b_comment)))
    return path


def run(tmp_path, *args):
    return CliRunner().invoke(main, [f"{tmp_path / 'net.py'}:Net", "--output-format", "json", *args])


def codes(result, layer=None):
    findings = json.loads(result.stdout)["models"][0]["findings"]
    return sorted(f["code"] for f in findings if layer is None or f["layer"] == layer)


def test_the_model_has_findings_on_both_lines(tmp_path):
    model(tmp_path)
    r = run(tmp_path)
    assert "IC102" in codes(r, "a.weight") and "IC103" in codes(r, "b.weight")


def test_a_comment_suppresses_its_code_on_that_parameter_only(tmp_path):
    model(tmp_path)
    before = codes(run(tmp_path), "a.weight")
    model(tmp_path, a_comment="  # initcheck: ignore[IC102] uniform on purpose")
    r = run(tmp_path)
    assert codes(r, "a.weight") == [c for c in before if c != "IC102"]
    assert "IC103" in codes(r, "b.weight")


def test_bare_ignore_suppresses_every_code_and_lists_can_name_several(tmp_path):
    model(tmp_path, a_comment="  # initcheck: ignore")
    assert codes(run(tmp_path), "a.weight") == []
    model(tmp_path, a_comment="  # initcheck: ignore[IC102, ic103]")
    assert not {"IC102", "IC103"} & set(codes(run(tmp_path), "a.weight"))


def test_show_suppressed_lists_them_with_their_reason(tmp_path):
    model(tmp_path, a_comment="  # initcheck: ignore[IC102] uniform on purpose")
    r = run(tmp_path, "--show-suppressed")
    suppressed = json.loads(r.stdout)["models"][0]["suppressed"]
    assert {(s["code"], s["layer"], s["reason"]) for s in suppressed} == {("IC102", "a.weight", "uniform on purpose")}
    text = CliRunner().invoke(main, [f"{tmp_path / 'net.py'}:Net", "--show-suppressed"]).output
    assert "IC102 [suppressed] a.weight" in text and "(reason: uniform on purpose)" in text


def test_an_unused_suppression_is_a_finding(tmp_path):
    model(tmp_path, b_comment="  # initcheck: ignore[IC101]")  # b is not constant: nothing to suppress
    r = run(tmp_path)
    findings = json.loads(r.stdout)["models"][0]["findings"]
    unused = [f for f in findings if f["code"] == UNUSED]
    assert len(unused) == 1 and unused[0]["source"] == f"{tmp_path / 'net.py'}:10"
    assert "ignore[IC101]" in unused[0]["message"] and unused[0]["severity"] == "warning"
    assert UNUSED not in codes(run(tmp_path, "--ignore", UNUSED))


def test_unused_suppression_is_a_registered_documented_rule():
    rule = RULES[UNUSED]
    assert rule.name == "unused-suppression" and rule.severity == Severity.WARNING and rule.why
    assert "post-stage" in rule.check.__doc__


@pytest.mark.parametrize("line,expected", [
    ("x = 1  # initcheck: ignore[IC103]", (("IC103",), "")),
    ("x = 1  # initcheck: ignore[IC103,IC101] why not", (("IC103", "IC101"), "why not")),
    ("x = 1  #initcheck:ignore", ((), "")),
    ("x = 1  # noqa", None),
    ("x = 1  # initcheck: ignore[IC1]  # other", (("IC1",), "")),
])
def test_parse_line(line, expected):
    assert parse_line(line) == expected


def test_apply_without_files_judges_only_the_finding_lines(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("a = 1  # initcheck: ignore[IC103]\nb = 2  # initcheck: ignore[IC101]\nc = 3  # initcheck: ignore\n")
    f1 = Finding("IC103", Severity.WARNING, "a.weight", "m", "", f"{path}:1")
    f2 = Finding("IC103", Severity.WARNING, "b.weight", "m", "", f"{path}:2")
    out = apply([f1, f2])
    assert out.kept == (f2,) and [f for f, _ in out.suppressed] == [f1]
    assert [u.source for u in out.unused] == [f"{path}:2"]  # line 3 is not judged: no finding points there
    everything = apply([f1, f2], files=[str(path)])
    assert [u.source for u in everything.unused] == [f"{path}:2", f"{path}:3"]


def test_a_comment_on_the_line_that_built_the_layer_suppresses_too(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("layer = make()  # initcheck: ignore[IC103] built small\nnn.init.normal_(w)\n")
    f = Finding("IC103", Severity.WARNING, "head.weight", "m", "", f"{path}:2")  # rewritten on line 2
    assert apply([f]).kept == (f,)
    out = apply([f], built={"head.weight": f"{path}:1"})
    assert out.kept == () and out.suppressed[0][1].reason == "built small" and out.unused == ()


def test_a_stale_code_in_a_list_is_named(tmp_path):
    model(tmp_path, a_comment="  # initcheck: ignore[IC102,IC101] uniform on purpose")  # a is not constant
    findings = json.loads(run(tmp_path).stdout)["models"][0]["findings"]
    unused = [f for f in findings if f["code"] == UNUSED]
    assert len(unused) == 1 and unused[0]["message"].startswith("IC101 in `# initcheck: ignore[IC102,IC101]`")
    assert "IC102" not in codes(run(tmp_path), "a.weight")


FIXED = """
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
            nn.init.uniform_(self.a.weight, -3.0, 3.0, generator=torch.Generator().manual_seed(0)){a_comment}
            for layer in self.b[::2]:
                nn.init.normal_(layer.weight, 0.0, 1.0)

        def forward(self, x):
            return self.b(self.a(x).relu())
"""
# torch's own draw of a.weight; var 3, 24x He's 2/16 (IC103), and the N(0, 1) layers after it make the
# signal explode (IC201), so the static step would redraw every mis-scaled weight, a included
A_DRAW = torch.empty(16, 16).uniform_(-3.0, 3.0, generator=torch.Generator().manual_seed(0))
B = ("b.0.weight", "b.2.weight", "b.4.weight")


def fixed_model(tmp_path, a_comment="  # initcheck: ignore[IC103] large on purpose"):
    path = tmp_path / "fixnet.py"
    path.write_text(textwrap.dedent(FIXED.format(a_comment=a_comment)))
    return path


def build(path):
    """The model built from its file while recording where each parameter was written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fixnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with recorded() as sites:
        model = module.Net()
    return model, sites.for_model(model)


@pytest.mark.parametrize("data_driven", [False, True])
def test_fix_leaves_a_weight_whose_finding_a_comment_suppresses_untouched(tmp_path, data_driven):
    model, sources = build(fixed_model(tmp_path))
    assert torch.equal(model.a.weight, A_DRAW)
    x = torch.randn(64, 16) if data_driven else None
    report = fix(model, x, sources=sources, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.a.weight, A_DRAW)  # bit for bit
    assert "a.weight" not in report.fix.reinitialized and set(B) <= set(report.fix.reinitialized)
    if data_driven:
        assert "a.weight" not in {s.param for s in report.fix.data_driven.layers}


def test_without_sources_the_commented_weight_is_fixed(tmp_path):
    model, _ = build(fixed_model(tmp_path))
    report = fix(model, generator=torch.Generator().manual_seed(1))
    assert "a.weight" in report.fix.reinitialized and not torch.equal(model.a.weight, A_DRAW)


@pytest.mark.parametrize("data_driven", [False, True])
def test_cli_fix_writes_the_suppressed_weight_unchanged_and_fixes_the_others(tmp_path, data_driven):
    path = fixed_model(tmp_path)
    out = tmp_path / "fixed.pt"
    args = [f"{path}:Net", "--fix", "--fix-output", str(out), *(["--data-driven"] if data_driven else [])]
    r = CliRunner().invoke(main, args)
    assert r.exit_code in (0, 1), r.output
    state = torch.load(out)
    assert torch.equal(state["a.weight"], A_DRAW)  # bit for bit
    # the b layers were N(0, 1), 8x their schemes' variance: after the fix their std is within 2x of
    # He's sqrt(2/16) (relu) and Xavier's sqrt(2/20) (the output)
    for name, std in zip(B, (0.5 ** 0.5 / 2, 0.5 ** 0.5 / 2, 0.1 ** 0.5)):
        assert std / 2 < state[name].std().item() < std * 2, name
