"""Per-channel moments: each channel's own mean and within-channel variance, pushed through the
layers with their actual weights.

Summary moments assume every input channel alike. Behind a layer with few outputs and no norm
(SqueezeNet's 16-channel squeeze, an SE reduction) the channels are not alike: channel j of a weight
layer has mean (W~ mu)_j, where W~ sums the kernel's taps, and an activation then treats a channel
centred at +2 and one at -2 very differently. The mean of (W~ mu)_j^2 over a dozen rows is one draw,
off its expectation by tens of percent, and the error compounds block after block. Carried as
vectors, the means are exact for the weights at hand:

    mean_j = sum_i W~_ji mu_i,   var_j = sum_i (sum_taps W_ji^2) v_i

(inputs independent across channels and positions within a channel). A BatchNorm in training resets
channel j to mean beta_j and variance gamma_j^2. Ops that move the channel axis (views, permutes)
drop the vectors and the summary moments take over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .. import theory


@dataclass(frozen=True, eq=False)
class Channels:
    """mean[c], var[c]: channel c's mean and its variance within the channel (float64 vectors)."""

    mean: torch.Tensor
    var: torch.Tensor

    def __len__(self) -> int:
        return int(self.mean.numel())

    @property
    def second(self) -> float:
        return float((self.mean * self.mean + self.var).mean())

    @property
    def global_mean(self) -> float:
        return float(self.mean.mean())

    @property
    def between(self) -> float:
        return float(self.mean.var(correction=0)) if len(self) > 1 else 0.0

    @property
    def alike(self) -> bool:
        """Every channel with the same mean and variance (behind a BatchNorm at its default affine)."""
        return bool((self.mean == self.mean[0]).all()) and bool((self.var == self.var[0]).all()) if len(self) else True

    def scaled(self, c: float) -> Channels:
        return Channels(self.mean * c, self.var * c * c)


def plain(t: object) -> bool:
    """Whether a weight can be read as a whole here: a local tensor, not a shard (a DTensor under
    FSDP2 holds one rank's rows, and mixing it with local vectors raises)."""
    return type(t) in (torch.Tensor, torch.nn.Parameter) and not getattr(t, "is_meta", True)


def uniform(count: int, mean: float, var: float) -> Channels:
    return Channels(torch.full((count,), mean, dtype=torch.float64), torch.full((count,), max(var, 0.0), dtype=torch.float64))


def through_weight(w: torch.Tensor, x: Channels, conv: bool) -> Channels | None:
    """A weight layer's output channels (bias aside): w is (out, in/groups, *taps) for a conv, the
    groups read from the input's width; (out, in) for a linear layer, whose input may be a
    flattened NCHW map (each channel repeated over its positions). None when the widths do not fit."""
    if w.ndim < 2 or not plain(w):
        return None
    w = w.detach()
    out, per = int(w.shape[0]), int(w.shape[1])
    mean, var = x.mean, x.var
    if not conv and len(x) != per:
        if len(x) == 0 or per % len(x) != 0:
            return None
        reps = per // len(x)  # flatten(1) of an NCHW map: channel c covers features c*reps ...
        mean, var = mean.repeat_interleave(reps), var.repeat_interleave(reps)
    groups = len(mean) // per if per else 0
    if groups < 1 or groups * per != len(mean) or out % groups != 0:
        return None
    summed, squares = _taps(w)
    # block-diagonal: group g's outputs read group g's inputs
    mi, vi = mean.view(groups, per, 1), var.view(groups, per, 1)
    so, sq = summed.view(groups, out // groups, per), squares.view(groups, out // groups, per)
    return Channels(torch.bmm(so, mi).reshape(out), torch.bmm(sq, vi).reshape(out))


# One memo per running analysis (`shared()`, entered by rows.shared_rows): the actual and effective
# sweeps and the report's raw rms each push the same weights through; each is summed once. Keyed by
# the tensor's id and version, holding the tensor so the id stays its own.
_TAPS: list[dict[int, tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]]] = []


@contextmanager
def shared() -> Iterator[None]:
    _TAPS.append({})
    try:
        yield
    finally:
        _TAPS.pop()


def _taps(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (out, in) pair, the sum of the kernel's taps and the sum of their squares."""
    memo = _TAPS[-1] if _TAPS else None
    hit = memo.get(id(w)) if memo is not None else None
    if hit is not None and hit[0] is w and hit[1] == w._version:
        return hit[2], hit[3]
    flat = w.detach().reshape(w.shape[0], w.shape[1], -1)
    acc = torch.float64 if flat.dtype == torch.float64 else torch.float32
    summed, squares = flat.sum(-1, dtype=acc).double(), flat.pow(2).sum(-1, dtype=acc).double()
    if memo is not None:
        memo[id(w)] = (w, w._version, summed, squares)
    return summed, squares


def with_bias(c: Channels, bias: torch.Tensor | None) -> Channels:
    if bias is None or not plain(bias) or bias.numel() != len(c):
        return c
    return Channels(c.mean + bias.detach().double().reshape(-1), c.var)


# A coarser grid than theory's (8001 points) for many channels at once: 1e-4 relative is plenty for
# moments that then meet a measurement to 10%.
_GRID = 401


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.linspace(-8.0, 8.0, _GRID, dtype=torch.float64)
    h = float(z[1] - z[0])
    simpson = torch.ones(_GRID, dtype=torch.float64)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    return z, simpson * h / 3.0 * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def activated(fn: Callable[[torch.Tensor], torch.Tensor], x: Channels, weights: torch.Tensor | None = None) -> Channels:
    """f(N(mean_c, var_c)) per channel on the grid; `weights`: the grid's weights when the draw is
    not one normal (the max of a pooling window)."""
    n = len(x)
    if n > 1 and x.alike:
        # every channel alike (behind a BatchNorm at its default affine): one row, repeated
        one = activated(fn, Channels(x.mean[:1], x.var[:1]), weights)
        return Channels(one.mean.expand(n).clone(), one.var.expand(n).clone())
    z, w = _grid()
    if weights is not None:
        w = weights
    y = fn(x.mean[:, None] + x.var.clamp(min=0.0).sqrt()[:, None] * z[None, :]).double()
    m = (y * w).sum(-1)
    second = (y * y * w).sum(-1)
    return Channels(m, (second - m * m).clamp(min=0.0))


def max_weights(k: int) -> torch.Tensor:
    """The grid's weights for the max of k iid standard normals (density k Phi^{k-1} phi)."""
    z, w = _grid()
    return w * k * (0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))).pow(k - 1)


def activation(name: str, param: float | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return theory.activation_fn(name, param)
