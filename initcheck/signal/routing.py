"""Ops that route values by the data: a fixed matrix that mixes rows (a graph's adjacency), comparisons and the masks they make (`torch.where`,
`masked_fill`, a product with a mask), scatter adds (a graph network's message passing, a mixture of
experts' combine), and order statistics (`topk`, `sort`).

Each keeps the mean-field model of the rest of the signal model: a comparison of Gaussian values is
a Bernoulli mask of known rate; a mask that chooses between two tensors gives their mixture; a row
that receives k rows of messages sums them (fluctuations incoherently, shared means coherently); the
k largest of n values have the moments of the top order statistics of a Gaussian sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from .. import theory
from ..graph import Op, OpKind
from .moments import Moment, plus, summed
from .passes import Pass

# Comparisons of continuous values: a mask whose rate the Gaussian model gives. (eq and ne are left
# out: of continuous values they are almost never true, of integers the model knows nothing.)
COMPARISONS = frozenset({"gt", "ge", "lt", "le", "greater", "greater_equal", "less", "less_equal"})
_ABOVE = frozenset({"gt", "ge", "greater", "greater_equal"})

# A fill this large is a mask value on logits (-inf, -1e9, finfo.min), not a value of the signal.
_MASK_VALUE = 1e4


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _constant(op: Op) -> float:
    v = op.scalar("1", "other", "0", "input", "self", default=0.0)
    return float(v) if isinstance(v, (int, float)) else 0.0


def compared(p: Pass, op: Op, x: Moment) -> Moment:
    """a > b (or >=, <, <=) of Gaussian values: a mask that is one with probability
    Phi(E[a - b] / sd(a - b)), the two sides independent; against a number c, Phi((E[x] - c) / sd)."""
    left, right = op.operand("0", "input", "self"), op.operand("1", "other")
    a = p.fwd[left] if left is not None else None
    b = p.fwd[right] if right is not None else None
    if a is not None and b is not None:
        mean, var = a.mean - b.mean, a.var + b.var
    elif b is not None:  # a number on the left: c > x
        mean, var = _constant(op) - b.mean, b.var
    else:
        mean, var = x.mean - _constant(op), x.var
    above = _phi(mean / math.sqrt(var)) if var > 0.0 else float(mean > 0.0) if mean != 0.0 else 0.5
    rate = above if op.target in _ABOVE else 1.0 - above
    return Moment(rate, rate, rate * (1.0 - rate))


def mask_rate(p: Pass, idx: int | None) -> float | None:
    """The rate of a mask computed from the data by a comparison (through casts and views): its
    mean; None for a constant mask (a causal triangle) or one the model cannot rate."""
    for _ in range(6):
        if idx is None or p.fwd[idx] is None:
            return None
        op = p.index.ops[idx]
        if op.kind is OpKind.FUNCTION and op.target in COMPARISONS:
            m = p.fwd[idx]
            return min(max(m.mean, 0.0), 1.0) if m is not None else None
        if op.kind is not OpKind.FUNCTION or op.target not in _CASTS:
            return None
        data = p.index.data_operands(op)
        idx = data[0] if data else None
    return None


_CASTS = frozenset({"float", "half", "bfloat16", "double", "to", "type", "type_as", "bool", "view", "reshape",
                    "unsqueeze", "squeeze", "expand", "expand_as", "getitem", "contiguous"})


def _branch(p: Pass, op: Op, keys: tuple[str, ...]) -> Moment | None:
    """A branch of where/masked_fill: a tensor's moments, a number's (c, c^2); None when it is a
    mask value (a logit never chosen) or unknown."""
    idx = op.operand(*keys)
    if idx is not None:
        return p.fwd[idx]
    c = op.scalar(*keys)
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not abs(float(c)) < _MASK_VALUE:
        return None
    return Moment(float(c), float(c) * float(c), 0.0)


def _mixture(rate: float, a: Moment, b: Moment) -> Moment:
    """a where the mask holds (rate), b elsewhere, the mask independent of both."""
    q = 1.0 - rate
    return Moment(rate * a.mean + q * b.mean, rate * a.second + q * b.second, rate * a.signal + q * b.signal,
                  rate * a.between + q * b.between)


def _of(p: Pass, keys: tuple[str, ...], op: Op, h: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A branch as a function of h, the tensor its condition compares: h itself, h times a number,
    or a number; None otherwise."""
    idx = op.operand(*keys)
    if idx is None:
        c = op.scalar(*keys)
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return None
        value = float(c)
        return lambda t: torch.full_like(t, value)
    if idx == h:
        return lambda t: t
    src = p.index.ops[idx]
    if src.kind is OpKind.FUNCTION and src.target in ("mul", "div") and src.inputs == (h,):
        c = next((float(v) for k, v in src.scalars if k in ("0", "1", "other") and isinstance(v, (int, float))
                  and not isinstance(v, bool) and v != 0), None)
        if c is not None:
            factor = 1.0 / c if src.target == "div" else c
            return lambda t: t * factor
    return None


def _piecewise(p: Pass, cond: int | None, keep: tuple[str, ...], other: tuple[str, ...], op: Op) -> Moment | None:
    """where(h > c, f(h), g(h)) with f, g each h, a multiple of h or a number (a leaky ReLU written
    out, masked_fill(h < c, v)): one elementwise function of h, pushed through its Gaussian
    expectation, the mask and the values no longer taken as independent."""
    if cond is None:
        return None
    test = p.index.ops[cond]
    if test.kind is not OpKind.FUNCTION or test.target not in COMPARISONS or len(test.inputs) != 1:
        return None
    h = test.inputs[0]
    z = p.fwd[h]
    fa, fb = _of(p, keep, op, h), _of(p, other, op, h)
    if z is None or fa is None or fb is None:
        return None
    c = _constant(test)
    above = test.target in _ABOVE

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.where((t > c) if above else (t < c), fa(t), fb(t))

    m = theory.gaussian_moments(fn, z.mean, z.var)
    var = max(m.second - m.mean * m.mean, 0.0)
    return Moment(m.mean, m.second, min(z.signal * m.slope2, var))


def chosen(p: Pass, op: Op, x: Moment) -> Moment | None:
    """torch.where(cond, a, b): the mixture of a and b at the rate of a mask the data makes; with a
    constant condition (a causal mask) or a mask value as the other branch (-inf on logits), the
    tensor branch itself. torch.where(cond) alone gives indices: no signal."""
    if len(op.operands) + len(op.scalars) <= 1:
        return Moment(0.0, 0.0, 0.0)
    exact = _piecewise(p, op.operand("0", "condition"), ("1", "input", "self"), ("2", "other"), op)
    if exact is not None:
        return exact
    a, b = _branch(p, op, ("1", "input", "self")), _branch(p, op, ("2", "other"))
    rate = mask_rate(p, op.operand("0", "condition"))
    if a is None or b is None or rate is None:
        kept = a if a is not None and (b is None or op.operand("1", "input", "self") is not None) else b
        return kept.summary() if kept is not None else None
    return _mixture(rate, a, b)


def filled(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x.masked_fill(mask, v): v where the mask holds. A constant mask (a causal triangle: the
    softmax's own model knows it, masks.py) or a mask value (-inf) leaves x's moments; a mask from the
    data, the mixture at its rate."""
    src = op.operand("0", "input", "self")
    base = p.fwd[src] if src is not None else None
    if base is None:
        return None
    value = _branch(p, op, ("2", "value"))
    if value is not None and (exact := _piecewise(p, op.operand("1", "mask"), ("2", "value"), ("0", "input", "self"), op)):
        return exact
    rate = mask_rate(p, op.operand("1", "mask"))
    if value is None or rate is None:
        return base.summary()
    return _mixture(rate, value, base)


# scatter ops: (key of the destination, key of the values added) and how a row combines them
SCATTERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {  # destination, index, source keys
    "index_add": (("0", "input", "self"), ("2", "index"), ("3", "source")),
    "scatter_add": (("0", "input", "self"), ("2", "index"), ("3", "src")),
    "scatter_reduce": (("0", "input", "self"), ("2", "index"), ("3", "src")),
}


def scattered(p: Pass, op: Op, x: Moment) -> Moment | None:
    """dest.index_add(dim, idx, src) (scatter_add, scatter_reduce "sum"/"mean"): each destination
    element receives k = numel(src) / numel(dest) of src's on average (a node's degree, an expert's
    share of the tokens), summed: their fluctuations add incoherently (k E[var]), what they share
    (the mean, a channel's mean) coherently (E[c^2] with c the count: k^2, or k when k < 1 and a row
    gets one value or none). "mean" divides by the count. Without the shapes, k = 1."""
    dest_keys, index_keys, src_keys = SCATTERS[op.target]
    dest, src = op.operand(*dest_keys), op.operand(*src_keys)
    reduce = op.scalar("4", "reduce", default="sum") if op.target == "scatter_reduce" else "sum"
    if src is None or reduce not in ("sum", "mean") or (s := p.fwd[src]) is None:
        return None
    # the destination has the output's shape; a tensor made of numbers alone (torch.zeros(n, d)) is
    # no operand of the graph: zeros
    whole, part = op.shape, p.index.ops[src].shape
    # without shapes (after a data-dependent one: an MoE's token selection), the share of the rows
    # its router sends, else one value per element
    k = math.prod(part) / max(math.prod(whole), 1) if whole and part else (_routed_share(p, op.operand(*index_keys)) or 1.0)
    alpha = op.scalar("alpha", default=1.0) if op.target == "index_add" else 1.0
    a = float(alpha) if isinstance(alpha, (int, float)) else 1.0
    d = (p.fwd[dest] if dest is not None else None) or Moment(0.0, 0.0, 0.0)
    out = plus(d, summed(s.scaled(a), k, k * max(k, 1.0)))  # E[c^2]: k^2, or k when a row gets one value or none
    if reduce == "mean":
        include = op.scalar("include_self", "5", default=True)
        n = max(k + (1.0 if include is not False else 0.0), 1.0)
        out = out.scaled(1.0 / n)
    return out


def _routed_share(p: Pass, index: int | None, limit: int = 8) -> float | None:
    """The share of the rows that an index selects when it is an expert's tokens from a top-k
    router (Mixtral's `torch.where(one_hot(top_k_indices, E).permute(2, 1, 0)[e])`): each row goes
    to k of the E experts, so each expert gets k/E of them. None for any other index."""
    ops, steps = p.index.ops, 0
    while index is not None and steps < limit and ops[index].target != "one_hot":
        index, steps = (ops[index].inputs[0] if ops[index].inputs else None), steps + 1
    if index is None or ops[index].target != "one_hot" or not ops[index].inputs:
        return None
    classes = ops[index].scalar("1", "num_classes")
    src = ops[index].inputs[0]
    while steps < limit and ops[src].target != "topk" and ops[src].inputs:
        src, steps = ops[src].inputs[0], steps + 1
    k = ops[src].scalar("1", "k") if ops[src].target == "topk" else None
    if not isinstance(k, int) or not isinstance(classes, int) or not 0 < k <= classes:
        return None
    return k / classes


def top(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x.topk(k, dim): the k largest of the n values along dim (smallest with largest=False), each
    value N(mean, var): the mean of the top-k order statistics' first and second moments."""
    data = p.index.data_operands(op)
    dim = op.scalar("2", "dim", default=-1)
    k = op.scalar("1", "k")
    n = p.index.ops[data[0]].size(int(dim)) if data and isinstance(dim, int) and not isinstance(dim, bool) else None
    if not n or not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        return None
    e1, e2 = top_moments(n, k)
    if op.scalar("3", "largest", default=True) is False:
        e1 = -e1
    sd = math.sqrt(x.var)
    second = x.mean * x.mean + 2.0 * x.mean * sd * e1 + x.var * e2
    gain = second / max(x.second, 1e-30)
    return Moment(x.mean + sd * e1, second, min(x.signal * gain, second))


@functools.lru_cache(maxsize=256)
def top_moments(n: int, k: int) -> tuple[float, float]:
    """(E[z], E[z^2]) of a value drawn from the k largest of n iid standard normals. The density of
    such a value is (n / k) phi(z) P(Bin(n - 1, 1 - Phi(z)) <= k - 1): one of n values, above z, with
    at most k - 1 of the other n - 1 above it. Past k = 256, the top k of n are the values above the
    (1 - k/n) quantile: a truncated normal's moments."""
    z, w = theory.normal_grid()
    if k == n:
        return 0.0, 1.0
    if k > 256:
        c = math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(1.0 - 2.0 * k / n, dtype=torch.float64)))
        tail = k / n
        pdf = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
        return pdf / tail, 1.0 + c * pdf / tail
    upper = (0.5 * (1.0 - torch.erf(z / math.sqrt(2.0)))).clamp(1e-300, 1.0 - 1e-16)
    j = torch.arange(k, dtype=torch.float64)[:, None]
    log_pmf = (torch.lgamma(torch.tensor(float(n))) - torch.lgamma(j + 1.0) - torch.lgamma(n - j)
               + j * torch.log(upper) + (n - 1 - j) * torch.log1p(-upper))
    density = (n / k) * torch.exp(log_pmf).sum(0)
    return float((w * density * z).sum()), float((w * density * z * z).sum())


def aggregated(p: Pass, op: Op) -> Moment | None:
    """A @ h where A is fixed (a buffer, or a model input that no weight reaches: pygcn's
    `torch.spmm(adj, x W)`) and h carries the layers' signal: each output row is a weighted sum of
    h's rows. A buffer is read: sum_j A_ij^2 weighs the rows' fluctuations, (sum_j A_ij)^2 what they
    share (a channel's mean), averaged over the rows. An input's values are not known: taken as a
    normalized aggregation that keeps the scale (a row-stochastic or symmetric-normalized
    adjacency), not as a dense unit-variance matrix (N products). None: not an aggregation."""
    left, right = op.operand("0", "input", "self"), op.operand("1", "other", "mat2")
    if left is None or right is None:
        return None
    ops, depth = p.index.ops, p.index.depth
    for fixed, h, axis in ((left, right, 1), (right, left, 0)):
        mh = p.fwd[h]
        if mh is None or depth[h] == 0:
            continue
        if ops[fixed].kind is OpKind.BUFFER:
            sums = _buffer_sums(p, ops[fixed].target, axis)
            if sums is None:
                return None
            r1, r1sq, r2 = sums
            coherent = mh.mean * mh.mean + max(mh.between, 0.0)
            second = r2 * max(mh.second - coherent, 0.0) + r1sq * coherent
            return Moment(r1 * mh.mean, second, min(r2 * mh.signal, second), r1sq * max(mh.between, 0.0))
        if p.fwd[fixed] is not None and depth[fixed] == 0 and ops[fixed].kind is OpKind.INPUT:
            return mh.summary()
    return None


def _buffer_sums(p: Pass, name: str, axis: int) -> tuple[float, float, float] | None:
    """Of a 2-D buffer, over its rows (axis 1: sums along each row) or columns (axis 0): the mean
    sum, the mean squared sum and the mean sum of squares; sparse or dense."""
    try:
        a = p.model.get_buffer(name)
    except AttributeError:
        return None
    if a.ndim != 2 or a.is_meta or not a.is_floating_point():
        return None
    a = a.detach()
    if a.is_sparse:
        a = a.coalesce()
        at = a.indices()[0 if axis == 1 else 1]
        v = a.values().double()
        n = a.shape[0 if axis == 1 else 1]
        s1 = torch.zeros(n, dtype=torch.float64).index_add_(0, at, v)
        s2 = torch.zeros(n, dtype=torch.float64).index_add_(0, at, v * v)
    else:
        d = a.double()
        s1, s2 = d.sum(axis), (d * d).sum(axis)
    return float(s1.mean()), float((s1 * s1).mean()), float(s2.mean())


def cumulated(p: Pass, op: Op, x: Moment) -> Moment | None:
    """x.cumsum(dim) over n values: position k sums k of them, the fluctuations incoherently (k
    times the variance), what they share (the mean, a channel's mean) coherently (k^2); averaged
    over k = 1..n: (n + 1) / 2 and (n + 1)(2n + 1) / 6. Needs the size along dim."""
    if op.index in p.index.indexing:
        return None  # positions counted from an attention mask: not the signal, left as they were
    data = p.index.data_operands(op)
    dim = op.scalar("1", "dim")
    n = p.index.ops[data[0]].size(int(dim)) if data and isinstance(dim, int) and not isinstance(dim, bool) else None
    if not n:
        return None
    return summed(x, (n + 1) / 2.0, (n + 1) * (2 * n + 1) / 6.0)
