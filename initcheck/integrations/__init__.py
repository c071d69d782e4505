"""Optional extras (matplotlib, Lightning, transformers): imported only when used, and the one-line
error that says which extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import InitcheckError

# extra name in pyproject.toml -> the module it provides
EXTRAS = {"plot": "matplotlib", "lightning": "lightning", "hf": "transformers"}


class MissingExtra(InitcheckError):
    """An optional dependency is not installed; `str(err)` is one line with the pip command."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install initcheck[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra("initcheck", f"{module} is not installed: pip install initcheck[{extra}]") from e
