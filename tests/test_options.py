"""Options: config discovery, merging (config, then CLI), validation in one place, --show-settings.
End to end through the command line (click's CliRunner)."""

import dataclasses
import os
import shutil
import textwrap

import pytest
from click.testing import CliRunner

from initcheck import findings
from initcheck.cli import main
from initcheck.configfile import Config, find_config, read_config
from initcheck.findings import Selection, Setting, Severity
from initcheck.inputspec import parse_input
from initcheck.options import settings_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "examples", "seeds.py")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a copy of the seed models, as the current directory."""
    shutil.copy(SEEDS, tmp_path / "seeds.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args):
    return CliRunner().invoke(main, list(args))


def pyproject(folder, body):
    (folder / "pyproject.toml").write_text(textwrap.dedent(body))
    return str(folder / "pyproject.toml")


def test_targets_and_ignores_from_pyproject(project):
    path = pyproject(project, """
        [tool.initcheck]
        targets = ["seeds.py:PyTorchDefault", "seeds.py:He"]
        fail-on = "warning"
        [tool.initcheck.per-layer-ignores]
        "net.0.*" = ["IC103"]
    """)
    settings = settings_from(read_config(path))
    assert settings.selection.per_layer_ignore == (("IC103", "net.0.*"),)
    assert settings.fail_on == Severity.WARNING
    r = cli()
    assert r.exit_code == 1  # net.2 still warns, and fail-on is warning
    assert "net.0 (Linear" not in r.output and "net.2 (Linear" in r.output


@pytest.mark.parametrize("body,expected", [
    ('input-dtype = "int8"', 'input-dtype = "int8" is not a dtype'),
    ("ignore = 5", "ignore = 5 is not valid; expected a list of codes"),
    ("fail-on = 3", "fail-on = 3 is not valid; expected one of error, warning, info, never"),
    ('targets = "x"', 'targets = "x" is not valid; expected a list of strings'),
    ("targetz = []", "unknown key 'targetz'; expected one of targets,"),
    ('fail-on = "fatal"', 'fail-on = "fatal" is not a severity (one of info, warning, error, never)'),
    ("seed = 1.5", "seed = 1.5 is not valid; expected an integer"),
    ('mode = "test"', 'mode = "test" is not a mode (one of train, eval)'),
    ('inputs = ["1,,3"]', 'inputs = "1,,3" is not a shape'),
    ("[tool.initcheck.thresholds]\nno-such-setting = 1.0", "thresholds.no-such-setting is not a setting"),
    ("targets = [", "not valid TOML"),
])
def test_a_bad_config_value_is_one_line_naming_file_key_value_and_what_is_allowed(project, body, expected):
    path = pyproject(project, "[tool.initcheck]\n" + body + "\n")
    r = cli("seeds.py:He")
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith(f"initcheck: {path}: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("args,expected", [
    (["--select", "IC999"], "unknown code(s) or prefix(es) IC999"),
    (["--ignore", "IC101,XX1"], "unknown code(s) or prefix(es) XX1"),
    (["--fail-on", "3"], "--fail-on 3: is not a severity"),
    (["--output-format", "xml"], "--output-format xml: is not a format (one of full, concise, json"),
    (["--input", "1,,3"], "--input 1,,3: is not a shape"),
    (["--input", "0,3"], "every size must be a positive integer"),
    (["--input", "x=1,3:int8"], "known dtype"),
    (["--input-dtype", "int8"], "is not a dtype"),
    (["--device", "tpu"], "is not a device"),
    (["--mode", "inference"], "--mode inference: is not a mode (one of train, eval)"),
    (["--inputs", "make.py"], "write it as path/to/file.py:function"),
])
def test_a_bad_option_is_one_line_and_exit_2(project, args, expected):
    r = cli("seeds.py:He", *args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.output


def test_unknown_codes_list_the_valid_ones(project):
    pyproject(project, '[tool.initcheck]\nignore = ["XX1"]\n')
    r = cli("seeds.py:He")
    assert r.exit_code == 2 and "XX1" in r.output
    assert "valid codes: " in r.output and all(code in r.output for code in ("IC001", "IC101", "IC003"))


def test_code_flags_repeat_and_comma_lists_merge(project):
    # Uniform01 has IC102, IC201 and IC103: each ignored by a different flag or list item
    r = cli("seeds.py:Uniform01", "--ignore", "IC102", "--ignore", "IC201,IC103", "--output-format", "concise")
    assert r.exit_code == 0 and r.output == "", r.output
    only = cli("seeds.py:Uniform01", "--select", "IC102", "--select", "IC103", "--output-format", "concise")
    assert {line.split()[1] for line in only.output.splitlines()} == {"IC102", "IC103"}


def test_extend_select_and_ignore_add_to_the_config(project):
    pyproject(project, """
        [tool.initcheck]
        ignore = ["IC1"]
        extend-ignore = ["IC201"]
    """)
    base = cli("seeds.py:Uniform01", "--output-format", "concise")
    assert base.exit_code == 0 and base.output == ""  # IC1 and IC201 are ignored by the config
    r = cli("seeds.py:Uniform01", "--extend-select", "IC102", "--output-format", "concise")
    assert {line.split()[1] for line in r.output.splitlines()} == {"IC102"}
    shown = cli("--show-settings", "--extend-ignore", "IC202")
    assert "extend_ignore=('IC201', 'IC202')" in shown.output


def test_settings_are_frozen_and_cli_overrides_config():
    config = Config("p.toml", {"fail-on": "warning", "seed": 3, "select": ["IC1"]})
    s = settings_from(config, {"seed": 7, "select": ("IC2",)})
    assert (s.fail_on, s.seed, s.selection.select) == (Severity.WARNING, 7, ("IC2",))
    assert s.origins["fail_on"] == "config: p.toml" and s.origins["seed"] == "command line"
    assert s.origins["device"] == "default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]
    assert isinstance(s.selection, Selection)


def test_config_discovery_parses_toml_and_prefers_the_nearest(project):
    pyproject(project, '[tool.initcheck]\nfail-on = "info"\n')
    sub = project / "pkg" / "sub"
    sub.mkdir(parents=True)
    # mentions the table only in a comment: not a [tool.initcheck] table, so the parent's is used
    (project / "pkg" / "pyproject.toml").write_text("# see [tool.initcheck] in the root\n[tool.other]\nx = 1\n")
    assert find_config(str(sub)) == str(project / "pyproject.toml")
    (project / "pkg" / "initcheck.toml").write_text('fail-on = "warning"\n')
    assert find_config(str(sub)) == str(project / "pkg" / "initcheck.toml")
    os.chdir(sub)
    r = cli("--show-settings")
    assert "fail_on = warning" in r.output and "initcheck.toml" in r.output


def test_show_settings_says_where_each_value_came_from(project):
    path = pyproject(project, '[tool.initcheck]\ntargets = ["seeds.py:He"]\nfail-on = "warning"\n')
    r = cli("--show-settings", "--seed", "5", "--input", "2,784")
    assert r.exit_code == 0, r.output
    lines = {line.split(" = ")[0]: line for line in r.output.splitlines()}
    assert lines["fail_on"].endswith(f"(config: {path})")
    assert lines["seed"] == "seed = 5  (command line)"
    assert lines["inputs"] == "inputs = ('2,784',)  (command line)"
    assert lines["device"] == "device = auto  (default)"


@pytest.fixture
def test_setting():
    """A threshold registered for this test only (the rules register theirs the same way)."""
    setting = Setting("test-band", 4.0, "a band used by no rule")
    findings.SETTINGS[setting.name] = setting
    yield setting
    del findings.SETTINGS[setting.name]


def test_thresholds_table_is_validated_and_shown(project, test_setting):
    pyproject(project, "[tool.initcheck.thresholds]\ntest-band = 2.5\n")
    s = settings_from(read_config(str(project / "pyproject.toml")))
    assert s.threshold("test-band") == 2.5 and s.thresholds["test-band"] == 2.5
    assert set(s.thresholds) == set(findings.SETTINGS)  # every registered setting, configured or default
    r = cli("--show-settings")
    assert "'test-band': 2.5" in r.output
    pyproject(project, '[tool.initcheck.thresholds]\ntest-band = "wide"\n')
    bad = cli("--show-settings")
    assert bad.exit_code == 2 and 'thresholds.test-band = "wide" is not valid; expected a number' in bad.output


def test_a_threshold_defaults_to_its_registered_value(test_setting):
    assert settings_from().threshold("test-band") == test_setting.default
    assert settings_from().thresholds["test-band"] == test_setting.default


def test_an_unknown_api_option_is_named():
    from initcheck.errors import UsageError

    with pytest.raises(UsageError, match="fail_onn: is not an option"):
        settings_from(None, {"fail_onn": "warning"})


@pytest.mark.parametrize("spec,expected", [
    ("1,80,3000", (None, (1, 80, 3000), None)),
    ("tokens=1,16:int64", ("tokens", (1, 16), "int64")),
    ("2x3", (None, (2, 3), None)),
])
def test_input_specs(spec, expected):
    assert parse_input(spec) == expected


@pytest.mark.parametrize("spec", ["1,,3", "0,3", "-1,3", "", "a,b", "1,3:int8", "1 2=3"])
def test_bad_input_specs(spec):
    with pytest.raises(ValueError):
        parse_input(spec)


def test_named_inputs_reach_the_forward(project):
    (project / "tok.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Tokens(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(50, 16)
                self.head = nn.Linear(16, 5)
            def forward(self, tokens):
                if tokens.sum() < 0:  # data-dependent: fx cannot trace, so the input is needed
                    tokens = -tokens
                return self.head(self.emb(tokens))
    """))
    r = cli("tok.py:Tokens", "--input", "tokens=2,7:int64")
    assert r.exit_code == 0, r.output
    float_ids = cli("tok.py:Tokens", "--input", "tokens=2,7:float32")
    assert float_ids.exit_code == 2 and "forward failed in emb" in float_ids.output  # the float ids reached it


@pytest.mark.parametrize("cli_args,expected", [
    ({"input_shape": "2,5"}, ("2,5",)),  # the command line's input-shape replaces the config's inputs
    ({"inputs": ("3,4",), "input_shape": "2,5"}, ("2,5", "3,4")),  # 0.1's input-shape is the first input
    ({"input_shape": "2,5", "inputs": ("3,4",)}, ("2,5", "3,4")),
])
def test_input_shape_is_the_first_input(cli_args, expected):
    s = settings_from(Config("p.toml", {"inputs": ["7,7"]}), cli_args)
    assert s.inputs == expected and s.origins["inputs"] == "command line"


def test_the_api_takes_the_same_settings_as_the_command_line():
    import seeds

    from initcheck import diagnose
    from initcheck.options import settings_from

    settings = settings_from(None, {"ignore": ("IC103",)})
    codes = {f.code for f in diagnose(seeds.PyTorchDefault(), settings=settings).findings}
    assert "IC103" not in codes and "IC103" in {f.code for f in diagnose(seeds.PyTorchDefault()).findings}
