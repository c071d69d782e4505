"""Options: the config file ([tool.initcheck] or initcheck.toml) and the command line, merged in that
order and validated in one place into one frozen Settings that the CLI and the API both take.

Imports no torch: `initcheck --help` and config errors stay fast. Codes are checked against the rule
registry, which is filled on first use (importing the rules is what imports torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

from .configfile import Config
from .errors import ConfigError, UsageError
from .findings import SETTINGS, SEVERITY_WORDS, Selection, Severity, default_thresholds, unknown_codes
from .inputspec import DTYPE_NAMES, parse_input
from .sizes import parse_size

FORMATS = ("full", "concise", "json", "json-lines", "sarif", "github", "junit")
FORMAT_ALIASES = {"table": "full"}  # the 0.1 spelling of --format
DEVICES = ("auto", "cpu", "cuda")
MODES = ("train", "eval")
COLORS = ("auto", "always", "never")
FailOn = Severity | Literal["never"]

DEFAULT = "default"
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, resolved. `origins` says where each field came from."""

    targets: tuple[str, ...] = ()
    selection: Selection = field(default_factory=Selection)
    fail_on: FailOn = Severity.ERROR
    thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # every registered setting
    inputs: tuple[str, ...] = ()  # "[name=]d0,d1,...[:dtype]" each, one per model input
    inputs_hook: str | None = None  # "file.py:function" returning the example inputs
    input_dtype: str = "float32"
    output_format: str = "full"
    output_file: str | None = None
    fix: bool = False
    fix_output: str | None = None
    force: bool = False
    data_driven: bool = False
    probe: bool = False
    device: str = "auto"
    mode: str = "train"  # the forward judged (modes.py): training's (BatchNorm on batch statistics) or eval's
    max_memory: int | None = None  # bytes --probe and the data-driven --fix may take; None: half the available, 0: no limit
    seed: int = 0
    exclude: tuple[str, ...] = ()
    show_suppressed: bool = False
    statistics: bool = False
    quiet: bool = False
    color: str = "auto"
    config_path: str | None = None
    origins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def threshold(self, name: str) -> float:
        """A rule's setting: the configured value, else its registered default."""
        if name in self.thresholds:
            return self.thresholds[name]
        return SETTINGS[name].default


CONFIG_KEYS: dict[str, str] = {  # key in [tool.initcheck] -> what it takes (the error says this)
    "targets": "a list of strings (path/to/model.py:Name)",
    "fail-on": "one of error, warning, info, never",
    "select": "a list of codes or prefixes",
    "ignore": "a list of codes or prefixes",
    "extend-select": "a list of codes or prefixes",
    "extend-ignore": "a list of codes or prefixes",
    "per-layer-ignores": 'a table of "layer pattern" = ["CODE", ...]',
    "input-shape": "a shape string such as \"2,3,32,32\"",
    "inputs": "a list of input specs such as \"1,80,3000\" or \"tokens=1,16:int64\"",
    "inputs-hook": "a string path/to/file.py:function",
    "input-dtype": "one of " + ", ".join(DTYPE_NAMES),
    "output-format": "one of " + ", ".join(FORMATS),
    "output-file": "a file path",
    "data-driven": "true or false",
    "probe": "true or false",
    "device": "one of " + ", ".join(DEVICES),
    "mode": "one of " + ", ".join(MODES),
    "max-memory": 'a size such as "4G", "512M", "2.5GB", a number of bytes, or "none"',
    "seed": "an integer",
    "exclude": "a list of fnmatch patterns of targets",
    "show-suppressed": "true or false",
    "statistics": "true or false",
    "quiet": "true or false",
    "color": "one of " + ", ".join(COLORS),
    "thresholds": "a table of setting = number",
}


# --- merging and validation ------------------------------------------------------------------

# what `cli` may hold: the Settings fields, the code lists that make up the Selection, and 0.1's --input-shape
_CLI_NAMES = frozenset({f.name for f in fields(Settings)} - {"origins", "selection", "config_path", "thresholds"}
                       | {"select", "ignore", "extend_select", "extend_ignore", "input_shape"})


def settings_from(config: Config | None = None, cli: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the config file, then the command line; each value validated, each origin kept.

    `cli` holds Settings field names (snake_case) with the values the user gave; None means not given.
    Code lists from the command line replace the config's (`select`, `ignore`); `extend_select` and
    `extend_ignore` from both places add up. Raises ConfigError/UsageError (one line, exit 2)."""
    config = config or Config()
    values: dict[str, Any] = {}
    origins: dict[str, str] = {f.name: DEFAULT for f in fields(Settings) if f.name != "origins"}
    where = f"config: {config.path}" if config.path else "config"
    codes: dict[str, tuple[Any, ...]] = {}  # code lists, and (code, pattern) pairs
    code_origin: dict[str, str] = {}

    for key, raw in config.table.items():
        if key not in CONFIG_KEYS:
            raise ConfigError(config.path or "config", f"unknown key {key!r}; expected one of {', '.join(CONFIG_KEYS)}")
        name, value = _config_value(config, key, raw)
        if name in ("select", "ignore", "extend_select", "extend_ignore", "per_layer_ignore"):
            codes[name] = value
            code_origin[name] = where
        else:
            _put(values, origins, name, value, where)

    for name, raw in (cli or {}).items():
        if name not in _CLI_NAMES:
            raise UsageError(name, f"is not an option; expected one of {', '.join(sorted(_CLI_NAMES))}")
        if raw is None or raw == ():  # not given: the config's value (or the default) stands
            continue
        value = _cli_value(name, raw)
        if name in ("select", "ignore"):
            codes[name] = value
            code_origin[name] = COMMAND_LINE
        elif name in ("extend_select", "extend_ignore"):
            codes[name] = codes.get(name, ()) + value
            code_origin[name] = COMMAND_LINE if name not in code_origin else f"{code_origin[name]} + {COMMAND_LINE}"
        else:
            _put(values, origins, name, value, COMMAND_LINE)

    selection = Selection(codes.get("select", ()), codes.get("ignore", ()), codes.get("extend_select", ()),
                          codes.get("extend_ignore", ()), codes.get("per_layer_ignore", ()))
    _check_codes(selection, code_origin)
    origins["selection"] = " + ".join(sorted(set(code_origin.values()))) or DEFAULT
    values["selection"] = selection
    values["thresholds"] = MappingProxyType({**default_thresholds(), **values.get("thresholds", {})})
    values["config_path"] = config.path
    return Settings(**values, origins=MappingProxyType(origins))


def _put(values: dict[str, Any], origins: dict[str, str], name: str, value: Any, origin: str) -> None:
    """A later place overrides an earlier one; inputs given twice in one place add up (0.1's
    input-shape is one more input, first)."""
    shape_first = name == "input_shape"
    if shape_first:
        name, value = "inputs", (value,)
    if name == "inputs" and origins.get("inputs") == origin:
        value = (*value, *values["inputs"]) if shape_first else (*values["inputs"], *value)
    values[name] = value
    origins[name] = origin


def _config_value(config: Config, key: str, raw: Any) -> tuple[str, Any]:
    name = key.replace("-", "_")
    path = config.path or "config"

    def bad(detail: str = "") -> ConfigError:
        return ConfigError(path, f"{key} = {_show(raw)} is not valid{detail}; expected {CONFIG_KEYS[key]}")

    if key == "per-layer-ignores":
        if not isinstance(raw, dict):
            raise bad()
        pairs = []
        for pattern, codes in raw.items():
            if not _is_str_list(codes) and not isinstance(codes, str):
                raise ConfigError(path, f"per-layer-ignores.{pattern!r} = {_show(codes)} is not valid; expected a list of codes")
            pairs += [(c.strip().upper(), pattern) for c in ([codes] if isinstance(codes, str) else codes)]
        return "per_layer_ignore", tuple(pairs)
    if key == "thresholds":
        if not isinstance(raw, dict):
            raise bad()
        return name, {k: _threshold(path, k, v) for k, v in raw.items()}
    if key == "targets":
        if not _is_str_list(raw):
            raise bad()
        base = os.path.dirname(os.path.abspath(path))
        return name, tuple(_relative(t, base) for t in raw)
    if key in ("select", "ignore", "extend-select", "extend-ignore", "exclude", "inputs"):
        if not _is_str_list(raw):
            raise bad()
        if key == "inputs":
            return name, tuple(_check_input(v, path, key) for v in raw)
        return name, tuple(c.strip().upper() for c in raw) if key != "exclude" else tuple(raw)
    if key in ("data-driven", "probe", "show-suppressed", "statistics", "quiet"):
        if not isinstance(raw, bool):
            raise bad()
        return name, raw
    if key == "seed":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad()
        return name, raw
    if key == "max-memory" and isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)  # bytes
    if not isinstance(raw, str):
        raise bad()
    try:
        return name, _string_value(name, raw)
    except ValueError as e:
        raise ConfigError(path, f"{key} = {_show(raw)} is {e}") from e


def _string_value(name: str, raw: str) -> Any:
    """The string options, one check each (shared by the config and the command line). A ValueError
    says what the value is not: "not a dtype (one of ...)"."""
    choices = {"input_dtype": ("dtype", DTYPE_NAMES), "device": ("device", DEVICES), "color": ("color mode", COLORS),
               "mode": ("mode", MODES),
               "output_format": ("format", FORMATS + tuple(FORMAT_ALIASES))}
    if name == "fail_on":
        word = raw.strip().lower()
        if word == "never":
            return "never"
        if word not in SEVERITY_WORDS:
            raise ValueError(f"not a severity (one of {', '.join(SEVERITY_WORDS)}, never)")
        return Severity.parse(word)
    if name in choices:
        what, allowed = choices[name]
        if raw not in allowed:
            raise ValueError(f"not a {what} (one of {', '.join(allowed)})")
        return FORMAT_ALIASES.get(raw, raw)
    if name == "input_shape":
        parse_input(raw)
        return raw
    if name == "max_memory":
        return parse_size(raw)
    if name == "inputs_hook":
        head, sep, attr = raw.rpartition(":")
        if not sep or not head or not attr.isidentifier():
            raise ValueError("not a function (write it as path/to/file.py:function)")
        return raw
    return raw  # output_file, fix_output: paths, checked where they are written


def _cli_value(name: str, raw: Any) -> Any:
    flag = "--" + name.replace("_", "-")
    if name in ("select", "ignore", "extend_select", "extend_ignore"):
        return merge_codes(raw)
    if name == "inputs":
        return tuple(_check_input(v, None, "--input") for v in raw)
    if name == "fix_output" and not str(raw):
        raise UsageError(flag, "needs a file name")
    if name in ("targets", "exclude"):
        return tuple(raw)
    if isinstance(raw, (bool, int)):
        return raw
    try:
        return _string_value(name, str(raw))
    except ValueError as e:
        raise UsageError(f"{flag} {_typed(str(raw))}", f"is {e}") from e


def merge_codes(values: Any) -> tuple[str, ...]:
    """Repeated flags and comma lists, merged: ("IC1,IC203", "IC3") -> ("IC1", "IC203", "IC3")."""
    if isinstance(values, str):
        values = (values,)
    return tuple(c.strip().upper() for v in values for c in str(v).split(",") if c.strip())


def _check_codes(selection: Selection, origin: Mapping[str, str]) -> None:
    load_rules()
    bad = unknown_codes(selection.all_codes())
    if bad:
        from .findings import RULES

        where = " / ".join(sorted(set(origin.values()))) or COMMAND_LINE
        raise UsageError(where, f"unknown code(s) or prefix(es) {', '.join(bad)}; valid codes: {', '.join(sorted(RULES))}")


def load_rules() -> None:
    """Fill the registry: the rules (this imports torch) and the post-stage codes (IC003)."""
    from . import rules, suppressions  # noqa: F401


def _threshold(path: str, key: str, value: Any) -> float:
    load_rules()
    if key not in SETTINGS:
        names = ", ".join(sorted(SETTINGS)) or "none registered"
        raise ConfigError(path, f"thresholds.{key} is not a setting; expected one of {names}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"thresholds.{key} = {_show(value)} is not valid; expected a number")
    return float(value)


def _check_input(spec: str, path: str | None, key: str) -> str:
    try:
        parse_input(spec)
    except ValueError as e:
        if path:
            raise ConfigError(path, f"{key} = {_show(spec)} is {e}") from e
        raise UsageError(f"{key} {_typed(spec)}", f"is {e}") from e
    return spec


def _relative(target: str, base: str) -> str:
    """File targets are relative to the config file that names them."""
    head, sep, tail = target.partition(":")
    if head.endswith(".py") and not os.path.isabs(head):
        head = os.path.relpath(os.path.join(base, head))
    return head + sep + tail


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _typed(text: str) -> str:
    """A value as the user typed it, quoted when it would not read as one line (a newline, a tab)."""
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _show(value: Any) -> str:
    """A value as TOML would spell it, for error lines."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def describe(settings: Settings) -> str:
    """--show-settings: each resolved value and where it came from."""
    lines = [f"config file: {settings.config_path or '(none found)'}"]
    for f in fields(Settings):
        if f.name in ("origins", "config_path"):
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        lines.append(f"{f.name} = {value!s}  ({settings.origins.get(f.name, DEFAULT)})")
    return "\n".join(lines)
