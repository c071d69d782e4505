"""One handler per kind of op the signal model knows, looked up in a table: a new op is one
function and one line. An op with no handler passes its input through and is reported in the notes
with the layers whose prediction it affects (fvcore's rule: say what is not handled)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .. import theory
from ..graph import Op, OpKind
from ..ops.activations import RoleKind, match_elementwise
from ..trace.index import INDEX_FUNCTIONS, GraphIndex
from . import routing
from .attention import averaged_values, fluctuation, logit_std, participation
from .channels import Channels
from .masks import causal_attn_mask, causal_logits
from .moments import Moment, activated, activation_moments, from_channels, plus, summed
from .norms import norm, per_channel
from .passes import Pass
from .pooling import transparent

Handler = Callable[[Pass, Op, Moment], Moment | None]


def scalar_arg(op: Op, default: float = 0.0) -> float:
    for key, v in op.scalars:
        if key in ("0", "1", "other", "alpha") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return default


def _activation(p: Pass, op: Op, x: Moment) -> Moment:
    role = p.index.role(op)
    name = role.activation or "identity"
    if name == "softmax":
        return _probabilities(p, op, x)
    if name == "log_softmax":
        # a normalization along its axis: the output's scale no longer follows the input's
        return Moment(0.0, 1.0, min(1.0, x.signal / max(x.var, 1e-30)))
    m = activation_moments(name, role.param, x.mean, x.var)
    p.slope2[op.index] = m.slope2
    return per_channel(activated(m, x), x, theory.activation_fn(name, role.param))


def _probabilities(p: Pass, op: Op, x: Moment) -> Moment:
    """softmax over n entries: n probabilities that sum to one, so the mean is 1/n and E[p^2] is
    the participation E[sum p^2] over n (1/n^2 for uniform weights, up to 1/n once one entry takes
    all): what a layer reading the weights themselves sees (CaiT's talking heads mix them)."""
    mod = p.index.module(op)
    dim = getattr(mod, "dim", None) if mod is not None else op.scalar("1", "dim", default=-1)
    n = op.size(int(dim)) if isinstance(dim, int) else None
    frac = min(1.0, x.signal / max(x.var, 1e-30))
    if not n:
        return Moment(0.0, 1.0, frac)  # no shapes: the scale no longer follows the input's
    second = participation(n, math.sqrt(fluctuation(x))) / n
    return Moment(1.0 / n, second, frac * max(second - 1.0 / (n * n), 0.0))


def constant_index(p: Pass, op: Op) -> bool:
    """Whether a lookup's indices come from a buffer holding one value (BERT's token_type_ids of
    zeros): then every token gets the same row, a part common to all tokens."""
    idx = next(iter(op.inputs), None)
    for _ in range(8):  # back along first operands, through ops on buffers alone (expand, gather, slices)
        if idx is None:
            return False
        src = p.index.ops[idx]
        if src.kind is OpKind.BUFFER:
            try:
                t = p.model.get_buffer(src.target)
            except AttributeError:
                return False
            return t.numel() > 0 and not t.is_meta and bool((t == t.flatten()[0]).all())
        if src.kind is not OpKind.FUNCTION or any(p.fwd[i] is not None for i in src.inputs):
            return False  # something the input drives
        idx = next(iter(src.inputs), None)
    return False


def _add(p: Pass, op: Op, x: Moment) -> Moment:
    sign = -1.0 if op.target == "sub" else 1.0
    data = p.index.data_operands(op)
    others = p.others(op, data[0]) if data else []
    if others:
        o = others[0]
        out = plus(x, o, sign)
        if x.chan is not None and o.chan is not None and len(x.chan) == len(o.chan):
            both = Channels(x.chan.mean + sign * o.chan.mean, x.chan.var + o.chan.var)  # independent: variances add
            return from_channels(both, out.signal)
        return out
    c = scalar_arg(op)
    shifted = Channels(x.chan.mean + sign * c, x.chan.var) if x.chan is not None else None
    return Moment(x.mean + sign * c, x.second + 2 * sign * x.mean * c + c * c, x.signal, x.between, shifted)


def _scale(p: Pass, op: Op, x: Moment) -> Moment:
    if op.target == "neg":
        return Moment(-x.mean, x.second, x.signal)
    if op.target == "mul" and len(op.inputs) == 2 and op.inputs[0] == op.inputs[1]:
        squared = _elementwise(torch.square)(p, op, x)  # x * x: a square, not a product of independent tensors
        if squared is not None:
            return squared
    data = p.index.data_operands(op)
    others = p.others(op, data[0]) if data else []
    if others:
        if op.target == "div":
            return _ratio(x, others[0])
        o = others[0]
        # times what no input drives (parameters: Swin V2's logit scale, a layer scale): what every
        # token shares stays shared, scaled; a product with another activation mixes it (left out)
        common = (x.mean * x.mean + max(x.between, 0.0)) * o.second if o.signal == 0.0 else 0.0
        out = Moment(x.mean * o.mean, x.second * o.second, x.signal * o.second + o.signal * x.second,
                     max(common - (x.mean * o.mean) ** 2, 0.0))
        if x.chan is not None and o.chan is not None and len(x.chan) == len(o.chan):
            # a gate per channel (squeeze-excitation's sigmoid): channel c is x_c * s_c, independent
            m = x.chan.mean * o.chan.mean
            second = (x.chan.mean ** 2 + x.chan.var) * (o.chan.mean ** 2 + o.chan.var)
            return from_channels(Channels(m, (second - m * m).clamp(min=0.0)), out.signal)
        return out
    c = scalar_arg(op, default=1.0)
    return x.scaled(1.0 / c if op.target == "div" and c else c)


def _ratio(a: Moment, b: Moment) -> Moment:
    """a / b for a denominator that the data drives. A concentrated positive one (a norm, a sum of
    squares, sqrt(var + eps): its mean dominates its spread) divides to first order: E[(a/b)^2] =
    E[a^2] / E[b^2], so (x - mean) / sqrt(var + eps) has unit variance and x / ||x|| components of
    1/d. Any other denominator (a ratio of two Gaussians has no variance): a normalization of some
    kind, which keeps the scale."""
    if b.mean <= 0.0 or b.mean * b.mean < 0.5 * b.second:
        return a.summary()
    inv = 1.0 / b.second
    return Moment(a.mean / b.mean, a.second * inv, a.signal * inv, a.between * inv)


def _root(p: Pass, op: Op, x: Moment) -> Moment | None:
    """sqrt(y) (rsqrt: its reciprocal) of a non-negative y (a norm, a variance: the root of a
    negative is NaN, so a sound model takes it of y >= 0). E[sqrt(y)^2] = E[y] exactly; its mean is
    sqrt(E[y]) where y is concentrated (a sum of many squares), and at most that (Jensen) otherwise;
    E[1/y] is 1/E[y] to first order. A y whose modelled mean is not positive is left unhandled."""
    if x.mean <= 0.0:
        return None
    share = min(x.signal / x.second, 1.0) if x.second > 0.0 else 0.0
    second = x.mean if op.target == "sqrt" else 1.0 / x.mean
    return Moment(math.sqrt(second), second, share * second)


def _concatenate(p: Pass, op: Op, x: Moment) -> Moment:
    """Channels of several tensors side by side: the mixture's moments (equal shares, as the sizes
    are not in the graph)."""
    parts = [m for i in p.index.data_operands(op) if (m := p.fwd[i]) is not None]
    n = len(parts)
    if n == 0:
        return x  # parameters and buffers only (BEiT's qkv bias: cat(q_bias, zeros, v_bias)): no signal
    out = Moment(sum(m.mean for m in parts) / n, sum(m.second for m in parts) / n, sum(m.signal for m in parts) / n,
                 sum(m.between for m in parts) / n)  # each part's pattern of channel means, side by side
    dim = op.scalar("1", "dim", default=0)
    chans = [m.chan for m in parts]
    if op.target == "stack" or dim != 1 or any(c is None for c in chans):
        return out
    # along the channels (Inception's branches, DenseNet's growing input): each part in proportion to its width
    c = Channels(torch.cat([c.mean for c in chans if c is not None]), torch.cat([c.var for c in chans if c is not None]))
    signal = sum(m.signal * len(m.chan) for m in parts if m.chan is not None) / max(len(c), 1)
    return from_channels(c, signal)


def _attention(p: Pass, op: Op, x: Moment) -> Moment:
    """F.scaled_dot_product_attention: softmax(q k^T * scale) @ v averages v over the keys."""
    q, k, v = (op.operand(str(i), name) for i, name in enumerate(("query", "key", "value")))
    mv = p.fwd[v] if v is not None else None
    if mv is None:
        return x
    keys = p.index.ops[k].size(-2) if k is not None else None
    d = p.index.ops[q].size(-1) if q is not None else None
    mq, mk = (p.fwd[q] if q is not None else None), (p.fwd[k] if k is not None else None)
    if keys is None or d is None or mq is None or mk is None:
        return mv  # no shapes: the average's size is unknown
    scale = op.scalar("6", "scale")
    scale = float(scale) if isinstance(scale, (int, float)) else 1.0 / math.sqrt(d)
    causal = bool(op.scalar("5", "is_causal", default=False)) or causal_attn_mask(p, op)
    return averaged_values(mv, keys, logit_std(mq, mk, d, scale), causal)


def contracted(index: GraphIndex, op: Op) -> int | None:
    """How many products each output element of a product of two activations sums: the last axis
    of A for A @ B; for an einsum, the sizes of the letters both operands carry and the output
    drops ("bct,bcs->bts": c). None when the shapes or the subscripts are not known."""
    data = index.data_operands(op)
    if len(data) < 2:
        return None
    a = index.ops[data[0]]
    if op.target == "matmul":
        return a.size(-1)
    eq = op.scalar("0", "equation")
    if not isinstance(eq, str) or "->" not in eq or "." in eq or a.shape is None:
        return None
    lhs, out = eq.replace(" ", "").split("->")
    subs = lhs.split(",")
    if len(subs) != 2 or len(subs[0]) != len(a.shape):
        return None
    summed = [i for i, c in enumerate(subs[0]) if c in subs[1] and c not in out]
    return math.prod(a.shape[i] for i in summed) if summed else 1


def _matmul(p: Pass, op: Op, x: Moment) -> Moment:
    data = p.index.data_operands(op)
    mixed = routing.aggregated(p, op)
    if mixed is not None:
        return mixed
    b = p.fwd[data[1]] if len(data) >= 2 else None
    if b is None:
        return x.summary()
    # attention: softmax(scores) @ V averages V's rows over the keys
    soft = _softmax_source(p.index, data[0])
    if soft is not None:
        return _weighted_average(p, soft, b)
    if op.target == "einsum":
        k = contracted(p.index, op)
        if k is None:
            return x.summary()
        return _contraction(x, b, k)
    return _contraction(x, b, p.index.ops[data[0]].size(-1) or 1)


def _added_product(p: Pass, op: Op, x: Moment) -> Moment | None:
    """torch.baddbmm(input, b1, b2, beta=, alpha=): beta * input + alpha * (b1 @ b2), the two terms
    independent; BLOOM's attention logits (ALiBi's biases plus the scaled q . k)."""
    a, b = op.operand("1", "batch1"), op.operand("2", "batch2")
    ma, mb = (p.fwd[a] if a is not None else None), (p.fwd[b] if b is not None else None)
    k = p.index.ops[a].size(-1) if a is not None else None
    if ma is None or mb is None or k is None:
        return None
    alpha, beta = op.scalar("alpha", default=1.0), op.scalar("beta", default=1.0)
    prod = _contraction(ma, mb, k).scaled(float(alpha) if isinstance(alpha, (int, float)) else 1.0)
    base = op.operand("0", "input", "self")
    mi = p.fwd[base] if base is not None else None
    if mi is None:
        return prod
    return plus(prod, mi.scaled(float(beta) if isinstance(beta, (int, float)) else 1.0))


def _einsum(p: Pass, op: Op, x: Moment) -> Moment | None:
    """An einsum of two activations (an einsum with a weight is a layer): a product like A @ B,
    over the letters both carry; guided-diffusion's attention, "bct,bcs->bts" then "bts,bcs->bct"."""
    if len(p.index.data_operands(op)) < 2 or contracted(p.index, op) is None:
        return None
    return _matmul(p, op, x)


def _contraction(x: Moment, b: Moment, k: int) -> Moment:
    # a product of two activations sums K products along the contracted axis (K = 1 when unknown):
    # their fluctuations add up incoherently (K terms), the parts each shares along that axis (a
    # channel's or a head's mean: the global mean and the spread of those means) coherently (K^2)
    # Of a_i . b_j, what varies along the last axis (j: a softmax's keys) is a_i . (b_j less b's
    # token-common part), k E[a^2] fluct(b); the rest (that common part, met by every a_i) is the
    # same for every j of a row: a query's logit offset, which the softmax ignores (`between`)
    mean = k * x.mean * b.mean
    common = (x.mean * x.mean + max(x.between, 0.0)) * (b.mean * b.mean + max(b.between, 0.0))
    second = k * x.second * b.second + k * (k - 1) * common
    across = k * x.second * fluctuation(b)
    return Moment(mean, second, k * (x.signal * b.second + b.signal * x.second), max(second - mean * mean - across, 0.0))


def _weighted_average(p: Pass, soft: int, v: Moment) -> Moment:
    """softmax(logits) @ V, the logits' spread and the number of keys read from the softmax."""
    op = p.index.ops[soft]
    dim = op.scalar("1", "dim", default=-1)
    keys = op.size(int(dim)) if isinstance(dim, int) else None
    before = p.index.data_operands(op)
    logits = p.fwd[before[0]] if before else None
    if keys is None or logits is None:
        return v  # no shapes: the average's size is unknown
    return averaged_values(v, keys, math.sqrt(fluctuation(logits)), causal_logits(p, before[0]))


def _sum(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x.sum(dims) of k values each: the fluctuations add incoherently (k times the variance), the
    mean coherently (k^2 m^2). Over positions a channel's own mean is shared too (`between`, k^2);
    over the channel axis (ResNeSt's radix splits) the parts are different channels, independent."""
    data = p.index.data_operands(op)
    src = p.index.ops[data[0]].shape if data else None
    if src is None or op.shape is None:
        return None  # no shapes: the count is unknown (reported as unhandled)
    k = math.prod(src) / max(math.prod(op.shape), 1)
    dims = op.scalar("1", "dim")
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return summed(x, k, k * k, shared=all(isinstance(d, int) and d >= 2 for d in dims))


def _unit_vectors(p: Pass, op: Op, x: Moment) -> Moment | None:
    """F.normalize: x / ||x|| along `dim`, with ||x||^2 about d E[x^2] for d values, so each of the d
    components leaves with E[y^2] = 1/d (cosine attention's q and k: Swin V2, XCiT), not a
    LayerNorm's unit variance; the gradient passes at 1 / (d E[x^2]) (backward.py). Another p-norm,
    or no size along `dim` in the graph: a norm of some kind."""
    dim = op.scalar("2", "dim", default=1)
    d = op.size(int(dim)) if isinstance(dim, int) and not isinstance(dim, bool) else None
    if not d or x.second <= 0.0 or op.scalar("1", "p", default=2.0) != 2:
        return norm(p, op, x)
    s2 = 1.0 / (d * x.second)
    p.norm_gain[op.index] = s2
    return Moment(x.mean * math.sqrt(s2), x.second * s2, x.signal * s2, x.between * s2)


# Tensors made from another's shape alone (Swin's shifted-window mask starts as x.new_zeros): a
# constant, no signal, and no gradient back (backward.py); the value each holds, None: its fill.
# The recorded pass also sees those made from sizes alone (CapsNet's routing logits start as
# torch.zeros(batch, routes, capsules, 1)): trace.index.CREATED.
FACTORIES: dict[str, float | None] = {"new_zeros": 0.0, "zeros_like": 0.0, "new_empty": 0.0, "empty_like": 0.0,
                                      "new_ones": 1.0, "ones_like": 1.0, "new_full": None, "full_like": None,
                                      "zeros": 0.0, "ones": 1.0, "empty": 0.0, "full": None}


# Random tensors the forward draws in x's shape (a VAE's reparameterization, noise injection): their
# mean and E[z^2]. Noise, not the input's signal.
NOISE: dict[str, tuple[float, float]] = {"randn_like": (0.0, 1.0), "rand_like": (0.5, 1.0 / 3.0)}


# Integer and boolean tensors computed from the data that feed a lookup or a test, never the signal
# (VQ-VAE's nearest code, an MoE's `if mask.any()`): no moments, no gradient back. A comparison is
# not among them: a mask multiplied into the signal keeps a share of it that the data decides.
INDICES = INDEX_FUNCTIONS


def _indices(p: Pass, op: Op, x: Moment) -> Moment:
    return Moment(0.0, 0.0, 0.0)


def _resampled(p: Pass, op: Op, x: Moment) -> Moment:
    """grid_sample: the input read at the grid's points (a spatial transformer, a flow warp). At the
    pixels themselves (an identity warp, where a spatial transformer starts) it is the input; between
    them a bilinear blend of neighbours, whose variance the weights' squares bound by the input's."""
    return x


def _power(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x ** k for a small whole k (a squared distance, a cube): pushed through its Gaussian
    expectation like any elementwise function; another exponent is left unhandled."""
    k = op.scalar("1", "exponent")
    if isinstance(k, float) and k.is_integer():
        k = int(k)  # torch.pow(x, 3.0): GPT-2's tanh GELU written out
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 4:
        return None
    return _elementwise(lambda t: t.pow(k))(p, op, x)


def _written(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x[idx] = v: the tensor after the write, its elements x's and v's in proportion to v's share of
    them (all of v's where the shapes are not known)."""
    target, value = op.operand("0"), op.operand("2")  # setitem(x, idx, v); idx may hold a mask tensor
    if target is None or value is None or (v := p.fwd[value]) is None:
        return None
    whole, part = p.index.ops[target].shape, p.index.ops[value].shape
    f = min(math.prod(part) / max(math.prod(whole), 1), 1.0) if whole and part else 1.0
    mean = (1 - f) * x.mean + f * v.mean
    return Moment(mean, (1 - f) * x.second + f * v.second, (1 - f) * x.signal + f * v.signal)


def _noise(p: Pass, op: Op, x: Moment) -> Moment:
    mean, second = NOISE[op.target]
    return Moment(mean, second, 0.0)


def _filled_randomly(p: Pass, op: Op, x: Moment) -> Moment:
    """t.normal_(mean, std), t.uniform_(a, b), t.bernoulli_(p) in forward (StyleGAN2's noise
    injection: `image.new_empty(b, 1, h, w).normal_()`): the draw's moments, none of the input's."""
    def num(*keys: str, default: float) -> float:
        v = op.scalar(*keys, default=default)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
    if op.target == "normal":
        m, s = num("1", "mean", default=0.0), num("2", "std", default=1.0)
        return Moment(m, m * m + s * s, 0.0)
    if op.target == "uniform":
        a, b = num("1", "from", default=0.0), num("2", "to", default=1.0)
        return Moment((a + b) / 2.0, (a * a + a * b + b * b) / 3.0, 0.0)
    q = num("1", "p", default=0.5)
    return Moment(q, q, 0.0)


def _overwritten(p: Pass, op: Op, x: Moment) -> Moment | None:
    """t.copy_(src): src's moments; t.zero_(): zeros; t.fill_(v): v everywhere (in place, so that
    later readers of t read the write: fx_trace re-points them)."""
    if op.target == "copy":
        src = op.operand("1", "src")
        m = p.fwd[src] if src is not None else None
        return m.summary() if m is not None else None
    if op.target == "zero":
        return Moment(0.0, 0.0, 0.0)
    v = op.scalar("1", "value")
    return Moment(float(v), float(v) ** 2, 0.0) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


# Tensors filled in place with random numbers in forward: noise, not the input's signal.
RANDOM_FILLS = frozenset({"normal", "uniform", "bernoulli"})


def _created(p: Pass, op: Op, x: Moment) -> Moment:
    c = FACTORIES.get(op.target)
    if c is None:
        fill = op.scalar("fill_value", "1" if op.target in ("full_like", "full") else "2", default=0.0)
        c = float(fill) if isinstance(fill, (int, float)) else 0.0
    return Moment(c, c * c, 0.0)


def _elementwise(fn: Callable[[torch.Tensor], torch.Tensor]) -> Handler:
    def handler(p: Pass, op: Op, x: Moment) -> Moment:
        m = theory.gaussian_moments(fn, x.mean, x.var)
        p.slope2[op.index] = m.slope2
        return per_channel(activated(m, x), x, fn)
    return handler


def _glu(p: Pass, op: Op, x: Moment) -> Moment:
    """F.glu / nn.GLU: the input's two halves a and b along a dim give a * sigmoid(b), the halves
    independent with the input's moments: E[y^2] = E[a^2] E[sigmoid(b)^2]. The gradient reaches a
    through sigmoid(b) and b through a * sigmoid'(b), half the input's elements each."""
    gate = activation_moments("sigmoid", None, x.mean, x.var)
    slope = theory.gaussian_moments(torch.sigmoid, x.mean, x.var).slope2
    p.slope2[op.index] = 0.5 * (gate.second + x.second * slope)
    second = x.second * gate.second
    return Moment(x.mean * gate.mean, second, min(x.signal * gate.second, second))


def _module(p: Pass, op: Op, x: Moment) -> Moment | None:
    """A parameter-free custom module judged by what it computes; None when it is not elementwise."""
    mod = p.index.module(op)
    if mod is None:
        return None
    if isinstance(mod, nn.GLU):
        return _glu(p, op, x)
    drop = _drop_path(mod)
    if drop is not None:
        return drop(x)
    if match_elementwise(mod) is None:
        return None
    return activated(theory.gaussian_moments(mod, x.mean, x.var), x)


def _drop_path(mod: object) -> Callable[[Moment], Moment] | None:
    """Stochastic depth (torchvision's StochasticDepth, timm's DropPath): in training a whole sample
    is kept with probability 1 - p, scaled by 1 / (1 - p) (timm's scale_by_keep), or dropped. Per
    sample, so what its tokens share (`between`) scales with the rest: E[y^2] = E[x^2] / (1 - p), the
    mean kept. Identity in eval mode; None for other modules."""
    name = type(mod).__name__
    rate = getattr(mod, "p", None) if name == "StochasticDepth" else getattr(mod, "drop_prob", None) \
        if name == "DropPath" else None
    if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        return None
    if not getattr(mod, "training", False) or rate == 0.0:
        return lambda x: x
    keep = 1.0 - float(rate)
    if getattr(mod, "scale_by_keep", True):
        return lambda x: Moment(x.mean, x.second / keep, x.signal / keep, x.between / keep)
    return lambda x: Moment(x.mean * keep, x.second * keep, x.signal * keep, x.between * keep)


def _softmax_source(index: GraphIndex, idx: int) -> int | None:
    """The softmax that op `idx` is, seen through dropout and reshapes (attention weights), or None."""
    for _ in range(8):
        op = index.ops[idx]
        role = index.role(op)
        if role.kind is RoleKind.ACTIVATION:
            return idx if role.activation == "softmax" else None
        data = index.data_operands(op)
        if role.kind is not RoleKind.TRANSPARENT or not data:
            return None
        idx = data[0]
    return None


# Functions handled by name, before their role: ops whose effect is not their role's.
BY_FUNCTION: dict[str, Handler] = {
    "scaled_dot_product_attention": _attention,
    "matmul": _matmul,  # a product of two activations (a weight matmul is a layer, handled apart)
    "einsum": _einsum,
    "baddbmm": _added_product,
    "glu": _glu,
    **{name: routing.compared for name in routing.COMPARISONS},
    "where": routing.chosen, "masked_fill": routing.filled,
    **{name: routing.scattered for name in routing.SCATTERS},
    "topk": routing.top, "sort": lambda p, op, x: x.summary(),  # sorted values: the same values
    "cumsum": routing.cumulated,
    "setitem": _written,
    **{name: _noise for name in NOISE},
    **{name: _filled_randomly for name in RANDOM_FILLS},
    "copy": _overwritten, "zero": _overwritten, "fill": _overwritten,
    **{name: _indices for name in INDICES},
    "affine_grid": _indices,  # sampling coordinates made from a transform, not a signal
    "grid_sample": _resampled,
    "pow": _power,
    "sqrt": _root, "rsqrt": _root,
    "cat": _concatenate, "concat": _concatenate, "stack": _concatenate,
    "sum": _sum,
    "normalize": _unit_vectors,  # before its role (a norm): unit vectors, not unit components
    **{name: _created for name in FACTORIES},
    # elementwise functions that are not activations: pushed through their Gaussian expectation
    "exp": _elementwise(torch.exp),
    "abs": _elementwise(torch.abs), "erf": _elementwise(torch.erf), "square": _elementwise(torch.square),
}

# Everything else by what it does to the signal.
BY_ROLE: dict[RoleKind, Handler] = {
    RoleKind.ACTIVATION: _activation,
    RoleKind.NORM: norm,
    RoleKind.ADD: _add,
    RoleKind.SCALE: _scale,
    RoleKind.TRANSPARENT: transparent,
}


def handler_for(index: GraphIndex, op: Op) -> Handler | None:
    if op.kind is OpKind.FUNCTION and op.target in BY_FUNCTION:
        return BY_FUNCTION[op.target]
    role = index.role(op)
    if role.kind is RoleKind.ACTIVATION and (role.activation in theory.KNOWN):
        return _activation
    if role.kind in BY_ROLE and role.kind is not RoleKind.ACTIVATION:
        return BY_ROLE[role.kind]
    if op.kind is OpKind.MODULE:
        return _module
    return None
