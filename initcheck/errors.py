"""One exception per way a target can fail to load or run; each renders as one line."""

from __future__ import annotations

import importlib
from types import ModuleType


class InitcheckError(Exception):
    """Base class: `str(err)` is the one line the CLI prints (exit code 2)."""

    hint = ""

    def __init__(self, target: str, detail: str, hint: str | None = None):
        self.target = target
        self.detail = detail
        if hint is not None:
            self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        text = f"{self.target}: {self.detail}"
        return f"{text} ({self.hint})" if self.hint else text


class TargetSyntaxError(InitcheckError):
    hint = "write path/to/file.py:Name, package.module:Name or path/to/file.py"


class TargetFileNotFound(InitcheckError):
    hint = "check the path"


class TargetImportError(InitcheckError):
    hint = "run `python -c 'import <module>'` to see the full error, or pass --verbose"


class TargetAttributeError(InitcheckError):
    hint = "check the name after the colon"


class NotAModule(InitcheckError):
    hint = "point at an nn.Module subclass, a function returning one, or an instance"


class ConstructionError(InitcheckError):
    hint = "initcheck builds classes with no arguments; export a function that returns the model"


class ForwardError(InitcheckError):
    hint = "pass --input-shape/--input-dtype (example_inputs= in the API) with an input the model accepts"


class ConfigError(InitcheckError):
    hint = "see the [tool.initcheck] section of the README"


class UsageError(InitcheckError):
    """A combination of options that cannot work."""


class OutputError(InitcheckError):
    """An output file that cannot be written, or must not be replaced; the target is its path."""


class NothingToCheck(InitcheckError):
    """A run whose targets loaded but held no weight at all: never a pass."""

    hint = "name a model that has weights: file.py:Name"


class InputSpecError(UsageError):
    """An --input text that is not a shape: `1,,3`, a zero size, an unknown dtype."""

    hint = "write SHAPE[:DTYPE] or NAME=SHAPE[:DTYPE], e.g. 1,80,3000 or tokens=1,16:int64"


class InputTooLarge(InitcheckError):
    """An example input (or the run built on it) estimated not to fit memory, refused before allocation."""

    hint = "pass a smaller --input or raise --max-memory"


class MissingExtra(InitcheckError):
    """An optional dependency is not installed; `str(err)` is one line with the pip command."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install initcheck[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra("initcheck", f"{module} is not installed: pip install initcheck[{extra}]") from e
