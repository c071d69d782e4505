"""Activation inference: the three fx forms, in-place and parametrized, through transparent ops,
and activations judged by what they compute."""

import models as M
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initcheck import diagnose
from initcheck.ops.activations import match_elementwise


def acts(model, inputs=None):
    return {lr.qualname: (lr.activation, lr.activation_param) for lr in diagnose(model, inputs).layers}


def test_three_fx_forms_and_a_positional_slope():
    got = acts(M.FunctionalActs())
    assert got["a.weight"] == ("relu", None)  # F.relu
    assert got["b.weight"] == ("relu", None)  # x.relu()
    assert got["c.weight"] == ("relu", None)  # torch.relu
    assert got["d.weight"] == ("leaky_relu", pytest.approx(0.2))
    assert got["e.weight"][0] == "tanh"  # through .view


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        x = F.relu(self.a(x), inplace=True)
        x = self.b(x).sigmoid_()
        return F.leaky_relu(self.c(x), negative_slope=0.3)


def test_in_place_and_keyword_forms():
    got = acts(InPlace())
    assert got["a.weight"] == ("relu", None)
    assert got["b.weight"] == ("sigmoid", None)
    assert got["c.weight"] == ("leaky_relu", pytest.approx(0.3))


def test_module_forms_with_parameters():
    net = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.ELU(alpha=0.5),
                        nn.Linear(8, 8), nn.PReLU(init=0.3), nn.Linear(8, 2))
    got = acts(net)
    assert got["0.weight"] == ("leaky_relu", pytest.approx(0.1))
    assert got["2.weight"] == ("elu", pytest.approx(0.5))
    assert got["4.weight"] == ("prelu", pytest.approx(0.3))
    assert got["6.weight"] == ("identity", None)


def test_transparent_ops_are_looked_through():
    got = acts(M.Transparent())
    assert got["conv.weight"][0] == "relu"  # dropout, pad, slicing, max_pool, permute
    assert got["fc.weight"][0] == "gelu"  # reshape before, a separate bias add after


def test_hand_written_gates_are_judged_numerically():
    got = acts(M.Gated())
    assert got["a.weight"][0] == "silu"  # x * sigmoid(x)
    assert got["b.weight"][0] == "unknown:x*sigmoid"  # x * sigmoid(1.702 x): not sigmoid


def test_custom_modules_are_judged_by_what_they_compute():
    got = acts(M.CustomModules())
    assert got["a.weight"][0] == "silu"
    assert got["b.weight"][0] == "unknown:Cube"


def test_match_elementwise():
    assert match_elementwise(nn.GELU(approximate="tanh")) == ("gelu", None)
    assert match_elementwise(lambda x: torch.clamp(x, 0, 6)) == ("relu6", None)
    assert match_elementwise(lambda x: x.sum(0, keepdim=True)) is None  # not elementwise
    assert match_elementwise(lambda x: x ** 3) == ("", None)


def test_normalization_and_residual_marks():
    layers = {lr.qualname: lr for lr in diagnose(M.ResNetish()).layers}
    conv2 = layers["blocks.0.conv2.weight"]
    assert conv2.normalized and conv2.residual_end and conv2.activation == "relu"  # the post-add ReLU
    assert layers["blocks.0.conv1.weight"].normalized and not layers["blocks.0.conv1.weight"].residual_end
    assert layers["fc.weight"].is_output


class _GCN(nn.Module):
    """pygcn's layer: relu(adj @ (x @ W)), the adjacency a buffer; `given`: the adjacency a forward
    argument, as pygcn publishes it (`model(features, adj)`), so it is data to the trace, but no
    weight reaches it, so it still only mixes the rows of x @ W."""

    def __init__(self, given: bool = False):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(32, 64))
        self.w2 = nn.Parameter(torch.empty(64, 7))
        nn.init.xavier_uniform_(self.w1)
        nn.init.xavier_uniform_(self.w2)
        if not given:
            self.register_buffer("adj", torch.eye(10))

    def forward(self, x, adj=None):
        adj = self.adj if adj is None else adj
        h = torch.relu(torch.spmm(adj, x @ self.w1))
        return torch.spmm(adj, h @ self.w2)


def test_an_activation_after_a_graph_aggregation_is_the_layers():
    layers = {lr.qualname: lr for lr in diagnose(_GCN(), (torch.randn(10, 32),)).layers}
    assert layers["w1"].activation == "relu" and layers["w1"].scheme == "he"
    assert layers["w2"].activation == "identity" and layers["w2"].is_output


def test_an_activation_after_an_aggregation_by_an_input_adjacency_is_the_layers():
    adj = (torch.eye(10) + torch.ones(10, 10)) / 20
    layers = {lr.qualname: lr for lr in diagnose(_GCN(given=True), (torch.randn(10, 32), adj)).layers}
    assert layers["w1"].activation == "relu" and layers["w1"].scheme == "he"
    assert layers["w2"].activation == "identity" and layers["w2"].is_output
