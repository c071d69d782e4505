"""Walks forward from a layer's output over the graph, for the rules that ask where its output goes:
into gates only (gates.py), or into a normalization along a path that carries no scale of its own."""

from __future__ import annotations

from collections.abc import Callable

from ..facts.follow import downstream
from ..graph import Op, OpKind
from ..ops.activations import RoleKind
from .context import Context

# y(c * x) = c * y(x) for c > 0: a scale passes them unchanged
HOMOGENEOUS = frozenset({"relu", "leaky_relu", "prelu", "identity"})


def every_path(ctx: Context, start: int, visit: Callable[[int, Op], bool | None], limit: int = 64) -> bool:
    """Whether every path from op `start` ends well: `visit(i, op)` says True (this path ends well),
    False (it ends badly: the answer is False) or None (walk on through the op). A path that reaches
    the output, or an op no visit ended, ends badly; so does a walk over `limit` ops."""
    index = ctx.index
    frontier, seen, ended = [start], {start}, False
    while frontier:
        i = frontier.pop()
        users = index.users(i)
        if not users:
            return False  # the output, or a value nothing reads
        for u in users:
            if u in seen:
                continue
            seen.add(u)
            if len(seen) > limit:
                return False
            verdict = visit(u, index.ops[u])
            if verdict is False:
                return False
            if verdict:
                ended = True
            else:
                frontier.append(u)
    return ended


def normalized_away(ctx: Context, start: int, bias_free: Callable[[int], bool]) -> bool:
    """Whether the scale of op `start`'s output is removed downstream: every path reaches a
    normalization through positively homogeneous activations, ops that move or pool values, scalar
    factors and weight layers without a bias (`bias_free(op)`), and nothing that meets another tensor.
    DCGAN's first discriminator conv: LeakyReLU, a bias-free conv, then BatchNorm."""
    index = ctx.index

    def visit(i: int, op: Op) -> bool | None:
        if op.kind not in (OpKind.FUNCTION, OpKind.MODULE) or len(index.data_operands(op)) != 1:
            return False
        if index.is_weight_op(op):
            return None if bias_free(i) else False
        role = index.role(op)
        if role.kind is RoleKind.NORM:
            return True
        if role.kind in (RoleKind.TRANSPARENT, RoleKind.SCALE):
            return None
        if role.kind is RoleKind.ACTIVATION and role.activation in HOMOGENEOUS:
            return None
        return False

    return every_path(ctx, start, visit)


def logit_only(ctx: Context) -> frozenset[int]:
    """The weight ops whose output reaches nothing but attention logits (a softmax's input), through
    any ops and other such layers: query/key projections and position-bias MLPs (Swin V2's cpb_mlp,
    relative-position tables). Their scale is the softmax's sharpness, which IC207 judges; they are
    no signal path to aim at unit variance."""
    index = ctx.index
    found: set[int] = set()
    # a softmax whose weights multiply another tensor (attention), not a classifier's output softmax
    softmaxes = {op.index for op in index.ops if op.kind in (OpKind.FUNCTION, OpKind.MODULE)
                 and index.role(op).activation == "softmax" and _weighs_another(ctx, op.index)}
    # what SDPA adds to its logits: the attn_mask operand (timm's relative-position MLPs pass their bias so)
    biases = {i for op in index.ops if op.target == "scaled_dot_product_attention"
              for key, i in op.operands if key in ("3", "attn_mask")}
    if not softmaxes and not biases:
        return frozenset()  # no attention: no walk

    def visit(i: int, op: Op) -> bool | None:
        if index.is_weight_op(op):
            return i in found
        if op.kind is OpKind.OUTPUT:
            return False
        if i in softmaxes or i in biases:
            return True
        if index.role(op).kind is RoleKind.ACTIVATION and index.role(op).activation in ("softmax", "log_softmax"):
            return False  # another softmax: an output's
        return None

    for op in sorted({lf.op for lf in ctx.layers}, reverse=True):  # later layers first: their verdict is known
        if every_path(ctx, op, visit, limit=256):
            found.add(op)
    return frozenset(found)


def _weighs_another(ctx: Context, start: int) -> bool:
    """Whether op `start`'s output (through dropout, reshapes and other moves) meets another tensor
    in a product: attention weights applied to values."""
    return downstream(ctx.index, start, 8, lambda role, data, *_: True if len(data) >= 2
                      else (False if role.kind is RoleKind.TRANSPARENT else None))
