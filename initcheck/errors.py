"""One exception per way a target can fail to load or run; each renders as one line."""

from __future__ import annotations


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
