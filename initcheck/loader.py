"""Targets -> nn.Module instances: "path/file.py:Name", "pkg.module:Name", "path/file.py", "folder/".

Every way a target can fail becomes one exception from errors.py; an exception raised inside the
user's own code is chained (`from`), so --verbose shows its traceback unchanged. A target is
imported as it would run: `sys.argv` is just the file (restored after), a file inside a package is
imported as `package.module` (its relative imports work), and whatever it prints goes to stderr
(initcheck's stdout is the report only).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, NoReturn

from torch import nn

from . import discover
from .errors import (
    ConstructionError,
    InitcheckError,
    NotAModule,
    NothingToCheck,
    TargetAttributeError,
    TargetFileNotFound,
    TargetImportError,
    TargetSyntaxError,
)
from .provenance import recorded


@dataclass(frozen=True)
class Loaded:
    target: str  # "path.py:Name", as reported
    model: nn.Module
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> "path:line" that last wrote it


@dataclass(frozen=True)
class LoadResult:
    """What one target gave: the models built, the classes left out on purpose and why, and the
    failures (each its own one-line error); one failing class never hides the others."""

    target: str
    loaded: tuple[Loaded, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # ("file.py:Name", reason)
    failed: tuple[InitcheckError, ...] = ()

    def __add__(self, other: LoadResult) -> LoadResult:
        return LoadResult(self.target, self.loaded + other.loaded, self.skipped + other.skipped, self.failed + other.failed)


def load(target: str, *, root: str | None = None) -> list[Loaded]:
    """Resolve one target to the models it names (several for a file or a folder), each with
    where its parameters were last written while it was imported and built (provenance.py).
    Raises the first failure, or NothingToCheck when a file or folder gave no model with weights;
    `load_all` reports every one instead."""
    result = load_all(target, root=root)
    if result.failed:
        raise result.failed[0]
    if not result.loaded:  # a file or folder whose every class was skipped (a named target is always loaded)
        raise nothing_to_check(target, [result]) or NothingToCheck(target, "no model to check")
    return list(result.loaded)


def load_all(target: str, *, root: str | None = None, exclude: Sequence[str] = ()) -> LoadResult:
    """Every model `target` names, with what was skipped and what failed; never raises an
    InitcheckError (they are in `.failed`). A folder is every model file under it (discover.py)."""
    path_or_module, sep, attr = target.partition(":")
    if path_or_module and os.path.isdir(path_or_module):
        if sep:
            return LoadResult(target, failed=(TargetSyntaxError(target, "a folder target takes no :Name"),))
        return _load_folder(target, root, exclude)
    try:
        with recorded() as sites, target_context(path_or_module) as captured:
            try:
                result = _load(target, root)
            except InitcheckError as e:
                raise _with_exit_output(e, captured) from e.__cause__
            # whole-file mode: a class that exited while built
            result = replace(result, failed=tuple(_with_exit_output(e, captured) for e in result.failed))
        return replace(result, loaded=tuple(replace(m, sources=sites.for_model(m.model)) for m in result.loaded))
    except InitcheckError as e:
        return LoadResult(target, failed=(e,))


def nothing_to_check(target: str, results: Sequence[LoadResult]) -> NothingToCheck | None:
    """The error for a run whose targets gave no model with a weight (never a pass), else None."""
    if any(any(True for _ in m.model.parameters()) for r in results for m in r.loaded):
        return None
    if any(r.failed for r in results):
        return None  # the failures are the story: each was reported, and the exit code is 2 anyway
    skipped = [f"{name.rsplit(':', 1)[-1]} ({why})" for r in results for name, why in r.skipped]
    detail = "no model with weights to check"
    if skipped:
        detail += "; skipped: " + ", ".join(skipped[:8]) + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else "")
    return NothingToCheck(target, detail)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """The user's prints (nanoGPT's "number of parameters") go to stderr while the block runs, so
    stdout holds only initcheck's report: use it around import, build and every forward."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


class Captured(io.StringIO):
    """What a target printed while imported and built; passed on to stderr at the end unless it
    exited (then its last line, argparse's "error: ...", goes into initcheck's one-line message)."""

    keep = True

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.getvalue().splitlines() if ln.strip()]
        return lines[-1][:160] if lines else ""


@contextlib.contextmanager
def target_context(path: str) -> Iterator[Captured]:
    """While a target is imported and built: `sys.argv` is just its file (argparse at module level
    sees no options of initcheck's), and what it prints, to stdout or stderr, is held back and then
    written to stderr: stdout stays initcheck's report."""
    saved, real_stderr = sys.argv, sys.stderr
    sys.argv = [path or "initcheck-target"]
    captured = Captured()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield captured
    finally:
        sys.argv = saved
        if captured.keep and captured.getvalue():
            real_stderr.write(captured.getvalue())
            real_stderr.flush()


def _with_exit_output(e: InitcheckError, captured: Captured) -> InitcheckError:
    """An exit at import or build: its own last words join initcheck's line, the rest is dropped."""
    if not isinstance(e.__cause__, SystemExit):
        return e
    captured.keep = False
    said = captured.last_line()
    if not said:
        return e
    again = type(e)(e.target, f"{e.detail}: {said}", hint=e.hint)
    again.__cause__ = e.__cause__
    return again


def _load_folder(target: str, root: str | None, exclude: Sequence[str]) -> LoadResult:
    files = discover.model_files(target.rstrip(os.sep) or target, exclude)
    total = LoadResult(target)
    for path in files:
        total = total + load_all(path, root=root)
    if not files:
        total = total + LoadResult(target, failed=(NothingToCheck(
            target, "no Python file under it defines an nn.Module subclass", hint="name a file: path/to/model.py:Name"),))
    return total


def _load(target: str, root: str | None) -> LoadResult:
    path_or_module, sep, attr = target.partition(":")
    if not path_or_module or (sep and not attr) or attr.count(":"):
        raise TargetSyntaxError(target, "not a target")
    module = _import(target, path_or_module, root)
    if not sep:
        if not _is_path(path_or_module):
            raise TargetSyntaxError(target, "a module target needs :Name")
        return _every_class(target, module)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetAttributeError(target, f"{_short(path_or_module)} has no attribute {part!r}")
        obj = getattr(obj, part)
    return LoadResult(target, loaded=(Loaded(target, build(target, obj)),))


def build(target: str, obj: Any) -> nn.Module:
    """An instance, a class built with no arguments, or a function returning a module."""
    if isinstance(obj, nn.Module):
        return obj
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise NotAModule(target, f"{obj.__name__} is a class but not an nn.Module subclass")
    if not callable(obj):
        raise NotAModule(target, f"is a {type(obj).__name__}, not an nn.Module")
    missing = _required_arguments(obj)
    if missing:
        what = obj.__name__ if hasattr(obj, "__name__") else "it"
        raise ConstructionError(target, f"{what}() needs arguments")
    try:
        made = obj()
    except SystemExit as e:
        raise ConstructionError(target, f"building it called sys.exit({e.code!r}){_why_exit(e, 'when built')}", hint="") from e
    except Exception as e:
        raise ConstructionError(target, f"building it raised {type(e).__name__}: {_line(e)}", hint="") from e
    if not isinstance(made, nn.Module):
        raise NotAModule(target, f"calling it returned a {type(made).__name__}, not an nn.Module")
    return made


def _required_arguments(obj: Any) -> list[str]:
    """The parameters a no-argument call would miss ([] when it binds or there is no signature)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []  # no signature to read (a builtin): just try
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _is_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text


def _short(text: str) -> str:
    return os.path.basename(text) if _is_path(text) else text


def package_root(path: str) -> tuple[str, str] | None:
    """(folder to put on sys.path, dotted module name) for a file inside a package: the highest
    folder upwards that still has an __init__.py is the top package. None outside a package."""
    folder, name = os.path.split(os.path.abspath(path))
    parts = [os.path.splitext(name)[0]]
    if not os.path.isfile(os.path.join(folder, "__init__.py")):
        return None
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        folder, pkg = os.path.split(folder)
        parts.insert(0, pkg)
    if not all(p.isidentifier() for p in parts):
        return None
    return folder, ".".join(parts)


def _module_under(root: str, path: str) -> tuple[str, str] | None:
    """The dotted name of `path` below an explicit --root folder, or None when it is not below it."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = os.path.splitext(rel)[0].split(os.sep)
    if rel.startswith(os.pardir) or not all(p.isidentifier() for p in parts):
        return None
    return os.path.abspath(root), ".".join(parts)


def _import(target: str, path_or_module: str, root: str | None) -> ModuleType:
    if not _is_path(path_or_module):
        with _on_path(root):
            return _import_module(target, path_or_module)
    if not os.path.isfile(path_or_module):
        raise TargetFileNotFound(target, f"no such file: {path_or_module}")
    found = _module_under(root, path_or_module) if root else package_root(path_or_module)
    if found is not None:
        folder, dotted = found
        _check_no_clash(target, folder, dotted.partition(".")[0])
        with _on_path(folder):
            module = _import_module(target, dotted, shown=path_or_module)
        if os.path.abspath(getattr(module, "__file__", "") or "") != os.path.abspath(path_or_module):
            raise TargetImportError(target, f"{dotted!r} is already imported from {getattr(module, '__file__', '?')}",
                                    hint="rename the package or pass --root")
        return module
    return _import_file(target, path_or_module)


def _check_no_clash(target: str, folder: str, top: str) -> None:
    """A package named like a module already imported (json, utils, models) would resolve to that one."""
    loaded = sys.modules.get(top)
    if loaded is None:
        return
    where = [os.path.abspath(p) for p in getattr(loaded, "__path__", [])] or [os.path.abspath(getattr(loaded, "__file__", "") or "")]
    if os.path.join(os.path.abspath(folder), top) not in where:
        raise TargetImportError(target, f"its package {top!r} has the name of a module already imported from {where[0]}",
                                hint="pass --root to import it under another name, or rename the package")


def _import_file(target: str, path_or_module: str) -> ModuleType:
    path = os.path.abspath(path_or_module)
    name = "initcheck_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetImportError(target, "cannot import this file")
    module = importlib.util.module_from_spec(spec)
    # the file's own folder first, so that its sibling imports work as when run as a script
    with _on_path(os.path.dirname(path)):
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as e:
            sys.modules.pop(name, None)
            _raise_import_error(target, path_or_module, e)
    return module


def _import_module(target: str, dotted: str, shown: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as e:
        if shown is None and e.name and dotted.startswith(e.name):
            raise TargetImportError(target, f"no module named {e.name!r}", hint="check the module path and that it is installed") from e
        _raise_import_error(target, shown or dotted, e)
    except BaseException as e:
        _raise_import_error(target, shown or dotted, e)


def _raise_import_error(target: str, what: str, e: BaseException) -> NoReturn:
    if isinstance(e, SystemExit):
        raise TargetImportError(target, f"importing {what} called sys.exit({e.code!r}){_why_exit(e)}",
                                hint="pass --verbose for the traceback") from e
    if not isinstance(e, Exception):
        raise e  # KeyboardInterrupt and the like are the user's, not the target's
    raise TargetImportError(target, f"importing it raised {type(e).__name__}: {_line(e)}", hint="pass --verbose for the traceback") from e


def _why_exit(e: SystemExit, when: str = "at import") -> str:
    frames = traceback.extract_tb(e.__traceback__)
    if any(os.path.basename(f.filename) == "argparse.py" for f in frames):
        return f" (it parses its command line {when})"
    return " (guard its script code with `if __name__ == \"__main__\":`)"


@contextlib.contextmanager
def _on_path(folder: str | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _every_class(target: str, module: ModuleType) -> LoadResult:
    """Every public nn.Module subclass defined in the file that builds with no arguments and has
    weights; the others are listed in `skipped` with the reason, a failing build in `failed`."""
    loaded: list[Loaded] = []
    skipped: list[tuple[str, str]] = []
    failed: list[InitcheckError] = []
    classes = [(name, obj) for name, obj in vars(module).items()
               if not name.startswith("_") and inspect.isclass(obj) and issubclass(obj, nn.Module)
               and obj.__module__ == module.__name__]  # defined here, not imported
    if not classes:
        raise TargetAttributeError(target, "defines no nn.Module subclass", hint="name one: file.py:Name")
    for name, obj in classes:
        each = f"{target}:{name}"
        missing = _required_arguments(obj)
        if missing:
            skipped.append((each, f"needs arguments: {', '.join(missing)}"))
            continue
        try:
            model = build(each, obj)
        except InitcheckError as e:
            failed.append(e)
            continue
        if not any(True for _ in model.parameters()):
            skipped.append((each, "has no weights"))
            continue
        loaded.append(Loaded(each, model))
    return LoadResult(target, tuple(loaded), tuple(skipped), tuple(failed))


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "(no message)"
