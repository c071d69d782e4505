"""loader and discover: real code loads as it would run, and every failure is one line."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

from initcheck.discover import defines_module, model_files
from initcheck.errors import ConstructionError, NothingToCheck, TargetImportError, TargetSyntaxError
from initcheck.loader import load, load_all, nothing_to_check, package_root, stdout_to_stderr

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fx(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


@pytest.fixture
def clean_modules():
    """Packages a test imports are removed from sys.modules after it (global state restored)."""
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if not name.startswith("initcheck"):  # the targets' modules, not initcheck's lazily imported own
            del sys.modules[name]
    assert sys.path == path


def test_argparse_at_import_is_named_as_such_and_argv_is_restored(capsys, clean_modules):
    argv = list(sys.argv)
    target = fx("argv_required.py") + ":Generator"
    result = load_all(target)
    assert sys.argv == argv
    assert result.loaded == ()
    [err] = result.failed
    assert isinstance(err, TargetImportError)
    # argparse's prog is argv[0]'s name: the file, not pytest
    assert err.detail == (f"importing {fx('argv_required.py')} called sys.exit(2) (it parses its command line at import): "
                          "argv_required.py: error: the following arguments are required: --dataset")
    assert capsys.readouterr() == ("", "")  # argparse's usage text is not printed as if it were initcheck's


def test_argv_is_just_the_file_while_the_target_is_imported(clean_modules):
    argv = list(sys.argv)  # pytest's own options: argparse would reject them
    [loaded] = load(fx("argv_defaults.py") + ":Net")
    assert loaded.model.fc.out_features == 6
    module = sys.modules[type(loaded.model).__module__]
    seen = module.SEEN_ARGV
    assert seen == [fx("argv_defaults.py")]
    assert sys.argv == argv


def test_an_exit_without_argparse_says_to_guard_the_script(clean_modules):
    [err] = load_all(fx("exits_at_import.py")).failed
    assert "called sys.exit(3) (guard its script code with `if __name__ == \"__main__\":`)" in err.line()


def test_an_exit_while_building_is_one_line(tmp_path, clean_modules):
    path = tmp_path / "builds_argv.py"
    path.write_text(textwrap.dedent("""
        import argparse
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                p = argparse.ArgumentParser()
                p.add_argument("--lr", required=True)
                p.parse_args()
    """))
    [err] = load_all(f"{path}:Net").failed
    assert isinstance(err, ConstructionError)
    assert err.detail == ("building it called sys.exit(2) (it parses its command line when built): "
                          "builds_argv.py: error: the following arguments are required: --lr")


def test_prints_while_importing_building_and_running_go_to_stderr(capsys, clean_modules):
    [loaded] = load(fx("prints.py") + ":Net")
    with stdout_to_stderr():
        loaded.model(torch.zeros(1, 4))
    out, err = capsys.readouterr()
    assert out == ""
    # Linear(4, 2): 4*2 weights + 2 biases, counted by the model itself
    assert "loading prints.py" in err and "number of parameters: 10" in err and "forward!" in err


def test_relative_imports_load_as_package_module(clean_modules):
    path = fx("relpkg", "sub", "model.py")
    assert package_root(path) == (FIXTURES, "relpkg.sub.model")
    [loaded] = load(path + ":Model")
    assert loaded.model.block.fc.in_features == 7  # WIDTH from `from . import helpers`
    assert type(loaded.model).__module__ == "relpkg.sub.model"


def test_a_file_outside_a_package_has_no_package_root(tmp_path):
    (tmp_path / "m.py").write_text("")
    assert package_root(str(tmp_path / "m.py")) is None


def test_a_package_named_like_an_imported_module_is_one_clear_line(tmp_path, clean_modules):
    pkg = tmp_path / "json"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text("import torch.nn as nn\nclass Net(nn.Module):\n    pass\n")
    [err] = load_all(f"{pkg / 'model.py'}:Net").failed
    assert isinstance(err, TargetImportError)
    assert "its package 'json' has the name of a module already imported" in err.detail


def test_whole_file_one_failure_does_not_stop_the_others(clean_modules):
    path = fx("one_fails.py")
    result = load_all(path)
    assert [m.target for m in result.loaded] == [f"{path}:Good"]
    assert dict(result.skipped) == {f"{path}:NeedsArgs": "needs arguments: dim", f"{path}:Shuffle": "has no weights"}
    [err] = result.failed
    assert err.target == f"{path}:Broken" and err.detail == "building it raised RuntimeError: no GPU here"
    with pytest.raises(ConstructionError):
        load(path)  # the one-error API still raises the failure


def test_a_file_of_helpers_only_is_nothing_to_check(clean_modules):
    path = fx("only_helpers.py")
    result = load_all(path)
    assert result.loaded == () and result.failed == ()
    err = nothing_to_check(path, [result])
    assert isinstance(err, NothingToCheck)
    assert err.detail == ("no model with weights to check; skipped: ShuffleBlock (has no weights), "
                          "ShuffleNetV2 (needs arguments: net_size)")
    with pytest.raises(NothingToCheck):
        load(path)


def test_nothing_to_check_is_none_once_a_weight_is_there(clean_modules):
    assert nothing_to_check("x", [load_all(fx("one_fails.py"))]) is None


def test_a_folder_is_every_model_file_under_it(clean_modules):
    folder = fx("models_dir")
    result = load_all(folder)
    assert [m.target for m in result.loaded] == [
        f"{folder}/cnn.py:CNN", f"{folder}/nested/base.py:Base", f"{folder}/nested/derived.py:Head",
        f"{folder}/nested/derived.py:Wide"]
    assert [e.target for e in result.failed] == [f"{folder}/nested/broken.py:Fails"]


def test_dot_is_the_current_folder(monkeypatch, clean_modules):
    monkeypatch.chdir(fx("models_dir"))
    assert [m.target for m in load_all(".").loaded] == [
        "cnn.py:CNN", "nested/base.py:Base", "nested/derived.py:Head", "nested/derived.py:Wide"]


def test_a_folder_with_a_name_is_a_syntax_error():
    [err] = load_all(fx("models_dir") + ":Net").failed
    assert isinstance(err, TargetSyntaxError)


def test_a_folder_without_models_is_nothing_to_check(tmp_path):
    (tmp_path / "util.py").write_text("x = 1\n")
    [err] = load_all(str(tmp_path)).failed
    assert isinstance(err, NothingToCheck) and "no Python file under it defines an nn.Module subclass" in err.detail


MODEL = "import torch.nn as nn\nclass M(nn.Module):\n    pass\n"


def test_model_files_respects_gitignore_exclude_tests_and_environments(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("# outputs\nout/\nscratch_*.py\n!scratch_keep.py\n/top_only.py\n")
    files = ["a.py", "out/gen.py", "scratch_1.py", "scratch_keep.py", "top_only.py", "sub/top_only.py",
             "sub/local.py", "sub/kept.py", "test_model.py", "conftest.py", ".venv/lib/m.py", "venv/m.py",
             "skip_me/m.py", "sub/deep/excluded_file.py", "notes.txt"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(MODEL)
    (tmp_path / "sub" / ".gitignore").write_text("local.py\n")
    found = model_files(str(tmp_path), exclude=["skip_me", "excluded_*.py"])
    rel = [os.path.relpath(p, tmp_path) for p in found]
    assert rel == ["a.py", "scratch_keep.py", "sub/kept.py", "sub/top_only.py"]


def test_gitignore_of_the_repository_above_applies(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("legacy/\n")
    (tmp_path / "models" / "legacy").mkdir(parents=True)
    (tmp_path / "models" / "legacy" / "old.py").write_text(MODEL)
    (tmp_path / "models" / "new.py").write_text(MODEL)
    assert [os.path.basename(p) for p in model_files(str(tmp_path / "models"))] == ["new.py"]


@pytest.mark.parametrize("text, expected", [
    ("import torch.nn as nn\nclass A(nn.Module):\n    pass\n", True),
    ("import torch\nclass A(torch.nn.Module):\n    pass\n", True),
    ("class B(A):\n    pass\nclass A(Module):\n    pass\n", True),  # a local base defined further down
    ("class A(Generic[T]):\n    pass\ndef f():\n    return 1\n", False),
    ("class A(nn.Module:\n", False),  # does not parse: not a model file
    ("def build():\n    return nn.Linear(2, 2)\n", False),
])
def test_defines_module_reads_without_importing(tmp_path, text, expected):
    (tmp_path / "f.py").write_text(text)
    assert defines_module(str(tmp_path / "f.py")) is expected
