"""Static prediction against measurement: for every weight layer of a zoo, the predicted rms of the
weight op's raw output (bias aside, before any norm) beside the one measured with forward hooks, in
train mode, at the model's default init, on a unit-variance batch. Prints a table per model
(fraction within 1.5x and 2x, worst ratio), the totals per zoo and over all.

Zoos: `hand` (tests/vision_zoo.py, 64 x 3x32x32), `hf` (small GPT-2/BERT/LLaMA/T5 configs, batch 64 of
the inputs initcheck builds), `torchvision` and `timm` (the real libraries when importable; batch 8 at
128 px where the architecture allows, the native 224 where it does not). All zoos by default.

    .venv/bin/python benchmarks/prediction.py [--zoo hand hf] [--verbose] [--only NAME ...]
    PYTHONPATH=. /work/tvenv/bin/python benchmarks/prediction.py --zoo torchvision timm
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from initcheck.api import analyze
from initcheck.signal import raw_rms


def hf_models() -> dict[str, Callable[[], nn.Module]]:
    try:
        import transformers as T
    except ImportError:
        return {}
    small = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512, vocab_size=1000)
    return {
        "hf_gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=128, n_layer=4, n_head=4, vocab_size=1000, n_positions=64,
                                                              bos_token_id=0, eos_token_id=0)),
        "hf_bert": lambda: T.BertModel(T.BertConfig(**small, max_position_embeddings=64)),
        "hf_llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**small, num_key_value_heads=2, max_position_embeddings=64)),
        "hf_t5": lambda: T.T5ForConditionalGeneration(T.T5Config(d_model=128, d_ff=512, num_layers=4, num_heads=4, d_kv=32,
                                                                 vocab_size=1000)),
    }


# torchvision: the 11 models of issue #9's baseline and four more families; (name, image side).
TORCHVISION = [("efficientnet_b0", 128), ("mobilenet_v3_small", 128), ("googlenet", 128), ("resnext50_32x4d", 128),
               ("squeezenet1_0", 128), ("convnext_tiny", 128), ("resnet50", 128), ("densenet121", 128),
               ("shufflenet_v2_x1_0", 128), ("regnet_y_400mf", 128), ("mnasnet1_0", 128), ("vgg11_bn", 128),
               ("alexnet", 224), ("vit_b_16", 224), ("swin_t", 224)]
# timm: families torchvision lacks (conv nets at 128 px; transformers at the size their tables fix).
TIMM = [("vit_tiny_patch16_224", 224), ("deit_tiny_patch16_224", 224), ("convnext_atto", 128), ("regnetx_002", 128),
        ("levit_128s", 224), ("poolformer_s12", 128), ("cait_xxs24_224", 224), ("edgenext_xx_small", 128),
        ("nf_resnet26", 128), ("ghostnet_100", 128), ("mixer_s16_224", 224), ("resnest14d", 128), ("dla34", 128)]
VISION_BATCH = 8


def image_model(make: Callable[[], nn.Module], side: int) -> tuple[Callable[[], nn.Module], tuple[int, ...]]:
    return make, (VISION_BATCH, 3, side, side)


def torchvision_models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    try:
        import torchvision
    except ImportError:
        return {}

    def make(name: str) -> Callable[[], nn.Module]:
        return lambda: torchvision.models.get_model(name, weights=None)
    return {f"tv_{n}": image_model(make(n), side) for n, side in TORCHVISION}


def timm_models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    try:
        import timm
    except ImportError:
        return {}

    def make(name: str) -> Callable[[], nn.Module]:
        return lambda: timm.create_model(name, pretrained=False)
    return {f"timm_{n}": image_model(make(n), side) for n, side in TIMM}


def hand_models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]]:
    import vision_zoo
    return {n: (make, (64, 3, 32, 32)) for n, make in vision_zoo.ZOO.items()}


def measured(model: nn.Module, names: set[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, float]:
    """The raw output rms (bias subtracted) of each named weight module at its first call."""
    out: dict[str, float] = {}
    handles = []

    def hook_for(name: str, mod: nn.Module) -> Callable[..., None]:
        def hook(m: nn.Module, inputs: Any, y: Any) -> None:
            if name in out or not isinstance(y, torch.Tensor):
                return
            y = y.detach().double()
            b = getattr(m, "bias", None)
            if isinstance(b, torch.Tensor) and b.ndim == 1 and not isinstance(m, nn.Embedding):
                dim = 1 if isinstance(m, nn.modules.conv._ConvNd) else y.ndim - 1
                shape = [1] * y.ndim
                shape[dim] = -1
                if y.shape[dim] == b.shape[0]:
                    y = y - b.detach().double().view(shape)
            out[name] = float(y.pow(2).mean().sqrt())
        return hook

    for name, mod in model.named_modules():
        if name in names:
            handles.append(mod.register_forward_hook(hook_for(name, mod)))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out


def compare(name: str, make: Callable[[], nn.Module], shape: tuple[int, ...] | None,
            verbose: bool) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model = make()
    model.train()
    x = torch.randn(*shape) if shape is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # traced on two samples of the same size (the trace's shapes), measured on the whole batch
        a = analyze(model, (x[:2],) if x is not None else None)
    if x is None:
        args, kwargs = a.inputs(batch=64)
    else:
        args, kwargs = (x,), {}
    predicted = {}
    for lf in a.layers:
        r = raw_rms(a.context.actual, a.context.index, lf, model) if a.context.actual else None
        if r is not None and lf.name not in predicted:
            predicted[lf.name] = r
    got = measured(model, set(predicted), args, kwargs)
    rows = [(n, predicted[n], got[n]) for n in predicted if n in got]
    if verbose:
        for n, p, m in rows:
            print(f"    {n:40s} predicted {p:10.4g} measured {m:10.4g} ratio {ratio(p, m):7.3g}")
    return rows


def ratio(p: float, m: float) -> float:
    if p <= 0 or m <= 0 or not (math.isfinite(p) and math.isfinite(m)):
        return math.inf if p != m else 1.0
    return max(p / m, m / p)


ZOOS = {"hand": hand_models, "hf": lambda: {n: (m, None) for n, m in hf_models().items()},
        "torchvision": torchvision_models, "timm": timm_models}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", nargs="*", choices=sorted(ZOOS), default=list(ZOOS))
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--only", nargs="*")
    opts = ap.parse_args()
    totals: dict[str, list[int]] = {}
    print(f"{'model':30s} {'layers':>6s} {'<=1.5x':>7s} {'<=2x':>7s} {'worst':>8s}  worst layer")
    for zoo in opts.zoo:
        for name, (make, shape) in ZOOS[zoo]().items():
            if opts.only and name not in opts.only:
                continue
            rows = compare(name, make, shape, opts.verbose)
            rs = [ratio(p, m) for _, p, m in rows]
            a15, a2 = sum(r <= 1.5 for r in rs), sum(r <= 2.0 for r in rs)
            for key in (zoo, "TOTAL"):
                t = totals.setdefault(key, [0, 0, 0])
                t[0], t[1], t[2] = t[0] + len(rs), t[1] + a15, t[2] + a2
            worst = max(range(len(rs)), key=lambda i: rs[i]) if rs else None
            wname = rows[worst][0] if worst is not None else "-"
            print(f"{name:30s} {len(rs):6d} {a15 / max(len(rs), 1):7.1%} {a2 / max(len(rs), 1):7.1%} "
                  f"{(rs[worst] if worst is not None else 1.0):8.3g}  {wname}", flush=True)
    for key, (total, within15, within2) in totals.items():
        print(f"{key:30s} {total:6d} {within15 / max(total, 1):7.1%} {within2 / max(total, 1):7.1%}")


if __name__ == "__main__":
    main()
