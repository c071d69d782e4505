"""From a weight's facts to its init scheme (schemes.py) and the exact torch.nn.init call that
gives it (shown in findings, drawn by fix.py and plan.py)."""

from __future__ import annotations

import math

from .facts import LayerFacts
from .schemes import Init, Scheme, accessor, call_text
from .theory import Family

__all__ = ["accessor", "for_layer", "init_call"]

# the family theory.recommend judges by -> the scheme fix draws and the finding's call text shows
_BY_FAMILY = {Family.HE: Scheme.HE_NORMAL, Family.XAVIER: Scheme.XAVIER_UNIFORM, Family.LECUN: Scheme.LECUN_NORMAL,
              Family.ORTHOGONAL: Scheme.ORTHOGONAL, Family.EMBEDDING: Scheme.EMBEDDING}


def for_layer(lf: LayerFacts, scheme: Scheme | None = None) -> tuple[Scheme, Init]:
    """The scheme that gives this weight its recommended std (or `scheme`, forced) and its Init."""
    blocks = max(lf.shape[0] // max(lf.fan_out, 1), 1) if lf.shape and lf.layout == "packed" else 1
    if lf.role == "recurrent" and lf.shape:
        blocks = max(lf.shape[0] // max(lf.fan_out, 1), 1)
    init = Init(lf.fan_in, lf.fan_out, gain=lf.gain, blocks=blocks, std=lf.recommended_std,
                nonlinearity=lf.activation, slope=lf.activation_param)
    if scheme is not None:
        return scheme, init
    chosen = _BY_FAMILY.get(lf.scheme, Scheme.NORMAL)
    if lf.role == "embedding":
        return Scheme.EMBEDDING, init
    if chosen != Scheme.ORTHOGONAL and (blocks > 1 or math.isnan(lf.recommended_std)):
        return Scheme.NORMAL, init  # packed q/k/v: one block's fans, torch's helpers see the stack
    if chosen == Scheme.ORTHOGONAL:
        return chosen, Init(lf.fan_in, lf.fan_out, gain=1.0, blocks=blocks)
    return chosen, init


def init_call(lf: LayerFacts, root: str = "model") -> str:
    """One line of Python that reinitializes this weight by its recommended scheme."""
    scheme, init = for_layer(lf)
    return call_text(scheme, accessor(lf.qualname, root), lf.shape, init)
