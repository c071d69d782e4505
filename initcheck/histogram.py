"""Fixed-size histograms binned on the tensor's device: what the probe keeps of each layer's
activations and gradients (a few dozen counts a layer, not the values), for the histogram picture.

Two scales, both chosen so that panels of different layers can share one axis:
- LINEAR bins the values over [-max|x|, max|x|]: symmetric around 0, so a collapsed layer is a
  spike at 0 and a saturated tanh two spikes at ±1 once the picture puts every layer on the widest
  layer's span.
- LOG10_ABS bins log10|x| in quarter decades over a window of DECADES decades that ends at the
  decade above max|x|: the edges fall on the same grid for every layer, so a gradient shrinking
  layer after layer moves left by decades instead of collapsing into one bin. Exact zeros (a ReLU's
  inactive units, a saturated tanh's flat tail) have no logarithm, and values under the window (a
  saturated tanh's slope reaches 1e-14) would pile up in its first bin as a false peak: both are
  counted apart.

Nothing here leaves the device: the probe transfers every layer's row to the host at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

# small and fixed, so the JSON keeps a few dozen counts a histogram
LINEAR_BINS = 33  # odd: 0 is a bin's center, so a collapsed layer is one spike, not two half ones
DECADES = 8
LOG_BINS = 32  # quarter decades over the window
PER_DECADE = LOG_BINS // DECADES
HEADER = 5  # low, high, zeros, below, nonfinite: then the counts


class Scale(StrEnum):
    LINEAR = "linear"
    LOG10_ABS = "log10_abs"


@dataclass(frozen=True)
class Histogram:
    """Counts over equal bins (LINEAR_BINS or LOG_BINS) from `low` to `high` (of x for LINEAR, of
    log10|x| for LOG10_ABS). LOG10_ABS only, not in `counts`: `zeros`, the exact zeros, and `below`,
    the nonzero values under `low`. `nonfinite`: inf and NaN values, never in `counts`."""

    scale: Scale
    low: float
    high: float
    counts: tuple[int, ...]
    zeros: int = 0
    below: int = 0
    nonfinite: int = 0

    @property
    def edges(self) -> tuple[float, ...]:
        step = (self.high - self.low) / len(self.counts)
        return tuple(self.low + i * step for i in range(len(self.counts))) + (self.high,)

    @property
    def total(self) -> int:
        """How many values were measured: every one is counted once, in a bin or apart."""
        return sum(self.counts) + self.zeros + self.below + self.nonfinite


def linear_row(x: torch.Tensor) -> torch.Tensor:
    """[low, high, zeros, below, nonfinite, counts...] (float64, on x's device) for a LINEAR histogram.
    Counts are float64 (exact to 2^53) so that one row holds the header and the counts."""
    x = x.detach().reshape(-1).float()  # float32 is plenty to pick a bin, at half float64's memory
    finite = torch.isfinite(x)
    top = torch.where(finite, x.abs(), torch.zeros_like(x)).amax() if x.numel() else x.new_zeros(())
    top = torch.where(top > 0, top, torch.ones_like(top))  # all zeros: a spike in the middle of [-1, 1]
    counts = _bin((x + top) / (2 * top), finite, LINEAR_BINS)
    nothing = counts.new_zeros(())
    top = top.double()
    return torch.cat([torch.stack([-top, top, nothing, nothing, (~finite).sum().double()]), counts])


def log_row(x: torch.Tensor) -> torch.Tensor:
    """[low, high, zeros, below, nonfinite, counts...] (float64, on x's device) for a LOG10_ABS histogram."""
    x = x.detach().reshape(-1).float()
    finite = torch.isfinite(x)
    nonzero = finite & (x != 0)
    logs = torch.where(nonzero, x.abs(), torch.ones_like(x)).log10()
    peak = torch.where(nonzero, logs, torch.full_like(logs, -torch.inf)).amax() if x.numel() else x.new_zeros(())
    high = torch.where(torch.isfinite(peak), peak.ceil(), torch.zeros_like(peak))  # no nonzero value: any window
    low = high - DECADES
    binned = nonzero & (logs >= low)
    counts = _bin((logs - low) / DECADES, binned, LOG_BINS)
    zeros = (finite & (x == 0)).sum().double()
    below = (nonzero & ~binned).sum().double()
    return torch.cat([torch.stack([low.double(), high.double(), zeros, below, (~finite).sum().double()]), counts])


def _bin(unit: torch.Tensor, keep: torch.Tensor, bins: int) -> torch.Tensor:
    """Counts of `unit` (the values mapped onto [0, 1)) over `bins` bins, the kept values only;
    a scatter, not bincount, so the device never has to tell the host how many bins it made."""
    idx = (unit * bins).floor().clamp(0, bins - 1)
    idx = torch.where(keep, idx, torch.full_like(idx, bins)).long()  # a spill bin for the rest, dropped
    counts = torch.zeros(bins + 1, dtype=torch.float64, device=unit.device)
    counts.scatter_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return counts[:bins]


def from_row(scale: Scale, row: list[float]) -> Histogram | None:
    """The Histogram of a row packed by linear_row/log_row, back on the host (None for a NaN row:
    nothing was measured)."""
    if len(row) != width(scale) or row[0] != row[0]:
        return None
    low, high, zeros, below, nonfinite = (v + 0.0 for v in row[:HEADER])  # + 0.0: ceil(-0.3) is -0.0
    return Histogram(scale, low, high, tuple(round(c) for c in row[HEADER:]), round(zeros), round(below),
                     round(nonfinite))


def width(scale: Scale) -> int:
    """The length of a packed row."""
    return HEADER + (LINEAR_BINS if scale == Scale.LINEAR else LOG_BINS)


def missing(scale: Scale, device: torch.device) -> torch.Tensor:
    """The row of a histogram that was not measured (no gradient reached the layer)."""
    return torch.full((width(scale),), float("nan"), dtype=torch.float64, device=device)
