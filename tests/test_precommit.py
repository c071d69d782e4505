"""The hook, run for real by pre-commit in a temporary git repository."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def _pre_commit() -> list[str] | None:
    exe = shutil.which("pre-commit")
    if exe:
        return [exe]
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "pre_commit"]


@pytest.mark.skipif(_pre_commit() is None, reason="pre-commit is not installed")
@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git")), reason="needs the initcheck git checkout")
def test_hook_runs_in_a_real_pre_commit(tmp_path):
    repo = tmp_path / "user"
    repo.mkdir()
    (repo / "model.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Good(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 2)
            def forward(self, x):
                return self.fc(x)
        class Bad(Good):
            def __init__(self):
                super().__init__()
                self.hidden = nn.Linear(8, 8)
                nn.init.zeros_(self.hidden.weight)
            def forward(self, x):
                return self.fc(self.hidden(x).relu())
    """))
    (repo / "pyproject.toml").write_text('[tool.initcheck]\ntargets = ["model.py:Good"]\n')
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    # the hook's own environment must get the CPU wheel, not a CUDA build
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\n" if _torch_version().startswith("2.13") else "")
    env["PIP_CONSTRAINT"] = str(constraints)
    def git(*a):
        return subprocess.run(["git", *a], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    cmd = [*_pre_commit(), "try-repo", ROOT, "initcheck", "--all-files"]
    ok = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Passed" in ok.stdout

    (repo / "pyproject.toml").write_text('[tool.initcheck]\ntargets = ["model.py:Good", "model.py:Bad"]\n')
    git("add", ".")
    bad = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert bad.returncode == 1
    assert "IC101" in bad.stdout and "model.py:Bad" in bad.stdout


def _torch_version() -> str:
    import torch

    return torch.__version__
