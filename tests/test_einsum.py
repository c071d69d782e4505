"""Weights applied by torch.einsum are weights: fans from the subscripts (one letter summed against
the signal, one kept in the output, after an optional stack letter), judged like a Linear."""

import math

import pytest
import torch
from torch import nn

from initcheck import diagnose


def qual(lr) -> str:
    return f"{lr.name}.{lr.param}" if lr.name else lr.param


class Einsum(nn.Module):
    """x [B, 16] -> relu(einsum(eq1, x, w)) [B, 32] -> einsum(eq2, ., v) [B, 10]."""

    def __init__(self, eq1: str, eq2: str, w_shape: tuple[int, ...], v_shape: tuple[int, ...], std: float) -> None:
        super().__init__()
        self.eq1, self.eq2 = eq1, eq2
        self.w = nn.Parameter(torch.randn(*w_shape) * std)
        self.v = nn.Parameter(torch.randn(*v_shape) * (1 / 32) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum(self.eq2, torch.relu(torch.einsum(self.eq1, x, self.w)), self.v)


@pytest.mark.parametrize("eq1, eq2, w_shape, v_shape", [
    ("bi,ij->bj", "bi,ij->bj", (16, 32), (32, 10)),  # x @ W: [in, out]
    ("bi,ji->bj", "bj,kj->bk", (32, 16), (10, 32)),  # F.linear's [out, in]
])
def test_an_einsum_weight_is_judged_with_its_fans_and_the_relu_after_it(eq1, eq2, w_shape, v_shape):
    # w at 1/16 of He's variance for fan_in 16 before a ReLU: 16x outside the 4x band, IC103
    model = Einsum(eq1, eq2, w_shape, v_shape, std=(2 / 16) ** 0.5 / 4)
    report = diagnose(model, torch.randn(8, 16))
    rows = {qual(lr): lr for lr in report.layers}
    assert set(rows) == {"w", "v"}
    assert (rows["w"].fan_in, rows["w"].fan_out, rows["w"].activation) == (16, 32, "relu")
    assert (rows["v"].fan_in, rows["v"].fan_out) == (32, 10)
    assert {(f.code, f.layer) for f in report.findings} == {("IC103", "w")}


def test_per_head_weights_are_a_stack_of_matrices():
    # [h, d, k] through "bhd,hdk->bhk": each head maps d = 8 to k = 8; He's std sqrt(2/8) = 0.5
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 8, 8) * 0.5)
            self.o = nn.Linear(32, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(torch.relu(torch.einsum("bhd,hdk->bhk", x, self.w)).flatten(1))

    torch.manual_seed(0)
    report = diagnose(Heads(), torch.randn(64, 4, 8))
    w = next(lr for lr in report.layers if qual(lr) == "w")
    assert (w.fan_in, w.fan_out, w.activation) == (8, 8, "relu")
    assert math.isclose(w.recommended_std, 0.5, rel_tol=1e-6)
    assert report.ok


def test_a_transposed_weight_swaps_the_layout():
    class T(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(32, 16) * (1 / 16) ** 0.5)  # stored [out, in]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,ij->bj", x, self.w.t())

    w = next(lr for lr in diagnose(T(), torch.randn(4, 16)).layers if qual(lr) == "w")
    assert (w.fan_in, w.fan_out) == (16, 32)
