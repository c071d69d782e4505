"""The moments the signal model carries per tensor, and the Gaussian expectations it needs."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

from .. import theory
from .channels import Channels


@dataclass(frozen=True)
class Moment:
    """mean: E[x]; second: E[x^2]; signal: the part of the variance that the input drives
    (biases add to `second` but not to `signal`: a net whose output no longer depends on its
    input has a vanished signal however large its biases)."""

    mean: float
    second: float
    signal: float = 0.0
    between: float = 0.0  # the variance of the per-channel means across channels (a weight layer's rows differ)
    # each channel's mean and variance where they are known (channels.py); the summary fields agree with them
    chan: Channels | None = field(default=None, compare=False, repr=False)

    @property
    def var(self) -> float:
        return max(self.second - self.mean * self.mean, 0.0)

    @property
    def rms(self) -> float:
        return math.sqrt(max(self.second, 0.0))

    def scaled(self, c: float) -> Moment:
        chan = self.chan.scaled(c) if self.chan is not None else None
        return Moment(self.mean * c, self.second * c * c, self.signal * c * c, self.between * c * c, chan)

    @property
    def within(self) -> float:
        """The variance about each channel's own mean: the second moment less the squared mean and
        the spread of the channel means (`between`: what a bias adds, unit by unit)."""
        return max(self.second - self.mean * self.mean - max(self.between, 0.0), 0.0)

    def summary(self) -> Moment:
        """The same moments without the per-channel vectors (after an op that moves the channel axis)."""
        return self if self.chan is None else replace(self, chan=None)


def plus(a: Moment, b: Moment, sign: float = 1.0) -> Moment:
    """a + sign * b for independent a and b (the per-channel vectors aside)."""
    return Moment(a.mean + sign * b.mean, a.second + b.second + 2 * sign * a.mean * b.mean, a.signal + b.signal,
                  a.between + b.between)


def summed(x: Moment, k: float, k2: float, shared: bool = True) -> Moment:
    """A sum of values with x's moments, k of them on average and k2 = E[count^2]: their
    fluctuations add incoherently (k times), what they share coherently (k2 times): the mean, and a
    channel's mean too (`between`) when `shared` (a sum over positions or over rows of one channel,
    not over different channels)."""
    between = max(x.between, 0.0)
    coherent = x.mean * x.mean + (between if shared else 0.0)
    second = k2 * coherent + k * max(x.second - coherent, 0.0)
    return Moment(k * x.mean, second, min(k * x.signal, second), k2 * between if shared else k * between)


def from_channels(c: Channels, signal: float) -> Moment:
    """The summary moments of per-channel ones; `signal`: the input-driven part, kept from the summary model."""
    second = c.second
    return Moment(c.global_mean, second, min(signal, second), c.between, c)


@dataclass(frozen=True)
class Signal:
    forward: tuple[Moment | None, ...]  # per op: the moments of its output
    backward: tuple[float, ...]  # per op: E[grad^2] reaching its output
    unhandled: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (op name, ops it was passed through at)
    gates: Mapping[int, Moment] = field(default_factory=dict)  # RNN op -> its gates' pre-activation

    def preact(self, op: int, preact_op: int) -> Moment | None:
        """What a layer's activation receives: an RNN's gate pre-activation, else the op's output."""
        return self.gates.get(op) or self.forward[preact_op]


UNIT = Moment(0.0, 1.0, 1.0)


def activation_moments(name: str, param: float | None, mean: float, var: float) -> theory.Moments:
    """The moments of name(z), z ~ N(mean, var). Cached on the mean and variance to 9 significant
    digits: decimals would round a variance of 1e-10 (a collapsed signal, 1e-5 rms) to zero."""
    return _activation_moments(name, param, _significant(mean), _significant(var))


def _significant(v: float, digits: int = 9) -> float:
    if v == 0.0 or not math.isfinite(v):
        return v
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


@functools.lru_cache(maxsize=4096)
def _activation_moments(name: str, param: float | None, mean: float, var: float) -> theory.Moments:
    fn = theory.activation_fn(name, param)
    if fn is None:
        raise ValueError(f"no elementwise function for activation {name!r}")
    return theory.gaussian_moments(fn, mean, var)


def activated(m: theory.Moments, x: Moment) -> Moment:
    """The signal passes an activation at its mean squared slope, bounded by the output variance."""
    var = max(m.second - m.mean * m.mean, 0.0)
    return Moment(m.mean, m.second, min(x.signal * m.slope2, var))


@functools.lru_cache(maxsize=64)
def max_gain(k: int) -> float:
    """E[max(z_1..z_k)^2] / E[z^2] for iid standard normals: how max-pooling raises the second
    moment (the max of a 3x3 window has about 2.5x a single value's)."""
    z, w = theory.normal_grid()
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    density = k * cdf.pow(k - 1)  # the max's density relative to the normal's, on the grid's weights
    return float((w * density * z * z).sum())
