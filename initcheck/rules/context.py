"""What every check reads (Context), and the phrases the checks share (describe, looks_like)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import theory
from ..facts import LayerFacts
from ..facts.params import ParamFacts
from ..findings import RULES, Finding, Severity, default_thresholds
from ..frozen import built
from ..modes import Mode
from ..ops.layers import Layout
from ..records import ProbeLayer
from ..signal import Signal
from ..trace.index import GraphIndex


@dataclass(frozen=True)
class Context:
    """The facts, and the signal under the actual, effective and recommended weights (effective:
    the actual ones, with layers that other rules already blame or that are deliberately small
    replaced by their scheme, so that one cause gives one finding)."""

    index: GraphIndex
    layers: tuple[LayerFacts, ...]
    actual: Signal | None
    effective: Signal | None
    reference: Signal | None
    data_operand: Mapping[int, int]  # weight op -> op feeding its data input
    probe: tuple[ProbeLayer, ...] = ()  # when a real batch was run (probe.py)
    unreached: tuple[str, ...] = ()  # weight parameters the traced forward never read
    lazy: tuple[str, ...] = ()  # uninitialized lazy parameters
    thresholds: Mapping[str, float] = field(default_factory=default_thresholds)
    params: tuple[ParamFacts, ...] = ()  # every parameter, classified (facts/params.py)
    tied_uses: tuple[LayerFacts, ...] = ()  # second and later uses of a weight (tied heads, shared layers)
    mode: Mode = Mode.TRAIN  # the forward judged (modes.py)

    def threshold(self, name: str) -> float:
        """A rule's setting: the project's value, else the registered default."""
        value = self.thresholds.get(name)
        return float(value) if value is not None else default_thresholds()[name]

    @property
    def graph(self) -> Any:
        return self.index.graph


def finding(code: str, lf: LayerFacts | None, message: str, fix: str, severity: Severity | None = None) -> Finding:
    return built(Finding, {"code": code, "severity": severity or RULES[code].severity, "layer": lf.qualname if lf else "",
                           "message": message, "fix": fix, "source": None})  # frozen.py: a finding per layer of a deep model


def describe(lf: LayerFacts) -> str:
    """'encoder.0 (Linear 784→256, then relu)'."""
    if lf.layout in (Layout.OUT_IN, Layout.IN_OUT):
        what = f"{lf.kind} {lf.fan_in}→{lf.fan_out}"
    else:
        what = f"{lf.kind} {'x'.join(map(str, lf.shape))}"
    where = lf.qualname if lf.param != "weight" else (lf.name or lf.qualname)
    return f"{where} ({what}, then {lf.activation})"


def looks_like(lf: LayerFacts) -> str | None:
    """The common init the weight's std matches within 5%, if any."""
    s = lf.stats
    if s is None or s.std == 0 or lf.fan_in == 0:
        return None
    candidates = {
        "PyTorch default": theory.torch_default_std(lf.fan_in),
        "He": math.sqrt(2.0 / lf.fan_in),
        "Xavier": math.sqrt(2.0 / (lf.fan_in + lf.fan_out)),
        "LeCun": 1.0 / math.sqrt(lf.fan_in),
        "N(0, 0.02)": 0.02,
        "N(0, 1)": 1.0,
    }
    for name, std in candidates.items():
        if abs(s.std / std - 1.0) < 0.05:
            return name
    return None
