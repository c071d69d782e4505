"""The seeds' experiment on real data: scikit-learn's bundled 8x8 digits (nothing is downloaded).

Trains the seeds' ReLU MLP (64-256-128-10) for 2 epochs with each seed init, before and after
the static initcheck.fix and the data-driven one (256 training images), and prints mean validation
accuracy over 3 seeds. SGD lr 0.05, batch 32, inputs
standardized. Run: python examples/digits_experiment.py [--seeds 3] [--epochs 2] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seeds as S

import initcheck



class Normal1(S._Seed):
    """N(0, 1) weights before ReLUs: sqrt(fan_in / 2) times He's std (5.7x with 64 inputs)."""

    def init_weight(self, layer: nn.Linear) -> None:
        nn.init.normal_(layer.weight, 0.0, 1.0)
        nn.init.zeros_(layer.bias)


class Normal001(S._Seed):
    """N(0, 0.01) weights (the tutorials' "small random numbers"): the signal vanishes."""

    def init_weight(self, layer: nn.Linear) -> None:
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)


# every seed scheme of the init tutorials (zeros, ones, uniform [0, 1), N(0, 1), N(0, 0.01),
# 1/sqrt(n), truncated normal 0.1, Xavier before ReLU), then He and PyTorch's default
INITS = [S.Zeros, S.Ones, S.Uniform01, S.UniformMinus1To1, S.UniformHalf, Normal1, Normal001, S.InvSqrtN,
         S.NormalInvSqrtN, S.TruncNormal01, S.XavierReLU, S.He, S.PyTorchDefault]


def load_digits():
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    data = sk_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    return (xtr - mean) / std, ytr, (xva - mean) / std, yva


def train(model: nn.Module, data, seed: int, epochs: int, lr: float = 0.05, batch: int = 32) -> float:
    xtr, ytr, xva, yva = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(xva).argmax(1)
    return float((pred == yva).float().mean()) * 100


def run(n_seeds: int, epochs: int):
    data = load_digits()
    rows = []
    for cls in INITS:
        before, static, after, errors = [], [], [], []
        for seed in range(n_seeds):
            torch.manual_seed(seed)
            model = cls(in_features=64)
            errors.append(sum(f.severity == "error" for f in initcheck.diagnose(model).findings))
            before.append(train(model, data, seed, epochs))
            torch.manual_seed(seed)
            model = cls(in_features=64)
            initcheck.fix(model, generator=torch.Generator().manual_seed(seed))  # static: no data
            static.append(train(model, data, seed, epochs))
            torch.manual_seed(seed)
            model = cls(in_features=64)
            initcheck.fix(model, data[0][:256], generator=torch.Generator().manual_seed(seed))
            after.append(train(model, data, seed, epochs))
        rows.append([cls.__name__, errors[0], sum(before) / n_seeds, sum(static) / n_seeds, sum(after) / n_seeds])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = run(args.seeds, args.epochs)
    he_static = next(r[3] for r in rows if r[0] == "He")
    he = next(r[4] for r in rows if r[0] == "He")
    table = [[n, e, f"{b:.1f}", f"{st:.1f}", f"{st - he_static:+.1f}", f"{a:.1f}", f"{a - he:+.1f}"]
             for n, e, b, st, a in rows]
    print(tabulate(table, headers=["init", "initcheck errors", "accuracy before fix (%)", "after static fix (%)",
                                   "static - He's", "after data-driven fix (%)", "data-driven - He's"],
                   tablefmt="github" if args.markdown else "simple", disable_numparse=True))


if __name__ == "__main__":
    main()
