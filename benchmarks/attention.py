"""Attention against measurement: per attention block, the predicted logit std (signal.attention.blocks,
what IC207 judges) beside the one measured at the softmax's input (the std across the keys, rms over
the queries); and per weight layer, the backward model's predicted gradient E[g^2] at the layer's
output beside autograd's for a unit-variance gradient at the model's output (what IC204/IC205 rest
on). Default init, train mode, batch 4 of unit-variance images at the size the model fixes.

    PYTHONPATH=. /work/tvenv/bin/python benchmarks/attention.py [--only NAME ...] [--verbose]
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from initcheck.api import analyze
from initcheck.signal import attention, temperature

# (library, name, side): the cosine attentions of issue #9's IC207 gap, then dot-product ones.
MODELS = [("torchvision", "swin_v2_t", 256), ("timm", "swinv2_cr_tiny_ns_224", 224),
          ("timm", "swinv2_tiny_window8_256", 256), ("timm", "xcit_nano_12_p16_224", 224),
          ("timm", "edgenext_xx_small", 128), ("torchvision", "swin_t", 224), ("timm", "vit_tiny_patch16_224", 224),
          ("timm", "deit_tiny_patch16_224", 224), ("timm", "cait_xxs24_224", 224), ("timm", "levit_128s", 224)]
BATCH = 4


def build(library: str, name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "torchvision":
            import torchvision
            return torchvision.models.get_model(name, weights=None)
        import timm
        return timm.create_model(name, pretrained=False)


@contextmanager
def softmax_inputs(seen: list[float]) -> Iterator[None]:
    """Record the logits' std across the softmax's axis (rms over the rows) at every softmax and
    scaled_dot_product_attention called inside the block."""
    f_softmax, t_softmax, sdpa = F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention

    def spread(x: torch.Tensor, dim: int) -> None:
        # the std over the keys a query can see: an additive mask (Swin's -100 between shifted
        # windows, -inf) takes its keys out of the softmax, and out of the spread
        x = x.detach().double().movedim(dim, -1)
        seen_keys = x > x.amax(-1, keepdim=True) - 50.0
        n = seen_keys.sum(-1, keepdim=True)
        mean = torch.where(seen_keys, x, 0.0).sum(-1, keepdim=True) / n
        var = torch.where(seen_keys, (x - mean) ** 2, 0.0).sum(-1) / n.squeeze(-1)
        seen.append(float(var.mean().sqrt()))

    def f(x: torch.Tensor, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> torch.Tensor:
        return x.softmax(-1 if dim is None else dim, dtype=dtype)  # recorded once, by the method

    def t(x: torch.Tensor, dim: Any = -1, *a: Any, **k: Any) -> torch.Tensor:
        spread(x, dim)
        return t_softmax(x, dim, *a, **k)

    def s(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        scale = kw.get("scale") or q.shape[-1] ** -0.5
        spread(q @ k.transpose(-2, -1) * scale, -1)
        return sdpa(q, k, v, *a, **kw)

    F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention = f, t, s  # type: ignore[assignment]
    try:
        yield
    finally:
        F.softmax, torch.Tensor.softmax, F.scaled_dot_product_attention = f_softmax, t_softmax, sdpa  # type: ignore[assignment]


def gradients(model: nn.Module, names: set[str], x: torch.Tensor) -> dict[str, float]:
    """Autograd's E[g^2] at each named module's output (its first call) for y.backward(randn)."""
    outs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(m: nn.Module, inputs: Any, y: Any) -> None:
            if name not in outs and isinstance(y, torch.Tensor) and y.requires_grad:
                y.retain_grad()
                outs[name] = y
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if n in names]
    try:
        y = model(x)
        y.backward(torch.randn_like(y))
    finally:
        for h in handles:
            h.remove()
    return {n: float(t.grad.double().pow(2).mean()) for n, t in outs.items() if t.grad is not None}


def ratio(p: float, m: float) -> float:
    if p <= 0 or m <= 0 or not (math.isfinite(p) and math.isfinite(m)):
        return math.inf if p != m else 1.0
    return max(p / m, m / p)


def run(library: str, name: str, side: int, verbose: bool) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    model = build(library, name).train()
    x = torch.randn(BATCH, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = analyze(model, (x[:2],))
    ctx = a.context
    sig = ctx.actual
    assert sig is not None
    blocks = attention.blocks(ctx.index, sig.forward, temperature.in_proj_gains(a.layers))
    seen: list[float] = []
    with torch.no_grad(), softmax_inputs(seen):
        model(x)
    logits = [ratio(b.logit_std, m) for b, m in zip(blocks, seen)]
    if verbose:
        for b, m in zip(blocks, seen):
            print(f"    logits at op {b.op:5d} over {b.keys:4d} keys: predicted {b.logit_std:8.3g} measured {m:8.3g}")
    predicted = {lf.name: sig.backward[lf.op] for lf in reversed(a.layers)}  # a shared module: its first use
    got = gradients(model, set(predicted), x)
    grads = [ratio(math.sqrt(predicted[n]), math.sqrt(got[n])) for n in got if predicted.get(n, 0.0) > 0]
    if verbose:
        for n in got:
            print(f"    grad {n:40s} predicted rms {math.sqrt(predicted[n]):9.3g} measured {math.sqrt(got[n]):9.3g}")
    if len(blocks) != len(seen):
        print(f"  ({name}: {len(blocks)} blocks predicted, {len(seen)} softmaxes measured: paired in order)")
    return logits, grads


def share(rs: list[float], limit: float) -> str:
    return f"{sum(r <= limit for r in rs) / max(len(rs), 1):7.1%}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    print(f"{'model':28s} {'blocks':>6s} {'<=1.5x':>7s} {'worst':>7s}   {'layers':>6s} {'grad<=1.5x':>10s} {'<=2x':>7s} {'worst':>8s}")
    all_l: list[float] = []
    all_g: list[float] = []
    for library, name, side in MODELS:
        if opts.only and name not in opts.only:
            continue
        logits, grads = run(library, name, side, opts.verbose)
        all_l += logits
        all_g += grads
        print(f"{name:28s} {len(logits):6d} {share(logits, 1.5)} {max(logits, default=1.0):7.3g}   {len(grads):6d} "
              f"{share(grads, 1.5):>10s} {share(grads, 2.0)} {max(grads, default=1.0):8.3g}", flush=True)
    print(f"{'TOTAL':28s} {len(all_l):6d} {share(all_l, 1.5)} {max(all_l, default=1.0):7.3g}   {len(all_g):6d} "
          f"{share(all_g, 1.5):>10s} {share(all_g, 2.0)} {max(all_g, default=1.0):8.3g}")


if __name__ == "__main__":
    main()
