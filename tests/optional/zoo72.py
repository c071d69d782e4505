"""The 72 torchvision/timm classification architectures of issue #9's held-out check, and a runner
that prints docs/zoo.md's table. Needs torchvision and timm (not in default CI):

    PYTHONPATH=. nice -n 10 python tests/optional/zoo72.py [--input] [name ...]

Each model is built as its library creates it (default init, train mode) and checked with
`diagnose(model)` and no input: initcheck guesses the input itself. With --input a batch of one image
at the model's own size is given instead.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

# One per family, the small variant where the library has one. torchvision first, then timm.
TORCHVISION = (
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "densenet121", "googlenet",
    "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s", "mnasnet0_5",
    "shufflenet_v2_x0_5", "squeezenet1_1", "regnet_y_400mf", "convnext_tiny", "vit_b_16", "swin_t", "swin_v2_t",
    "maxvit_t", "alexnet",
)
TIMM = (
    "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "beit_base_patch16_224", "cait_xxs24_224",
    "coat_lite_tiny", "levit_128s", "mixer_s16_224", "resmlp_12_224", "gmlp_s16_224", "poolformer_s12",
    "edgenext_xx_small", "nf_resnet26", "eca_nfnet_l0", "dpn68", "legacy_xception", "hrnet_w18_small",
    "convit_tiny", "crossvit_tiny_240", "pit_ti_224", "tnt_s_patch16_224", "twins_svt_small",
    "xcit_nano_12_p16_224", "mobilevit_xxs", "efficientformer_l1", "ghostnet_100", "repvgg_a0", "cspresnet50",
    "dla34", "hardcorenas_a", "rexnet_100", "selecsls42b", "tresnet_m", "volo_d1_224", "swinv2_cr_tiny_ns_224",
    "maxvit_nano_rw_256", "efficientnetv2_rw_t", "convnext_atto", "regnetx_002", "res2net50_26w_4s",
    "mobilenetv3_small_050", "gcvit_xxtiny", "fastvit_t8", "ese_vovnet19b_dw", "resnest14d", "skresnet18",
    "seresnext26d_32x4d", "lcnet_050", "botnet26t_256", "sequencer2d_s", "inception_v4",
)
MODELS = tuple(f"torchvision/{n}" for n in TORCHVISION) + tuple(f"timm/{n}" for n in TIMM)


@dataclass(frozen=True)
class Result:
    """One model's outcome: what the held-out check asks, and the counts docs/zoo.md shows."""

    model: str
    params: int  # distinct parameters of the model
    reported: int  # of them, present in report.params
    unreached: tuple[str, ...]  # IC001
    errors: tuple[tuple[str, str], ...]  # (code, message)
    warnings: tuple[str, ...]  # codes
    tracer: str
    seconds: float
    crash: str = ""


def build(model: str) -> Any:
    """The model as its library creates it, in train mode (the default)."""
    library, name = model.split("/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if library == "torchvision":
            import torchvision
            kw = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
            return getattr(torchvision.models, name)(weights=None, **kw)
        import timm
        return timm.create_model(name, pretrained=False)


def example_input(model: str, net: Any) -> Any:
    """One image at the model's own size (299 for Inception v3, timm's pretrained_cfg otherwise)."""
    import torch
    size = (3, 299, 299) if model == "torchvision/inception_v3" else (3, 224, 224)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    return torch.randn(1, *cfg.get("input_size", size))


def check(model: str, with_input: bool = False) -> Result:
    """diagnose(model) with no input (or one image): every parameter reported? any error?"""
    import torch

    from initcheck import diagnose
    torch.manual_seed(0)
    net = build(model)
    names = {id(p): n for n, p in net.named_parameters()}
    start = time.perf_counter()
    try:
        report = diagnose(net, example_input(model, net) if with_input else None)
    except Exception as e:  # a crash is a result here, not the end of the run
        return Result(model, len(names), 0, (), (), (), "", time.perf_counter() - start, f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - start
    reported = {p.name for p in report.params}
    return Result(model, len(names), sum(n in reported for n in names.values()),
                  tuple(f.layer for f in report.findings if f.code == "IC001"),
                  tuple((f.code, f.message) for f in report.findings if f.severity == "error"),
                  tuple(f.code for f in report.findings if f.severity == "warning"), report.tracer, seconds)


def row(r: Result) -> str:
    errors = ", ".join(sorted({c for c, _ in r.errors})) or "none"
    warns = ", ".join(f"{n} {c}" for c, n in sorted(Counter(r.warnings).items())) or "none"
    if r.crash:
        return f"| {r.model} | - | - | crash: {r.crash[:80]} | - | - |"
    return f"| {r.model} | {r.tracer} | {r.reported} of {r.params} | {errors} | {warns} | {r.seconds:.1f} |"


def main(argv: list[str]) -> None:
    import torch
    torch.set_num_threads(1)
    with_input = "--input" in argv
    chosen = [a for a in argv if not a.startswith("--")]
    models = [m for m in MODELS if not chosen or m.split("/")[1] in chosen or m in chosen]
    print("| model | tracer | parameters reported | errors | warnings | diagnose s |\n|---|---|---|---|---|---|")
    for m in models:
        r = check(m, with_input)
        print(row(r), flush=True)
        print(json.dumps(r.__dict__), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
