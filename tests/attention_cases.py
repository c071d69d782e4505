"""Attention init bugs and sound attention inits (IC207), each expectation written from the physics
in its docstring before running: the logit std sqrt(d_head E[q^2] E[k^2]) * scale against the
freezing point sqrt(2 ln n) of n keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Pre-norm self-attention over [batch, tokens, 256], 4 heads of d_head 64, separate q/k/v
    projections. `scaled`: divide the logits by sqrt(d_head); `sdpa`: F.scaled_dot_product_attention
    (which scales by itself); `qk_std`: q/k weights N(0, qk_std), else Xavier uniform (variance
    2/(256+256) = 1/256, so E[q^2] = 256/256 * E[x^2] = 1 after the LayerNorm)."""

    def __init__(self, scaled: bool = True, sdpa: bool = False, qk_std: float | None = None, causal: bool = False) -> None:
        super().__init__()
        self.scaled, self.sdpa, self.causal = scaled, sdpa, causal
        self.norm = nn.LayerNorm(256)
        self.q, self.k, self.v, self.o = (nn.Linear(256, 256) for _ in range(4))
        for lin in (self.q, self.k, self.v, self.o):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        if qk_std is not None:
            for lin in (self.q, self.k, self.v, self.o):
                nn.init.normal_(lin.weight, std=qk_std if lin in (self.q, self.k) else 0.02)

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], 4, 64).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.heads(self.q(h)), self.heads(self.k(h)), self.heads(self.v(h))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            scores = q @ k.transpose(-2, -1)
            y = (scores * 64 ** -0.5 if self.scaled else scores).softmax(-1) @ v
        return x + self.o(y.transpose(1, 2).reshape(x.shape))


class UnscaledAttention(SelfAttention):
    """The 1/sqrt(d_head) is missing (Xavier q/k, d_head 64): the logit std is
    sqrt(64 * 1 * 1) = 8, far past the freezing point sqrt(2 ln 32) = 2.6 of 32 keys: the softmax
    is one-hot at init. IC207 on q.weight. (With PyTorch's default Linear init instead, E[q^2] = 1/3
    and s = sqrt(64)/3 = 2.67: only just past 2.63 at 32 keys and under 2.88 at 64: not a clear case.)"""

    def __init__(self) -> None:
        super().__init__(scaled=False)


class UnitNormalQK(SelfAttention):
    """q/k projections drawn N(0, 1) (a tutorial's torch.randn), sdpa's own 1/sqrt(64) scale:
    E[q^2] = 256, logit std sqrt(64 * 256 * 256) / 8 = 256: saturated whatever the length. IC207 on
    q.weight (beside IC103 on the weights themselves)."""

    def __init__(self) -> None:
        super().__init__(sdpa=True, qk_std=1.0)


class DefaultMultiheadAttention(nn.Module):
    """nn.MultiheadAttention as PyTorch builds it (Xavier on the packed 768x256 in_proj: variance
    1/512, E[q^2] = 0.5 after the LayerNorm), 64 tokens: logit std sqrt(0.5 * 0.5) = 0.5, under the
    freezing point sqrt(2 ln 64) = 2.9. No IC207, no error."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.attn, self.head = nn.LayerNorm(256), nn.MultiheadAttention(256, 4, batch_first=True), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.head(x + self.attn(h, h, h, need_weights=False)[0])


class GPT2Attention(SelfAttention):
    """GPT-2's init, N(0, 0.02) at width 256, causal sdpa: E[q^2] = 256 * 4e-4 = 0.10, logit std
    sqrt(64 * 0.1^2) / 8 = 0.1: nearly uniform weights. No IC207, no error."""

    def __init__(self) -> None:
        super().__init__(sdpa=True, qk_std=0.02, causal=True)
