import os
import textwrap

from click.testing import CliRunner

from initcheck.cli import main
from initcheck.config import read

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_targets_and_ignores_from_pyproject(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "examples", "seeds.py")) as f:
        (tmp_path / "seeds.py").write_text(f.read())
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.initcheck]
        targets = ["seeds.py:PyTorchDefault", "seeds.py:He"]
        fail-on = "warning"
        [tool.initcheck.per-layer-ignores]
        "net.0.*" = ["IC103"]
    """))
    cfg = read(str(tmp_path / "pyproject.toml"))
    assert cfg.per_layer_ignores == (("IC103", "net.0.*"),)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 1  # net.2 still warns, and fail-on is warning
    assert "net.0 (Linear" not in r.output and "net.2 (Linear" in r.output


def test_unknown_key_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.initcheck]\ntargetz = []\n")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 2 and "unknown key(s) in [tool.initcheck]: targetz" in r.output
