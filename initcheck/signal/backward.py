"""The backward half of the signal model: E[g^2], the gradient's second moment per element at every
op's output, pushed from the model's outputs (unit gradient) back to its inputs.

Each op scales the gradient by the mean square of its local derivative, in the mean-field way of
the forward pass (terms independent, so they add in second moment):
- a weight layer y = W x: x's gradient W^T g sums fan_out terms, fan_out E[w^2] E[g^2];
- an activation: E[f'(z)^2]; a norm: gamma^2 / var_in; F.normalize (x / |x| over d values):
  1 / (d E[x^2]), the Jacobian (I - y y^T) / |x| leaving d - 1 of d directions;
- a product of two activations C = A @ B: each of A's elements meets as many of C's gradients as
  B's elements it multiplies (N, the output's last size, times any broadcast), so A's gradient has
  N E[g^2] E[B^2]; B's likewise with A; the elementwise product: the other factor's E[.^2];
- a softmax over n entries: dl = p (g - sum_k p_k g_k) leaves E[dl^2] = E[g^2] E[S2 - 2 S3 + S2^2] / n
  with S_r = sum_k p_k^r, over logits of the forward model's spread (attention.softmax_slope2);
- scaled dot-product attention: the three products above, written out;
- a selection (q, k and v split out of one qkv tensor): the gradient reaches the selected share of
  the input's elements, zero elsewhere, so per element it is the share times the part's;
- pooling, dropout, copies (`_moved`): an average of k values passes 1/k of the gradient to each.
Everything else passes the gradient on unchanged.

Gradients are added as independent terms. A part every token shares (a head that averages the
positions hands each the same gradient) sums coherently where copies meet (an upsampling, attention
averaging values): not modelled, so absolute predictions run up to a few times low there (swin_v2_t:
about 2.4x in rms in its first stage); IC204/IC205 compare two predictions of the same graph, where
it cancels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..graph import Op, OpKind
from ..ops.activations import RoleKind
from ..trace.index import GraphIndex
from .attention import fluctuation, logit_std, participation, softmax_slope2
from .handlers import FACTORIES, INDICES, NOISE, RANDOM_FILLS, contracted, scalar_arg
from .moments import Moment
from .passes import Pass
from .pooling import average_window, dropout_rate, pool_window
from .routing import COMPARISONS, mask_rate

# Ops that pick part of their input (a gradient of zero elsewhere): weighted by the part's share.
SELECTIONS = frozenset({"getitem", "select", "narrow", "chunk", "split", "unbind", "tensor_split", "topk", "sort"})


def backward(p: Pass, weight_n: dict[int, tuple[float, float]]) -> list[float]:
    """E[g^2] at every op's output for a unit gradient at the model's outputs. `p`: the forward
    sweep (its moments and per-op factors); `weight_n`: weight op -> (fan_out, E[w^2])."""
    index, fwd, slope2, norm_gain = p.index, p.fwd, p.slope2, p.norm_gain
    ops = index.ops
    g = [0.0] * len(ops)
    for op in reversed(ops):
        if op.kind is OpKind.OUTPUT:
            for i in op.inputs:
                g[i] += 1.0
            continue
        gi = g[op.index]
        data = index.data_operands(op)
        if gi == 0.0 or not data or (op.kind is OpKind.FUNCTION and (op.target in FACTORIES or op.target in NOISE
                                                                    or op.target in INDICES or op.target in COMPARISONS
                                                                    or op.target in RANDOM_FILLS)):
            continue  # a tensor made from another's shape (zeros, noise), or a test of it, has no gradient
        if op.index in weight_n:
            fan_out, w2 = weight_n[op.index]
            g[data[0]] += fan_out * w2 * gi
        elif op.index in slope2:
            g[data[0]] += slope2[op.index] * gi
        elif op.index in norm_gain:
            g[data[0]] += norm_gain[op.index] * gi
        elif op.kind is OpKind.FUNCTION and op.target in ("where", "masked_fill"):
            for i, share in _chosen(p, op):
                g[i] += share * gi
        elif op.kind is OpKind.FUNCTION and op.target in _PRODUCTS:
            for i, share in _PRODUCTS[op.target](index, op, fwd, data):
                g[i] += share * gi
        elif index.role(op).activation == "softmax":
            g[data[0]] += _softmax(index, op, fwd, data) * gi
        elif op.kind is OpKind.FUNCTION and op.target in SELECTIONS:
            g[data[0]] += _share(index, op, data[0]) * gi
        elif index.role(op).kind is RoleKind.TRANSPARENT and len(data) == 1:
            g[data[0]] += _moved(p, op, data[0]) * gi
        elif op.target in ("cat", "concat", "stack"):  # each input's elements are the output's, once
            for i in dict.fromkeys(data):
                g[i] += gi
        else:  # elementwise (add, sub, ...): an operand broadcast over the output sums its copies' gradients
            for i in dict.fromkeys(data):
                g[i] += _copies(index, op, i) * gi
    return g


def _copies(index: GraphIndex, op: Op, src: int) -> float:
    """How many of the output's elements each element of operand `src` reaches (1 without shapes)."""
    out, part = _numel(op), _numel(index.ops[src])
    return max(out / part, 1.0) if out and part else 1.0


Shares = list[tuple[int, float]]


def _second(fwd: Sequence[Moment | None], i: int) -> float:
    m = fwd[i]
    return m.second if m is not None else 1.0


def _numel(op: Op) -> int | None:
    return math.prod(op.shape) if op.shape else None


def _matmul(index: GraphIndex, op: Op, fwd: Sequence[Moment | None], data: tuple[int, ...]) -> Shares:
    """C = A @ B: every product a_mk b_kn appears once, so an element of A meets numel(C) K / numel(A)
    of C's gradients, each times a b (and B's likewise); without shapes the gradient passes."""
    if len(data) < 2:
        return [(data[0], 1.0)]
    a, b = index.ops[data[0]], index.ops[data[1]]
    k, na, nb, nc = contracted(index, op), _numel(a), _numel(b), _numel(op)
    if not (k and na and nb and nc):
        return [(data[0], 1.0), (data[1], 1.0)]
    return [(data[0], nc * k / na * _second(fwd, data[1])), (data[1], nc * k / nb * _second(fwd, data[0]))]


def _mul(index: GraphIndex, op: Op, fwd: Sequence[Moment | None], data: tuple[int, ...]) -> Shares:
    """a * b: each factor's gradient is g times the other's E[.^2] (a parameter's, or a constant's
    square); a / b: the numerator's, g / E[b^2] (the denominator's gradient is left out)."""
    if len(data) >= 2 and op.target == "mul":
        return [(data[0], _second(fwd, data[1]) * _copies(index, op, data[0])),
                (data[1], _second(fwd, data[0]) * _copies(index, op, data[1]))]
    others = [m for i in op.inputs if i != data[0] and (m := fwd[i]) is not None]
    c = others[0].second if others else scalar_arg(op, 1.0) ** 2
    if op.target == "div":
        c = 1.0 / c if c else 1.0
    return [(data[0], c * _copies(index, op, data[0]))]


def _softmax(index: GraphIndex, op: Op, fwd: Sequence[Moment | None], data: tuple[int, ...]) -> float:
    """E[dl^2] / E[g^2] through a softmax over n entries, from the spread of its input (the logits);
    1 (passed on) where the size is unknown."""
    mod = index.module(op)
    dim = getattr(mod, "dim", None) if mod is not None else op.scalar("1", "dim", default=-1)
    n = op.size(int(dim)) if isinstance(dim, int) and not isinstance(dim, bool) else None
    logits = fwd[data[0]]
    if not n or logits is None:
        return 1.0
    return softmax_slope2(n, math.sqrt(fluctuation(logits)))


def _share(index: GraphIndex, op: Op, src: int) -> float:
    """numel(out) / numel(in) of a selection: the fraction of the input's elements a slice keeps (one
    of several parts: each part's gradient lands on its own elements, so the parts' shares add up to
    the whole), or how many times a gather by an index reads each (a relative-position table)."""
    part, whole = _numel(op), _numel(index.ops[src])
    return part / whole if part and whole else 1.0


# Ops that copy each input value to several outputs (or route each output's gradient to one input):
# an input's gradient sums those of its copies, numel(out) / numel(in) of them on average.
COPIES = frozenset({"expand", "expand_as", "repeat", "repeat_interleave", "tile", "interpolate", "upsample"})


def _moved(p: Pass, op: Op, src: int) -> float:
    """E[dx^2] / E[g^2] through an op that moves values: an average of k values passes g / k to each
    of them, and each is read by numel(out) k / numel(in) windows, so g numel(out) / (numel(in) k)
    (g / k^2 for a global average); a max routes each window's gradient to one value, numel(out) /
    numel(in) (1 / k); a copy sums its copies; inverted dropout in training 1 / (1 - p); a view 1."""
    drop = dropout_rate(p, op)
    if drop is not None:
        return 1.0 / (1.0 - drop) if drop < 1.0 else 0.0
    out, whole = _numel(op), _numel(p.index.ops[src])
    share = out / whole if out and whole else None
    k = average_window(p, op)
    if k is not None:
        return share / k if share is not None else 1.0 / (k * k)
    window = pool_window(p, op)
    if window > 1:
        return share if share is not None else 1.0 / window
    mod = p.index.module(op)
    if (op.target in COPIES or isinstance(mod, nn.Upsample)) and share is not None:
        return max(share, 1.0)
    return 1.0


def _attention(index: GraphIndex, op: Op, fwd: Sequence[Moment | None], data: tuple[int, ...]) -> Shares:
    """F.scaled_dot_product_attention(q, k, v): out = P v with P = softmax(q k^T * scale) over n keys,
    m queries, head dims d (q, k) and e (v). P's moments come from the forward model's participation."""
    q, k, v = (op.operand(str(i), name) for i, name in enumerate(("query", "key", "value")))
    if q is None or k is None or v is None:
        return [(i, 1.0) for i in dict.fromkeys(data)]
    mq, mk, mv = fwd[q], fwd[k], fwd[v]
    m, d = index.ops[q].size(-2), index.ops[q].size(-1)
    n, e = index.ops[k].size(-2), index.ops[v].size(-1)
    if mq is None or mk is None or mv is None or not (m and d and n and e):
        return [(i, 1.0) for i in dict.fromkeys(data)]
    scale = op.scalar("6", "scale")
    scale = float(scale) if isinstance(scale, (int, float)) else 1.0 / math.sqrt(d)
    spread = logit_std(mq, mk, d, scale)
    s = participation(n, spread)  # E[sum_j p_j^2] for one query
    gp = e * fluctuation(mv)  # dP = dO v^T: e terms; v's token-common part moves every key alike
    gl = gp * softmax_slope2(n, spread)  # through the softmax
    out = [(v, m * s / n), (q, n * gl * scale * scale * mk.second), (k, m * gl * scale * scale * mq.second)]
    return [(i, sum(c for j, c in out if j == i)) for i in dict.fromkeys(j for j, _ in out)]


def _added_product(index: GraphIndex, op: Op, fwd: Sequence[Moment | None], data: tuple[int, ...]) -> Shares:
    """beta * input + alpha * (b1 @ b2): the product's operands as in a matmul, times alpha^2; the
    input's gradient times beta^2."""
    a, b, base = op.operand("1", "batch1"), op.operand("2", "batch2"), op.operand("0", "input", "self")
    alpha, beta = op.scalar("alpha", default=1.0), op.scalar("beta", default=1.0)
    a2 = float(alpha) ** 2 if isinstance(alpha, (int, float)) else 1.0
    out: Shares = [(base, (float(beta) ** 2 if isinstance(beta, (int, float)) else 1.0) * _copies(index, op, base))] \
        if base is not None and base in data else []
    if a is None or b is None:
        return out
    k, na, nb, nc = index.ops[a].size(-1), _numel(index.ops[a]), _numel(index.ops[b]), _numel(op)
    if not (k and na and nb and nc):
        return [*out, (a, a2), (b, a2)]
    return [*out, (a, a2 * nc * k / na * _second(fwd, b)), (b, a2 * nc * k / nb * _second(fwd, a))]


def _chosen(p: Pass, op: Op) -> Shares:
    """torch.where(cond, a, b) / x.masked_fill(mask, v): the gradient reaches each branch where it
    was chosen, at the mask's rate (all of it for a constant mask: the tensor branch is the output)."""
    if op.target == "where":
        a, b, rate = op.operand("1", "input", "self"), op.operand("2", "other"), mask_rate(p, op.operand("0", "condition"))
    else:
        a, b, rate = op.operand("0", "input", "self"), None, mask_rate(p, op.operand("1", "mask"))
        rate = None if rate is None else 1.0 - rate
    out = [(a, 1.0 if rate is None else rate), (b, 1.0 if rate is None else 1.0 - rate)]
    return [(i, share * _copies(p.index, op, i)) for i, share in out if i is not None and i in p.index.data_operands(op)]


_PRODUCTS = {
    "matmul": _matmul, "einsum": _matmul, "baddbmm": _added_product,
    "mul": _mul, "div": _mul,
    "scaled_dot_product_attention": _attention,
}
