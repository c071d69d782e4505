"""Gates and their branches: layers whose output scales a signal path (squeeze-excitation, ECA, a
sigmoid gate) instead of being one, for the rules that follow signal paths (IC202, IC204) and IC103."""

from __future__ import annotations

from collections.abc import Callable

from .. import theory
from ..facts import LayerFacts
from ..graph import Op, OpKind
from .context import Context
from .paths import every_path


def _gate(lf: LayerFacts) -> bool:
    """A layer whose squashed output multiplies another tensor (squeeze-excitation, ECA, a sigmoid
    gate): it scales a signal path, it is not one. An input-independent gate at init (its input a
    spatial mean, or a branch that starts at zero) still passes the path through at a fixed scale."""
    return lf.gated and lf.activation in theory.SATURATING


def gating(ctx: Context) -> Callable[[LayerFacts], bool]:
    """`_gate`, and the layers of a gate's branch: a layer whose output reaches nothing but gates
    (squeeze-excitation's first layer, whose ReLU feeds the sigmoid layer) computes a gate too: a
    tiny input there only holds the gate at sigmoid(bias), a fixed scale on the path."""
    gates = {lf.op for lf in ctx.layers if _gate(lf)}
    if not gates:
        return _gate  # no gate: no walk
    by_op = {lf.op: lf for lf in ctx.layers}
    branch = set(gates)
    for lf in sorted(ctx.layers, key=lambda lf: -lf.op):  # later layers first: their verdict is known
        if lf.op not in branch and feeds_only(ctx, lf.op, branch, by_op):
            branch.add(lf.op)
    return lambda lf: lf.op in branch


def feeds_only(ctx: Context, start: int, branch: set[int], by_op: dict[int, LayerFacts]) -> bool:
    """Every path from op `start` meets a weight op of `branch` before any other weight op, any op
    that combines it with another tensor, or the output."""
    index = ctx.index

    def visit(i: int, op: Op) -> bool | None:
        if i in by_op or index.is_weight_op(op):
            return i in branch
        if op.kind not in (OpKind.FUNCTION, OpKind.MODULE) or len(index.data_operands(op)) != 1:
            return False  # the output, or an op that meets another tensor: a signal path
        return None

    return every_path(ctx, start, visit)
