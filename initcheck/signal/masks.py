"""Hand-written causal masks, recognized like `is_causal`: a lower-triangular buffer applied to the
attention logits (nanoGPT's `att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))`, a
`scores + mask` whose buffer holds -inf above the diagonal, an `attn_mask=` of SDPA). Query i then
averages over i + 1 keys, not all n, which the participation must know.

The mask is read from the buffer itself, through the few ops that select or compare it (slices,
`== 0`, `~`, views): a top-left square of a triangle is a triangle, so the slices to the sequence
length need no replay.
"""

from __future__ import annotations

import torch

from ..graph import Op, OpKind
from .passes import Pass

# Ops between a buffer and its use as a mask that keep the triangle (selection, views, casts).
_KEEP = frozenset({"getitem", "view", "reshape", "unsqueeze", "squeeze", "expand", "to", "bool", "float",
                   "type_as", "contiguous", "narrow", "slice"})
# Additive masks: a logit this far below zero is never chosen (-inf, -1e9, finfo.min).
_MASKED = -1e4


def _evaluated(p: Pass, idx: int | None) -> torch.Tensor | None:
    """The last two dims of the buffer behind op `idx`, with the comparisons on the way applied."""
    chain: list[Op] = []
    for _ in range(10):
        if idx is None:
            return None
        op = p.index.ops[idx]
        if op.kind is OpKind.BUFFER:
            try:
                t = p.model.get_buffer(op.target)
            except AttributeError:
                return None
            if t.ndim < 2 or t.is_meta or t.shape[-1] != t.shape[-2]:
                return None
            out: torch.Tensor | None = t.detach().reshape(-1, t.shape[-2], t.shape[-1])[0]
            for f in reversed(chain):
                out = _apply(f, out) if out is not None else None
            return out
        if op.kind is not OpKind.FUNCTION or not op.inputs or any(p.fwd[i] is not None for i in op.inputs):
            return None  # something the input drives
        chain.append(op)
        idx = op.inputs[0]
    return None


def _apply(op: Op, t: torch.Tensor) -> torch.Tensor | None:
    if op.target in _KEEP:
        return t
    c = next((v for k, v in op.scalars if k in ("1", "other") and isinstance(v, (int, float))), None)
    if op.target in ("eq", "ne") and c is not None:
        return t == c if op.target == "eq" else t != c
    if op.target in ("invert", "logical_not"):
        return ~t.bool()
    return None


def _upper(masked: torch.Tensor) -> bool:
    """Whether exactly the strict upper triangle is masked (key j > query i)."""
    n = masked.shape[-1]
    return n > 1 and bool((masked.bool() == torch.ones(n, n, dtype=torch.bool).triu(1)).all())


def causal_logits(p: Pass, logits: int) -> bool:
    """Whether the logits a softmax receives (op `logits`) pass a causal mask on the way: back along
    the first data operand through scalings, adds and views."""
    idx: int | None = logits
    for _ in range(8):
        if idx is None:
            return False
        op = p.index.ops[idx]
        if op.kind is OpKind.FUNCTION and op.target == "masked_fill":
            cond = _evaluated(p, op.operand("1", "mask"))
            if cond is not None and cond.dtype == torch.bool and _upper(cond):
                return True
        elif op.kind is OpKind.FUNCTION and op.target == "add":
            for i in op.inputs:
                if p.fwd[i] is None and (m := _evaluated(p, i)) is not None and m.is_floating_point() \
                        and _upper(m < _MASKED):
                    return True
        data = p.index.data_operands(op)
        idx = data[0] if data else None
    return False


def causal_attn_mask(p: Pass, op: Op) -> bool:
    """Whether an SDPA's `attn_mask` is a causal triangle (boolean: True where attention is allowed;
    float: added to the logits)."""
    m = _evaluated(p, op.operand("3", "attn_mask"))
    if m is None:
        return False
    return _upper(~m) if m.dtype == torch.bool else m.is_floating_point() and _upper(m < _MASKED)
