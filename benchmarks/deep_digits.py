"""Does the fix make deep networks train? sklearn's digits (8x8, bundled: nothing is downloaded),
Adam, CPU, each init before training, mean over seeds.

Models: a deep tanh MLP (64 -> 128 x depth -> 10) and a plain tanh conv net (3x3 convs, 16
channels, no normalization, no residual, then a Linear head). Inits:
  PyTorch default; initcheck.fix static; initcheck.fix data-driven (256 training images);
  the `lsuv` package 0.3.0 (orthonormal, then layer by layer to std 1, on the same 256 images);
  orthogonal + scaling (`fix(model, x, scheme="orthogonal")`: every weight orthogonal, then the pass).
Prints final training loss (mean of the last 20 steps), test loss and test accuracy.
Run: python benchmarks/deep_digits.py [--mlp-depth 100] [--conv-depth 30] [--steps 200] [--seeds 3] [--only mlp|conv]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from typing import Callable

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from digits_experiment import load_digits

import initcheck


def tanh_mlp(depth: int, width: int = 128) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(64, width), nn.Tanh()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


class PlainConv(nn.Module):
    """`depth` layers: depth-1 3x3 tanh convs (16 channels, no norm, no residual), a Linear head."""

    def __init__(self, depth: int, channels: int = 16):
        super().__init__()
        convs: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.Tanh()]
        for _ in range(depth - 2):
            convs += [nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh()]
        self.convs = nn.Sequential(*convs)
        self.head = nn.Linear(channels * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x.view(-1, 1, 8, 8)).flatten(1))


def _lsuv(model: nn.Module, x: torch.Tensor) -> None:
    import lsuv

    with contextlib.redirect_stdout(io.StringIO()):
        lsuv.lsuv_with_singlebatch(model, x, needed_std=1.0, verbose=False)


INITS: dict[str, Callable[[nn.Module, torch.Tensor, int], None]] = {
    "PyTorch default": lambda m, x, s: None,
    "initcheck static fix": lambda m, x, s: initcheck.fix(m, generator=torch.Generator().manual_seed(s)),
    "initcheck data-driven fix": lambda m, x, s: initcheck.fix(m, x, generator=torch.Generator().manual_seed(s)),
    "lsuv 0.3.0": lambda m, x, s: _lsuv(m, x),
    "orthogonal + scaling": lambda m, x, s: initcheck.fix(m, x, scheme="orthogonal", generator=torch.Generator().manual_seed(s)),
}


def train(model: nn.Module, data, seed: int, steps: int, lr: float = 1e-3, batch: int = 64) -> tuple[float, float, float]:
    """(final training loss, test loss, test accuracy) after `steps` Adam steps."""
    xtr, ytr, xva, yva = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(xtr[idx]), ytr[idx])
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            break
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        out = model(xva)
    return statistics.fmean(losses[-20:]), float(loss_fn(out, yva)), float((out.argmax(1) == yva).float().mean())


def run(build: Callable[[], nn.Module], init: str, data, seeds: int, steps: int) -> tuple[float, float, float, float]:
    rows = []
    seconds = 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build()
        t0 = time.perf_counter()
        INITS[init](model, data[0][:256], seed)
        seconds += time.perf_counter() - t0
        torch.manual_seed(seed)
        rows.append(train(model, data, seed, steps))
    return (*(statistics.fmean(r[i] for r in rows) for i in range(3)), seconds / seeds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mlp-depth", type=int, default=100)
    ap.add_argument("--conv-depth", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["mlp", "conv"], help="one of the two models (to run them in parallel)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits()
    models = {f"{args.mlp_depth}-layer tanh MLP (width 128)": lambda: tanh_mlp(args.mlp_depth),
              f"{args.conv_depth}-layer plain tanh conv net (16 ch)": lambda: PlainConv(args.conv_depth)}
    if args.only:
        models = dict(list(models.items())[:1] if args.only == "mlp" else list(models.items())[1:])
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s); digits, Adam lr 1e-3, batch 64, "
          f"{args.steps} steps, mean of {args.seeds} seeds")
    for label, build in models.items():
        rows = []
        for init in INITS:
            train_loss, test_loss, acc, secs = run(build, init, data, args.seeds, args.steps)
            rows.append([init, f"{train_loss:.3f}", f"{test_loss:.3f}", f"{acc:.3f}", f"{secs:.3f}"])
        print()
        print(label)
        print(tabulate(rows, headers=["init", "train loss (last 20)", "test loss", "test acc", "init s"],
                       tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
