"""The hook, run for real by pre-commit in a temporary git repository."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pre_commit() -> list[str] | None:
    exe = shutil.which("pre-commit")
    if exe:
        return [exe]
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "pre_commit"]


def _hooks() -> dict[str, dict]:
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ROOT, ".pre-commit-hooks.yaml"), encoding="utf-8") as fh:
        return {h["id"]: h for h in yaml.safe_load(fh)}


def test_both_hooks_are_declared():
    hooks = _hooks()
    assert hooks["initcheck"]["language"] == "python" and hooks["initcheck-system"]["language"] == "system"
    for hook in hooks.values():
        assert hook["entry"] == "initcheck" and hook["pass_filenames"] is False


def test_readme_documents_the_hooks_and_how_to_pin_them():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert "id: initcheck-system" in readme and "additional_dependencies" in readme
    assert "rev: v0.1.0" not in readme  # no such tag exists: the README says how to pin a commit instead
    assert "git rev-parse HEAD" in readme


MODEL = textwrap.dedent("""
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
""")


def _repo(tmp_path):
    repo = tmp_path / "user"
    repo.mkdir()
    (repo / "model.py").write_text(MODEL)
    (repo / "pyproject.toml").write_text('[tool.initcheck]\ntargets = ["model.py:Good"]\n')
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def git(*a):
        return subprocess.run(["git", *a], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    return repo, env, git


def end_to_end(test):
    """Slow, and only where pre-commit and a git checkout of initcheck (a worktree too) exist."""
    test = pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".git")), reason="needs the initcheck git checkout")(test)
    test = pytest.mark.skipif(_pre_commit() is None, reason="pre-commit is not installed")(test)
    return pytest.mark.slow(test)


@end_to_end
def test_system_hook_uses_the_projects_environment(tmp_path):
    repo, env, git = _repo(tmp_path)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # this venv's initcheck
    cmd = [*_pre_commit(), "try-repo", ROOT, "initcheck-system", "--all-files"]
    ok = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "Passed" in ok.stdout, ok.stdout + ok.stderr
    (repo / "pyproject.toml").write_text('[tool.initcheck]\ntargets = ["model.py:Good", "model.py:Bad"]\n')
    git("add", ".")
    bad = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "IC101" in bad.stdout


@end_to_end
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
