"""The fix's repair of a saturated attention (IC207): fold the missing scale into the query
projection's init, as T5 does with its 1/sqrt(d_head): the query weight is multiplied by 1/s, s
the predicted logit std, which brings that std to 1 (a softmax entropy of ln n - 1/2, well clear
of the freezing point sqrt(2 ln n)). A redraw cannot help: the logits of a sound q/k init are
saturated when the code leaves out the 1/sqrt(d_head)."""

from __future__ import annotations

import torch
from torch import nn

from ..api import Analysis, reanalyze
from ..findings import Selection
from ..rules.signal import FREEZE
from ..signal import temperature

TARGET = 1.0  # the logit std the query projection is scaled to


def temperature_pass(model: nn.Module, analysis: Analysis, kept: frozenset[str] = frozenset()) -> list[str]:
    """Scale the query projection of every attention IC207 flags; the parameters scaled.
    `analysis` is of the model before the static step: its weights are read again here."""
    if not any(f.code == "IC207" for f in analysis.report.findings):
        return []
    now = reanalyze(analysis, selection=Selection())  # after the static step's redraws
    ctx = now.context
    if ctx.actual is None:
        return []
    by_op = {lf.op: lf for lf in now.layers}
    queries = {lf.op for lf in now.layers if lf.attention_score}
    done: list[str] = []
    for sat in temperature.saturated(ctx.index, ctx.actual.forward, temperature.in_proj_gains(now.layers), set(by_op),
                                     ctx.threshold(FREEZE.name)):
        lf = by_op.get(sat.query) if sat.query is not None else None
        if lf is None or lf.qualname in kept or lf.qualname in done:
            continue
        if lf.param != "in_proj_weight" and lf.op not in queries:
            continue  # a packed q/k/v projection (GPT-2's c_attn): its rows of q are not known here
        weight = model.get_parameter(lf.qualname)
        factor = TARGET / sat.block.logit_std
        with torch.no_grad():
            if lf.param == "in_proj_weight":  # packed [q; k; v]: the query rows only
                weight[: weight.shape[0] // 3].mul_(factor)
            else:
                weight.mul_(factor)
        done.append(lf.qualname)
    return done
