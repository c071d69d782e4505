"""initcheck.fix (data-driven) against the reference LSUV package (`lsuv` 0.3.0).

Prints a table: forward passes, wall time, and the worst per-layer |std - 1| after the fix
(the std of each Linear/Conv output less its bias, measured afterwards on the same batch with the
target that LSUV uses, 1.0). Fair by construction: both get a copy of the same model, the same batch
and the same thread count; both are warmed up once on a small model first (imports, torch.fx, first
kernels are not the model's cost); each time is the median of --repeats runs, the two interleaved
(which runs first alternates), and the speed-up column gives the median of the per-run ratios with
their range (how noisy the machine was). On the CPU the times are the process's CPU time with one
torch thread (a wall clock on a shared machine also counts other jobs' time slices); on CUDA, wall
time after a synchronize. --batch: LSUV runs on one mini-batch (Mishkin & Matas 2016); the MLP rows
use a batch of 256 by default. --breakdown prints where each method's time goes.
Run: python benchmarks/fix_vs_lsuv.py [--device cpu|cuda] [--threads 1] [--repeats 3] [--batch 256]
     [--depths 30,100 --mlp-only] [--breakdown]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import time
from collections.abc import Iterator

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import models as M

from initcheck.api import analyze
from initcheck.fix import data_driven_pass, fix

FIX = sys.modules["initcheck.fix"]  # the package (the name `initcheck.fix` is also the function)


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


def cases(depths=(10, 30, 60), mlp_only=False, batch=256):
    for depth in depths:
        for act in (nn.Tanh, nn.ReLU):
            yield f"MLP depth {depth}, {act.__name__.lower()}", lambda d=depth, a=act: mlp(d, 512, a), (batch, 512)
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
    t0 = _clock(device)
    fix(model, x, device=device, target_std=1.0, keep_intentional=False)
    total = _clock(device) - t0
    h.remove()
    return box[0], total


def run_initcheck_pass_only(model, x, device):
    analysis = analyze(model, x)
    t0 = _clock(device)
    data_driven_pass(model, analysis, x, device=device, target_std=1.0, keep_intentional=False, verify=False)
    return _clock(device) - t0


def run_lsuv(model, x, device):
    import lsuv

    box, h = count_passes(model)
    t0 = _clock(device)
    lsuv.lsuv_with_singlebatch(model, x, needed_std=1.0, verbose=False, device=torch.device(device))
    total = _clock(device) - t0
    h.remove()
    return box[0], total


def _clock(device) -> float:
    """CPU time of this process on the CPU (one thread: the work itself), wall time on CUDA."""
    if device == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


class Parts:
    """Time spent inside named functions (patched while `timed` runs) and inside the model's
    forward (root hooks: every forward pass on the real model, hooks' work included)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.spent: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, model: nn.Module, patches: list[tuple[object, str, str]]) -> Iterator[None]:
        saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
        for owner, attr, label in patches:
            setattr(owner, attr, self._wrap(getattr(owner, attr), label))
        start: list[float] = []
        pre = model.register_forward_pre_hook(lambda m, a: start.append(_clock(self.device)))
        post = model.register_forward_hook(lambda m, a, o: self._add("forward passes", _clock(self.device) - start.pop()))
        try:
            yield
        finally:
            pre.remove()
            post.remove()
            for owner, attr, original in saved:
                setattr(owner, attr, original)

    def _wrap(self, f, label):
        def timed(*args, **kwargs):
            t0 = _clock(self.device)
            try:
                return f(*args, **kwargs)
            finally:
                self._add(label, _clock(self.device) - t0)
        return timed

    def _add(self, label: str, seconds: float) -> None:
        self.spent[label] = self.spent.get(label, 0.0) + seconds


def breakdown(base: nn.Module, x: torch.Tensor, device: str) -> tuple[dict[str, float], dict[str, float]]:
    """Where fix()'s and lsuv's time goes, one run each (seconds by part; "total" is the call)."""
    static = sys.modules["initcheck.fix.static"]
    fix_parts = Parts(device)
    m = copy.deepcopy(base)
    with fix_parts.timed(m, [(FIX, "guard", "memory guard (meta forward)"), (FIX, "analyze", "analysis"),
                             (static, "_draw_orthogonal_batches", "draws"), (static, "reinit_layer", "draws"),
                             (FIX, "reanalyze", "report after the fix")]):
        fix_parts.spent["total"] = run_initcheck(m, x, device)[1]
    t0 = _clock(device)  # fix() holds a copy of every parameter while it runs (all or nothing): the same copy
    [p.detach().clone() for p in m.parameters()]
    fix_parts.spent["copy to restore on failure"] = _clock(device) - t0
    lsuv_parts = Parts(device)
    m = copy.deepcopy(base)
    with lsuv_parts.timed(m, [(torch.nn.init, "orthogonal_", "draws")]):
        lsuv_parts.spent["total"] = run_lsuv(m, x, device)[1]
    return fix_parts.spent, lsuv_parts.spent


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


def print_breakdown(name: str, ic: dict[str, float], ls: dict[str, float]) -> None:
    labels = ["memory guard (meta forward)", "analysis", "draws", "forward passes", "copy to restore on failure",
              "report after the fix"]
    rows = []
    for label in labels + ["rest (Python, hooks' setup, bookkeeping)", "total"]:
        if label.startswith("rest"):
            i = ic["total"] - sum(ic.get(k, 0.0) for k in labels)
            j = ls["total"] - sum(ls.get(k, 0.0) for k in labels)
        else:
            i, j = ic.get(label, 0.0), ls.get(label, 0.0)
        rows.append([label, f"{i:.3f}", f"{j:.3f}"])
    print(f"\n{name}: where the time goes (s, one run)")
    print(tabulate(rows, headers=["part", "initcheck fix()", "lsuv"], disable_numparse=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depths", default="10,30,60", help="MLP depths, comma-separated")
    ap.add_argument("--mlp-only", action="store_true", help="only the MLPs (e.g. --depths 30,100 --mlp-only)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, interleaved; the median is shown")
    ap.add_argument("--batch", type=int, default=256, help="the MLPs' batch (LSUV's one mini-batch)")
    ap.add_argument("--breakdown", action="store_true", help="print where each method's time goes, per MLP")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    warm_up(dev)
    rows = []
    parts = []
    for name, build, shape in cases(tuple(int(d) for d in args.depths.split(",")), args.mlp_only, args.batch):
        torch.manual_seed(0)
        base = build().to(dev)
        x = torch.randn(*shape, device=dev)
        t_ics, t_passes, t_ls = [], [], []
        failed: Exception | None = None
        for r in range(max(args.repeats, 1)):
            a, b, c = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
            for turn in ((0, 1) if r % 2 == 0 else (1, 0)):  # which runs first alternates
                if turn == 0:
                    passes_ic, t = run_initcheck(a, x, dev)
                    t_ics.append(t)
                    t_passes.append(run_initcheck_pass_only(c, x, dev))
                elif failed is None:
                    try:
                        passes_l, t = run_lsuv(b, x, dev)
                        t_ls.append(t)
                    except Exception as e:  # LSUV fails on some models: say so
                        failed = e
        if args.breakdown and name.startswith("MLP") and failed is None:
            parts.append((name, *breakdown(base, x, dev)))
        t_ic, t_pass = median(t_ics), median(t_passes)
        err_ic = worst_error(a, x)
        try:
            if failed is not None:
                raise failed
            t_l = median(t_ls)
            err_l = worst_error(b, x)
            ratios = sorted(ls / ic for ls, ic in zip(t_ls, t_ics))
            spread = f" ({ratios[0]:.1f}-{ratios[-1]:.1f})" if len(ratios) > 1 else ""
            lsuv_cols = [passes_l, f"{t_l:.3f}", f"{err_l:.3g}", f"{median(ratios):.1f}x{spread}", f"{t_l / t_pass:.0f}x"]
        except Exception as e:  # LSUV fails on some models: say so
            lsuv_cols = [f"failed: {type(e).__name__}", "-", "-", "-", "-"]
        rows.append([name, passes_ic, f"{t_ic:.3f}", f"{t_pass:.4f}", f"{err_ic:.3g}", *lsuv_cols])
    headers = ["model", "initcheck passes", "fix() s", "pass s", "worst |std-1|", "lsuv passes", "lsuv s",
               "lsuv worst |std-1|", "speed-up (fix()), range", "speed-up (pass)"]
    dev_name = (torch.cuda.get_device_name() + ", wall time" if dev == "cuda"
                else f"CPU, {torch.get_num_threads()} thread(s), CPU time")
    print(f"torch {torch.__version__}, {dev_name}, MLP batch {args.batch}, median of {max(args.repeats, 1)} runs")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    for name, ic, ls in parts:
        print_breakdown(name, ic, ls)


if __name__ == "__main__":
    main()
