"""The CLI with click's CliRunner: output, exit codes, one-line errors."""

import io
import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from initcheck.cli import main
from initcheck.progress import Bars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "examples", "seeds.py")


def run(*args, cwd=None):
    runner = CliRunner()
    if cwd:
        old = os.getcwd()
        os.chdir(cwd)
    try:
        return runner.invoke(main, list(args))
    finally:
        if cwd:
            os.chdir(old)


def write(tmp_path, text, name="model.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_clean_model_exits_0_with_a_table(tmp_path):
    r = run(f"{SEEDS}:He", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "fan_in" in r.output and "0 errors" in r.output


def test_findings_exit_1(tmp_path):
    r = run(f"{SEEDS}:Zeros", cwd=tmp_path)
    assert r.exit_code == 1
    assert "IC101 [error]" in r.output and "fix: nn.init.kaiming_normal_(model.net[0].weight" in r.output


def test_fail_on_warning_and_never(tmp_path):
    assert run(f"{SEEDS}:PyTorchDefault", cwd=tmp_path).exit_code == 0
    assert run(f"{SEEDS}:PyTorchDefault", "--fail-on", "warning", cwd=tmp_path).exit_code == 1
    assert run(f"{SEEDS}:Zeros", "--fail-on", "never", cwd=tmp_path).exit_code == 0


def test_json_output(tmp_path):
    r = run(f"{SEEDS}:He", f"{SEEDS}:Zeros", "--format", "json", cwd=tmp_path)
    data = json.loads(r.output)
    assert [m["target"] for m in data["models"]] == [f"{SEEDS}:He", f"{SEEDS}:Zeros"]
    assert r.exit_code == 1


def test_a_whole_file_checks_every_public_class(tmp_path):
    r = run(SEEDS, "--format", "json", cwd=tmp_path)
    names = [m["target"].rsplit(":", 1)[1] for m in json.loads(r.output)["models"]]
    assert "He" in names and "Zeros" in names and "_Seed" not in names


def test_a_function_and_an_instance(tmp_path):
    path = write(tmp_path, """
        import torch.nn as nn
        def build():
            return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        net = build()
    """)
    assert run(f"{path}:build", cwd=tmp_path).exit_code == 0
    assert run(f"{path}:net", cwd=tmp_path).exit_code == 0


def test_module_path_target(tmp_path):
    r = run("torch.nn:Identity", cwd=tmp_path)
    # importable by module path; an Identity has no weight, and a run that checked none is no pass
    assert r.exit_code == 2 and "no model with weights to check" in r.output, r.output


@pytest.mark.parametrize("target_body,target,expected", [
    ("", "missing.py:Net", "no such file: missing.py"),
    ("import torch.nn as nn\nclass Net(nn.Module): pass\n", "{path}:Nope", "has no attribute 'Nope'"),
    ("x = 3\n", "{path}:x", "is a int, not an nn.Module"),
    ("class Net: pass\n", "{path}:Net", "is a class but not an nn.Module subclass"),
    ("import nonexistent_pkg_xyz\n", "{path}:Net", "importing it raised ModuleNotFoundError"),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n", "{path}:Net", "Net() needs arguments"),
    ("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        raise RuntimeError('boom')\n", "{path}:Net", "building it raised RuntimeError: boom"),
    ("", "no_such_module_xyz:Net", "no module named 'no_such_module_xyz'"),
    ("", "a:b:c", "not a target"),
])
def test_bad_targets_exit_2_with_one_line(tmp_path, target_body, target, expected):
    path = write(tmp_path, target_body) if target_body else str(tmp_path / "model.py")
    r = run(target.format(path=path), cwd=tmp_path)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in r.output


def test_forward_failure_names_the_layer(tmp_path):
    path = write(tmp_path, """
        import torch, torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(8, 16)
                self.b = nn.Linear(32, 4)
            def forward(self, x):
                h = self.a(x)
                if h.sum() > 0:
                    pass
                return self.b(h)
    """)
    r = run(f"{path}:Net", cwd=tmp_path)
    assert r.exit_code == 2
    assert "forward failed in b" in r.output and "Traceback" not in r.output
    assert "Traceback" in run(f"{path}:Net", "--verbose", cwd=tmp_path).output


def test_input_shape_and_dtype(tmp_path):
    path = write(tmp_path, """
        import torch, torch.nn as nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(30, 8)
                self.fc = nn.Linear(8, 2)
            def forward(self, idx):
                h = self.emb(idx).mean(1)
                if h.sum() > 1e9:
                    h = h * 0
                return self.fc(h)
    """)
    r = run(f"{path}:Net", "--input-shape", "2,5", "--input-dtype", "int64", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    bad = run(f"{path}:Net", "--input-shape", "2,five", cwd=tmp_path)
    assert bad.exit_code == 2 and "is not a shape" in bad.output


def test_no_target_and_no_config(tmp_path):
    r = run(cwd=tmp_path)
    assert r.exit_code == 2 and "no targets" in r.output


def test_list_rules():
    r = run("--list-rules")
    assert r.exit_code == 0 and "IC101" in r.output and "signal-explodes" in r.output


def test_fix_writes_a_state_dict_and_never_overwrites(tmp_path):
    out = tmp_path / "fixed.pt"
    r = run(f"{SEEDS}:Uniform01", "--fix", "--fix-output", str(out), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    import sys

    import torch
    sys.path.insert(0, os.path.dirname(SEEDS))
    import seeds
    model = seeds.Uniform01()
    model.load_state_dict(torch.load(out))
    from initcheck import diagnose
    assert diagnose(model).ok
    again = run(f"{SEEDS}:Uniform01", "--fix", "--fix-output", str(out), cwd=tmp_path)
    assert again.exit_code == 2 and "pass --force" in again.output
    assert run(f"{SEEDS}:Uniform01", "--fix", "--fix-output", str(out), "--force", cwd=tmp_path).exit_code == 0
    assert run(f"{SEEDS}:Uniform01", "--fix", cwd=tmp_path).exit_code == 2


def test_probe_option(tmp_path):
    r = run(f"{SEEDS}:TanhNormal1", "--probe", "--device", "cpu", cwd=tmp_path)
    assert r.exit_code == 1 and "probe (measured" in r.output and "IC302" in r.output


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_draw_each_stage_to_its_end_on_a_terminal():
    stream = FakeTerminal()
    bars = Bars(stream)
    for stage, total in (("scaling", 3), ("verifying", 3)):
        for done in range(1, total + 1):
            bars(stage, done, total)
    bars.close()
    text = stream.getvalue()
    assert "initcheck: scaling" in text and "initcheck: verifying" in text
    assert "3/3" in text and text.count("\n") == 2  # one finished line per stage
    assert text.endswith("\x1b[?25h\n")  # the cursor is shown again


def test_progress_bars_are_silent_off_a_terminal():
    stream = io.StringIO()
    bars = Bars(stream)
    bars("scaling", 1, 2)
    bars.close()
    assert stream.getvalue() == ""


def test_data_driven_fix_reports_its_passes(tmp_path):
    out = tmp_path / "fixed.pt"
    r = run(f"{SEEDS}:Uniform01", "--fix", "--data-driven", "--fix-output", str(out), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "3 layers scaled in 1 forward pass," in r.output  # one use each: the scaling pass measures the fixed model


def test_fix_into_a_missing_directory_is_refused_before_any_work(tmp_path):
    r = run(f"{SEEDS}:Uniform01", "--fix", "--fix-output", str(tmp_path / "no" / "such" / "dir" / "f.pt"))
    assert r.exit_code == 2 and "its directory does not exist" in r.output
    assert "before the fix" not in r.output and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", [["--probe"], ["--fix", "--fix-output", "f.pt"]], ids=["probe", "fix"])
def test_an_input_the_forward_rejects_is_the_users_error_in_one_line(tmp_path, extra):
    path = write(tmp_path, """
        from torch import nn
        class Tokens(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(50, 16)
                self.head = nn.Linear(16, 5)
            def forward(self, idx):
                return self.head(self.emb(idx))
    """)
    r = run(f"{path}:Tokens", "--input-shape", "2,7", "--input-dtype", "float32", *extra, cwd=tmp_path)
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("initcheck:")]
    assert len(errors) == 1 and "the forward pass failed on the example input" in errors[0], r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert not (tmp_path / "f.pt").exists()


def test_findings_lead_with_the_line_that_wrote_the_weight(tmp_path):
    with open(SEEDS) as f:
        line = next(n for n, text in enumerate(f, 1) if "nn.init.uniform_(layer.weight, 0.0, 1.0)" in text)
    r = run(f"{SEEDS}:Uniform01", "--format", "table", cwd=tmp_path)
    assert f"{SEEDS}:{line}: IC102 [error] net.0" in r.output, r.output
    payload = json.loads(run(f"{SEEDS}:Uniform01", "--format", "json", cwd=tmp_path).output)
    assert {f["source"] for f in payload["models"][0]["findings"] if f["code"] == "IC102"} == {f"{SEEDS}:{line}"}


def test_the_same_report_on_every_run(tmp_path):
    first = run(f"{SEEDS}:TanhNormal001", cwd=tmp_path).output
    assert first == run(f"{SEEDS}:TanhNormal001", cwd=tmp_path).output
    assert first != run(f"{SEEDS}:TanhNormal001", "--seed", "1", cwd=tmp_path).output  # the weights' own numbers


def test_dash_o_still_works_for_one_release_with_a_deprecation_line(tmp_path):
    out = tmp_path / "fixed.pt"
    r = run(f"{SEEDS}:Uniform01", "--fix", "-o", str(out), cwd=tmp_path)
    assert r.exit_code == 0 and out.exists(), r.output
    assert "initcheck: -o/--output is deprecated and will be removed in 0.3; use --fix-output" in r.stderr
    assert "deprecated" not in run(f"{SEEDS}:Uniform01", "--fix", "--fix-output", str(tmp_path / "g.pt"), cwd=tmp_path).stderr


def test_fix_output_without_fix_is_refused(tmp_path):
    r = run(f"{SEEDS}:He", "--fix-output", str(tmp_path / "f.pt"), cwd=tmp_path)
    assert r.exit_code == 2 and "--fix-output: is only used with --fix" in r.output


def test_exclude_skips_matching_targets(tmp_path):
    r = run(SEEDS, "--exclude", "*:Zeros", "--exclude", "*Uniform*", "--output-format", "json", cwd=tmp_path)
    names = {m["target"].rsplit(":", 1)[1] for m in json.loads(r.stdout)["models"]}
    assert "He" in names and "Zeros" not in names and not any("Uniform" in n for n in names)


def _python(code: str) -> list[str]:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    code = ("import sys\nfrom initcheck.cli import main\n"
            f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    assert _python(code)[-2:] == ["TORCH", "False"]


def test_the_lazy_package_still_gives_the_functions():
    # importing the fix module first must not shadow initcheck.fix, the function users call
    code = "import initcheck.fix, initcheck.probe, initcheck\nprint(callable(initcheck.fix), callable(initcheck.probe), initcheck.plan.__name__)"
    assert _python(code) == ["True", "True", "plan"]


def test_mode_flag_reaches_the_report(tmp_path):
    path = write(tmp_path, """
        import torch.nn as nn
        class Net(nn.Sequential):
            def __init__(self):
                super().__init__(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    """)
    default = json.loads(run(f"{path}:Net", "--output-format", "json", cwd=tmp_path).output)["models"][0]
    asked = json.loads(run(f"{path}:Net", "--mode", "eval", "--output-format", "json", cwd=tmp_path).output)["models"][0]
    assert default["mode"] == "train" and asked["mode"] == "eval"
    assert any("judged in eval mode" in n for n in asked["notes"])  # the model was built in training mode
