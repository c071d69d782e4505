"""initcheck.fix (data-driven) against the reference LSUV package (`lsuv` 0.3.0).

Prints a table: forward passes, wall time, and the worst per-layer |std - 1| after the fix
(the std of each Linear/Conv output less its bias, measured afterwards on the same batch with the
target that LSUV uses, 1.0). Fair by construction: both get a copy of the same model, the same batch
and the same thread count; both are warmed up once on a small model first (imports, torch.fx, first
kernels are not the model's cost); each time is the median of --repeats runs, the two interleaved.
Run: python benchmarks/fix_vs_lsuv.py [--device cpu|cuda] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import models as M

from initcheck.api import analyze
from initcheck.fix import data_driven_pass, fix


def mlp(depth: int, width: int, act) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(width, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


class ResNetNoBN(nn.Module):
    """A ResNet-style CNN without normalization (what LSUV was designed for)."""

    def __init__(self, blocks: int = 6, c: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.convs = nn.ModuleList(nn.ModuleList([nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)]) for _ in range(blocks))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for a, b in self.convs:
            x = torch.relu(x + b(torch.relu(a(x))))
        return self.fc(x.mean((2, 3)))


def transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(32, 128), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(128, 10))


def cases(depths=(10, 30, 60), mlp_only=False):
    for depth in depths:
        for act in (nn.Tanh, nn.ReLU):
            yield f"MLP depth {depth}, {act.__name__.lower()}", lambda d=depth, a=act: mlp(d, 512, a), (256, 512)
    if mlp_only:
        return
    yield "ResNet-style CNN, no BN", ResNetNoBN, (64, 3, 16, 16)
    yield "transformer encoder, 2 layers", transformer, (32, 16, 32)
    yield "call order (fc2 defined first)", M.CallOrder, (256, 32)
    yield "shared layer (called 3x)", M.Shared, (256, 16)


def worst_error(model: nn.Module, x: torch.Tensor) -> float:
    """Worst |std - 1| over every Linear/Conv output, less its bias, on this batch."""
    errs = []

    def hook(m, inp, out):
        y = out - (m.bias.view(1, -1, *([1] * (out.dim() - 2))) if isinstance(m, nn.Conv2d) else m.bias) if m.bias is not None else out
        errs.append(abs(float(y.float().std()) - 1.0))

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and type(m) is not nn.modules.linear.NonDynamicallyQuantizableLinear]
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in hs:
            h.remove()
    return max(errs)


def count_passes(model: nn.Module):
    box = [0]
    h = model.register_forward_pre_hook(lambda m, a: box.__setitem__(0, box[0] + 1))
    return box, h


def run_initcheck(model, x, device):
    box, h = count_passes(model)
    _sync(device)
    t0 = time.perf_counter()
    fix(model, x, device=device, target_std=1.0, keep_intentional=False)
    _sync(device)
    total = time.perf_counter() - t0
    h.remove()
    return box[0], total


def run_initcheck_pass_only(model, x, device):
    analysis = analyze(model, x)
    _sync(device)
    t0 = time.perf_counter()
    data_driven_pass(model, analysis, x, device=device, target_std=1.0, keep_intentional=False, verify=False)
    _sync(device)
    return time.perf_counter() - t0


def run_lsuv(model, x, device):
    import lsuv

    box, h = count_passes(model)
    _sync(device)
    t0 = time.perf_counter()
    lsuv.lsuv_with_singlebatch(model, x, needed_std=1.0, verbose=False, device=torch.device(device))
    _sync(device)
    total = time.perf_counter() - t0
    h.remove()
    return box[0], total


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def warm_up(dev: str) -> None:
    """One run of each on a small model, untimed."""
    torch.manual_seed(0)
    base = mlp(12, 32, nn.Tanh).to(dev)
    x = torch.randn(16, 32, device=dev)
    run_initcheck(copy.deepcopy(base), x, dev)
    run_initcheck_pass_only(copy.deepcopy(base), x, dev)
    try:
        run_lsuv(copy.deepcopy(base), x, dev)
    except Exception:  # reported per model below
        pass


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depths", default="10,30,60", help="MLP depths, comma-separated")
    ap.add_argument("--mlp-only", action="store_true", help="only the MLPs (e.g. --depths 30,100 --mlp-only)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, interleaved; the median is shown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    warm_up(dev)
    rows = []
    for name, build, shape in cases(tuple(int(d) for d in args.depths.split(",")), args.mlp_only):
        torch.manual_seed(0)
        base = build().to(dev)
        x = torch.randn(*shape, device=dev)
        t_ics, t_passes, t_ls = [], [], []
        failed: Exception | None = None
        for _ in range(max(args.repeats, 1)):
            a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
            passes_ic, t = run_initcheck(a, x, dev)
            t_ics.append(t)
            t_passes.append(run_initcheck_pass_only(c, x, dev))
            if failed is None:
                try:
                    passes_l, t = run_lsuv(b, x, dev)
                    t_ls.append(t)
                except Exception as e:  # LSUV fails on some models: say so
                    failed = e
        t_ic, t_pass = median(t_ics), median(t_passes)
        err_ic = worst_error(a, x)
        try:
            if failed is not None:
                raise failed
            t_l = median(t_ls)
            err_l = worst_error(b, x)
            lsuv_cols = [passes_l, f"{t_l:.3f}", f"{err_l:.3g}", f"{t_l / t_ic:.1f}x", f"{t_l / t_pass:.0f}x"]
        except Exception as e:  # LSUV fails on some models: say so
            lsuv_cols = [f"failed: {type(e).__name__}", "-", "-", "-", "-"]
        rows.append([name, passes_ic, f"{t_ic:.3f}", f"{t_pass:.4f}", f"{err_ic:.3g}", *lsuv_cols])
    headers = ["model", "initcheck passes", "fix() s", "pass s", "worst |std-1|", "lsuv passes", "lsuv s",
               "lsuv worst |std-1|", "speed-up (fix())", "speed-up (pass)"]
    dev_name = torch.cuda.get_device_name() if dev == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"torch {torch.__version__}, {dev_name}, median of {max(args.repeats, 1)} runs")
    print(tabulate(rows, headers=headers, disable_numparse=True))


if __name__ == "__main__":
    main()
