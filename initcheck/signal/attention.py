"""Attention as the signal model sees it: softmax(logits) @ V averages V's rows over the keys, by an
amount set by the number of keys and the spread of the logits.

For one query, out = sum_j p_j v_j with p = softmax(l). With values that are independent across
tokens around a token-common part c (the channel's mean, a bias: what every key shares),
E[out^2] = c^2 + var(v) E[sum_j p_j^2], because the weights sum to one. The participation
E[sum p^2] of n keys whose logits spread with std s:
- s -> 0: uniform weights, 1/n (a ViT of 65 tokens shrinks V's fluctuation 8x in rms);
- s^2 << ln n: both sums self-average (annealed), E[sum p^2] = n e^{2 s^2} / (n e^{s^2/2})^2 = e^{s^2}/n;
- s^2 > ln n / 2: sum_j e^{2 l_j} is carried by its few largest terms and no longer self-averages;
  past s = sqrt(2 ln n) (the random-energy model's freezing point, Derrida 1981) the largest logit
  beats the sum of all the others and the weights condense on O(1) keys: E[sum p^2] -> 1.
No closed form covers the crossover, so it is computed as an expectation over Gaussian logits with a
fixed generator (the user's RNG is never touched), cached per (n, s).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..graph import Op, OpKind
from ..ops.activations import RoleKind
from ..trace.index import GraphIndex
from .moments import Moment

# Draws per (n, s): enough that E[sum p^2] has a relative error under 1% at every n.
_DRAWS = 1 << 17
_SEED = 20161


def freezing_std(n: int) -> float:
    """The logit std past which a softmax over n keys condenses onto a few of them (sqrt(2 ln n))."""
    return math.sqrt(2.0 * math.log(n)) if n > 1 else 0.0


def participation(n: int, s: float, causal: bool = False) -> float:
    """E[sum_j p_j^2] for p = softmax of n iid N(0, s^2) logits; for causal attention, the mean over
    the queries, query i seeing i + 1 keys."""
    if n <= 1:
        return 1.0
    s = round(max(s, 0.0), 2)
    if not causal:
        return _participation(n, s)
    # query i sees i + 1 keys: the participation is computed at geometrically spaced key counts k,
    # and each stands for the counts j in (previous, k] by f(j) ~ f(k) k / j (f falls like 1/j)
    counts = sorted({max(1, round(n ** (i / 24))) for i in range(25)} | {n})
    total, previous = 0.0, 0
    for k in counts:
        total += _participation(k, s) * k * math.fsum(1.0 / j for j in range(previous + 1, k + 1))
        previous = k
    return min(total / n, 1.0)


@functools.lru_cache(maxsize=1024)
def _participation(n: int, s: float) -> float:
    if n <= 1:
        return 1.0
    if s == 0.0:
        return 1.0 / n
    g = torch.Generator().manual_seed(_SEED)
    rows = max(_DRAWS // n, 64)
    logits = torch.randn(rows, n, generator=g, dtype=torch.float64) * s
    return float(logits.softmax(-1).pow(2).sum(-1).mean())


def softmax_slope2(n: int, s: float) -> float:
    """E[dl_j^2] / E[g^2] through p = softmax(l) over n keys whose logits spread with std s, for an
    incoming gradient g iid across keys: dl = p (g - sum_k p_k g_k), so the mean of p_j^2 (g_j - gbar)^2
    is E[S2 - 2 S3 + S2^2] / n with S_r = sum_j p_j^r: (1 - 1/n) / n^2 for uniform weights, 0 once one
    key takes all. Computed over Gaussian logits like `participation`."""
    return _softmax_slope2(n, round(max(s, 0.0), 2)) if n > 1 else 0.0


@functools.lru_cache(maxsize=1024)
def _softmax_slope2(n: int, s: float) -> float:
    if s == 0.0:
        return (1.0 - 1.0 / n) / (n * n)
    g = torch.Generator().manual_seed(_SEED)
    p = (torch.randn(max(_DRAWS // n, 64), n, generator=g, dtype=torch.float64) * s).softmax(-1)
    s2, s3 = p.pow(2).sum(-1), p.pow(3).sum(-1)
    return float((s2 - 2 * s3 + s2 * s2).mean()) / n


def averaged_values(v: Moment, keys: int, logit_std: float, causal: bool = False) -> Moment:
    """The moments of softmax(logits) @ V: V's token-common part (its mean and the spread of its
    channel means) passes whole; the rest shrinks by the participation of the keys."""
    share = participation(keys, logit_std, causal)
    second = v.second - fluctuation(v) * (1.0 - share)
    return Moment(v.mean, second, min(v.signal * share, second), v.between)


def fluctuation(m: Moment) -> float:
    """The second moment of what differs from token to token: all of it but the token-common part."""
    return max(m.second - min(m.mean * m.mean + max(m.between, 0.0), m.second), 0.0)


def logit_std(q: Moment, k: Moment, d: int, scale: float) -> float:
    """The std, across the keys of one query, of q . k_j * scale over a head of dimension d:
    var = d E[q^2] E[k_f^2] scale^2, where k_f is k less its token-common part (that part moves
    every logit of a query alike, which the softmax ignores)."""
    return math.sqrt(max(d * q.second * fluctuation(k), 0.0)) * abs(scale)


def mha_values(mod: nn.MultiheadAttention, op: Op, key_op: Op | None, key: Moment | None, gain2: float,
               x: Moment) -> Moment:
    """nn.MultiheadAttention's averaged values before out_proj. gain2 = E * E[w^2] of the packed
    in_proj: each of q, k, v has E[.^2] = gain2 times its input's, and the module's own scale
    1/sqrt(d_head) cancels the head's d_head, so the logit std is sqrt(E[q^2] E[k_f^2])."""
    v = Moment(0.0, gain2 * x.second, gain2 * x.signal, gain2 * (x.second - fluctuation(x)))
    shape = key_op.shape if key_op is not None else None
    if shape is None or not shape:
        return v  # no shapes: the average's size is unknown
    keys = shape[1] if mod.batch_first and len(shape) == 3 else shape[0]
    k = key or x
    s = math.sqrt(max(gain2 * x.second * gain2 * fluctuation(k), 0.0))
    return averaged_values(v, keys, s, bool(op.scalar("is_causal", default=False)))


@dataclass(frozen=True)
class Block:
    """One attention of the graph: the op that applies the weights, the op that feeds its queries
    (to find the projection to blame), the number of keys and the logits' std across them."""

    op: int
    query: int
    keys: int
    logit_std: float


def blocks(index: GraphIndex, forward: Sequence[Moment | None], in_proj: Mapping[int, float]) -> list[Block]:
    """Every attention whose keys are known from the shapes: scaled_dot_product_attention,
    softmax(...) @ V written out, nn.MultiheadAttention (`in_proj`: its op -> E * E[w^2] of the
    packed projection). Empty without shapes."""
    out: list[Block] = []
    for op in index.ops:
        if op.kind is OpKind.FUNCTION and op.target == "scaled_dot_product_attention":
            q, k = op.operand("0", "query"), op.operand("1", "key")
            if q is None or k is None:
                continue
            d, keys = index.ops[q].size(-1), index.ops[k].size(-2)
            mq, mk = forward[q], forward[k]
            if d and keys and mq is not None and mk is not None:
                scale = op.scalar("6", "scale")
                scale = float(scale) if isinstance(scale, (int, float)) else 1.0 / math.sqrt(d)
                out.append(Block(op.index, q, keys, logit_std(mq, mk, d, scale)))
        elif op.index in in_proj and isinstance(mod := index.module(op), nn.MultiheadAttention):
            data = index.data_operands(op)
            k = op.operand("1", "key")
            shape = index.ops[k].shape if k is not None else None
            x, mk = (forward[data[0]] if data else None), (forward[k] if k is not None else None)
            if shape and x is not None and mk is not None:
                keys = shape[1] if mod.batch_first and len(shape) == 3 else shape[0]
                g = in_proj[op.index]
                out.append(Block(op.index, data[0], keys, math.sqrt(max(g * x.second * g * fluctuation(mk), 0.0))))
        elif index.role(op).activation == "softmax" and _weights_values(index, op.index):
            dim = op.scalar("1", "dim", default=-1)
            keys = op.size(int(dim)) if isinstance(dim, int) else None
            before = index.data_operands(op)
            logits = forward[before[0]] if before else None
            if keys and logits is not None:
                out.append(Block(op.index, before[0], keys, math.sqrt(fluctuation(logits))))
    return out


def _weights_values(index: GraphIndex, soft: int) -> bool:
    """Whether a softmax's output weights a product (softmax(...) @ V), seen through dropout and views."""
    stack, seen = [soft], set()
    while stack:
        i = stack.pop()
        for u in index.users(i):
            user = index.ops[u]
            if u in seen:
                continue
            seen.add(u)
            if user.kind is OpKind.FUNCTION and user.target in ("matmul", "einsum") and index.data_operands(user)[:1] == (i,):
                return True
            if index.role(user).kind is RoleKind.TRANSPARENT:
                stack.append(u)
    return False
