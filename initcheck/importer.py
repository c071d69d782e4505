"""A target's module imported as it would run as a script: `sys.argv` is just its file (restored
after), a file inside a package is imported as `package.module` (its relative imports work), and
whatever it prints goes to stderr (initcheck's stdout is the report only). Every way the import can
fail is one exception from errors.py; an exception raised inside the user's own code is chained
(`from`), so --verbose shows its traceback unchanged. loader.py builds the models from the module."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import traceback
from collections.abc import Iterator
from types import ModuleType
from typing import NoReturn

from .errors import InitcheckError, TargetFileNotFound, TargetImportError


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


def with_exit_output(e: InitcheckError, captured: Captured) -> InitcheckError:
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


def is_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text


def short(text: str) -> str:
    return os.path.basename(text) if is_path(text) else text


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


def import_target(target: str, path_or_module: str, root: str | None) -> ModuleType:
    if not is_path(path_or_module):
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
        raise TargetImportError(target, f"importing {what} called sys.exit({e.code!r}){why_exit(e)}",
                                hint="pass --verbose for the traceback") from e
    if not isinstance(e, Exception):
        raise e  # KeyboardInterrupt and the like are the user's, not the target's
    raise TargetImportError(target, f"importing it raised {type(e).__name__}: {first_line(e)}", hint="pass --verbose for the traceback") from e


def why_exit(e: SystemExit, when: str = "at import") -> str:
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


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "(no message)"
