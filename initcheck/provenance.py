"""Where each parameter got its value: the line of code that last wrote it while the model was
built. An `nn.init.uniform_(layer.weight, 0, 1)` is found at that call; a layer left at PyTorch's
default at the line that built the layer (`nn.Linear(784, 256)`); a `w.data.normal_(0, 0.02)` or
`w[...] = ...` at that statement. "The line" is the innermost frame outside torch, initcheck, the
standard library and installed packages: the user's own code (for a Hugging Face model, the line
that built it, not transformers' helper that drew the numbers).

Only what initcheck builds itself (the command line's targets) is recorded: a model handed to
diagnose() was built before initcheck saw it.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_SKIPPED = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (torch, sys.modules[__package__ or "initcheck"]))
_STDLIB = os.path.dirname(os.__file__) + os.sep
_INSTALLED, _INSTALLED_DEB = f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}"


@dataclass
class Sites:
    """id(parameter) -> (a weak reference to it, "path:line"); read with `for_model`."""

    by_id: dict[int, tuple[weakref.ref[torch.Tensor], str]] = field(default_factory=dict)

    def note(self, param: torch.Tensor, site: str) -> None:
        self.by_id[id(param)] = (weakref.ref(param), site)

    def for_model(self, model: nn.Module) -> dict[str, str]:
        """Qualified parameter name -> "path:line", for the parameters of `model` seen written."""
        out = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            hit = self.by_id.get(id(p))
            if hit is not None and hit[0]() is p:
                out[name] = hit[1]
        return out


def _caller() -> str | None:
    """"path:line" of the innermost frame outside torch, initcheck and the standard library."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.startswith(_SKIPPED) or path.startswith(_STDLIB) or path.startswith("<") or _INSTALLED in path
                or _INSTALLED_DEB in path):
            shown = os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path
            return f"{shown}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def _descriptor(func: Any) -> str | None:
    name = getattr(getattr(func, "__self__", None), "__name__", None)
    return name if isinstance(name, str) else None


class _Recorder(TorchFunctionMode):
    """Notes every in-place write to a parameter, through `.data` and views too."""

    def __init__(self, sites: Sites) -> None:
        super().__init__()
        self.sites = sites
        self.aliases: dict[int, tuple[weakref.ref[torch.Tensor], weakref.ref[nn.Parameter]]] = {}  # id(p.data) -> (alias, p)

    def _param(self, t: Any) -> nn.Parameter | None:
        if isinstance(t, nn.Parameter):
            return t
        if not isinstance(t, torch.Tensor):
            return None
        base = t._base
        if isinstance(base, nn.Parameter):
            return base
        hit = self.aliases.get(id(t))
        if hit is not None and hit[0]() is t:
            return hit[1]()
        return None

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # nn.init's functions dispatch here with the tensor as a keyword: nn.init.uniform_(tensor=w)
        subject = args[0] if args else kwargs.get("tensor")
        if subject is None:
            return out
        name = getattr(func, "__name__", "")
        if name == "__get__" and _descriptor(func) == "data" and isinstance(subject, nn.Parameter):
            if isinstance(out, torch.Tensor):
                self.aliases[id(out)] = (weakref.ref(out), weakref.ref(subject))
            return out
        writes = (name.endswith("_") and not name.startswith("_")) or name == "__setitem__" or (
            name == "__set__" and _descriptor(func) == "data") or name in ("__iadd__", "__isub__", "__imul__", "__itruediv__")
        if writes:
            p = self._param(subject)
            if p is not None:
                site = _caller()
                if site is not None:
                    self.sites.note(p, site)
        return out


@contextmanager
def recorded() -> Iterator[Sites]:
    """Record, while the body builds models, where each parameter was created and last written."""
    sites = Sites()

    def registered(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and id(param) not in sites.by_id:
            site = _caller()
            if site is not None:
                sites.note(param, site)

    handle = nn.modules.module.register_module_parameter_registration_hook(registered)
    try:
        with _Recorder(sites):
            yield sites
    finally:
        handle.remove()
