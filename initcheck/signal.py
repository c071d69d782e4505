"""Predict every layer's signal scale without data: the second moment E[x^2] (and mean) of each
tensor pushed forward through the graph from unit-variance inputs, and the gradient's second
moment pushed backward from the outputs.

The mean-field model: a weight layer sums fan_in independent products, so
E[y] = n*mu_w*m_x and E[y^2] = n*E[w^2]*q_x + n(n-1)*mu_w^2*m_x^2 (plus the bias); an elementwise
activation maps N(m, v) through a Gaussian expectation computed numerically; a normalization
resets the scale to its affine parameters; a residual add sums second moments. Depth compounds
correctly, and the checks in rules.py all read this one model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import theory
from .facts import LayerFacts, _View
from .graph import Graph
from .stats import StatsCache, TensorStats


@dataclass(frozen=True)
class Moment:
    """mean: E[x]; second: E[x^2]; signal: the part of the variance that the input drives
    (biases add to `second` but not to `signal`: a net whose output no longer depends on its
    input has a vanished signal however large its biases)."""

    mean: float
    second: float
    signal: float = 0.0

    @property
    def var(self) -> float:
        return max(self.second - self.mean * self.mean, 0.0)

    @property
    def rms(self) -> float:
        return math.sqrt(max(self.second, 0.0))


@dataclass(frozen=True)
class Signal:
    forward: tuple[Moment | None, ...]  # per op: the moments of its output
    backward: tuple[float, ...]  # per op: E[grad^2] reaching its output


UNIT = Moment(0.0, 1.0, 1.0)


@functools.lru_cache(maxsize=4096)
def _moments(name: str, param: float | None, mean: float, var: float) -> theory.Moments:
    fn = theory.activation_fn(name, param)
    return theory.gaussian_moments(fn, mean, var)


def propagate(graph: Graph, model: nn.Module, layers: tuple[LayerFacts, ...], weights: dict[int, TensorStats],
              stats: StatsCache | None = None) -> Signal:
    """Forward and backward moments. `weights` maps a layer's op index to the statistics to assume
    for its weight (the actual ones, or a scheme's), so the same pass predicts any init; `stats`
    (shared between passes) gives those of biases, norm parameters and scales."""
    stats = stats or StatsCache()
    view = _View(graph, model)
    ops = graph.ops
    fwd: list[Moment | None] = [None] * len(ops)
    slope2: dict[int, float] = {}  # activation op -> E[f'(z)^2]
    norm_gain: dict[int, float] = {}  # norm op -> E[gamma^2] / var_in
    weight_n: dict[int, tuple[float, float]] = {}  # weight op -> (fan_out, E[w^2]) for the backward pass
    by_op = {lf.op: lf for lf in layers}
    def pstats(name: str) -> TensorStats | None:
        try:
            return stats(model.get_parameter(name))
        except AttributeError:
            return None

    for op in ops:
        data = [i for i in view.data_operands(op) if fwd[i] is not None]
        x = fwd[data[0]] if data else None
        if op.kind == "input":
            fwd[op.index] = UNIT
            continue
        if op.kind == "param":
            s = pstats(op.target)
            fwd[op.index] = None if s is None else Moment(s.mean, s.second, 0.0)
            continue
        if op.kind in ("buffer", "output"):
            continue
        lf = by_op.get(op.index)
        if lf is not None:
            w = weights.get(op.index)
            if w is None:
                continue
            fwd[op.index] = _through_layer(view, op, lf, w, x, fwd, pstats, stats)
            weight_n[op.index] = (max(lf.fan_out, 1), w.second)
            continue
        if view.is_weight_op(op):
            fwd[op.index] = x  # a weight judged at another op (tied, shared): pass through
            continue
        if x is None:
            continue
        role = view.role(op)
        if role.kind == "activation" and role.activation in ("softmax", "log_softmax"):
            # a normalization along its axis: the output's scale no longer follows the input's
            fwd[op.index] = Moment(0.0, 1.0, min(1.0, x.signal / max(x.var, 1e-30)))
        elif role.kind == "activation" and role.activation in theory.KNOWN:
            m = _moments(role.activation, role.param, round(x.mean, 9), round(x.var, 9))
            fwd[op.index] = _activated(m, x)
            slope2[op.index] = m.slope2
        elif role.kind == "norm":
            gamma, beta = _norm_affine(view, op, pstats, stats)
            fwd[op.index] = Moment(beta.mean, gamma.second + beta.second, gamma.second * min(1.0, x.signal / max(x.var, 1e-30)))
            norm_gain[op.index] = gamma.second / max(x.var, 1e-12)
        elif role.kind == "add" and op.target in ("add", "sub"):
            sign = -1.0 if op.target == "sub" else 1.0
            others = [fwd[i] for i in op.inputs if i != data[0] and fwd[i] is not None]
            if others:
                o = others[0]
                fwd[op.index] = Moment(x.mean + sign * o.mean, x.second + o.second + 2 * sign * x.mean * o.mean, x.signal + o.signal)
            else:
                c = _scalar(op)
                fwd[op.index] = Moment(x.mean + sign * c, x.second + 2 * sign * x.mean * c + c * c, x.signal)
        elif role.kind == "scale":
            others = [fwd[i] for i in op.inputs if i != data[0] and fwd[i] is not None]
            if op.target == "neg":
                fwd[op.index] = Moment(-x.mean, x.second, x.signal)
            elif others:
                o = others[0]
                if op.target == "div":
                    fwd[op.index] = x
                else:
                    fwd[op.index] = Moment(x.mean * o.mean, x.second * o.second, x.signal * o.second + o.signal * x.second)
            else:
                c = _scalar(op, default=1.0)
                c = 1.0 / c if op.target == "div" and c else c
                fwd[op.index] = Moment(x.mean * c, x.second * c * c, x.signal * c * c)
        elif op.target == "scaled_dot_product_attention":
            v = op.operand("2", "value")  # softmax(q k^T) @ v: an average of v's rows
            fwd[op.index] = fwd[v] if v is not None and fwd[v] is not None else x
        elif op.target == "matmul" and len(data) >= 2:
            # attention: softmax(scores) @ V averages V's rows; other products multiply scales
            b = fwd[data[1]]
            fwd[op.index] = b if _from_softmax(view, data[0]) else Moment(
                x.mean * b.mean, x.second * b.second, x.signal * b.second + b.signal * x.second)
        elif role.kind == "transparent" and _pool_window(view, op) > 1:
            c = _max_gain(_pool_window(view, op))
            fwd[op.index] = Moment(x.mean, x.second * c, x.signal * c)
        elif role.kind == "other" and op.kind == "module":
            mod = view.module(op)
            fwd[op.index] = _through_custom(mod, x) if mod is not None else x
        else:
            fwd[op.index] = x

    bwd = _backward(view, fwd, slope2, norm_gain, weight_n)
    return Signal(tuple(fwd), tuple(bwd))


def _through_layer(view, op, lf: LayerFacts, w: TensorStats, x: Moment | None, fwd, pstats, stats) -> Moment:
    mod = view.module(op) if op.kind == "module" else None
    if lf.role == "embedding":
        return Moment(w.mean, w.second, w.std * w.std)
    x = x or UNIT
    if mod is not None and isinstance(mod, nn.RNNBase):
        # gates read the input and the previous state; the state is bounded by tanh
        pre = lf.fan_in * w.second * x.second + lf.fan_out * (1.0 / (3 * lf.fan_out)) * 0.5
        m = _moments("tanh", None, 0.0, pre)
        gate = 0.25 if mod.mode == "LSTM" else 1.0
        return Moment(0.0, m.second * gate, m.slope2 * gate * lf.fan_in * w.second * x.signal)
    n = max(lf.fan_in, 1)
    if mod is not None and isinstance(mod, nn.MultiheadAttention):
        o = stats(mod.out_proj.weight)
        o2 = o.second if o else 0.0
        return Moment(0.0, n * o2 * n * w.second * x.second, n * o2 * n * w.second * x.signal)
    if lf.layout == "bilinear":
        x2 = fwd[view.data_operands(op)[1]] if len(view.data_operands(op)) > 1 else x
        q2 = x2.second if x2 else 1.0
        return Moment(0.0, n * w.second * x.second * q2, n * w.second * x.signal * q2)
    mean = n * w.mean * x.mean
    second = n * w.second * x.second + n * (n - 1) * w.mean * w.mean * x.mean * x.mean
    b = _bias(view, op, mod, pstats, stats)
    if b is not None:
        second += b.second + 2 * mean * b.mean
        mean += b.mean
    return Moment(mean, second, n * w.second * x.signal)


def _activated(m: theory.Moments, x: Moment) -> Moment:
    """The signal passes an activation at its mean squared slope, bounded by the output variance."""
    var = max(m.second - m.mean * m.mean, 0.0)
    return Moment(m.mean, m.second, min(x.signal * m.slope2, var))


def _bias(view, op, mod, pstats, stats) -> TensorStats | None:
    if mod is not None:
        bias = getattr(mod, "bias", None)
        return stats(bias) if isinstance(bias, torch.Tensor) else None
    idx = op.operand("2", "bias") if op.target in ("linear", "conv1d", "conv2d", "conv3d") else op.operand("0", "input") if op.target == "addmm" else None
    if idx is not None and view.graph.ops[idx].kind == "param":
        return pstats(view.graph.ops[idx].target)
    return None


def _norm_affine(view, op, pstats, stats) -> tuple[TensorStats, TensorStats]:
    one, zero = TensorStats(1, 1.0, 0.0, True), TensorStats(1, 0.0, 0.0, True)
    mod = view.module(op)
    if mod is not None:
        g = getattr(mod, "weight", None)
        b = getattr(mod, "bias", None)
        gs = stats(g) if isinstance(g, torch.Tensor) else None
        bs = stats(b) if isinstance(b, torch.Tensor) else None
        if gs is not None and type(mod).__name__.startswith("Gemma"):
            gs = TensorStats(gs.count, gs.mean + 1.0, gs.std, gs.constant)  # Gemma scales by (1 + w)
        return gs or one, bs or zero
    params = [view.graph.ops[i] for i in op.inputs if view.graph.ops[i].kind == "param"]
    gs = pstats(params[0].target) if params else None
    bs = pstats(params[1].target) if len(params) > 1 else None
    return gs or one, bs or zero


def _from_softmax(view, idx: int) -> bool:
    """Whether op `idx` is a softmax, seen through dropout and reshapes (attention weights)."""
    seen = 0
    while seen < 8:
        op = view.graph.ops[idx]
        role = view.role(op)
        if role.kind == "activation":
            return role.activation == "softmax"
        data = view.data_operands(op)
        if role.kind != "transparent" or not data:
            return False
        idx, seen = data[0], seen + 1
    return False


def _pool_window(view, op) -> int:
    """The number of elements a max-pooling op takes the maximum of (1 for anything else)."""
    kernel = None
    if op.kind == "module":
        mod = view.module(op)
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            kernel, dims = mod.kernel_size, int(type(mod).__name__[-2])
    elif op.target.startswith("max_pool") and op.target[8:9].isdigit():
        kernel, dims = op.scalar("1", "kernel_size"), int(op.target[8])
    if kernel is None:
        return 1
    ks = tuple(kernel) if isinstance(kernel, (tuple, list)) else (int(kernel),) * dims
    return math.prod(int(k) for k in ks)


@functools.lru_cache(maxsize=64)
def _max_gain(k: int) -> float:
    """E[max(z_1..z_k)^2] / E[z^2] for iid standard normals: how max-pooling raises the second
    moment (the max of a 3x3 window has about 2.5x a single value's)."""
    z, w = theory._grid()
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    density = k * cdf.pow(k - 1)  # the max's density relative to the normal's, on the grid's weights
    return float((w * density * z * z).sum())


def _scalar(op, default: float = 0.0) -> float:
    for key, v in op.scalars:
        if key in ("0", "1", "other", "alpha") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return default


def _through_custom(mod: nn.Module, x: Moment) -> Moment:
    from .activations import match_elementwise

    if match_elementwise(mod) is None:
        return x
    return _activated(theory.gaussian_moments(mod, x.mean, x.var), x)


def _backward(view, fwd, slope2, norm_gain, weight_n) -> list[float]:
    ops = view.graph.ops
    g = [0.0] * len(ops)
    for op in reversed(ops):
        if op.kind == "output":
            for i in op.inputs:
                g[i] += 1.0
            continue
        gi = g[op.index]
        if gi == 0.0:
            continue
        data = view.data_operands(op)
        if not data:
            continue
        if op.index in weight_n:
            fan_out, w2 = weight_n[op.index]
            g[data[0]] += fan_out * w2 * gi
            continue
        if op.index in slope2:
            g[data[0]] += slope2[op.index] * gi
        elif op.index in norm_gain:
            g[data[0]] += norm_gain[op.index] * gi
        elif op.kind == "function" and op.target == "mul" and len(data) >= 2:
            a, b = fwd[data[0]], fwd[data[1]]
            g[data[0]] += gi * (b.second if b else 1.0)
            g[data[1]] += gi * (a.second if a else 1.0)
        elif op.kind == "function" and op.target in ("mul", "div"):
            others = [fwd[i] for i in op.inputs if i != data[0] and fwd[i] is not None]
            c = others[0].second if others else _scalar(op, 1.0) ** 2
            if op.target == "div":
                c = 1.0 / c if c else 1.0
            g[data[0]] += c * gi
        else:
            for i in dict.fromkeys(data):
                g[i] += gi
    return g


def actual_weights(layers: tuple[LayerFacts, ...]) -> dict[int, TensorStats]:
    return {lf.op: lf.stats for lf in layers if lf.stats is not None}


def scheme_weights(layers: tuple[LayerFacts, ...]) -> dict[int, TensorStats]:
    """Each layer at its recommended scheme: the reference the actual signal is compared with."""
    return {lf.op: TensorStats(1, 0.0, lf.recommended_std, False) for lf in layers if not math.isnan(lf.recommended_std)}
