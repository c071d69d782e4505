"""What each op does to the signal: activation (and its parameter), transparent, normalization.

Three forms reach a graph: a module (nn.ReLU), a function (F.relu, torch.relu) and a tensor method
(x.relu(), x.relu_()); the tracers fold functions and methods into one canonical name, so the
function table below serves both.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import Op

# Module class -> (canonical activation, attribute holding its parameter). Order matters:
# ReLU6 subclasses Hardtanh, so exact types are looked up before isinstance.
MODULE_ACTIVATIONS: dict[type, tuple[str, str | None]] = {
    nn.ReLU: ("relu", None),
    nn.ReLU6: ("relu6", None),
    nn.LeakyReLU: ("leaky_relu", "negative_slope"),
    nn.PReLU: ("prelu", "weight"),
    nn.ELU: ("elu", "alpha"),
    nn.SELU: ("selu", None),
    nn.CELU: ("celu", "alpha"),
    nn.GELU: ("gelu", None),
    nn.SiLU: ("silu", None),
    nn.Mish: ("mish", None),
    nn.Softplus: ("softplus", "beta"),
    nn.Hardswish: ("hardswish", None),
    nn.Hardsigmoid: ("hardsigmoid", None),
    nn.Hardtanh: ("hardtanh", None),
    nn.Tanh: ("tanh", None),
    nn.Sigmoid: ("sigmoid", None),
    nn.Softsign: ("softsign", None),
    nn.Softmax: ("softmax", None),
    nn.LogSoftmax: ("log_softmax", None),
}

# Canonical function/method name -> (activation, argument keys of its parameter).
FUNCTION_ACTIVATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "relu": ("relu", ()),
    "relu6": ("relu6", ()),
    "leaky_relu": ("leaky_relu", ("1", "negative_slope")),
    "prelu": ("prelu", ()),
    "elu": ("elu", ("1", "alpha")),
    "selu": ("selu", ()),
    "celu": ("celu", ("1", "alpha")),
    "gelu": ("gelu", ()),
    "silu": ("silu", ()),
    "mish": ("mish", ()),
    "softplus": ("softplus", ("1", "beta")),
    "hardswish": ("hardswish", ()),
    "hardsigmoid": ("hardsigmoid", ()),
    "hardtanh": ("hardtanh", ()),
    "tanh": ("tanh", ()),
    "sigmoid": ("sigmoid", ()),
    "softsign": ("softsign", ()),
    "softmax": ("softmax", ()),
    "log_softmax": ("log_softmax", ()),
    "sin": ("sin", ()),  # SIREN
    "cos": ("cos", ()),
}

# Ops that move, select or drop values without changing the scale the next layer sees.
TRANSPARENT_FUNCTIONS = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "T", "mT", "contiguous",
    "squeeze", "unsqueeze", "expand", "expand_as", "view_as", "reshape_as", "getitem", "narrow",
    "select", "chunk", "split", "unbind", "tensor_split", "movedim", "swapaxes", "flip", "roll",
    "repeat", "repeat_interleave", "tile", "pad", "constant_pad_nd", "to", "type", "float", "half",
    "bfloat16", "double", "clone", "detach", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "interpolate", "upsample", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "cat", "concat", "stack", "identity", "mean",
    "type_as", "view_as_complex", "view_as_real",  # a cast; RoPE's pairs seen as complex numbers and back
})
TRANSPARENT_MODULES: tuple[type, ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.ZeroPad1d, nn.ZeroPad2d,
    nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d,
    nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.ReplicationPad3d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)

NORM_FUNCTIONS = frozenset({"layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm", "normalize"})
NORM_MODULES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# Default parameter of each parametrized activation (torch's defaults).
DEFAULT_PARAM = {"leaky_relu": 0.01, "prelu": 0.25, "elu": 1.0, "celu": 1.0, "softplus": 1.0}


def identity(x: torch.Tensor) -> torch.Tensor:
    """The identity, as one named function (theory.gaussian_moments knows it in closed form)."""
    return x


class Leaky:
    """leaky_relu with a fixed slope, as a callable the closed form below recognizes."""

    def __init__(self, slope: float) -> None:
        self.slope = slope

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope)


@functools.lru_cache(maxsize=64)
def _leaky(slope: float) -> Leaky:
    return Leaky(slope)


@functools.lru_cache(maxsize=256)
def activation_fn(name: str, param: float | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The elementwise function behind a canonical activation name, or None when it is not elementwise.
    Cached: the signal sweep asks twice per activation op, and the table is rebuilt on every call."""
    p: float = DEFAULT_PARAM.get(name, 1.0) if param is None else param
    if name in ("leaky_relu", "prelu"):
        return _leaky(p)
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "identity": identity,
        "relu": F.relu,
        "relu6": F.relu6,
        "elu": lambda x: F.elu(x, p),
        "celu": lambda x: F.celu(x, p),
        "selu": F.selu,
        "gelu": F.gelu,
        "silu": F.silu,
        "mish": F.mish,
        "softplus": lambda x: F.softplus(x, p),
        "hardswish": F.hardswish,
        "hardsigmoid": F.hardsigmoid,
        "hardtanh": F.hardtanh,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softsign": F.softsign,
        "sin": torch.sin,
        "cos": torch.cos,
    }
    return table.get(name)


def is_norm_module(module: nn.Module) -> bool:
    """torch's norm layers, and library ones by name (LlamaRMSNorm, T5LayerNorm, ...); a module
    that holds a weight layer (timm's LinearNorm: a Linear and a BatchNorm) is not one."""
    if isinstance(module, NORM_MODULES):
        return True
    name = type(module).__name__
    if not (name.endswith("Norm") or "LayerNorm" in name or "RMSNorm" in name or "BatchNorm" in name):
        return False
    return next(module.children(), None) is None


class RoleKind(str, enum.Enum):
    """What an op does to the signal."""

    ACTIVATION = "activation"  # an elementwise nonlinearity (or softmax)
    TRANSPARENT = "transparent"  # moves, selects or drops values: the scale is unchanged
    NORM = "norm"  # a normalization
    ADD = "add"  # add / sub
    SCALE = "scale"  # mul / div / neg
    OTHER = "other"  # none of the above


@dataclass(frozen=True)
class Role:
    """What an op does to the signal: its kind, and for an activation its name and parameter."""

    kind: RoleKind
    activation: str | None = None
    param: float | None = None


def module_role(module: nn.Module) -> Role:
    entry = _activation_entry(type(module))
    if entry is not None:
        name, attr = entry
        return Role(RoleKind.ACTIVATION, name, _param_value(getattr(module, attr, None)) if attr else None)
    if isinstance(module, TRANSPARENT_MODULES):
        return Role(RoleKind.TRANSPARENT)
    if is_norm_module(module):
        return Role(RoleKind.NORM)
    return Role(RoleKind.OTHER)


def _activation_entry(cls: type) -> tuple[str, str | None] | None:
    """MODULE_ACTIVATIONS' entry for a module class or its first listed base; looked up once per
    class (a deep stack asks for every layer)."""
    if cls in _ENTRIES:
        return _ENTRIES[cls]
    entry = MODULE_ACTIVATIONS.get(cls)
    if entry is None:
        entry = next((v for t, v in MODULE_ACTIVATIONS.items() if issubclass(cls, t)), None)
    if len(_ENTRIES) < 4096:  # classes made on the fly (tests, notebooks) do not grow it without bound
        _ENTRIES[cls] = entry
    return entry


_ENTRIES: dict[type, tuple[str, str | None] | None] = {}


def reduced_max(op: Op) -> int | None:
    """The dim of a max taken along one dimension of one tensor (`torch.max(x, 2)[0]`, PointNet's
    global feature; `x.amax(-1)`): a max pool whose window is that whole dimension. None for
    anything else (an elementwise max of two tensors, a max over everything)."""
    if op.target not in ("max", "amax") or len(op.operands) != 1:
        return None
    dim = op.scalar("1", "dim")
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def function_role(op: Op) -> Role:
    name = op.target
    if name in FUNCTION_ACTIVATIONS:
        activation, keys = FUNCTION_ACTIVATIONS[name]
        value = op.scalar(*keys) if keys else None
        return Role(RoleKind.ACTIVATION, activation, float(value) if isinstance(value, (int, float)) else None)
    if name in TRANSPARENT_FUNCTIONS or reduced_max(op) is not None:
        return Role(RoleKind.TRANSPARENT)
    if name in NORM_FUNCTIONS:
        return Role(RoleKind.NORM)
    if name in ("add", "sub"):
        return Role(RoleKind.ADD)
    if name in ("mul", "div", "neg"):
        return Role(RoleKind.SCALE)
    return Role(RoleKind.OTHER)


def _param_value(value: object) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.is_meta or value.numel() == 0:
            return None
        return float(value.detach().float().mean())
    return float(value) if isinstance(value, (int, float)) else None


@functools.lru_cache(maxsize=4)
def _references(dtype: torch.dtype) -> tuple[tuple[str, float | None, torch.Tensor], ...]:
    """The known activations on match_elementwise's grid, in the order they are tried: computed once
    per dtype (a model with one GELU module per block asks for each block's)."""
    x = torch.linspace(-8.0, 8.0, 321, dtype=dtype)
    out: list[tuple[str, float | None, torch.Tensor]] = []
    with torch.no_grad():
        for name in ("identity", "relu", "relu6", "gelu", "silu", "mish", "elu", "selu", "celu", "softplus",
                     "hardswish", "hardsigmoid", "hardtanh", "tanh", "sigmoid", "softsign"):
            fn_ref = activation_fn(name)
            assert fn_ref is not None
            out.append((name, None, fn_ref(x)))
        out += [("leaky_relu", slope, torch.nn.functional.leaky_relu(x, slope)) for slope in (0.01, 0.1, 0.2, 0.3)]
    return tuple(out)


def match_elementwise(fn: Callable[[torch.Tensor], Any], atol: float = 2e-3) -> tuple[str, float | None] | None:
    """(canonical activation, its parameter) that `fn` computes, checked numerically on [-8, 8];
    ("", None) for an elementwise function none of the known ones; None when `fn` is not elementwise.

    Used for library and hand-written activation modules (HF's GELUActivation, a user's Swish):
    they are judged by what they compute, not by their names.
    """
    x = torch.linspace(-8.0, 8.0, 321)  # past 6, where relu and relu6 part
    try:
        # a module that draws random numbers (noise, a custom dropout) draws from a fork: the user's
        # RNG stream is not advanced by looking at their model
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            y = fn(x.clone())
    except Exception:
        return None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape or not torch.isfinite(y).all():
        return None
    y = y.float()
    for name, slope, ref in _references(x.dtype):
        if torch.allclose(y, ref, atol=atol, rtol=0):
            return name, slope
    return "", None  # elementwise, but none of the known ones
