"""Targets -> nn.Module instances: "path/file.py:Name", "pkg.module:Name", "path/file.py", "folder/".

The module is imported by importer.py (as it would run: argv, prints, packages); here its names are
resolved and its classes built, each failure one exception from errors.py. A file is every public
nn.Module subclass it defines; a folder every model file under it (discover.py)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from torch import nn

from . import discover
from .errors import (
    ConstructionError,
    InitcheckError,
    NotAModule,
    NothingToCheck,
    TargetAttributeError,
    TargetSyntaxError,
)
from .importer import (
    first_line,
    import_target,
    is_path,
    package_root,
    short,
    stdout_to_stderr,
    target_context,
    why_exit,
    with_exit_output,
)
from .provenance import recorded

__all__ = ["LoadResult", "Loaded", "build", "load", "load_all", "nothing_to_check", "package_root", "stdout_to_stderr",
           "target_context"]


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
                raise with_exit_output(e, captured) from e.__cause__
            # whole-file mode: a class that exited while built
            result = replace(result, failed=tuple(with_exit_output(e, captured) for e in result.failed))
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
    module = import_target(target, path_or_module, root)
    if not sep:
        if not is_path(path_or_module):
            raise TargetSyntaxError(target, "a module target needs :Name")
        return _every_class(target, module)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetAttributeError(target, f"{short(path_or_module)} has no attribute {part!r}")
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
        raise ConstructionError(target, f"building it called sys.exit({e.code!r}){why_exit(e, 'when built')}", hint="") from e
    except Exception as e:
        raise ConstructionError(target, f"building it raised {type(e).__name__}: {first_line(e)}", hint="") from e
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

