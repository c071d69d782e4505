"""Weights computed from other parameters at each access (torch's parametrizations, the older
hook-based weight_norm / spectral_norm, and torch.nn.utils.prune's w_orig * w_mask): which tensor
carries the weight's scale, and whether an init can set that scale at all.

weight_norm writes w = g · v / ||v||: the scale lives in g. spectral_norm writes w = W / σ_max(W)
and orthogonal writes an orthogonal matrix: whatever the original holds, the effective weight's
scale is the parametrization's, so no init (and no data-driven scaling) can change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from torch import Tensor, nn, no_grad, norm_except_dim
from torch.nn.utils import parametrizations as P
from torch.nn.utils import parametrize
from torch.nn.utils.prune import BasePruningMethod

Params = ParamSpec("Params")
Result = TypeVar("Result")

# torch's own classes: the hook-based forms keep their state in a forward pre-hook object
_HOOK_WEIGHT_NORM = "WeightNorm"
_HOOK_SPECTRAL_NORM = "SpectralNorm"


def _hook_objects(module: nn.Module, name: str) -> list[Any]:
    """The hook-based parametrizations of `module.name` (torch's WeightNorm / SpectralNorm objects,
    torch.nn.utils.prune's methods: w = w_orig * w_mask before each forward)."""
    return [h for h in module._forward_pre_hooks.values()
            if getattr(h, "name", None) == name or (isinstance(h, BasePruningMethod) and getattr(h, "_tensor_name", None) == name)]


def _pruned(module: nn.Module, name: str) -> bool:
    """`module.name` is pruned (torch.nn.utils.prune) and nothing else."""
    hooks = _hook_objects(module, name)
    return bool(hooks) and all(isinstance(h, BasePruningMethod) for h in hooks)


def _hooks(module: nn.Module, name: str) -> list[str]:
    """Class names of the hook-based parametrizations of `module.name`."""
    return [type(h).__name__ for h in _hook_objects(module, name)]


def _plist(module: nn.Module, name: str) -> parametrize.ParametrizationList | None:
    """The ParametrizationList of `module.name`, if it has one."""
    if not parametrize.is_parametrized(module, name):
        return None
    plist = module.parametrizations[name]  # type: ignore[index]
    return plist if isinstance(plist, parametrize.ParametrizationList) else None


def fixed_scale(module: nn.Module, name: str) -> str | None:
    """The parametrization that sets `module.name`'s scale by itself (None when an init sets it)."""
    plist = _plist(module, name)
    if plist is not None:
        for p in plist:
            if isinstance(p, P._SpectralNorm):
                return "spectral_norm"
            if isinstance(p, P._Orthogonal):
                return "orthogonal"
        return None
    if _HOOK_SPECTRAL_NORM in _hooks(module, name):
        return "spectral_norm"
    return None


def scale_carrier(module: nn.Module, name: str) -> Tensor | None:
    """The tensor whose scale is `module.name`'s scale: the parameter itself, weight_norm's
    magnitude g, or None where a parametrization fixes the scale or more than one holds it."""
    plist = _plist(module, name)
    if plist is not None:
        if len(plist) == 1 and isinstance(plist[0], P._WeightNorm):
            g = getattr(plist, "original0", None)
            return g if isinstance(g, Tensor) else None
        return None
    hooks = _hooks(module, name)
    if hooks == [_HOOK_WEIGHT_NORM]:
        g = getattr(module, f"{name}_g", None)
        return g if isinstance(g, Tensor) else None
    if _pruned(module, name):  # the mask keeps or zeroes entries: the scale is the original's
        orig = getattr(module, f"{name}_orig", None)
        return orig if isinstance(orig, Tensor) else None
    if hooks:
        return None
    value = getattr(module, name, None)
    return value if isinstance(value, nn.Parameter) else None


def trainable(module: nn.Module, name: str, effective: Tensor) -> bool:
    """Whether training moves `module.name`: a computed weight through its originals (a pruned
    weight's plain tensor may be built under no_grad, its weight_orig still trains), else itself."""
    if not computed(module, name):
        return effective.requires_grad
    plist = _plist(module, name)
    if plist is not None:
        return any(p.requires_grad for p in plist.parameters())
    stem = f"{name}_"
    return any(p.requires_grad for n, p in module.named_parameters(recurse=False) if n.startswith(stem))


def computed(module: nn.Module, name: str) -> bool:
    """`module.name` is recomputed from other parameters at each access (any parametrization)."""
    return parametrize.is_parametrized(module, name) or bool(_hooks(module, name))


def is_original(module: nn.Module, attr: str) -> bool:
    """`module.attr` is a parametrization's original (`parametrizations.w.original*`, or the hook
    forms' `w_g`, `w_v`, `w_orig`): judged through the effective weight it makes."""
    if isinstance(module, parametrize.ParametrizationList):
        return attr.startswith("original")
    stem, _, suffix = attr.rpartition("_")
    return suffix in ("g", "v", "orig") and bool(_hooks(module, stem))


def assign(module: nn.Module, name: str, value: Tensor) -> None:
    """Make `module.name`'s effective weight `value` (as far as its parametrization allows): a
    parametrization through its right_inverse, hook-based weight_norm through g and v, hook-based
    spectral_norm through its original (the hook then divides by σ_max)."""
    with no_grad():
        if parametrize.is_parametrized(module, name):
            setattr(module, name, value)
            return
        if _pruned(module, name):
            # the mask zeroes a share of the original: drawn up by 1/sqrt(density), the effective
            # weight has the variance `value` has
            mask = getattr(module, f"{name}_mask")
            density = float(mask.float().mean()) if mask.numel() else 1.0
            getattr(module, f"{name}_orig").copy_(value / max(density, 1e-12) ** 0.5)
            setattr(module, name, getattr(module, f"{name}_orig") * mask)
            return
        hooks = _hooks(module, name)
        hook = next(iter(_hook_objects(module, name)), None)
        if hook is not None and hooks == [_HOOK_WEIGHT_NORM]:
            getattr(module, f"{name}_v").copy_(value)
            getattr(module, f"{name}_g").copy_(norm_except_dim(value, 2, hook.dim))
        elif hooks == [_HOOK_SPECTRAL_NORM]:
            getattr(module, f"{name}_orig").copy_(value)
        else:
            getattr(module, name).copy_(value)
        if hook is not None:  # the plain attribute the hook writes before each forward: up to date now
            fresh = hook.compute_weight(module) if hooks == [_HOOK_WEIGHT_NORM] else \
                hook.compute_weight(module, do_power_iteration=False)
            setattr(module, name, fresh)


@contextmanager
def still(model: nn.Module) -> Iterator[None]:
    """Parametrizations that update state when computed in training mode (spectral_norm's power
    iteration writes its u and v buffers at every access of the weight) run as in eval mode
    inside: reading a weight to judge it must not change the model."""
    lists = [m for m in model.modules() if isinstance(m, parametrize.ParametrizationList)]
    training = [p for plist in lists for p in plist if p.training]
    for p in training:
        p.training = False
    try:
        yield
    finally:
        for p in training:
            p.training = True


def keeps_parametrizations(fn: Callable[Concatenate[nn.Module, Params], Result]) -> Callable[Concatenate[nn.Module, Params], Result]:
    """`fn(model, ...)` run inside `still(model)` (a non-module passes through for `fn` to refuse)."""

    @wraps(fn)
    def wrapper(model: nn.Module, /, *args: Params.args, **kwargs: Params.kwargs) -> Result:
        if not isinstance(model, nn.Module):
            return fn(model, *args, **kwargs)
        with still(model):
            return fn(model, *args, **kwargs)

    return wrapper
