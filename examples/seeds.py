"""The seed networks behind initcheck: the classic init snippets, each as its own class.

Run `initcheck examples/seeds.py` to check them all. The MLPs are 784-256-128-10 ReLU nets (the
MNIST comparisons); `in_features=64` gives the same net for scikit-learn's 8x8 digits. The tanh nets
have five hidden layers of 256.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _Seed(nn.Module):
    """A plain MLP; subclasses set `init_weight` (and `activation`)."""

    activation: type[nn.Module] = nn.ReLU
    sizes: tuple[int, ...] = (784, 256, 128, 10)

    def __init__(self, in_features: int | None = None):
        super().__init__()
        sizes = ((in_features,) + self.sizes[1:]) if in_features else self.sizes
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(self.activation())
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    self.init_weight(layer)

    def init_weight(self, layer: nn.Linear) -> None:
        pass  # PyTorch's default

    def forward(self, x):
        return self.net(x.flatten(1))


class Zeros(_Seed):
    def init_weight(self, layer):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class Ones(_Seed):
    def init_weight(self, layer):
        nn.init.ones_(layer.weight)
        nn.init.zeros_(layer.bias)


class Uniform01(_Seed):
    def init_weight(self, layer):
        nn.init.uniform_(layer.weight, 0.0, 1.0)


class UniformMinus1To1(_Seed):
    def init_weight(self, layer):
        nn.init.uniform_(layer.weight, -1.0, 1.0)


class UniformHalf(_Seed):
    def init_weight(self, layer):
        nn.init.uniform_(layer.weight, -0.5, 0.5)


class UniformTiny(_Seed):
    def init_weight(self, layer):
        nn.init.uniform_(layer.weight, -0.001, 0.001)


class InvSqrtN(_Seed):
    """The "1/sqrt(n)" rule: U(-1/sqrt(n), 1/sqrt(n)), n = fan_in (PyTorch's default variance)."""

    def init_weight(self, layer):
        y = 1.0 / math.sqrt(layer.in_features)
        nn.init.uniform_(layer.weight, -y, y)
        nn.init.zeros_(layer.bias)


class NormalInvSqrtN(_Seed):
    def init_weight(self, layer):
        nn.init.normal_(layer.weight, 0.0, 1.0 / math.sqrt(layer.in_features))
        nn.init.zeros_(layer.bias)


class TruncNormal01(_Seed):
    def init_weight(self, layer):
        nn.init.trunc_normal_(layer.weight, std=0.1)
        nn.init.zeros_(layer.bias)


class XavierReLU(_Seed):
    """Xavier before a ReLU: half of He's variance per layer."""

    def init_weight(self, layer):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)


class He(_Seed):
    def init_weight(self, layer):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


class PyTorchDefault(_Seed):
    pass


class DeepPyTorchDefault(_Seed):
    """A 20-layer, 512-wide ReLU MLP with PyTorch's default init: 1/6 of He's variance per layer."""

    sizes = (784,) + (512,) * 19 + (10,)


class TanhNormal1(_Seed):
    """Five tanh layers with N(0, 1) weights: saturated from the first layer."""

    activation = nn.Tanh
    sizes = (784, 256, 256, 256, 256, 256, 10)

    def init_weight(self, layer):
        nn.init.normal_(layer.weight, 0.0, 1.0)
        nn.init.zeros_(layer.bias)


class TanhNormal001(TanhNormal1):
    """Five tanh layers with N(0, 0.01) weights: the signal vanishes by the fourth."""

    def init_weight(self, layer):
        nn.init.normal_(layer.weight, 0.0, 0.01)
        nn.init.zeros_(layer.bias)


class TanhXavier(TanhNormal1):
    def init_weight(self, layer):
        nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain("tanh"))
        nn.init.zeros_(layer.bias)


class SigmoidNormal1(TanhNormal1):
    activation = nn.Sigmoid


class SigmoidXavier(TanhXavier):
    activation = nn.Sigmoid

    def init_weight(self, layer):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)


SEEDS = [Zeros, Ones, Uniform01, UniformMinus1To1, UniformHalf, InvSqrtN, NormalInvSqrtN, TruncNormal01,
         XavierReLU, He, PyTorchDefault]
