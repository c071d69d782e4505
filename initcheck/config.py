"""[tool.initcheck] in pyproject.toml: the targets a bare `initcheck` (and the pre-commit hook)
checks, and the options it would take on the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

KEYS = {"targets", "fail-on", "select", "ignore", "per-layer-ignores", "input-shape", "input-dtype"}


@dataclass(frozen=True)
class Config:
    path: str | None = None
    targets: tuple[str, ...] = ()
    fail_on: str | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    per_layer_ignores: tuple[tuple[str, str], ...] = field(default=())  # (code prefix, layer pattern)
    input_shape: str | None = None
    input_dtype: str | None = None


def find(start: str = ".") -> str | None:
    """The nearest pyproject.toml at or above `start` that has a [tool.initcheck] table."""
    here = os.path.abspath(start)
    while True:
        candidate = os.path.join(here, "pyproject.toml")
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as f:
                if "[tool.initcheck" in f.read():
                    return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def read(path: str) -> Config:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"not valid TOML: {e}") from e
    table = data.get("tool", {}).get("initcheck", {})
    unknown = set(table) - KEYS
    if unknown:
        raise ConfigError(path, f"unknown key(s) in [tool.initcheck]: {', '.join(sorted(unknown))}; expected {', '.join(sorted(KEYS))}")
    base = os.path.dirname(os.path.abspath(path))
    targets = tuple(_relative(t, base) for t in _strings(path, table, "targets"))
    ignores = table.get("per-layer-ignores", {})
    if not isinstance(ignores, dict):
        raise ConfigError(path, "per-layer-ignores must be a table of \"layer pattern\" = [\"CODE\", ...]")
    pairs = tuple((code, pattern) for pattern, codes in ignores.items() for code in _as_list(path, codes, "per-layer-ignores"))
    return Config(path, targets, table.get("fail-on"), _strings(path, table, "select"), _strings(path, table, "ignore"),
                  pairs, table.get("input-shape"), table.get("input-dtype"))


def _relative(target: str, base: str) -> str:
    """File targets are relative to the pyproject.toml that names them."""
    head, sep, tail = target.partition(":")
    if head.endswith(".py") and not os.path.isabs(head):
        head = os.path.relpath(os.path.join(base, head))
    return head + sep + tail


def _strings(path: str, table: dict, key: str) -> tuple[str, ...]:
    return tuple(_as_list(path, table.get(key, []), key))


def _as_list(path: str, value, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"{key} must be a list of strings")
    return value
