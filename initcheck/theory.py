"""Fans, gains and initialization schemes: the maths, with torch.nn.init as the reference.

Conventions (see docs/theory.md):
- fans are counted from how a weight is *used*, not from torch's shape rule
  (`torch.nn.init._calculate_fan_in_and_fan_out`): grouped and depthwise convolutions divide both
  fans by the groups, ConvTranspose's `[in, out/groups, *k]` layout is read the right way round,
  and packed matrices (attention's q/k/v, an RNN's gates) count one block, not the stack;
- the gain of an activation is `torch.nn.init.calculate_gain`'s where torch defines one, otherwise
  the variance-preserving gain 1/sqrt(E[f(z)^2]), z ~ N(0, 1), computed from the function itself
  (He et al. 2015 derive sqrt(2) for ReLU exactly this way).
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ops.activations import DEFAULT_PARAM, Leaky, activation_fn, identity
from .ops.layers import Layout, WeightRole

__all__ = ["DEFAULT_PARAM", "activation_fn", "identity"]  # defined with the op roles; kept here for the maths that uses them

# Activations grouped by the scheme that preserves their signal.
SATURATING = frozenset({"tanh", "sigmoid", "softsign", "hardtanh", "hardsigmoid"})
RELU_FAMILY = frozenset(
    {"relu", "relu6", "leaky_relu", "prelu", "elu", "celu", "gelu", "silu", "mish", "softplus", "hardswish"}
)
LINEAR_LIKE = frozenset({"identity", "softmax", "log_softmax"})
# Bounded or periodic: a large pre-activation does not carry on as a large signal (sin, cos: SIREN).
PERIODIC = frozenset({"sin", "cos"})
BOUNDED = SATURATING | PERIODIC
KNOWN = SATURATING | RELU_FAMILY | LINEAR_LIKE | PERIODIC | {"selu"}

# --- Gaussian expectations -------------------------------------------------------------------

# A fixed grid over N(0, 1) with Simpson weights: exact enough (1e-6) for the kinks of ReLU-like
# functions, where Gauss-Hermite rules converge slowly.
_GRID_N = 8001
_GRID_HALF_WIDTH = 10.0


@functools.lru_cache(maxsize=1)
def normal_grid() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.linspace(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH, _GRID_N, dtype=torch.float64)
    h = float(z[1] - z[0])
    simpson = torch.ones(_GRID_N, dtype=torch.float64)
    simpson[1:-1:2] = 4.0
    simpson[2:-1:2] = 2.0
    w = simpson * h / 3.0 * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, w / w.sum()


@dataclass(frozen=True)
class Moments:
    """E[f(x)], E[f(x)^2] and E[f'(x)^2] for x ~ N(mean, var)."""

    mean: float
    second: float
    slope2: float


def _phi(a: float) -> float:
    return math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)


def _big_phi(a: float) -> float:
    return 0.5 * math.erfc(-a / math.sqrt(2.0))


def leaky_moments(slope: float, mean: float, var: float) -> Moments:
    """Closed form for f(x) = x (x > 0), slope * x (x <= 0), x ~ N(mean, var); ReLU is slope 0.
    With a = mean/sd: E[relu] = mean Phi(a) + sd phi(a), E[relu^2] = (mean^2 + var) Phi(a) + mean sd phi(a),
    and f = slope x + (1 - slope) relu(x), f^2 = relu^2 + slope^2 (x^2 - relu^2)."""
    sd = math.sqrt(max(var, 0.0))
    if sd == 0.0:
        y = mean if mean > 0 else slope * mean
        return Moments(y, y * y, 1.0 if mean > 0 else slope * slope)
    a = mean / sd
    cdf, pdf = _big_phi(a), _phi(a)
    r1 = mean * cdf + sd * pdf
    r2 = (mean * mean + var) * cdf + mean * sd * pdf
    second = r2 + slope * slope * (mean * mean + var - r2)
    return Moments(slope * mean + (1.0 - slope) * r1, second, cdf + slope * slope * (1.0 - cdf))


def _closed_form(fn: Callable[[torch.Tensor], torch.Tensor], mean: float, var: float) -> Moments | None:
    if fn is identity:
        return Moments(mean, mean * mean + max(var, 0.0), 1.0)
    if fn is F.relu:
        return leaky_moments(0.0, mean, var)
    if isinstance(fn, Leaky):
        return leaky_moments(fn.slope, mean, var)
    return None


def _key(x: float) -> float:
    """8 significant digits: a depth sweep's variances differ in the last bits, not in meaning."""
    return float(f"{x:.8g}") if math.isfinite(x) else x


def gaussian_moments(fn: Callable[[torch.Tensor], torch.Tensor], mean: float, var: float) -> Moments:
    """Push N(mean, var) through an elementwise `fn`: the moments the signal model needs. Identity,
    ReLU and leaky ReLU have closed forms; other functions are integrated on the grid, once per
    (function, mean, var) to 8 significant digits."""
    closed = _closed_form(fn, mean, var)
    if closed is not None:
        return closed
    if isinstance(fn, torch.nn.Module) or getattr(fn, "__closure__", None) is not None:
        # a user's module or a closure: a global cache would keep it alive (and a closure is new
        # at each call, so it would never hit); one that draws random numbers draws from a fork
        with torch.random.fork_rng(devices=[]):
            return _grid_moments(fn, mean, var)
    return _grid_moments_cached(fn, _key(mean), _key(var))


@functools.lru_cache(maxsize=8192)
def _grid_moments_cached(fn: Callable[[torch.Tensor], torch.Tensor], mean: float, var: float) -> Moments:
    return _grid_moments(fn, mean, var)


def _grid_moments(fn: Callable[[torch.Tensor], torch.Tensor], mean: float, var: float) -> Moments:
    z, w = normal_grid()
    x = (mean + math.sqrt(max(var, 0.0)) * z).detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        (dy,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    y = y.detach().double()
    dy = torch.zeros_like(y) if dy is None else dy.double()
    # Non-finite values (an overflowing custom function) count as zero rather than poison the sums.
    y = torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    dy = torch.nan_to_num(dy, nan=0.0, posinf=0.0, neginf=0.0)
    return Moments(float((w * y).sum()), float((w * y * y).sum()), float((w * dy * dy).sum()))


@functools.lru_cache(maxsize=256)
def numeric_gain(name: str, param: float | None = None) -> float:
    """Variance-preserving gain 1/sqrt(E[f(z)^2]), z ~ N(0, 1), of a named activation."""
    fn = activation_fn(name, param)
    if fn is None:
        return 1.0
    return gain_of(fn)


def gain_of(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Variance-preserving gain of any elementwise function (custom activations included)."""
    second = gaussian_moments(fn, 0.0, 1.0).second
    return 1.0 / math.sqrt(second) if second > 0 else 1.0


def gain(name: str, param: float | None = None) -> float:
    """torch.nn.init.calculate_gain where torch defines the activation, the numeric gain otherwise."""
    if name in LINEAR_LIKE or name == "selu":
        # SELU's fixed point needs LeCun's 1/fan_in (torch's docs: nonlinearity='linear' for SNNs).
        return 1.0
    if name == "relu":
        return torch.nn.init.calculate_gain("relu")
    if name == "tanh":
        return torch.nn.init.calculate_gain("tanh")
    if name == "sigmoid":
        return torch.nn.init.calculate_gain("sigmoid")
    if name in ("leaky_relu", "prelu"):
        slope = DEFAULT_PARAM[name] if param is None else param
        return torch.nn.init.calculate_gain("leaky_relu", slope)
    return numeric_gain(name, param)


# --- Fans ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fans:
    fan_in: int
    fan_out: int


def fans(layout: Layout, shape: tuple[int, ...], groups: int = 1, stride: tuple[int, ...] = (), blocks: int = 1) -> Fans:
    """Fans of a weight from its layout (how it is used) and shape.

    layout: see ops.layers.Layout (how the op reads the weight).
    """
    if layout is Layout.OUT_IN:
        return Fans(_prod(shape[1:]), shape[0])
    if layout is Layout.IN_OUT:
        return Fans(shape[0], _prod(shape[1:]))
    if layout is Layout.PACKED:
        return Fans(_prod(shape[1:]), shape[0] // max(blocks, 1))
    if layout is Layout.CONV:
        rf = _prod(shape[2:])
        return Fans(shape[1] * rf, (shape[0] // groups) * rf)
    if layout is Layout.CONV_TRANSPOSE:
        # Each output sums over in/g channels and, per spatial dimension, about k/stride taps.
        k = shape[2:]
        s = tuple(stride) + (1,) * (len(k) - len(stride))
        reach = _prod(max(1, math.ceil(kk / ss)) for kk, ss in zip(k, s))
        return Fans((shape[0] // groups) * reach, shape[1] * _prod(k))
    if layout is Layout.BILINEAR:
        return Fans(shape[1] * shape[2], shape[0])
    if layout is Layout.EMBEDDING:
        return Fans(1, shape[1])
    raise ValueError(f"unknown layout {layout!r}; expected one of out_in, in_out, conv, conv_transpose, bilinear, embedding, packed")


def _prod(xs: Iterable[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


# --- Schemes ---------------------------------------------------------------------------------

class Family(str, enum.Enum):
    """The family of init a weight is judged against (schemes.Scheme is the exact draw that fix uses)."""

    HE = "he"
    XAVIER = "xavier"
    LECUN = "lecun"
    ORTHOGONAL = "orthogonal"
    EMBEDDING = "embedding"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Recommendation:
    scheme: Family
    gain: float
    std: float


SCHEME_TITLE = {
    Family.HE: "He",
    Family.XAVIER: "Xavier",
    Family.LECUN: "LeCun",
    Family.ORTHOGONAL: "orthogonal",
    Family.EMBEDDING: "embedding N(0,1)",
    Family.UNKNOWN: "unknown",
}


def recommend(
    activation: str, param: float | None, fan: Fans, role: WeightRole = WeightRole.WEIGHT, custom_gain: float | None = None
) -> Recommendation:
    """The scheme and std that keep the signal's scale through this layer and its activation.

    role: a plain weight, an RNN's hidden-to-hidden matrix (orthogonal) or an embedding.
    custom_gain: the numeric gain of an `unknown:<name>` activation, measured from the function itself.
    """
    if role is WeightRole.EMBEDDING:
        return Recommendation(Family.EMBEDDING, 1.0, 1.0)
    if role is WeightRole.RECURRENT:
        return Recommendation(Family.ORTHOGONAL, 1.0, 1.0 / math.sqrt(fan.fan_in))
    g = gain(activation, param) if activation in KNOWN else (custom_gain or 1.0)
    if activation == "selu":
        return Recommendation(Family.LECUN, 1.0, 1.0 / math.sqrt(fan.fan_in))
    if activation in RELU_FAMILY or activation in PERIODIC or (activation.startswith("unknown:") and g != 1.0):
        return Recommendation(Family.HE, g, g / math.sqrt(fan.fan_in))
    return Recommendation(Family.XAVIER, g, g * math.sqrt(2.0 / (fan.fan_in + fan.fan_out)))


def torch_default_std(fan_in: int) -> float:
    """nn.Linear / nn.Conv*'s default: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
    return 1.0 / math.sqrt(3.0 * fan_in)
