"""The weights that set an attention's temperature: the query and key projections (and a learned
logit bias) whose outputs meet in the logits q·k. Their outputs are never the signal: their scale
is the softmax's sharpness, which IC207 judges, so the per-weight variance rule and the data-driven
fix leave them to it.

A model may fold the 1/sqrt(d_head) into its q init instead of the logits (T5, Mesh TensorFlow):
aimed at the std of a signal path, those queries were scaled back up by sqrt(d_head) and the
attentions saturated. Folding is also how the fix repairs a missing scale (`fold_scale`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..facts import LayerFacts
from ..graph import OpKind
from ..ops.activations import RoleKind
from ..trace.index import GraphIndex
from . import attention
from .moments import Moment

# a projection sits a few views, a rotary embedding or a scaling away from the logits: a walk
# longer than this has left the attention (an unprojected q = x reaches back into earlier layers)
HOPS = 12


def logit_weight_ops(index: GraphIndex) -> frozenset[int]:
    """The weight ops whose outputs reach attention logits, and nothing else of an attention, without
    passing another weight op. A packed q/k/v projection (GPT-2's c_attn) also makes the values, a
    signal path: not among them; nor nn.MultiheadAttention, one op that holds q, k and v."""
    logits: list[int] = []
    values: list[int] = []
    for op in index.ops:
        if op.kind is OpKind.FUNCTION and op.target == "scaled_dot_product_attention":
            logits += [i for i in (op.operand("0", "query"), op.operand("1", "key")) if i is not None]
            values += [i for i in (op.operand("2", "value"),) if i is not None]
        elif index.role(op).activation == "softmax" and attention._weights_values(index, op.index):
            logits += list(index.data_operands(op)[:1])
            values += _values_of(index, op.index)
    return _reached(index, logits) - _reached(index, values)


def _values_of(index: GraphIndex, soft: int) -> list[int]:
    """The V operands of the products softmax(...) @ V that a softmax's output weights."""
    out, stack, seen = [], [soft], set()
    while stack:
        i = stack.pop()
        for u in index.users(i):
            if u in seen:
                continue
            seen.add(u)
            user = index.ops[u]
            data = index.data_operands(user)
            if user.kind is OpKind.FUNCTION and user.target in ("matmul", "einsum") and data[:1] == (i,):
                out += list(data[1:2])
            elif index.role(user).kind is RoleKind.TRANSPARENT:
                stack.append(u)
    return out


def _reached(index: GraphIndex, starts: list[int]) -> frozenset[int]:
    """The weight ops met walking back from `starts`, at most HOPS ops, without passing one."""
    found: set[int] = set()
    seen: set[int] = set()
    frontier = [(i, 0) for i in starts]
    while frontier:
        i, hops = frontier.pop()
        if i in seen or hops > HOPS:
            continue
        seen.add(i)
        op = index.ops[i]
        if index.is_weight_op(op):
            found.add(i)
            continue
        frontier += [(j, hops + 1) for j in index.data_operands(op)]
    return frozenset(found)


def query_op(index: GraphIndex, start: int, weight_ops: frozenset[int] | set[int]) -> int | None:
    """The weight op that feeds an attention's queries (or logits), walking back along first operands."""
    i: int | None = start
    for _ in range(32):
        if i is None:
            return None
        if i in weight_ops:
            return i
        data = index.data_operands(index.ops[i])
        i = data[0] if data else None
    return None


@dataclass(frozen=True)
class Saturated:
    """An attention whose predicted logit std is past its keys' freezing point, and the weight op of
    its query projection (the one the fix rescales)."""

    block: attention.Block
    limit: float
    query: int | None


def saturated(index: GraphIndex, forward: Sequence[Moment | None], in_proj: dict[int, float],
              weight_ops: frozenset[int] | set[int], factor: float = 1.0) -> Iterator[Saturated]:
    """Every attention whose logit std exceeds `factor` x sqrt(2 ln n) for its n keys."""
    for b in attention.blocks(index, forward, in_proj):
        limit = factor * attention.freezing_std(b.keys)
        if b.keys >= 2 and b.logit_std > limit:
            yield Saturated(b, limit, b.op if b.op in weight_ops else query_op(index, b.query, weight_ops))


def in_proj_gains(layers: Sequence[LayerFacts]) -> dict[int, float]:
    """nn.MultiheadAttention's op -> E * E[w^2] of its packed in_proj (what its q and k multiply)."""
    return {lf.op: lf.fan_in * lf.stats.second for lf in layers if lf.stats is not None and lf.param == "in_proj_weight"}
