"""initcheck: static diagnosis of a PyTorch model's weight initialization.

The public names are imported on first use (PEP 562), so `import initcheck` and `initcheck --help`
do not import torch."""

from __future__ import annotations  # noqa: I001  (startup is imported first, before any other module)

from . import startup  # noqa: F401  (first: Ctrl-C while the command starts is one line, not a traceback)

import sys
import types
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {  # public name -> the module that defines it
    "diagnose": "api", "fix": "fix", "probe": "probe", "ProbeLayer": "records", "plan": "plan", "InitPlan": "plan",
    "Report": "report", "LayerReport": "report", "Finding": "findings", "Severity": "findings", "RULES": "findings",
    "Settings": "options", "guard": "guard", "InitError": "guard",
}
__all__ = ["diagnose", "fix", "probe", "plan", "InitPlan", "ProbeLayer", "Report", "LayerReport", "Finding", "Severity",
           "RULES", "Settings", "guard", "InitError", "__version__"]

if TYPE_CHECKING:
    from .api import diagnose
    from .findings import RULES, Finding, Severity
    from .fix import fix
    from .guard import InitError, guard
    from .options import Settings
    from .plan import InitPlan, plan
    from .probe import probe
    from .records import ProbeLayer
    from .report import LayerReport, Report


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'initcheck' has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing a submodule binds it on its package; `fix`, `probe` and `plan` are both a module
    and the function users call, so the function keeps the name (as the eager imports of 0.1 did)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
