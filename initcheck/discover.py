"""A folder target -> the model files under it: Python files that define an nn.Module subclass,
found by reading (ast), never by importing (a training script under the folder must not run),
leaving out what .gitignore and the `exclude` patterns name, tests, and virtual environments."""

from __future__ import annotations

import ast
import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass

# Folders never searched: environments, caches and build outputs hold other people's models.
SKIPPED_FOLDERS = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "env", ".env", ".tox", ".nox",
                             "node_modules", "site-packages", "build", "dist", ".eggs", ".mypy_cache", ".pytest_cache"})
# Files that define modules for tests or packaging, not models to check.
SKIPPED_FILES = ("test_*.py", "*_test.py", "conftest.py", "setup.py")
# Base classes that make a class a model without a local nn.Module ancestor.
MODULE_BASES = frozenset({"Module", "Sequential", "ModuleList", "ModuleDict", "LightningModule", "PreTrainedModel"})


@dataclass(frozen=True)
class Ignore:
    """One .gitignore line, relative to the folder of its file."""

    base: str  # the folder holding the .gitignore
    pattern: str
    negated: bool
    folder_only: bool
    anchored: bool

    def matches(self, path: str, is_dir: bool) -> bool:
        if self.folder_only and not is_dir:
            return False
        rel = os.path.relpath(path, self.base).replace(os.sep, "/")
        if rel.startswith(".."):
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.pattern) or _glob_star(rel, self.pattern)
        # a pattern without a slash matches a name at any depth
        return fnmatch.fnmatchcase(os.path.basename(path), self.pattern) or _glob_star(rel, "**/" + self.pattern)


def _glob_star(rel: str, pattern: str) -> bool:
    """'**/' matches zero or more folders (fnmatch's '*' already crosses '/')."""
    return fnmatch.fnmatchcase(rel, pattern) or (pattern.startswith("**/") and fnmatch.fnmatchcase(rel, pattern[3:]))


def parse_gitignore(folder: str, text: str) -> list[Ignore]:
    """The patterns of one .gitignore (the common subset: comments, `!`, a trailing or leading `/`, `*`, `**`)."""
    out = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:] if negated else line
        folder_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line  # git: a slash anywhere but the end anchors the pattern to its folder
        line = line.lstrip("/")
        if line:
            out.append(Ignore(folder, line, negated, folder_only, anchored))
    return out


def ignored(path: str, is_dir: bool, rules: Sequence[Ignore]) -> bool:
    """git's rule: the last matching pattern decides."""
    verdict = False
    for r in rules:
        if r.matches(path, is_dir):
            verdict = not r.negated
    return verdict


def _gitignores_above(folder: str) -> list[Ignore]:
    """The .gitignore files from the repository's top (the folder with .git) down to `folder`."""
    chain = []
    current = os.path.abspath(folder)
    while True:
        chain.append(current)
        if os.path.exists(os.path.join(current, ".git")):
            break
        parent = os.path.dirname(current)
        if parent == current:
            chain = chain[:1]  # not in a repository: only the folder's own .gitignore
            break
        current = parent
    rules: list[Ignore] = []
    for f in reversed(chain[1:]):
        rules += _read_gitignore(f)
    return rules


def _read_gitignore(folder: str) -> list[Ignore]:
    try:
        with open(os.path.join(folder, ".gitignore"), encoding="utf-8", errors="replace") as f:
            return parse_gitignore(folder, f.read())
    except OSError:
        return []


def _excluded(rel: str, exclude: Sequence[str]) -> bool:
    name = os.path.basename(rel)
    return any(fnmatch.fnmatchcase(rel, p.rstrip("/")) or fnmatch.fnmatchcase(name, p.rstrip("/"))
               or rel.startswith(p.rstrip("/") + "/") for p in exclude)


def model_files(folder: str, exclude: Sequence[str] = ()) -> list[str]:
    """The Python files under `folder` (sorted) that define an nn.Module subclass; `exclude`
    holds glob patterns matched against the path relative to `folder` and against the name."""
    top = os.path.abspath(folder)
    rules_in = {top: _gitignores_above(top) + _read_gitignore(top)}  # a folder's own .gitignore applies below it
    found = []
    for here, dirs, files in os.walk(top):
        rules = rules_in[here]
        kept = []
        for d in sorted(dirs):
            path = os.path.join(here, d)
            rel = os.path.relpath(path, top).replace(os.sep, "/")
            if d in SKIPPED_FOLDERS or d.startswith(".") or ignored(path, True, rules) or _excluded(rel, exclude):
                continue
            kept.append(d)
            rules_in[path] = rules + _read_gitignore(path)
        dirs[:] = kept
        for name in sorted(files):
            path = os.path.join(here, name)
            rel = os.path.relpath(path, top).replace(os.sep, "/")
            if (not name.endswith(".py") or any(fnmatch.fnmatchcase(name, p) for p in SKIPPED_FILES)
                    or ignored(path, False, rules) or _excluded(rel, exclude)):
                continue
            if defines_module(path):
                found.append(os.path.normpath(os.path.join(folder, rel)))
    return found


def defines_module(path: str) -> bool:
    """Whether the file defines a class deriving (directly or through a class of the same file)
    from nn.Module or a known model base; a file that does not parse is left to the import."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, ValueError, OSError):
        return False
    local: set[str] = set()
    changed = True
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    while changed:  # a class may derive from a model class defined further down
        changed = False
        for c in classes:
            if c.name not in local and any(_base_name(b) in MODULE_BASES | local for b in c.bases):
                local.add(c.name)
                changed = True
    return bool(local)


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript):
        return _base_name(node.value)
    return ""
