"""Mean, std and second moment of a tensor, streamed in chunks with float64 accumulators.

A weight is never copied whole: each chunk is reduced on its own device (bf16, fp16 and fp8 chunks
upcast to float32 one at a time) and the partial results are merged in float64 with Chan's
parallel formula. A DTensor (FSDP2, tensor
parallel) is reduced from its local shards with torch.distributed, never gathered: every rank must
call diagnose() together, as for any collective.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .frozen import built

CHUNK = 1 << 22  # elements per chunk: 16 MiB in float32
# On the CPU, a chunk small enough to stay in the L2 cache while its sum, its dot product and its
# aminmax read it: the weight comes from memory once, not three times (benchmarks/diagnose_cost.py:
# 1.9x one sum's time for the three reductions, against 3.5x in 16 MiB chunks). An accelerator keeps
# CHUNK: every chunk costs it kernel launches and a synchronization.
CPU_CHUNK = 1 << 18


def chunk_elements(t: torch.Tensor) -> int:
    """Elements per chunk for a tensor on t's device."""
    return min(CHUNK, CPU_CHUNK) if t.device.type == "cpu" else CHUNK


@dataclass(frozen=True)
class RowSums:
    """Per output unit, the sum of its weights (float32, float64 for a float64 weight): the sums along
    every dim but 0 (`dim` 0), or along dim 0 of a 2-D (in, out) weight (`dim` 1)."""

    dim: int
    sums: torch.Tensor = field(repr=False, compare=False)


@dataclass(frozen=True)
class TensorStats:
    count: int
    mean: float
    std: float  # population std
    constant: bool  # every element equal
    max_abs: float = 0.0  # the largest |x| (nan when a NaN is present)
    nonfinite: int = 0  # elements that are NaN or ±inf
    # the row sums, when the read that gave these statistics summed per output unit on the way: the
    # mean then comes from the row sums, so the weight is read once for both (signal/rows.py)
    rows: RowSums | None = field(default=None, repr=False, compare=False)

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0

    @cached_property
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
# Per running analysis, statistics read ahead in batches (`prefetch`), keyed by (tensor id, rows
# asked): a call gets them only for the very question it asks.
_AHEAD: list[dict[tuple[int, int | None], tuple[torch.Tensor, int, TensorStats]]] = []
# Per running analysis, the (variance, mean) of row sums the batched read reduced too, keyed by the
# row sums' tensor (`row_var_mean`).
_ROW_VAR_MEAN: list[dict[int, tuple[torch.Tensor, float, float]]] = []


@contextmanager
def shared() -> Iterator[None]:
    """Within the block, each tensor's statistics are computed once (and again only when the tensor
    is written: its version counter moves)."""
    _ACTIVE.append({})
    _AHEAD.append({})
    _ROW_VAR_MEAN.append({})
    try:
        yield
    finally:
        _ROW_VAR_MEAN.pop()
        _AHEAD.pop()
        _ACTIVE.pop()


def row_var_mean(sums: torch.Tensor) -> tuple[float, float] | None:
    """The population variance and mean of a weight's row sums (RowSums.sums), when the batched
    read that summed them reduced them too (`torch.var_mean` of the float64 sums along the batch's
    rows: the numbers the tensor alone gives); None otherwise."""
    hit = _ROW_VAR_MEAN[-1].get(id(sums)) if _ROW_VAR_MEAN else None
    return (hit[1], hit[2]) if hit is not None and hit[0] is sums else None


SMALL = 1 << 16  # elements: a tensor read with others of its shape (`prefetch`)
BATCH = 1 << 18  # elements per batched read: 1 MiB of float32 copied at a time


def prefetch(items: Iterable[tuple[torch.Tensor, int | None]]) -> None:
    """Read ahead, in batches, the statistics that `tensor_stats(t, rows)` will be asked for, for
    each (t, rows) of `items`, within a shared() block (nothing happens outside one). Small float
    tensors of the same shape are stacked and reduced together (sums, row sums, min and max per
    tensor along one dim; the squares' sum by the same dot product as alone), so a deep stack of
    small layers pays a few torch calls per batch, not per tensor; every number is bit for bit
    what tensor_stats computes alone (tests/test_batched_stats.py). The rest is left to
    tensor_stats."""
    if not _ACTIVE:
        return
    memo, ahead = _ACTIVE[-1], _AHEAD[-1]
    groups: dict[tuple[torch.dtype, torch.device, tuple[int, ...], int | None], list[torch.Tensor]] = {}
    seen: set[int] = set()
    for t, rows in items:
        if id(t) in seen or id(t) in memo or (id(t), rows) in ahead or not _batchable(t):
            continue  # a tensor once: at the first question asked of it
        seen.add(id(t))
        groups.setdefault((t.dtype, t.device, tuple(t.shape), rows), []).append(t)
    for (_, _, shape, rows), ts in groups.items():
        if len(ts) < 2:
            continue  # alone: its own read, when asked
        per = max(1, BATCH // max(ts[0].numel(), 1))
        dim = rows if rows is not None and len(shape) >= 2 and (rows == 0 or len(shape) == 2) else None
        for i in range(0, len(ts), per):
            for t, result in zip(ts[i:i + per], _read_batch(ts[i:i + per], dim)):
                version = _version(t)
                if result is not None and version is not None:
                    ahead[(id(t), rows)] = (t, version, result)


def _batchable(t: object) -> bool:
    """A plain, materialized, dense, contiguous float32/float64 tensor of at most SMALL elements."""
    return (type(t) in (torch.Tensor, torch.nn.Parameter) and isinstance(t, torch.Tensor) and not t.is_meta
            and t.layout is torch.strided and t.dtype in (torch.float32, torch.float64) and 0 < t.numel() <= SMALL
            and t.is_contiguous())  # a strided tensor alone is reduced in another order: other roundings


def _read_batch(ts: list[torch.Tensor], dim: int | None) -> list[TensorStats | None]:
    """The statistics of same-shape tensors from one stacked read (None for a tensor whose chunk
    needs the exact path: non-finite, or a mean that dwarfs the spread; tensor_stats reads it
    alone). Each reduction runs along a contiguous row of the stack, the kernel a tensor alone
    gets: the sums, row sums, min and max are the same numbers; the squares' sum is each row's own
    dot product."""
    k = len(ts)
    with torch.no_grad():
        stack = torch.stack(ts)
        flat = stack.reshape(k, -1)
        parts: tuple[torch.Tensor, ...] | None = None
        if dim is None:
            s1 = flat.sum(1)
        else:
            acc = torch.float64 if stack.dtype == torch.float64 else torch.float32
            part = stack.reshape(k, stack.shape[1], -1).sum(2, dtype=acc) if dim == 0 else stack.sum(1, dtype=acc)
            s1, parts = part.sum(1), part.unbind(0)
            row_var, row_mean = torch.var_mean(part.double(), dim=1, correction=0)
            if _ROW_VAR_MEAN:
                known = _ROW_VAR_MEAN[-1]
                for sums, v, m in zip(parts, row_var.tolist(), row_mean.tolist()):
                    known[id(sums)] = (sums, v, m)
        s2 = torch.stack([torch.dot(row, row) for row in flat])
        numbers = torch.stack([s1, s2, flat.amin(1), flat.amax(1)]).tolist()
    n = flat.shape[1]
    out: list[TensorStats | None] = []
    isfinite, sqrt = math.isfinite, math.sqrt
    for i, (a, b, lo, hi) in enumerate(zip(*numbers)):
        # _Merge's one-chunk arithmetic, inline (a deep stack has thousands of small tensors): the
        # same operations in the same order, so the same numbers as merging the chunk alone
        c_mean = a / n
        c_m2 = b - a * c_mean
        if not (isfinite(a) and isfinite(b)) or c_m2 <= 1e-4 * b:
            out.append(None)  # non-finite, or the mean dwarfs the spread: tensor_stats reads it alone
            continue
        mean = 0.0 + (c_mean - 0.0) * n / n
        m2 = 0.0 + c_m2 + (c_mean - 0.0) * (c_mean - 0.0) * 0 * n / n
        peak = max(0.0, abs(lo), abs(hi))
        rows = RowSums(dim, parts[i]) if parts is not None and dim is not None else None
        out.append(built(TensorStats, {"count": n, "mean": mean, "std": sqrt(max(m2 / n, 0.0)), "constant": m2 == 0.0,
                                       "max_abs": peak, "nonfinite": 0, "rows": rows}))  # frozen.py: thousands of them
    return out


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):  # inference-mode tensors keep no version counter
        return None


def tensor_stats(t: torch.Tensor, rows: int | None = None) -> TensorStats | None:
    """Statistics of a materialized tensor; None for meta tensors and uninitialized parameters.
    rows: also sum per output unit on the way (RowSums.dim: 0, or 1 for a 2-D (in, out) weight),
    unless the tensor's statistics were already read in this analysis (shared())."""
    if _ACTIVE:
        memo = _ACTIVE[-1]
        version = _version(t)
        hit = memo.get(id(t))
        if hit is not None and hit[0] is t and version is not None and hit[1] == version:
            return hit[2]
        ahead = _AHEAD[-1].pop((id(t), rows), None) if _AHEAD else None
        if ahead is not None and ahead[0] is t and version is not None and ahead[1] == version:
            result: TensorStats | None = ahead[2]
        else:
            result = _compute(t) if rows is None else _compute(t, rows)
        if version is not None:
            memo[id(t)] = (t, version, result)  # holding t keeps its id from being reused meanwhile
        return result
    return _compute(t) if rows is None else _compute(t, rows)


def _compute(t: torch.Tensor, rows: int | None = None) -> TensorStats | None:
    if t.is_meta or isinstance(t, torch.nn.parameter.UninitializedParameter) or t.numel() == 0:
        return None
    if callable(getattr(t, "to_local", None)) and hasattr(t, "placements"):
        return _sharded_stats(t)
    if rows is not None and t.ndim >= 2 and (rows == 0 or t.ndim == 2):
        n, mean, m2, peak, bad, sums = _local_rows(t, rows)
        return _stats(n, mean, m2, peak, bad, RowSums(rows, sums))
    n, mean, m2, peak, bad = _local(t)
    return _stats(n, mean, m2, peak, bad)


def _stats(n: int, mean: float, m2: float, peak: float, bad: int, rows: RowSums | None = None) -> TensorStats:
    if bad:
        return TensorStats(n, math.nan, math.nan, False, peak, bad, rows)
    return TensorStats(n, mean, math.sqrt(max(m2 / max(n, 1), 0.0)), m2 == 0.0, peak, 0, rows)


def _local(t: torch.Tensor) -> tuple[int, float, float, float, int]:
    """(count, mean, sum of squared deviations, max |x|, non-finite count): per chunk a sum and a dot product in the tensor's
    own precision (float32 at least: bf16/fp16/fp8 chunks are upcast), merged across chunks in
    float64 with Chan's formula. A chunk whose spread is tiny against its mean (a constant one among
    them) takes an exact two-pass var_mean, so a constant tensor has m2 == 0 exactly."""
    flat = t.detach().reshape(-1)
    # most weights are one chunk: torch.split costs as much as the reduction on a small one
    size = chunk_elements(flat)
    chunks = (flat,) if flat.numel() <= size else torch.split(flat, size)
    acc = _Merge()
    for chunk in chunks:
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.float()
        acc.add(chunk, float(chunk.sum()))
    return acc.n_total, acc.mean, acc.m2, acc.peak, acc.bad


def _local_rows(t: torch.Tensor, dim: int) -> tuple[int, float, float, float, int, torch.Tensor]:
    """_local's numbers and, from the same read, the sums per output unit (RowSums): each chunk is
    a block of whole rows, summed per row (or per column for dim 1, accumulated over the blocks),
    and the chunk's sum is the sum of those. The row sums are what the separate read
    (`t.reshape(out, -1).sum(1)`, `t.sum(0)`) gives; the mean agrees with _local's to float32
    rounding (tests/test_cost.py)."""
    w = t.detach()
    acc_dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    matrix = w.reshape(w.shape[0], -1)
    per_block = max(1, chunk_elements(matrix) // max(matrix.shape[1], 1))
    blocks = (matrix,) if matrix.shape[0] <= per_block else torch.split(matrix, per_block)
    parts: list[torch.Tensor] = []
    cols: torch.Tensor | None = None
    acc = _Merge()
    for block in blocks:
        if block.dtype not in (torch.float32, torch.float64):
            block = block.float()
        part = block.sum(1 - dim, dtype=acc_dtype)
        if dim == 0:
            parts.append(part)
        else:
            cols = part if cols is None else cols + part
        acc.add(block.reshape(-1), float(part.sum()))
    sums = (parts[0] if len(parts) == 1 else torch.cat(parts)) if dim == 0 else cols
    assert sums is not None
    return acc.n_total, acc.mean, acc.m2, acc.peak, acc.bad, sums


class _Merge:
    """Chan's parallel merge of chunks' (count, mean, m2) in float64, with max |x| and the
    non-finite count."""

    def __init__(self) -> None:
        self.n_total, self.mean, self.m2, self.peak, self.bad = 0, 0.0, 0.0, 0.0, 0

    def add(self, chunk: torch.Tensor, s1: float) -> None:
        """One chunk (flat, float32 or float64) and its sum."""
        n = chunk.numel()
        # sum and dot are one vectorized read each (var_mean is ~10x slower on CPU)
        s2 = float(torch.dot(chunk, chunk))
        # amax and amin apart: 57 us on a 1 MiB chunk on the CPU, against 88 us for aminmax
        self.peak = max(self.peak, abs(float(chunk.amax())), abs(float(chunk.amin())))
        if not self.merge(n, s1, s2):
            self._exact(chunk, n, s1, s2)

    def merge(self, n: int, s1: float, s2: float) -> bool:
        """Merge a chunk of n values from its sum and sum of squares; False (nothing merged) when
        they are not finite or the mean dwarfs the spread: the chunk itself must be read again."""
        if not (math.isfinite(s1) and math.isfinite(s2)):
            return False
        c_mean = s1 / n
        c_m2 = s2 - s1 * c_mean
        if c_m2 <= 1e-4 * s2:
            return False
        self._merge(n, c_mean, c_m2)
        return True

    def _exact(self, chunk: torch.Tensor, n: int, s1: float, s2: float) -> None:
        if not (math.isfinite(s1) and math.isfinite(s2)):
            # NaN, ±inf, or values so large that their squares overflow (|x| > 1.8e19)
            nonfinite = int((~torch.isfinite(chunk)).sum())
            if nonfinite or not math.isfinite(self.peak):
                self.bad += nonfinite
                self.n_total += n
                return
            chunk = chunk.double()
            s1, s2 = float(chunk.sum()), float(torch.dot(chunk, chunk))
        c_mean = s1 / n
        c_m2 = s2 - s1 * c_mean
        if c_m2 <= 1e-4 * s2:  # the mean dwarfs the spread: E[x^2] - mean^2 cancels, so two passes
            c_var, c_mean_t = torch.var_mean(chunk, correction=0)
            c_mean, c_m2 = float(c_mean_t), float(c_var) * n
        self._merge(n, c_mean, c_m2)

    def _merge(self, n: int, c_mean: float, c_m2: float) -> None:
        delta = c_mean - self.mean
        total = self.n_total + n
        self.mean += delta * n / total
        self.m2 += c_m2 + delta * delta * self.n_total * n / total
        self.n_total = total


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
