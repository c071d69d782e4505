"""What pooling, averaging and dropout do to the signal: the transparent ops that are not quite
(a dropout in training, an average over a window, a max over a window)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import theory
from ..graph import Op, OpKind
from ..ops.activations import RoleKind, reduced_max
from . import channels
from .channels import Channels
from .moments import Moment, from_channels, max_gain
from .passes import Pass


def transparent(p: Pass, op: Op, x: Moment) -> Moment:
    drop = dropout_rate(p, op)
    if drop is not None:
        # inverted dropout in training keeps 1-p of the values, scaled by 1/(1-p): E[y^2] = E[x^2]/(1-p)
        # (the mask is drawn per element, so what every token shares, `between`, stays as it was)
        if drop >= 1.0:
            return x
        c = x.chan
        kept = Channels(c.mean, (c.mean ** 2 + c.var) / (1.0 - drop) - c.mean ** 2) if c is not None else None
        return Moment(x.mean, x.second / (1.0 - drop), x.signal / (1.0 - drop), x.between, kept)
    k = average_window(p, op)
    if k is not None:
        return averaged(x if _spatial(op) else x.summary(), k)
    k = pool_window(p, op)
    if k <= 1:
        return x if _keeps_channels(p, op) else x.summary()
    data = p.index.data_operands(op)
    pre = _monotone_preact(p, data[0]) if data else None
    if pre is not None:
        fn, z = pre
        out = _max_through(fn, z, x, k)
        if z.chan is not None:  # each channel's max through its own pre-activation
            return from_channels(channels.activated(fn, z.chan, channels.max_weights(k)), out.signal)
        return out
    joined = _joined_preacts(p, data[0]) if data and x.chan is not None else None
    if joined is not None:  # the channels of activations side by side (a SqueezeNet fire's two expands)
        fn, c = joined
        return from_channels(channels.activated(fn, c, channels.max_weights(k)), x.signal * max_gain(k))
    # anything else taken as Gaussian, its own pre-activation (NF-ResNet's stem pools the conv's raw
    # output): the max of k values raises the mean too (1.49 sd for 9), which a layer whose weights'
    # rows sum to zero (weight standardization) does not pass on
    out = _max_through(_identity, x, x, k)
    if x.chan is not None:
        return from_channels(channels.activated(_identity, x.chan, channels.max_weights(k)), out.signal)
    return out


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _joined_preacts(p: Pass, idx: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], Channels] | None:
    """For a concatenation along the channels of outputs of one monotone activation: the function
    and the pre-activations' channels, in order."""
    op = p.index.ops[idx]
    if op.kind is not OpKind.FUNCTION or op.target not in ("cat", "concat") or op.scalar("1", "dim", default=0) != 1:
        return None
    parts = [_monotone_preact(p, i) for i in p.index.data_operands(op)]
    if not parts or any(q is None or q[1].chan is None for q in parts):
        return None
    names = {p.index.role(p.index.ops[i]).activation for i in p.index.data_operands(op)}
    first = parts[0]
    if len(names) != 1 or first is None:
        return None
    chans = [q[1].chan for q in parts if q is not None and q[1].chan is not None]
    return first[0], Channels(torch.cat([c.mean for c in chans]), torch.cat([c.var for c in chans]))


def _spatial(op: Op) -> bool:
    """Whether an average leaves the channel axis (dim 1) alone: pooling does; `x.mean(dims)` when
    every dim it averages is past the channels."""
    if op.kind is OpKind.MODULE or op.target != "mean":
        return True
    dims = op.scalar("1", "dim")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return all(isinstance(d, int) and d >= 2 for d in dims)


def _keeps_channels(p: Pass, op: Op) -> bool:
    """Whether a transparent op leaves the channel axis where it was (an identity, a copy, a flatten
    from dim 1 whose features the next layer reads channel-major); views and permutes move it."""
    if op.kind is OpKind.MODULE:
        mod = p.index.module(op)
        return isinstance(mod, (nn.Identity, nn.Dropout)) or (isinstance(mod, nn.Flatten) and int(mod.start_dim) == 1)
    if op.target == "flatten":
        return bool(op.scalar("1", "start_dim", default=0) == 1)
    return op.target in ("contiguous", "clone", "detach", "dropout", "identity")


# An average over a window of unknown size (a global pool, `x.mean(dims)` on a graph that carries no
# shapes) is taken over this many independent values: a final 4x4 to 7x7 map. Where the graph has
# shapes the count is the input's elements per output element: the fluctuation within a channel is
# nearly independent from one position to the next (a random conv's neighbouring outputs share
# inputs through different weights, so they are uncorrelated on average over the draw); what the
# positions share is the channel's mean, carried apart (`between`).
GLOBAL_AVERAGE_COUNT = 16


def _global_count(p: Pass, op: Op) -> float:
    """The number of values a global or adaptive average takes the mean of: from the shapes of its
    input and output where the graph has them (at least 1: an adaptive pool may enlarge a map)."""
    data = p.index.data_operands(op)
    src = p.index.ops[data[0]].shape if data else None
    if src is not None and op.shape is not None and len(op.shape) <= len(src):
        ins, outs = math.prod(src), math.prod(op.shape)
        if ins > 0 and outs > 0:
            return max(ins / outs, 1.0)
    return float(GLOBAL_AVERAGE_COUNT)


def averaged(x: Moment, k: float) -> Moment:
    """The mean of k values of one channel: the channel's mean stays (the global mean m and the
    spread of the channel means across channels, `between`), the fluctuation within it shrinks by k."""
    if x.chan is not None:  # each channel keeps its mean; its fluctuation shrinks by k
        c = Channels(x.chan.mean, x.chan.var / max(k, 1.0))
        return from_channels(c, min(x.signal, c.second))
    between = min(max(x.between, 0.0), x.var)
    second = x.mean * x.mean + between + (x.var - between) / max(k, 1.0)
    return Moment(x.mean, second, min(x.signal, second), between)


def average_window(p: Pass, op: Op) -> float | None:
    """How many values an averaging op takes the mean of; None when it does not average."""
    kernel: object = None
    dims = 1
    if op.kind is OpKind.MODULE:
        mod = p.index.module(op)
        if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            return _global_count(p, op)
        if isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            kernel, dims = mod.kernel_size, int(type(mod).__name__[-2])
    elif op.target.startswith("adaptive_avg_pool") or op.target == "mean":
        return _global_count(p, op)
    elif op.target.startswith("avg_pool") and op.target[8:9].isdigit():
        kernel, dims = op.scalar("1", "kernel_size"), int(op.target[8])
    if kernel is None:
        return None
    ks = tuple(kernel) if isinstance(kernel, (tuple, list)) else (int(kernel),) * dims  # type: ignore[call-overload]
    return float(math.prod(int(k) for k in ks))


def dropout_rate(p: Pass, op: Op) -> float | None:
    """The drop probability of a dropout op that is active in the judged forward, else None. A
    functional dropout's flag is the one traced (`training=self.training` is read at trace time)."""
    if op.kind is OpKind.MODULE:
        mod = p.index.module(op)
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            return float(mod.p) if p.training and mod.p > 0 else None
        return None
    if op.target not in ("dropout", "dropout1d", "dropout2d", "dropout3d"):
        return None
    rate, training = op.scalar("1", "p", default=0.5), op.scalar("2", "training", default=True)
    if not isinstance(rate, (int, float)) or training is False or rate <= 0:
        return None
    return float(rate)


# Elementwise functions that never decrease: max-pooling commutes with them.
_MONOTONE = frozenset({"relu", "relu6", "leaky_relu", "hardtanh", "tanh", "sigmoid", "elu", "identity", "hardsigmoid"})


def _monotone_preact(p: Pass, idx: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], Moment] | None:
    """When op `idx` (the pooled tensor) is a monotone activation's output: the function and its input moments."""
    src = p.index.ops[idx]
    role = p.index.role(src)
    if role.kind is not RoleKind.ACTIVATION or role.activation not in _MONOTONE:
        return None
    before = p.index.data_operands(src)
    z = p.fwd[before[0]] if before else None
    fn = theory.activation_fn(role.activation or "identity", role.param)
    return None if z is None or fn is None else (fn, z)


def _max_through(fn: Callable[[torch.Tensor], torch.Tensor], z: Moment, x: Moment, k: int) -> Moment:
    """max over k of f(z_i) = f(max z_i) for a monotone f. The k values of a window share their
    channel's mean (spread `z.between` across channels); only the rest fluctuates within it:
    f(u + max of k N(0, v_within)), u ~ N(mean, between), on a two-dimensional grid."""
    grid, w = theory.normal_grid()
    cdf = 0.5 * (1.0 + torch.erf(grid / math.sqrt(2.0)))
    wmax = w * k * cdf.pow(k - 1)
    between = min(max(z.between, 0.0), z.var)
    within = max(z.var - between, 0.0)
    u = z.mean + math.sqrt(between) * grid[::8]
    wu = w[::8] / w[::8].sum()
    y = fn(u[:, None] + math.sqrt(within) * grid[None, :]).double()
    w = wu[:, None] * wmax[None, :]
    mean, second = float((w * y).sum()), float((w * y * y).sum())
    gain = second / max(x.second, 1e-30)
    return Moment(mean, second, min(x.signal * gain, second))


def pool_window(p: Pass, op: Op) -> int:
    """The number of elements a max-pooling op takes the maximum of (1 for anything else)."""
    kernel, dims = None, 1
    if op.kind is OpKind.MODULE:
        mod = p.index.module(op)
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            kernel, dims = mod.kernel_size, int(type(mod).__name__[-2])
    elif op.target.startswith("max_pool") and op.target[8:9].isdigit():
        kernel, dims = op.scalar("1", "kernel_size"), int(op.target[8])
    elif (dim := reduced_max(op)) is not None:  # the whole dimension is the window
        data = p.index.data_operands(op)
        return (p.index.ops[data[0]].size(dim) or 1) if data else 1
    if kernel is None:
        return 1
    ks = tuple(kernel) if isinstance(kernel, (tuple, list)) else (int(kernel),) * dims
    return math.prod(int(k) for k in ks)
