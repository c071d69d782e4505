"""Mean, std and second moment of a tensor, streamed in chunks with float64 accumulators.

A weight is never copied whole: each chunk is upcast on its own device (bf16, fp16 and fp8 alike)
and the partial results are merged with Chan's parallel formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CHUNK = 1 << 22  # elements per chunk: 32 MiB in float64


@dataclass(frozen=True)
class TensorStats:
    count: int
    mean: float
    std: float  # population std
    constant: bool  # every element equal

    @property
    def second(self) -> float:
        """E[w^2]."""
        return self.std * self.std + self.mean * self.mean


def tensor_stats(t: torch.Tensor) -> TensorStats | None:
    """Statistics of a materialized tensor; None for meta tensors and uninitialized parameters."""
    if t.is_meta or isinstance(t, torch.nn.parameter.UninitializedParameter) or t.numel() == 0:
        return None
    local = getattr(t, "to_local", None)
    if callable(local):  # a DTensor: statistics from the local shard (see docs/theory.md)
        t = local()
    flat = t.detach().reshape(-1)
    n_total, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float64)
        n = chunk.numel()
        c_mean = float(chunk.mean())
        c_m2 = float(((chunk - c_mean) ** 2).sum())
        lo = min(lo, float(chunk.min()))
        hi = max(hi, float(chunk.max()))
        delta = c_mean - mean
        total = n_total + n
        mean += delta * n / total
        m2 += c_m2 + delta * delta * n_total * n / total
        n_total = total
    std = math.sqrt(max(m2 / n_total, 0.0))
    return TensorStats(n_total, mean, std, lo == hi)
