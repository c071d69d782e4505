"""The state of one forward sweep of the signal model: what every op handler reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import Op
from ..stats import StatsCache, TensorStats
from ..trace.index import GraphIndex
from .moments import Moment


@dataclass
class Pass:
    """The state of one forward sweep that handlers read and write."""

    index: GraphIndex
    model: nn.Module
    stats: StatsCache
    fwd: list[Moment | None]
    slope2: dict[int, float] = field(default_factory=dict)  # activation op -> E[f'(z)^2]
    norm_gain: dict[int, float] = field(default_factory=dict)  # norm op -> E[gamma^2] / var_in
    training: bool = True  # the forward judged: BatchNorm on batch statistics and dropout on (modes.py)

    def param(self, name: str) -> TensorStats | None:
        try:
            return self.stats(self.model.get_parameter(name))
        except AttributeError:
            return None

    def tensor(self, t: object) -> TensorStats | None:
        return self.stats(t) if isinstance(t, torch.Tensor) else None

    def others(self, op: Op, first: int) -> list[Moment]:
        """Moments of the op's other tensor operands (parameters included), in order."""
        return [m for i in op.inputs if i != first and (m := self.fwd[i]) is not None]
