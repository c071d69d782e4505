"""The exact torch.nn.init call that gives a layer its recommended scheme (shown in findings,
applied by fix.py)."""

from __future__ import annotations

import re

from . import theory
from .facts import LayerFacts

_TORCH_NONLINEARITY = {"relu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh", "sigmoid": "sigmoid", "identity": "linear"}


def accessor(qualname: str, root: str = "model") -> str:
    """"encoder.0.weight" -> 'model.encoder[0].weight'."""
    out = root
    for part in qualname.split("."):
        out += f"[{part}]" if re.fullmatch(r"\d+", part) else f".{part}"
    return out


def init_call(lf: LayerFacts, root: str = "model") -> str:
    """One line of Python that reinitializes this weight by its recommended scheme."""
    w = accessor(lf.qualname, root)
    std = lf.recommended_std
    torch_fan = theory.torch_fans(lf.shape)
    if lf.role == "embedding":
        return f"nn.init.normal_({w}, std=1.0)"
    if lf.scheme == "orthogonal":
        blocks = lf.shape[0] // max(lf.fan_out, 1)
        return f"for block in {w}.data.chunk({blocks}): nn.init.orthogonal_(block)" if blocks > 1 else f"nn.init.orthogonal_({w})"
    if lf.layout == "packed":
        blocks = lf.shape[0] // max(lf.fan_out, 1)
        return f"for block in {w}.data.chunk({blocks}): nn.init.normal_(block, std={std:.4g})"
    fans_match = (torch_fan.fan_in, torch_fan.fan_out) == (lf.fan_in, lf.fan_out)
    if lf.scheme == "he" and fans_match and lf.activation in ("relu", "leaky_relu"):
        slope = f", a={lf.activation_param:g}" if lf.activation == "leaky_relu" and lf.activation_param is not None else ""
        return f'nn.init.kaiming_normal_({w}{slope}, nonlinearity="{lf.activation}")'
    if lf.scheme == "lecun" and fans_match:
        return f'nn.init.kaiming_normal_({w}, nonlinearity="linear")'
    if lf.scheme == "xavier" and fans_match:
        if lf.activation in ("tanh", "sigmoid"):
            return f'nn.init.xavier_uniform_({w}, gain=nn.init.calculate_gain("{lf.activation}"))'
        if abs(lf.gain - 1.0) < 1e-9:
            return f"nn.init.xavier_uniform_({w})"
        return f"nn.init.xavier_uniform_({w}, gain={lf.gain:.4g})"
    title = theory.SCHEME_TITLE.get(lf.scheme, lf.scheme)
    return f"nn.init.normal_({w}, std={std:.4g})  # {title}, gain {lf.gain:.3g}, fan_in {lf.fan_in}"
