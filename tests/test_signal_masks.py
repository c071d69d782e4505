"""Hand-written causal masks are recognized like `is_causal` (signal/masks.py), against a measured
forward: with a causal mask query i averages i + 1 keys, so the values' fluctuation shrinks by
H_n / n (the harmonic number) rather than 1 / n: 4.7x more variance at n = 64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initcheck.api import analyze
from initcheck.signal import raw_rms

T, D = 64, 32


class SelfAttention(nn.Module):
    """nanoGPT's causal self-attention with its mask written out three ways (or none)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        tril = torch.tril(torch.ones(T, T))
        if how == "masked_fill":
            self.register_buffer("bias", tril.view(1, 1, T, T))
        elif how == "additive":
            self.register_buffer("mask", torch.full((T, T), float("-inf")).triu(1))
        elif how == "sdpa":
            self.register_buffer("allowed", tril.bool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (z.view(b, t, 2, d // 2).transpose(1, 2) for z in (q, k, v))
        if self.how == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.allowed[:t, :t])
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            if self.how == "masked_fill":
                att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            elif self.how == "additive":
                att = att + self.mask[:t, :t]
            y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, d))


def proj_rms(how: str) -> tuple[float, float]:
    torch.manual_seed(0)
    model = SelfAttention(how)
    x = torch.randn(64, T, D)
    a = analyze(model, x)
    lf = next(lf for lf in a.layers if lf.name == "proj")
    pred = raw_rms(a.context.actual, a.context.index, lf, model)
    with torch.no_grad():
        got: list[float] = []
        h = model.proj.register_forward_hook(lambda m, i, y: got.append(float(y.pow(2).mean().sqrt())))
        try:
            model(x)
        finally:
            h.remove()
    assert pred is not None
    return pred, got[0]


@pytest.mark.parametrize("how", ["masked_fill", "additive", "sdpa"])
def test_a_hand_written_causal_mask_is_causal_attention(how):
    pred, got = proj_rms(how)
    assert pred == pytest.approx(got, rel=0.15)
    unmasked_pred, unmasked = proj_rms("none")
    assert unmasked_pred == pytest.approx(unmasked, rel=0.15)
    # the physics the mask changes: H_64 / 64 against 1 / 64 of the values' variance
    assert (got / unmasked) ** 2 > 3.0
