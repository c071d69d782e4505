"""Targets -> nn.Module instances: "path/file.py:Name", "pkg.module:Name", "path/file.py".

Every way a target can fail becomes one exception from errors.py; an exception raised inside the
user's own code is chained (`from`), so --verbose shows its traceback unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field, replace
from types import ModuleType

from torch import nn

from .errors import ConstructionError, NotAModule, TargetAttributeError, TargetFileNotFound, TargetImportError, TargetSyntaxError
from .provenance import recorded


@dataclass(frozen=True)
class Loaded:
    target: str  # "path.py:Name", as reported
    model: nn.Module
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> "path:line" that last wrote it


def load(target: str) -> list[Loaded]:
    """Resolve one target to the models it names (several for a bare file), each with where its
    parameters were last written while it was imported and built (provenance.py)."""
    with recorded() as sites:
        models = _load(target)
    return [replace(m, sources=sites.for_model(m.model)) for m in models]


def _load(target: str) -> list[Loaded]:
    path_or_module, sep, attr = target.partition(":")
    if not path_or_module or (sep and not attr) or attr.count(":"):
        raise TargetSyntaxError(target, "not a target")
    module = _import(target, path_or_module)
    if not sep:
        if not _is_path(path_or_module):
            raise TargetSyntaxError(target, "a module target needs :Name")
        return _every_class(target, module)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetAttributeError(target, f"{_short(path_or_module)} has no attribute {part!r}")
        obj = getattr(obj, part)
    return [Loaded(target, build(target, obj))]


def build(target: str, obj) -> nn.Module:
    """An instance, a class built with no arguments, or a function returning a module."""
    if isinstance(obj, nn.Module):
        return obj
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise NotAModule(target, f"{obj.__name__} is a class but not an nn.Module subclass")
    if not callable(obj):
        raise NotAModule(target, f"is a {type(obj).__name__}, not an nn.Module")
    try:
        inspect.signature(obj).bind()
    except TypeError:
        what = obj.__name__ if hasattr(obj, "__name__") else "it"
        raise ConstructionError(target, f"{what}() needs arguments") from None
    except ValueError:
        pass  # no signature to read (a builtin): just try
    try:
        made = obj()
    except Exception as e:
        raise ConstructionError(target, f"building it raised {type(e).__name__}: {_line(e)}", hint="") from e
    if not isinstance(made, nn.Module):
        raise NotAModule(target, f"calling it returned a {type(made).__name__}, not an nn.Module")
    return made


def _is_path(text: str) -> bool:
    return text.endswith(".py") or os.sep in text or "/" in text


def _short(text: str) -> str:
    return os.path.basename(text) if _is_path(text) else text


def _import(target: str, path_or_module: str) -> ModuleType:
    if _is_path(path_or_module):
        if not os.path.isfile(path_or_module):
            raise TargetFileNotFound(target, f"no such file: {path_or_module}")
        path = os.path.abspath(path_or_module)
        name = "initcheck_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetImportError(target, "cannot import this file")
        module = importlib.util.module_from_spec(spec)
        # the file's own folder first, so that its sibling imports work as when run as a script
        folder = os.path.dirname(path)
        sys.path.insert(0, folder)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise TargetImportError(target, f"importing it raised {type(e).__name__}: {_line(e)}", hint="pass --verbose for the traceback") from e
        finally:
            if sys.path and sys.path[0] == folder:
                sys.path.pop(0)
        return module
    try:
        return importlib.import_module(path_or_module)
    except ModuleNotFoundError as e:
        if e.name and path_or_module.startswith(e.name):
            raise TargetImportError(target, f"no module named {e.name!r}", hint="check the module path and that it is installed") from e
        raise TargetImportError(target, f"importing it raised ModuleNotFoundError: {_line(e)}", hint="pass --verbose for the traceback") from e
    except Exception as e:
        raise TargetImportError(target, f"importing it raised {type(e).__name__}: {_line(e)}", hint="pass --verbose for the traceback") from e


def _every_class(target: str, module: ModuleType) -> list[Loaded]:
    """Every public nn.Module subclass defined in the file that builds with no arguments."""
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or not inspect.isclass(obj) or not issubclass(obj, nn.Module):
            continue
        if obj.__module__ != module.__name__:
            continue
        try:
            inspect.signature(obj).bind()
        except (TypeError, ValueError):
            continue
        out.append(Loaded(f"{target}:{name}", build(f"{target}:{name}", obj)))
    if not out:
        raise TargetAttributeError(target, "defines no nn.Module subclass that builds with no arguments", hint="name one: file.py:Name")
    return out


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "(no message)"
