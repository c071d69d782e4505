"""Each weight's row sums (per output unit, the sum of its weights), reduced to the two numbers the
signal model uses, and read once per analysis however many sweeps and report rows ask."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..facts import LayerFacts, received_weight, row_dim
from ..ops.layers import Layout, matrix_batch
from ..stats import TensorStats, row_var_mean
from . import channels
from .passes import Pass

# Of a weight's row sums r_j (per output unit), what the model uses: (mean_j r_j^2, var_j r_j).
RowMoments = tuple[float, float]

# One memo of row moments per running analysis (`shared_rows()`): the actual and effective passes and
# the report's raw rms each ask for every weight's; a weight is summed once per analysis. Keyed by
# the statistics object the facts read (one per weight and analysis), which the memo holds.
_ROWS: list[dict[int, tuple[TensorStats, RowMoments | None]]] = []


@contextmanager
def shared_rows() -> Iterator[None]:
    """Within the block, each weight's row sums are computed once."""
    _ROWS.append({})
    try:
        with channels.shared():  # and each weight's taps (channels.py)
            yield
    finally:
        _ROWS.pop()


def row_moments(p: Pass, lf: LayerFacts, w: TensorStats) -> RowMoments | None:
    """Of the sums of each output unit's weights, the mean square and the variance, from the actual
    tensor (when `w` is its statistics)."""
    if w is not lf.stats or lf.layout not in (Layout.OUT_IN, Layout.CONV, Layout.IN_OUT):
        return None
    if matrix_batch(lf.layout, len(lf.shape)):
        return None
    memo = _ROWS[-1] if _ROWS else None
    hit = memo.get(id(w)) if memo is not None else None
    if hit is not None and hit[0] is w:
        return hit[1]
    rows = _sum_rows(p, lf)
    if memo is not None:
        memo[id(w)] = (w, rows)
    return rows


def _sum_rows(p: Pass, lf: LayerFacts) -> RowMoments | None:
    dim = row_dim(lf.layout, len(lf.shape))
    read = lf.stats.rows if lf.stats is not None else None
    if read is not None and read.dim == dim:
        return _moments(read.sums)  # summed by the statistics' own read (stats.py): not read again
    try:
        t: torch.Tensor = received_weight(p.index, p.index.ops[lf.op], p.model.get_parameter(lf.qualname)).detach()
    except AttributeError:
        return None
    if t.ndim < 2:
        return None
    dim = row_dim(lf.layout, t.ndim)
    # per output unit; torch's cascade summation keeps a float32 sum exact enough (relative
    # error ~1e-7 log n) at a fifth of a float64 accumulation's cost; half precisions upcast
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return _moments(t.sum(0, dtype=acc) if dim == 1 else t.reshape(t.shape[0], -1).sum(1, dtype=acc))


def _moments(rows: torch.Tensor) -> RowMoments:
    known = row_var_mean(rows)  # reduced with the batch that read the weight (stats.prefetch)
    if known is not None:
        v, m = known
    else:
        var, mean = torch.var_mean(rows.double(), correction=0)
        v, m = float(var), float(mean)  # float(), not tolist(): a DTensor (FSDP2 shard) reduces across ranks
    return v + m * m, v
