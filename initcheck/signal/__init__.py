"""Predict every layer's signal scale without data: the second moment E[x^2] (and mean) of each
tensor pushed forward through the graph from unit-variance inputs, and the gradient's second
moment pushed backward from the outputs.

The mean-field model: a weight layer sums fan_in independent products, so
E[y] = n*mu_w*m_x and E[y^2] = n*E[w^2]*q_x + n(n-1)*mu_w^2*m_x^2 (plus the bias); an elementwise
activation maps N(m, v) through a Gaussian expectation computed numerically; a normalization
resets the scale to its affine parameters; a residual add sums second moments. Each op kind has a
handler (handlers.py); an op without one passes its input on and is named in `Signal.unhandled`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from torch import nn

from ..facts import LayerFacts
from ..findings import default_thresholds
from ..frozen import built
from ..graph import CREATED, Op, OpKind
from ..ops.layers import RECURRENT, Layout, WeightRole
from ..stats import StatsCache, TensorStats
from ..trace.index import GraphIndex
from .attention import mha_values
from .backward import backward
from .channels import with_bias
from .handlers import constant_index, handler_for
from .moments import UNIT, Moment, Signal, from_channels
from .passes import Pass
from .recurrent import through_rnn
from .rows import RowMoments, row_moments, shared_rows
from .weighted import layer_channels, padding_fraction, raw_second

__all__ = ["Moment", "Signal", "UNIT", "propagate", "actual_weights", "scheme_weights", "effective_weights",
           "unhandled_note", "raw_rms", "scratch", "shared_rows", "sweep", "Sweep", "Pass"]

@dataclass(frozen=True)
class Sweep:
    """One propagation and the state a later one can start from: the weights it assumed and its
    pass (the handlers' per-op slopes and norm gains)."""

    signal: Signal
    weights: Mapping[str, TensorStats]
    state: Pass


def propagate(index: GraphIndex, model: nn.Module, layers: tuple[LayerFacts, ...], weights: Mapping[str, TensorStats],
              stats: StatsCache | None = None) -> Signal:
    """Forward and backward moments. `weights` maps a weight's qualified name to the statistics to
    assume for it (the actual ones, or a scheme's), so the same pass predicts any init; `stats`
    (shared between passes) gives those of biases, norm parameters and scales."""
    return sweep(index, model, layers, weights, stats).signal


def sweep(index: GraphIndex, model: nn.Module, layers: tuple[LayerFacts, ...], weights: Mapping[str, TensorStats],
          stats: StatsCache | None = None, base: Sweep | None = None, training: bool = True) -> Sweep:
    """`propagate`, keeping what a later sweep can reuse. `base`: an earlier sweep over the same
    graph whose weights differ from `weights` only at some layers: the forward moments before the
    first op that reads a differing weight are taken from it (ops are in execution order, so
    nothing before that op depends on the difference); only the rest is recomputed. `training`: the
    forward judged (modes.py): BatchNorm on batch statistics and dropout on, else the eval forward."""
    ops = index.ops
    start = _first_difference(layers, weights, base) if base is not None else 0
    if base is not None and start >= len(ops):
        return Sweep(base.signal, weights, base.state)  # the same weights: the same signal
    p = Pass(index, model, stats or StatsCache(), [None] * len(ops), training=training)
    unhandled: dict[str, list[int]] = {}
    gates: dict[int, Moment] = {}
    if base is not None:
        p.fwd[:start] = base.signal.forward[:start]
        _keep_before(base.state, p, start)
        for name, at in base.signal.unhandled:
            if kept := [i for i in at if i < start]:
                unhandled[name] = kept
        gates.update((i, m) for i, m in base.signal.gates.items() if i < start)
    fwd = p.fwd
    weight_n: dict[int, tuple[float, float]] = {}  # weight op -> (fan_out, E[w^2]) for the backward pass
    by_op: dict[int, LayerFacts] = {}
    for lf in layers:  # an op reading several weights (MHA, RNN) is keyed by its first: in_proj, weight_ih
        by_op.setdefault(lf.op, lf)
    for i, lf in by_op.items():  # the layers of the reused prefix still weigh in the backward pass
        if i < start and (w := weights.get(lf.qualname)) is not None:
            weight_n[i] = (max(lf.fan_out, 1), w.second)
        elif i < start and isinstance(index.module(ops[i]), RECURRENT):
            weight_n[i] = (max(lf.fan_out, 1), 0.0)
    operands, weight_op = index.data, index.weight_op  # per op; read once per op of every sweep
    for op in ops[start:]:
        kind = op.kind
        if kind is OpKind.INPUT:
            fwd[op.index] = UNIT
            continue
        if kind is OpKind.PARAM:
            s = p.param(op.target)
            fwd[op.index] = None if s is None else Moment(s.mean, s.second, 0.0)
            continue
        if kind is OpKind.BUFFER or kind is OpKind.OUTPUT:
            continue
        x = None
        for i in operands[op.index]:  # the first data operand with moments
            if (x := fwd[i]) is not None:
                break
        if x is None:
            x = _param_expression(p, op) if op.inputs else (Moment(0.0, 0.0) if op.target in CREATED else None)  # its fill: FACTORIES
        first = by_op.get(op.index)
        if first is not None:
            lf = first
            w = weights.get(lf.qualname)
            mod = index.module(op)
            if isinstance(mod, RECURRENT):
                fwd[op.index], gates[op.index] = through_rnn(p, mod, weights, lf, x or UNIT)
                weight_n[op.index] = (max(lf.fan_out, 1), w.second if w is not None else 0.0)
            elif w is not None:
                try:
                    fwd[op.index] = _through_layer(p, lf, w, x, weights)
                except OverflowError:
                    fwd[op.index] = OVERFLOWED
                weight_n[op.index] = (max(lf.fan_out, 1), w.second)
            continue
        if x is None:
            continue
        if weight_op[op.index]:
            fwd[op.index] = x.summary()  # a weight judged at another op (tied, shared): pass through
            continue
        handler = handler_for(index, op)
        try:
            out = handler(p, op, x) if handler is not None else None
        except OverflowError:  # Python's float ** past 1.8e308 raises where * gives inf: the signal exploded
            out = OVERFLOWED
        if out is not None and math.isnan(out.second) and math.isinf(x.second):
            out = OVERFLOWED  # inf * 0 somewhere in the handler: still an overflowed signal, not an unknown one
        if out is None:
            if op.index not in index.constant and op.index not in index.statistics and op.index not in index.indexing:
                unhandled.setdefault(op.target, []).append(op.index)
            out = x.summary()
        fwd[op.index] = out
    bwd = backward(p, weight_n)
    signal = Signal(tuple(fwd), tuple(bwd), tuple((name, tuple(at)) for name, at in unhandled.items()), gates)
    return Sweep(signal, weights, p)


def _first_difference(layers: tuple[LayerFacts, ...], weights: Mapping[str, TensorStats], base: Sweep) -> int:
    """The first op that reads a weight whose assumed statistics differ from `base`'s (the length
    of the graph when none does). An op reading several weights (MHA, RNN) reads them by name:
    every name of `weights` and of `base.weights` is a layer's, at that layer's op."""
    placed = {lf.qualname for lf in layers}
    if not placed.issuperset(weights) or not placed.issuperset(base.weights):
        return 0  # a weight the layers do not place: recompute everything
    at = [lf.op for lf in layers if weights.get(lf.qualname) is not base.weights.get(lf.qualname)]
    return min(at, default=len(base.signal.forward))


def _keep_before(old: Pass, new: Pass, start: int) -> None:
    """Copy the per-op state (dicts keyed by op index) that the handlers wrote before `start`."""
    for f in fields(old):
        value = getattr(old, f.name)
        if isinstance(value, dict) and f.name not in ("fwd",):
            getattr(new, f.name).update((k, v) for k, v in value.items() if isinstance(k, int) and k < start)


# A signal past the float range: every later prediction of it is infinite (IC201 names the layer)
OVERFLOWED = Moment(0.0, math.inf, math.inf)


def _param_expression(p: Pass, op: Op) -> Moment | None:
    """An op on parameters alone (`0.2 * skipinit_gain`, `gamma.exp()`): it scales the signal
    later, so it carries the parameter's moments rather than nothing; weight rebuilds are left
    to the layer that reads them."""
    if p.index.is_weight_op(op):
        return None
    for i in op.inputs:
        if p.index.ops[i].kind is OpKind.PARAM and (m := p.fwd[i]) is not None:
            return m
    return None


def _through_layer(p: Pass, lf: LayerFacts, w: TensorStats, x: Moment | None,
                   weights: Mapping[str, TensorStats]) -> Moment:
    op = p.index.ops[lf.op]
    mod = p.index.module(op) if op.kind is OpKind.MODULE else None
    if lf.role is WeightRole.EMBEDDING:
        if constant_index(p, op):  # one row for every token: all of it common, none input-driven
            return Moment(w.mean, w.second, 0.0, w.std * w.std)
        return Moment(w.mean, w.second, w.std * w.std)
    x = x or UNIT
    n = max(lf.fan_in, 1)
    if mod is not None and isinstance(mod, nn.MultiheadAttention):
        o = weights.get(f"{lf.qualname[: -len(lf.param)]}out_proj.weight") or p.tensor(mod.out_proj.weight)
        o2 = o.second if o else 0.0
        key = op.operand("1", "key")
        v = mha_values(mod, op, p.index.ops[key] if key is not None else None, p.fwd[key] if key is not None else None,
                       n * w.second, x)
        return Moment(0.0, n * o2 * v.second, n * o2 * v.signal)
    if lf.layout is Layout.BILINEAR:
        data = p.index.data_operands(op)
        x2 = p.fwd[data[1]] if len(data) > 1 else x
        q2 = x2.second if x2 else 1.0
        return Moment(0.0, n * w.second * x.second * q2, n * w.second * x.signal * q2)
    mean = n * w.mean * x.mean
    # the row sums only weigh in through the input's mean: with centred inputs (tanh, after a
    # norm, the model's inputs) they are not read at all
    rows = row_moments(p, lf, w) if x.mean != 0.0 else None
    second = _weighted_sum_second(n, w, x, rows)
    # the spread of channel means: m * (row sum) differs per output channel, and so does the bias
    between = x.mean * x.mean * rows[1] if rows is not None else 0.0
    between += n * w.second * x.between  # the input's pattern of channel means, mixed by the weight
    b = _bias(p, mod, op)
    signal = n * w.second * x.signal
    chan = layer_channels(p, lf, w, x)
    if chan is not None:  # each channel's own mean and variance, from the actual weight
        return from_channels(with_bias(chan, _bias_tensor(p, mod, op)), signal)
    f = padding_fraction(p, op)  # taps that read the zero padding add nothing
    mean, second, between, signal = mean * f, second * f, between * f, signal * f
    if b is not None:
        second += b.second + 2 * mean * b.mean
        mean += b.mean
        between += b.std * b.std
    return Moment(mean, second, signal, min(between, max(second - mean * mean, 0.0)))


def _weighted_sum_second(n: int, w: TensorStats, x: Moment, rows: RowMoments | None) -> float:
    """E[y^2] of y_j = sum_i w_ji x_i, bias aside, inputs iid with mean m and variance v:
    mean_j (sum_i w_ji)^2 m^2 + n E[w^2] v. The row sums are the actual weight's when known; else
    their expectation n E[w^2] + n(n-1) E[w]^2."""
    row2 = rows[0] if rows is not None else n * w.second + n * (n - 1) * w.mean * w.mean
    return row2 * x.mean * x.mean + n * w.second * x.var


def _bias(p: Pass, mod: nn.Module | None, op: Op) -> TensorStats | None:
    t = _bias_tensor(p, mod, op)
    return p.tensor(t) if t is not None else None


def _bias_tensor(p: Pass, mod: nn.Module | None, op: Op) -> torch.Tensor | None:
    if mod is not None:
        b = getattr(mod, "bias", None)
        return b if isinstance(b, torch.Tensor) else None
    if op.target in ("linear", "conv1d", "conv2d", "conv3d"):
        idx = op.operand("2", "bias")
    elif op.target == "addmm":
        idx = op.operand("0", "input")
    elif op.target == "deform_conv2d":
        idx = op.operand("4", "bias")
    else:
        idx = None
    if idx is not None and p.index.ops[idx].kind is OpKind.PARAM:
        try:
            return p.model.get_parameter(p.index.ops[idx].target)
        except AttributeError:
            return None
    return None


def actual_weights(layers: tuple[LayerFacts, ...]) -> dict[str, TensorStats]:
    return {lf.qualname: lf.stats for lf in layers if lf.stats is not None}


def scheme_weights(layers: tuple[LayerFacts, ...]) -> dict[str, TensorStats]:
    """Each layer at its recommended scheme: the reference the actual signal is compared with."""
    return {lf.qualname: _at_scheme(lf.recommended_std) for lf in layers if not math.isnan(lf.recommended_std)}


def _at_scheme(std: float) -> TensorStats:
    """TensorStats(1, 0.0, std, False): a zero-mean weight of that std, built from its fields (frozen.py)."""
    return built(TensorStats, {"count": 1, "mean": 0.0, "std": std, "constant": False, "max_abs": 0.0, "nonfinite": 0, "rows": None})


def effective_weights(layers: tuple[LayerFacts, ...], thresholds: Mapping[str, float] | None = None) -> dict[str, TensorStats]:
    """Actual statistics, except constant layers (IC101 blames them), deliberately small ones and
    layers followed by a normalization (their scale is normalized away), which take their
    scheme's: the signal rules then judge everything else, so that one cause gives one finding.
    Non-finite or absurd weights (IC104/IC105 blame them) take their scheme's too."""
    absurd = (thresholds or default_thresholds())["absurd-value"]  # the IC105 setting: one source
    out: dict[str, TensorStats] = {}
    for lf in layers:
        if lf.stats is None:
            continue
        broken = not lf.stats.finite or lf.stats.max_abs > absurd
        # a residual branch's end that is zero or scaled down is a design (Fixup, SkipInit, GPT-2's
        # 1/sqrt(2L)): at its scheme the stream would grow block by block, an explosion that is not there
        deliberate_end = lf.residual_end and lf.intentionally_small
        if (broken or ((lf.stats.constant or lf.intentionally_small) and not deliberate_end) or lf.normalized) \
                and not math.isnan(lf.recommended_std):
            out[lf.qualname] = _at_scheme(lf.recommended_std)
        else:
            out[lf.qualname] = lf.stats
    return out


def unhandled_note(signal: Signal, index: GraphIndex, layers: tuple[LayerFacts, ...], limit: int = 4) -> str | None:
    """One note naming the ops the signal model passed through as identity and the layers whose
    prediction that affects (those downstream of such an op), or None."""
    if not signal.unhandled:
        return None
    ops = index.ops
    tainted = [False] * len(ops)
    for _, at in signal.unhandled:
        for i in at:
            tainted[i] = True
    for op in ops:
        if not tainted[op.index] and any(tainted[i] for i in op.inputs):
            tainted[op.index] = True
    hit = [lf.qualname for lf in layers if tainted[lf.op]]
    names = ", ".join(sorted(name for name, _ in signal.unhandled))
    if not hit:
        return f"the signal model has no handler for {names}: passed through as identity; no weight layer follows"
    shown = ", ".join(hit[:limit]) + (f" and {len(hit) - limit} more" if len(hit) > limit else "")
    return (f"the signal model has no handler for {names}: passed through as identity, so the predictions "
            f"of {len(hit)} layer(s) after it are approximate ({shown})")



def raw_rms(sig: Signal, index: GraphIndex, lf: LayerFacts, model: nn.Module, w: TensorStats | None = None,
            scratch: Pass | None = None) -> float | None:
    """The predicted rms of the weight op's raw output, bias aside and before any norm: what a
    forward hook measures on the layer with its bias subtracted. `w`: the weight's statistics
    (the layer's actual ones by default). None for ops whose output is not one weighted sum (RNNs,
    attention modules). scratch: `scratch(index, model)`, shared by the calls for one model's
    layers (nothing here writes to it)."""
    w = w or lf.stats
    if w is None:
        return None
    op = index.ops[lf.op]
    mod = index.module(op) if op.kind is OpKind.MODULE else None
    if isinstance(mod, (*RECURRENT, nn.MultiheadAttention)):
        return None
    if lf.role is WeightRole.EMBEDDING:
        return math.sqrt(w.second)
    data = index.data_operands(op)
    x = sig.forward[data[0]] if data else None
    x = x or UNIT
    p = scratch if scratch is not None else Pass(index, model, StatsCache(), [])
    exact = raw_second(p, lf, w, x)
    rows = row_moments(p, lf, w) if x.mean != 0.0 and exact is None else None
    n = max(lf.fan_in, 1)
    second = exact if exact is not None else _weighted_sum_second(n, w, x, rows) * padding_fraction(p, op)
    if lf.layout is Layout.BILINEAR and len(data) > 1 and (x2 := sig.forward[data[1]]) is not None:
        second *= x2.second
    if math.isnan(second) and math.isinf(x.second):
        return math.inf  # an overflowed input: inf * 0 in the sum's terms
    return math.sqrt(max(second, 0.0))


def scratch(index: GraphIndex, model: nn.Module) -> Pass:
    """An empty pass over the graph, for `raw_rms` to read the weights through."""
    return Pass(index, model, StatsCache(), [])
