"""The signal model: its predictions against measurement and Monte Carlo, and the structures the
vision zoo taught it (attention through dropout and SDPA, max-pooling, named-norm wrappers,
residual branches at their own scale)."""


import pytest
import seeds
import torch
import torch.nn.functional as F
from torch import nn

from initcheck import diagnose, probe
from initcheck.signal.moments import max_gain as _max_gain


def test_max_pool_gain_matches_monte_carlo():
    z = torch.randn(2_000_000, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert _max_gain(9) == pytest.approx(float((z.max(1).values ** 2).mean()), rel=5e-3)
    assert _max_gain(1) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("seed", [seeds.He, seeds.TanhXavier, seeds.UniformHalf])
def test_predicted_scale_matches_the_measured_one(seed):
    r = probe(seed(), torch.randn(1024, 784))
    for p in r.probe:
        assert p.measured_rms == pytest.approx(p.predicted_rms, rel=0.2), p


class Attention(nn.Module):
    """timm-style attention: softmax, dropout, @ V; or SDPA with a learned bias as attn_mask."""

    def __init__(self, d=64, heads=4, sdpa=False):
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.bias_table = nn.Parameter(torch.zeros(heads, 8, 8))
        for lin in (self.qkv, self.proj):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias_table.unsqueeze(0))
        else:
            scores = q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5 + self.bias_table
            attn = F.dropout(scores.softmax(-1), 0.1, self.training)
            y = attn @ v
        return x + self.proj(y.transpose(1, 2).reshape(b, n, d))


class Stack(nn.Module):
    def __init__(self, sdpa=False, depth=12):
        super().__init__()
        self.inp = nn.Linear(32, 64)
        self.blocks = nn.Sequential(*[Attention(sdpa=sdpa) for _ in range(depth)])
        self.head = nn.Linear(64, 10)
        nn.init.trunc_normal_(self.inp.weight, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)

    def forward(self, x):
        return self.head(self.blocks(self.inp(x)))


@pytest.mark.parametrize("sdpa", [False, True])
def test_transformer_conventions_give_no_false_error(sdpa):
    report = diagnose(Stack(sdpa=sdpa), torch.randn(2, 8, 32))
    assert report.ok, [f.message for f in report.findings if f.severity == "error"]
    assert not [f for f in report.findings if f.code == "IC001"]  # the bias table is added, not a weight


class LinearNorm(nn.Module):
    """A Linear and a BatchNorm (timm's LeViT): named like a norm, but it holds a weight layer."""

    def __init__(self, a, b):
        super().__init__()
        self.linear = nn.Linear(a, b, bias=False)
        self.bn = nn.BatchNorm1d(b)

    def forward(self, x):
        return self.bn(self.linear(x))


def test_a_module_named_like_a_norm_that_holds_a_weight_is_traced_through():
    model = nn.Sequential(LinearNorm(16, 32), nn.ReLU(), nn.Linear(32, 4))
    report = diagnose(model)
    assert "0.linear.weight" in {lr.qualname for lr in report.layers}
    assert not [f for f in report.findings if f.code == "IC001"]


class ScaledBranch(nn.Module):
    def __init__(self, width=64, scale=0.02):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        for lin in (self.fc1, self.fc2):
            nn.init.normal_(lin.weight, 0, scale)
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(x)))


def test_deep_residual_net_with_small_branches_is_not_a_vanishing_gradient():
    """40 blocks of x + f(x) with N(0, 0.02) branches: the skip carries the signal and the gradient;
    a reference with every branch at full scale would grow 2^40 and make this look like IC204."""
    model = nn.Sequential(nn.Linear(32, 64), *[ScaledBranch() for _ in range(40)], nn.Linear(64, 10))
    nn.init.kaiming_normal_(model[0].weight)
    report = diagnose(model)
    assert report.ok, [f.message for f in report.findings]


class _LSTMNet(nn.Module):
    def __init__(self, std=None):
        super().__init__()
        self.rnn = nn.LSTM(32, 64, batch_first=True)
        self.fc = nn.Linear(64, 4)
        if std is not None:
            for p in self.rnn.parameters():
                nn.init.normal_(p, std=std)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("std", [None, 1.0], ids=["torch_default", "unit_normal"])
def test_lstm_gate_preactivation_follows_the_actual_weights(std):
    from initcheck.api import analyze

    torch.manual_seed(0)
    model = _LSTMNet(std)
    a = analyze(model, (torch.randn(4, 10, 32),))
    lf = next(lf for lf in a.layers if lf.param == "weight_ih_l0")
    predicted = a.context.actual.preact(lf.op, lf.preact_op).rms
    # the oracle: the gates' pre-activation x W_ih^T + h_{t-1} W_hh^T + b, from a real forward
    x = torch.randn(256, 20, 32)
    with torch.no_grad():
        out, _ = model.rnn(x)
        h_prev = torch.cat([torch.zeros(256, 1, 64), out[:, :-1]], 1)
        r = model.rnn
        z = x @ r.weight_ih_l0.T + h_prev @ r.weight_hh_l0.T + r.bias_ih_l0 + r.bias_hh_l0
    measured = float(z.pow(2).mean().sqrt())
    assert 1 / 1.5 < predicted / measured < 1.5


def test_unit_normal_lstm_saturates_and_the_default_is_quiet():
    assert "IC203" in {f.code for f in diagnose(_LSTMNet(1.0), (torch.randn(2, 5, 32),)).findings}
    assert not diagnose(_LSTMNet(), (torch.randn(2, 5, 32),)).findings


class _RunningLogSumExp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(torch.logcumsumexp(self.a(x), dim=-1)))


def test_an_op_without_a_handler_is_named_with_the_layers_it_affects():
    notes = diagnose(_RunningLogSumExp()).notes
    note = next(n for n in notes if "no handler" in n)
    assert "logcumsumexp" in note and "b.weight" in note and "a.weight" not in note
