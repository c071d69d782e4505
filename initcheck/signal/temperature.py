"""Saturated attentions (IC207) and the query projection each one's logits come from. A query or key
projection (`LayerFacts.attention_score`) is never the signal: its scale is the softmax's sharpness,
which IC207 judges, so the per-weight variance rule and the data-driven fix leave it to that rule.

A model may fold the 1/sqrt(d_head) into its q init instead of the logits (T5, Mesh TensorFlow):
aimed at the std of a signal path, those queries were scaled back up by sqrt(d_head) and the
attentions saturated. Folding is also how the fix repairs a missing scale (fix/temperature.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..facts import LayerFacts
from ..trace.index import GraphIndex
from . import attention
from .moments import Moment


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
