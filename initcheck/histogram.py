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

Nothing here leaves the device: the probe transfers every layer's row to the host at once. A
histogram bins at most SAMPLE values of a layer (sample()): its total says how many.
"""

from __future__ import annotations

import torch

from .records import Histogram, Scale

__all__ = ["DECADES", "HEADER", "LINEAR_BINS", "LOG_BINS", "PER_DECADE", "SAMPLE", "Histogram", "Scale", "from_row",
           "linear_row", "log_row", "missing", "sample", "width"]

# small and fixed, so the JSON keeps a few dozen counts a histogram
LINEAR_BINS = 33  # odd: 0 is a bin's center, so a collapsed layer is one spike, not two half ones
DECADES = 8
LOG_BINS = 32  # quarter decades over the window
PER_DECADE = LOG_BINS // DECADES
HEADER = 5  # low, high, zeros, below, nonfinite: then the counts
# values binned per histogram: a 32-bin histogram of 65,536 values has a relative error of about
# 2% in a bin holding 1/32 of them, and the cost stays flat however large the layer (the probe of a
# 100M-value activation would otherwise spend seconds and gigabytes on pictures)
SAMPLE = 1 << 16


def sample(x: torch.Tensor) -> torch.Tensor:
    """x's values, or SAMPLE of them drawn uniformly (with replacement) when it has more: indices
    from a private generator seeded by the size, so the same tensor gives the same histogram and
    no RNG of the user's moves; a random draw, not a stride, so no channel or position is skipped
    by a stride that divides the layout."""
    flat = x.detach().reshape(-1)
    if flat.numel() <= SAMPLE:
        return flat
    g = torch.Generator().manual_seed(flat.numel())
    return flat[torch.randint(flat.numel(), (SAMPLE,), generator=g).to(flat.device, non_blocking=True)]


def linear_row(x: torch.Tensor) -> torch.Tensor:
    """[low, high, zeros, below, nonfinite, counts...] (float64, on x's device) for a LINEAR histogram.
    Counts are float64 (exact to 2^53) so that one row holds the header and the counts."""
    x = x.detach().reshape(-1).float()  # float32 is plenty to pick a bin, at half float64's memory
    top = torch.nan_to_num(x.abs(), nan=0.0, posinf=0.0).amax() if x.numel() else x.new_zeros(())
    top = torch.where(top > 0, top, torch.ones_like(top))  # all zeros: a spike in the middle of [-1, 1]
    bins = LINEAR_BINS
    # slots: the bins, then x == top exactly (the last bin's closed end), then the non-finite values
    spill = float(bins + 1)
    u = torch.nan_to_num((x + top) * (bins / (2 * top)), nan=spill, posinf=spill, neginf=spill)
    slots = _count(u.floor_().clamp_(0, spill), bins + 2)
    counts = torch.cat([slots[:bins - 1], slots[bins - 1:bins + 1].sum(0, keepdim=True)])
    nothing = counts.new_zeros(())
    top = top.double()
    return torch.cat([torch.stack([-top, top, nothing, nothing, slots[bins + 1]]), counts])


def log_row(x: torch.Tensor) -> torch.Tensor:
    """[low, high, zeros, below, nonfinite, counts...] (float64, on x's device) for a LOG10_ABS histogram."""
    x = x.detach().reshape(-1).float()
    logs = x.abs().log10()  # 0 -> -inf, inf -> inf, NaN stays NaN
    peak = torch.nan_to_num(logs, nan=-torch.inf, posinf=-torch.inf).amax() if x.numel() else x.new_zeros(())
    high = torch.where(torch.isfinite(peak), peak.ceil(), torch.zeros_like(peak))  # no nonzero value: any window
    low = high - DECADES
    bins = LOG_BINS
    # slots: under the window (zeros included), the bins, |x| == 10^high exactly, the non-finite values
    spill = float(bins + 1)
    u = torch.nan_to_num((logs - low) * PER_DECADE, nan=spill, posinf=spill, neginf=-1.0)
    slots = _count(u.floor_().clamp_(-1, spill).add_(1), bins + 3)
    counts = torch.cat([slots[1:bins], slots[bins:bins + 2].sum(0, keepdim=True)])
    zeros = (x == 0).sum().double()
    return torch.cat([torch.stack([low.double(), high.double(), zeros, slots[0] - zeros, slots[bins + 2]]), counts])


def _count(slots: torch.Tensor, n: int) -> torch.Tensor:
    """How many of `slots` (whole numbers 0..n-1, as floats) fall in each slot, as float64: bincount on
    the CPU; a scatter on an accelerator, where bincount would have to tell the host its size."""
    idx = slots.long()
    if idx.device.type == "cpu":
        return torch.bincount(idx, minlength=n).double()
    counts = torch.zeros(n, dtype=torch.float64, device=idx.device)
    return counts.scatter_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))


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
