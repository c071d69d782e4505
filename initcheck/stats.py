"""Mean, std and second moment of a tensor, streamed in chunks with float64 accumulators.

A weight is never copied whole: each chunk is reduced on its own device (bf16, fp16 and fp8 chunks
upcast to float32 one at a time) and the partial results are merged in float64 with Chan's
parallel formula. A DTensor (FSDP2, tensor
parallel) is reduced from its local shards with torch.distributed, never gathered: every rank must
call diagnose() together, as for any collective.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

CHUNK = 1 << 22  # elements per chunk: 16 MiB in float32


@dataclass(frozen=True)
class TensorStats:
    count: int
    mean: float
    std: float  # population std
    constant: bool  # every element equal
    max_abs: float = 0.0  # the largest |x| (nan when a NaN is present)
    nonfinite: int = 0  # elements that are NaN or ±inf

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0

    @property
    def second(self) -> float:
        """E[w^2]."""
        return self.std * self.std + self.mean * self.mean


class StatsCache:
    """Each tensor's statistics once per analysis (the facts and three signal passes share them)."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[torch.Tensor, TensorStats | None]] = {}

    def __call__(self, t: torch.Tensor) -> TensorStats | None:
        hit = self._memo.get(id(t))
        if hit is None or hit[0] is not t:
            hit = (t, tensor_stats(t))  # holding t keeps its id from being reused meanwhile
            self._memo[id(t)] = hit
        return hit[1]


# One memo per running analysis (`shared()`): the facts, the parameter classification and the
# signal passes each ask for the same weights' statistics; a tensor is read once per analysis.
_ACTIVE: list[dict[int, tuple[torch.Tensor, int, TensorStats | None]]] = []


@contextmanager
def shared() -> Iterator[None]:
    """Within the block, each tensor's statistics are computed once (and again only when the tensor
    is written: its version counter moves)."""
    _ACTIVE.append({})
    try:
        yield
    finally:
        _ACTIVE.pop()


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):  # inference-mode tensors keep no version counter
        return None


def tensor_stats(t: torch.Tensor) -> TensorStats | None:
    """Statistics of a materialized tensor; None for meta tensors and uninitialized parameters."""
    if _ACTIVE:
        memo = _ACTIVE[-1]
        version = _version(t)
        hit = memo.get(id(t))
        if hit is not None and hit[0] is t and version is not None and hit[1] == version:
            return hit[2]
        result = _compute(t)
        if version is not None:
            memo[id(t)] = (t, version, result)  # holding t keeps its id from being reused meanwhile
        return result
    return _compute(t)


def _compute(t: torch.Tensor) -> TensorStats | None:
    if t.is_meta or isinstance(t, torch.nn.parameter.UninitializedParameter) or t.numel() == 0:
        return None
    if callable(getattr(t, "to_local", None)) and hasattr(t, "placements"):
        return _sharded_stats(t)
    n, mean, m2, peak, bad = _local(t)
    return _stats(n, mean, m2, peak, bad)


def _stats(n: int, mean: float, m2: float, peak: float, bad: int) -> TensorStats:
    if bad:
        return TensorStats(n, math.nan, math.nan, False, peak, bad)
    return TensorStats(n, mean, math.sqrt(max(m2 / max(n, 1), 0.0)), m2 == 0.0, peak, 0)


def _local(t: torch.Tensor) -> tuple[int, float, float, float, int]:
    """(count, mean, sum of squared deviations, max |x|, non-finite count): per chunk a sum and a dot product in the tensor's
    own precision (float32 at least: bf16/fp16/fp8 chunks are upcast), merged across chunks in
    float64 with Chan's formula. A chunk whose spread is tiny against its mean (a constant one among
    them) takes an exact two-pass var_mean, so a constant tensor has m2 == 0 exactly."""
    flat = t.detach().reshape(-1)
    n_total, mean, m2, peak, bad = 0, 0.0, 0.0, 0.0, 0
    # most weights are one chunk: torch.split costs as much as the reduction on a small one
    for chunk in (flat,) if flat.numel() <= CHUNK else torch.split(flat, CHUNK):
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.float()
        n = chunk.numel()
        # sum and dot are one vectorized read each (var_mean is ~10x slower on CPU)
        s1, s2 = float(chunk.sum()), float(torch.dot(chunk, chunk))
        lo, hi = torch.aminmax(chunk)
        peak = max(peak, abs(float(lo)), abs(float(hi)))
        if not (math.isfinite(s1) and math.isfinite(s2)):
            # NaN, ±inf, or values so large that their squares overflow (|x| > 1.8e19)
            nonfinite = int((~torch.isfinite(chunk)).sum())
            if nonfinite or not math.isfinite(peak):
                bad += nonfinite
                n_total += n
                continue
            chunk = chunk.double()
            s1, s2 = float(chunk.sum()), float(torch.dot(chunk, chunk))
        c_mean = s1 / n
        c_m2 = s2 - s1 * c_mean
        if c_m2 <= 1e-4 * s2:  # the mean dwarfs the spread: E[x^2] - mean^2 cancels, so two passes
            c_var, c_mean_t = torch.var_mean(chunk, correction=0)
            c_mean, c_m2 = float(c_mean_t), float(c_var) * n
        delta = c_mean - mean
        total = n_total + n
        mean += delta * n / total
        m2 += c_m2 + delta * delta * n_total * n / total
        n_total = total
    return n_total, mean, m2, peak, bad


def _sharded_stats(t: torch.Tensor) -> TensorStats:
    """Reduce the local shard's statistics over the ranks that shard the tensor."""
    import torch.distributed as dist

    local = t.to_local()  # type: ignore[attr-defined]
    n, mean, m2, peak, bad = _local(local) if local.numel() else (0, 0.0, 0.0, 0.0, 0)
    sharded = [i for i, p in enumerate(t.placements) if p.is_shard()]  # type: ignore[attr-defined]
    if not sharded or not dist.is_initialized():
        return _stats(n, mean, m2, peak, bad)
    # Chan's merge over ranks: counts, sums and within-shard deviations add; the spread between
    # shard means comes from sum(n_i * mean_i^2). A constant tensor stays exactly constant.
    sums = torch.tensor([float(n), n * mean, m2, n * mean * mean, float(bad)], dtype=torch.float64, device=local.device)
    lo_hi = torch.tensor([-mean if n else -math.inf, mean if n else -math.inf, peak], dtype=torch.float64, device=local.device)
    for dim in sharded:
        group = t.device_mesh.get_group(dim)  # type: ignore[attr-defined]
        dist.all_reduce(sums, group=group)
        dist.all_reduce(lo_hi, op=dist.ReduceOp.MAX, group=group)
    count, s1, within, s2_means, bad_all = sums.tolist()
    if bad_all:
        return TensorStats(int(count), math.nan, math.nan, False, float(lo_hi[2]), int(bad_all))
    mean = s1 / count
    m2 = within + max(s2_means - count * mean * mean, 0.0)
    same_means = -float(lo_hi[0]) == float(lo_hi[1])  # every shard has the same mean
    constant = within == 0.0 and same_means
    return TensorStats(int(count), mean, math.sqrt(max(m2 / count, 0.0)), constant, float(lo_hi[2]))
