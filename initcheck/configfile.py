"""The config file: the nearest initcheck.toml, or pyproject.toml with a [tool.initcheck] table,
read as TOML. Its values are checked where they are merged with the command line (options.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Config:
    """The [tool.initcheck] table of one file, as read (validated by settings_from)."""

    path: str | None = None
    table: Mapping[str, Any] = field(default_factory=dict)


def find_config(start: str = ".") -> str | None:
    """The nearest initcheck.toml, or pyproject.toml with a [tool.initcheck] table, at or above
    `start` (in one folder, initcheck.toml wins, as ruff's ruff.toml wins over pyproject.toml)."""
    here = os.path.abspath(start)
    while True:
        own = os.path.join(here, "initcheck.toml")
        if os.path.isfile(own):
            return own
        candidate = os.path.join(here, "pyproject.toml")
        if os.path.isfile(candidate) and _has_table(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _has_table(path: str) -> bool:
    try:
        data = _load_toml(path)
    except ConfigError:
        return True  # a broken pyproject.toml is reported when read, not skipped silently
    tool = data.get("tool")
    return isinstance(tool, dict) and "initcheck" in tool


def _load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"not valid TOML: {e}") from e


def read_config(path: str) -> Config:
    """The options table of `path`: [tool.initcheck] of a pyproject.toml, the top level of an
    initcheck.toml."""
    data = _load_toml(path)
    if os.path.basename(path) == "initcheck.toml":
        table: Any = data
    else:
        table = data.get("tool", {}).get("initcheck", {}) if isinstance(data.get("tool"), dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(path, "[tool.initcheck] must be a table")
    return Config(path, table)


def load_config(path: str | None) -> Config:
    """The given file, else the one found upwards from the current folder, else no config."""
    if path:
        return read_config(path)
    found = find_config()
    return read_config(found) if found else Config()
