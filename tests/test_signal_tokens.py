"""What the tokens of a stream share (a pattern of channel means every token carries: `between`) as
the signal model carries it to an attention's logits, against a measured forward (torch is the
oracle). A softmax ignores what every key of a query shares, so the logit spread across the keys is
what the keys do not share: Swin V2's stream, whose tokens come to share most of their direction,
gets cosine logits well below 10 / sqrt(d_head)."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from initcheck.api import analyze
from initcheck.signal import attention, temperature

B, N, C, H = 8, 64, 128, 4  # d_head 32


class DropPath(nn.Module):
    """timm's DropPath, written out (a whole sample kept with probability 1 - p, scaled by 1 / (1 - p))."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_prob)
        return x * keep / (1 - self.drop_prob)


class SharedThenCosine(nn.Module):
    """An MLP whose GELU units sit at +2 (mean 2, variance about 1), so fc2's rows give every token the
    same pattern of channel means, most of its variance; a LayerNorm; `join` (nothing, the two halves
    side by side, a drop-path residual); then cosine attention's logits (Swin V2: scale 10)."""

    def __init__(self, join: str) -> None:
        super().__init__()
        self.join = join
        self.fc1, self.fc2 = nn.Linear(C, C), nn.Linear(C, C // 2 if join == "cat" else C)
        nn.init.normal_(self.fc1.weight, std=C ** -0.5)
        nn.init.constant_(self.fc1.bias, 2.0)
        self.norm = nn.LayerNorm(self.fc2.out_features)
        self.drop = DropPath(0.5)
        self.qk = nn.Linear(C, 2 * C)
        self.logit_scale = nn.Parameter(torch.full((H, 1, 1), math.log(10.0)))  # Swin V2's, read as exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.fc2(F.gelu(self.fc1(x))))
        if self.join == "cat":
            h = torch.cat([h, h.flip(1)], dim=-1)  # the same pattern on both halves, the tokens reordered
        elif self.join == "drop_path":  # a residual branch: each sample's tokens scaled alike, 1 or 3 times
            h = h + self.drop(h)
        b, n, c = h.shape
        q, k = self.qk(h).reshape(b, n, 2, H, c // H).permute(2, 0, 3, 1, 4)
        return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.logit_scale.exp()


@pytest.mark.parametrize("join", ["none", "cat", "drop_path"])
def test_the_logits_spread_by_what_the_keys_do_not_share(join):
    # Physics: k_j = c + f_j with |c|^2 most of E|k|^2 (the shared pattern), so q.k_j varies across j
    # only through f_j: 10 / sqrt(32) * sqrt(fluctuation share), well under 1.77. The prediction
    # (the spread the IC207 rule reads from the logits' moments) is within 1.3x of the measured
    # std across the keys, and the measurement is at most 0.7 of the no-sharing value.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = SharedThenCosine(join), torch.randn(B, N, C)
        model.train()
        with torch.no_grad():
            measured = float(model(x).var(-1, unbiased=False).mean().sqrt())
        a = analyze(model, x)
    ctx = a.context
    sig = ctx.actual
    out = next(op for op in ctx.index.ops if op.kind.name == "OUTPUT")
    predicted = math.sqrt(attention.fluctuation(sig.forward[out.inputs[0]]))
    assert measured < 0.7 * 10 / math.sqrt(C // H)
    assert 1 / 1.3 < predicted / measured < 1.3, (predicted, measured)


class ShiftedWindowMask(nn.Module):
    """torchvision's Swin mask: built from x.new_zeros, -100 between the regions of a shifted window."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        region = x.new_zeros(n)
        region[n // 2:] = 1
        mask = region.unsqueeze(0) - region.unsqueeze(1)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        q, k, v = self.qkv(x).reshape(b, n, 3, H, c // H).permute(2, 0, 3, 1, 4)
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * 10.0 + mask
        return self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


def test_a_mask_made_from_the_input_shape_is_no_signal():
    # x.new_zeros(n) holds zeros whatever x holds: the mask adds nothing to the spread of the keys a
    # query sees (10 / sqrt(32) = 1.77 over its unmasked half), and no gradient flows back through it.
    # Read as a copy of x it added its own variance to the logits (predicted 3 to 5 on swin_v2_t).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = ShiftedWindowMask(), torch.randn(B, N, C)
        a = analyze(model, x)
    ctx = a.context
    (block,) = attention.blocks(ctx.index, ctx.actual.forward, temperature.in_proj_gains(a.layers))
    assert abs(block.logit_std / (10 / math.sqrt(C // H)) - 1) < 0.1
    assert not any(name == "new_zeros" for name, _ in ctx.actual.unhandled)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth (mode "row"), written out: a whole sample kept with probability
    1 - p and scaled by 1 / (1 - p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p, self.mode = p, "row"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


@pytest.mark.parametrize("training", [True, False])
def test_stochastic_depth_in_training_raises_the_second_moment(training):
    # A whole sample kept with probability 1/2 and doubled: E[y^2] = 2 E[x^2] in training, so the
    # layer after it has sqrt(2) times the rms; in eval mode it is the identity (it was pushed through
    # a Gaussian expectation as an elementwise function). Measured on 1024 samples (kept: 1/2 +- 0.016).
    model = nn.Sequential(nn.Linear(C, C), StochasticDepth(0.5), nn.Linear(C, C, bias=False)).train(training)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(1024, C)
        a = analyze(model, x[:2])
        with torch.no_grad():
            measured = float(model(x).pow(2).mean().sqrt())
    lf = next(lf for lf in a.layers if lf.name == "2")
    predicted = a.context.actual.forward[lf.op].rms
    assert abs(predicted / measured - 1) < 0.1
