"""The backward model through attention against autograd (torch is the oracle): the predicted
gradient second moment E[g^2] at each weight layer's output beside the one measured by backpropagating
a unit-variance gradient from the block's output, and cosine attention's forward logit std beside
the measured one. Blocks: cosine attention (Swin V2), scaled dot-product attention written out and
through F.scaled_dot_product_attention, and XCiT's cross-covariance attention (XCA)."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from initcheck.api import analyze
from initcheck.signal import attention, temperature

B, N, C, H = 8, 64, 128, 4  # batch, tokens, width, heads: d_head 32


class Attention(nn.Module):
    """qkv -> heads -> logits -> softmax -> @ v -> proj, the logits made one of three ways."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        # Swin V2's logit scale (log 10, read through exp(clamp)); XCiT's temperature (1)
        init = math.log(10.0) if kind == "cosine" else 0.0
        self.logit_scale = nn.Parameter(torch.full((H, 1, 1), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, H, c // H).permute(2, 0, 3, 1, 4)
        if self.kind == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        elif self.kind == "xca":  # tokens as the features: d x d attention over the channels of a head
            q, k, v = q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1)
            logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.logit_scale.exp()
            out = (logits.softmax(-1) @ v).permute(0, 3, 1, 2)
        else:
            if self.kind == "cosine":
                logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
                logits = logits * torch.clamp(self.logit_scale, max=math.log(100)).exp()
            else:
                logits = q @ k.transpose(-2, -1) * (c // H) ** -0.5
            out = logits.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def predicted_and_measured(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per weight layer and for the input: (predicted, measured) E[g^2] at its output."""
    a = analyze(model, x)
    sig = a.context.actual
    pred = {lf.name: sig.backward[lf.op] for lf in a.layers}
    pred["input"] = sig.backward[next(op.index for op in a.context.index.ops if op.kind.name == "INPUT")]
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
            y.retain_grad()
            outs[name] = y
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in ("qkv", "proj")]
    try:
        with torch.random.fork_rng():
            torch.manual_seed(1)
            xs = x.clone().requires_grad_()
            y = model(xs)
            y.backward(torch.randn_like(y))
    finally:
        for h in hooks:
            h.remove()
    got = {n: float(t.grad.pow(2).mean()) for n, t in outs.items()}
    got["input"] = float(xs.grad.pow(2).mean())
    return {n: (pred[n], got[n]) for n in got}


@pytest.mark.parametrize("kind", ["cosine", "dot", "sdpa", "xca"])
def test_the_gradient_through_attention_is_autograds(kind):
    # The proj layer is the output's last weight: its output gradient is the unit one. Backward of
    # it, the gradient crosses the softmax, the two products and (cosine, XCA) the normalization:
    # a tenth to a thousandth of the unit gradient reaches q and k, most of qkv's comes through v.
    # Each is within 1.5x of autograd's in rms (2.25x in second moment).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = Attention(kind), torch.randn(B, N, C)
    for name, (pred, got) in predicted_and_measured(model, x).items():
        assert 1 / 2.25 < pred / got < 2.25, (name, pred, got)


def test_q_and_k_get_the_gradient_through_the_softmax():
    # The gradient at qkv's output, split by part. Through a near-uniform softmax (logit std 1/3:
    # torch's default Linear gives E[q^2] = E[k^2] = E[v^2] = 1/3), v gets S g_O (S = sum p^2) and k
    # gets d_v E[v^2] g_O S / d_head * E[q^2]: k's share of v's is E[v^2] E[q^2] = 1/9. q's has the
    # same term plus a finite-width one (v_j and k_j share token j's input: cov over the keys of
    # dO.v_j and k_j, n / fan_in / (n S) of it, about half) the model leaves out. The model's total at
    # qkv is the mean of the three parts, not their sum (each part is a third of qkv's elements).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = Attention("dot"), torch.randn(B, N, C)
        xs = x.clone().requires_grad_()
        qkv = model.qkv(xs)
        qkv.retain_grad()
        b, n, c = x.shape
        q, k, v = qkv.reshape(b, n, 3, H, c // H).permute(2, 0, 3, 1, 4)
        out = (q @ k.transpose(-2, -1) * (c // H) ** -0.5).softmax(-1) @ v
        y = model.proj(out.transpose(1, 2).reshape(b, n, c))
        y.backward(torch.randn_like(y))
    parts = qkv.grad.reshape(b, n, 3, c).pow(2).mean(dim=(0, 1, 3))
    assert abs(float(parts[1] / parts[2]) * 9 - 1) < 0.2
    assert 1 / 9 < float(parts[0] / parts[2]) < 1.6 / 9
    pred = predicted_and_measured(model, x)["qkv"][0]
    assert abs(pred / float(parts.mean()) - 1) < 0.2
    assert pred < 0.6 * float(parts.sum())  # the sum would be 3x the mean


@pytest.mark.parametrize("kind", ["cosine", "xca"])
def test_cosine_logits_are_cosines_times_the_scale(kind):
    # F.normalize leaves each of d components with E[y^2] = 1/d, so q.k of unit vectors has std
    # 1/sqrt(d) across the keys: times exp(log 10) = 10 at d = 32 (Swin V2), about 1.77; XCA's
    # vectors are a head's channels over N = 64 tokens, d x d logits with std 1/sqrt(64) times 1.
    # Read as a LayerNorm (unit components) it was 56.6 and a false IC207.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = Attention(kind), torch.randn(B, N, C)
    a = analyze(model, x)
    ctx = a.context
    (block,) = attention.blocks(ctx.index, ctx.actual.forward, temperature.in_proj_gains(a.layers))
    physics = 10 / math.sqrt(C // H) if kind == "cosine" else 1 / math.sqrt(N)
    assert abs(block.logit_std / physics - 1) < 0.1
    assert "IC207" not in {f.code for f in a.report.findings}
    assert not [f for f in a.report.findings if f.severity == "error"]


class Pools(nn.Module):
    """A conv net whose gradient crosses each op that moves values: max and average pooling, an
    upsampling, a per-channel mean added back to every position. The head reads every position
    (flatten), so each position gets its own gradient: the backward model adds gradients as
    independent terms, and a head that averages the positions would hand all of them the same one
    (summed coherently by an upsampling's copies: 16x, not 4x; a gap noted in backward.py)."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        side = {"max": 8, "avg": 8, "upsample": 32}.get(pool, 16)
        self.fc = nn.Linear(16 * side * side, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.pool == "max":
            h = F.max_pool2d(h, 2)
        elif self.pool == "avg":
            h = F.avg_pool2d(h, 2)
        elif self.pool == "upsample":
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        else:  # a per-sample, per-channel vector added to every position: its gradient sums over them
            h = h + h.mean(dim=(2, 3), keepdim=True)
        return self.fc(self.conv2(h).flatten(1))


@pytest.mark.parametrize("pool", ["max", "avg", "upsample", "broadcast"])
def test_the_gradient_through_pooling_is_autograds(pool):
    # A 2x2 average hands g / 4 to each of its 4 inputs (E[g^2] / 16); a 2x2 max routes g to one of
    # 4 (1/4 on average); a nearest 2x upsampling sums 4 independent copies (4x); a mean over P
    # positions sums P gradients and hands 1/P of it back (1/P, beside the direct path's 1).
    # conv1's output gradient, measured by autograd, within 1.6x in second moment (conv2's border
    # taps, which read the zero padding, are counted as full at 8 x 8: 1.2x of it).
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = Pools(pool), torch.randn(16, 3, 16, 16)
        a = analyze(model, x)
        outs: dict[str, torch.Tensor] = {}

        def keep(m: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
            y.retain_grad()
            outs["y"] = y

        h = model.conv1.register_forward_hook(keep)
        try:
            y = model(x)
            y.backward(torch.randn_like(y))
        finally:
            h.remove()
    lf = next(lf for lf in a.layers if lf.name == "conv1")
    pred, got = a.context.actual.backward[lf.op], float(outs["y"].grad.pow(2).mean())
    assert 1 / 1.6 < pred / got < 1.6, (pred, got)


def test_a_cosine_attention_at_a_large_scale_still_saturates():
    # Swin V2's clamp allows exp(logit_scale) up to 100: 100 / sqrt(32) = 17.7, far over sqrt(2 ln 64)
    # = 2.88 for 64 keys, a softmax frozen onto one key. The normalize handler must not hide that.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, x = Attention("cosine"), torch.randn(B, N, C)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(100.0))
        a = analyze(model, x)
    assert "IC207" in {f.code for f in a.report.findings}
