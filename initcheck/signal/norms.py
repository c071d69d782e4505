"""What a normalization does to the signal: the batch's (or a token's) statistics in training,
the running ones for a BatchNorm in eval mode, the affine parameters as they are, the eps under the
square root, and an activation a norm module applies inside (timm's BatchNormAct2d)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import theory
from ..graph import Op, OpKind
from ..ops.activations import RoleKind, match_elementwise, module_role
from ..stats import TensorStats
from . import channels
from .channels import Channels
from .moments import Moment, activated, activation_moments, from_channels
from .passes import Pass

_ONE = TensorStats(1, 1.0, 0.0, True)
_ZERO = TensorStats(1, 0.0, 0.0, True)


def per_channel(out: Moment, x: Moment, fn: Callable[[torch.Tensor], torch.Tensor] | None) -> Moment:
    """An elementwise function's output, per channel where the input's channels are known."""
    if x.chan is None or fn is None:
        return out
    return from_channels(channels.activated(fn, x.chan), out.signal)


def norm(p: Pass, op: Op, x: Moment) -> Moment:
    out = _normalized(p, op, x)
    act = getattr(p.index.module(op), "act", None)
    if not isinstance(act, nn.Module):
        return out
    # a norm module that applies its activation inside (timm's BatchNormAct2d, GroupNormAct, ...):
    # the traced op is the norm alone, so the activation is pushed through here
    role = module_role(act)
    if role.kind is RoleKind.TRANSPARENT or (role.kind is RoleKind.ACTIVATION and role.activation == "identity"):
        return out
    fn: Callable[[torch.Tensor], torch.Tensor] | None
    if role.kind is RoleKind.ACTIVATION and role.activation in theory.KNOWN:
        m = activation_moments(role.activation or "identity", role.param, out.mean, out.var)
        fn = theory.activation_fn(role.activation or "identity", role.param)
    elif match_elementwise(act) is not None:
        m, fn = theory.gaussian_moments(act, out.mean, out.var), act
    else:
        return out
    p.norm_gain[op.index] = p.norm_gain.get(op.index, 1.0) * m.slope2  # the backward passes both
    return per_channel(activated(m, out), out, fn)


def _normalized(p: Pass, op: Op, x: Moment) -> Moment:
    gamma, beta = _norm_affine(p, op)
    mod = p.index.module(op)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not p.training and mod.running_var is not None:
        return _batch_norm_eval(p, op, mod, x, gamma, beta)
    batch = isinstance(mod, nn.modules.batchnorm._BatchNorm)
    # (x - mean) / sqrt(var + eps) has variance var / (var + eps): a norm behind a tiny signal does
    # not restore it (a depthwise conv at kaiming fan_out counts all its 576 outputs, var 6e-4, and
    # BatchNorm's eps of 1e-3 keeps a third of the unit variance)
    eps = _eps(mod, op)
    var = max(x.var - x.between, 0.0) if batch else x.var  # a BatchNorm divides by each channel's own
    shrink = var / (var + eps) if eps > 0 and math.isfinite(var) else 1.0  # inf / inf: a norm of an overflowed signal
    g2 = gamma.second * shrink
    p.norm_gain[op.index] = gamma.second / max(x.var + eps, 1e-12)
    # a pattern of channel means shared by every token survives a norm over the channels (LayerNorm,
    # GroupNorm) in proportion; a BatchNorm removes each channel's mean
    kept = 0.0 if batch else g2 * min(1.0, x.between / max(x.var, 1e-30))
    out = Moment(beta.mean, g2 + beta.second, g2 * min(1.0, x.signal / max(x.var, 1e-30)), kept + beta.std * beta.std)
    if batch:
        # on the batch's statistics channel c leaves with mean beta_c and variance gamma_c^2 v_c / (v_c + eps)
        assert isinstance(mod, nn.modules.batchnorm._BatchNorm)
        c = _batch_norm_channels(mod, x, eps)
        return from_channels(c, out.signal) if c is not None else out
    return out


def _eps(mod: nn.Module | None, op: Op) -> float:
    eps = getattr(mod, "eps", None) if mod is not None else op.scalar("eps", default=None)
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else 0.0


def _batch_norm_channels(mod: nn.modules.batchnorm._BatchNorm, x: Moment, eps: float) -> Channels | None:
    n = mod.num_features
    w, b = mod.weight, mod.bias
    if (w is not None and (not channels.plain(w) or w.numel() != n)) or \
            (b is not None and (not channels.plain(b) or b.numel() != n)):
        return None
    gamma = w.detach().double().reshape(-1) if w is not None else torch.ones(n, dtype=torch.float64)
    beta = b.detach().double().reshape(-1) if b is not None else torch.zeros(n, dtype=torch.float64)
    if type(mod).__name__.startswith("Gemma"):
        gamma = gamma + 1.0
    if x.chan is not None and len(x.chan) == n:
        v = x.chan.var
    else:
        v = torch.full((n,), max(x.var - x.between, 0.0), dtype=torch.float64)
    shrink = v / (v + eps) if eps > 0 else torch.ones(n, dtype=torch.float64)
    return Channels(beta, gamma * gamma * shrink)


def _batch_norm_eval(p: Pass, op: Op, mod: nn.modules.batchnorm._BatchNorm, x: Moment, gamma: TensorStats,
                     beta: TensorStats) -> Moment:
    """BatchNorm in eval mode normalizes with its running statistics, not the batch's: fresh ones
    (mean 0, var 1) make it the identity, whatever the scale of its input."""
    var = mod.running_var
    rm = p.tensor(mod.running_mean)
    assert var is not None
    inv = float((1.0 / (var.double() + mod.eps)).mean())
    rm_mean, rm_second = (rm.mean, rm.second) if rm is not None else (0.0, 0.0)
    centered = max(x.second - 2.0 * x.mean * rm_mean + rm_second, 0.0)
    shift = gamma.mean * (x.mean - rm_mean) * math.sqrt(inv)
    p.norm_gain[op.index] = gamma.second * inv
    second = gamma.second * centered * inv + beta.second + 2.0 * beta.mean * shift
    return Moment(shift + beta.mean, second, gamma.second * x.signal * inv)


def _norm_affine(p: Pass, op: Op) -> tuple[TensorStats, TensorStats]:
    """The norm's scale and shift statistics: its actual affine parameters (1 and 0 when it has none)."""
    mod = p.index.module(op)
    if mod is not None:
        gs, bs = p.tensor(getattr(mod, "weight", None)), p.tensor(getattr(mod, "bias", None))
        if gs is not None and type(mod).__name__.startswith("Gemma"):
            gs = TensorStats(gs.count, gs.mean + 1.0, gs.std, gs.constant)  # Gemma scales by (1 + w)
        return gs or _ONE, bs or _ZERO
    params = [p.index.ops[i] for i in op.inputs if p.index.ops[i].kind is OpKind.PARAM]
    gs = p.param(params[0].target) if params else None
    bs = p.param(params[1].target) if len(params) > 1 else None
    return gs or _ONE, bs or _ZERO
