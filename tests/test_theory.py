"""theory.py against torch.nn.init as the oracle."""

import math

import pytest
import torch
from torch import nn

from initcheck import theory
from initcheck.ops.layers import Layout


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_gain_is_torchs_where_torch_has_one(name):
    assert theory.gain(name) == pytest.approx(nn.init.calculate_gain(name))


@pytest.mark.parametrize("slope", [0.01, 0.2, 0.3])
def test_leaky_relu_gain_matches_torch_and_the_closed_form(slope):
    assert theory.gain("leaky_relu", slope) == pytest.approx(nn.init.calculate_gain("leaky_relu", slope))
    assert theory.numeric_gain("leaky_relu", slope) == pytest.approx(math.sqrt(2 / (1 + slope ** 2)), rel=1e-4)


def test_numeric_gain_of_relu_is_sqrt2():
    assert theory.numeric_gain("relu") == pytest.approx(math.sqrt(2), rel=1e-4)


@pytest.mark.parametrize("name,fn", [("gelu", torch.nn.functional.gelu), ("silu", torch.nn.functional.silu),
                                     ("mish", torch.nn.functional.mish), ("elu", torch.nn.functional.elu)])
def test_numeric_gain_matches_sampling(name, fn):
    z = torch.randn(4_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sampled = 1.0 / math.sqrt(float((fn(z) ** 2).mean()))
    assert theory.numeric_gain(name) == pytest.approx(sampled, rel=2e-3)


def test_selu_is_lecun_and_identity_is_xavier():
    fan = theory.Fans(100, 50)
    assert theory.recommend("selu", None, fan).std == pytest.approx(1 / math.sqrt(100))
    rec = theory.recommend("identity", None, fan)
    assert rec.scheme == "xavier" and rec.std == pytest.approx(math.sqrt(2 / 150))


def _measured_std(init, shape):
    w = torch.empty(shape)
    init(w)
    return float(w.std())


@pytest.mark.parametrize("shape", [(256, 784), (64, 32, 3, 3)])
def test_he_std_matches_kaiming_normal(shape):
    fan = theory.fans(Layout.OUT_IN if len(shape) == 2 else Layout.CONV, shape)
    rec = theory.recommend("relu", None, fan)
    measured = _measured_std(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), shape)
    assert rec.std == pytest.approx(measured, rel=0.02)


@pytest.mark.parametrize("shape", [(256, 784), (64, 32, 3, 3)])
def test_xavier_std_matches_xavier_uniform(shape):
    fan = theory.fans(Layout.OUT_IN if len(shape) == 2 else Layout.CONV, shape)
    rec = theory.recommend("tanh", None, fan)
    measured = _measured_std(lambda w: nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh")), shape)
    assert rec.std == pytest.approx(measured, rel=0.02)


def test_torch_default_std_matches_nn_linear():
    layer = nn.Linear(500, 400)
    assert theory.torch_default_std(500) == pytest.approx(float(layer.weight.detach().std()), rel=0.02)


def test_fans_agree_with_torch_for_plain_layers():
    for shape, layout in [((256, 784), Layout.OUT_IN), ((64, 32, 3, 3), Layout.CONV)]:
        fi, fo = nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        assert theory.fans(layout, shape) == theory.Fans(fi, fo)


def test_grouped_and_depthwise_fans_divide_by_groups():
    grouped = nn.Conv2d(8, 32, 3, groups=4).weight.shape  # [32, 2, 3, 3]
    assert theory.fans(Layout.CONV, tuple(grouped), groups=4) == theory.Fans(18, 72)
    depthwise = nn.Conv2d(32, 32, 3, groups=32).weight.shape
    assert theory.fans(Layout.CONV, tuple(depthwise), groups=32) == theory.Fans(9, 9)


def test_conv_transpose_reads_its_layout_the_right_way_round():
    shape = tuple(nn.ConvTranspose2d(3, 8, 3).weight.shape)  # [in=3, out=8, 3, 3]
    assert theory.fans(Layout.CONV_TRANSPOSE, shape) == theory.Fans(27, 72)
    # stride 2 with a 4x4 kernel: each output sees 2x2 taps of every input channel
    shape = tuple(nn.ConvTranspose2d(16, 32, 4, stride=2).weight.shape)
    assert theory.fans(Layout.CONV_TRANSPOSE, shape, stride=(2, 2)) == theory.Fans(64, 512)


def test_packed_fans_count_one_block():
    assert theory.fans(Layout.PACKED, (3 * 64, 64), blocks=3) == theory.Fans(64, 64)
    assert theory.fans(Layout.PACKED, (4 * 32, 16), blocks=4) == theory.Fans(16, 32)


def test_gaussian_moments_of_relu():
    m = theory.gaussian_moments(torch.relu, 0.0, 4.0)
    assert m.second == pytest.approx(2.0, rel=1e-5)  # E[relu(z)^2] = var / 2
    assert m.mean == pytest.approx(2.0 / math.sqrt(2 * math.pi), rel=1e-5)
    assert m.slope2 == pytest.approx(0.5, rel=1e-3)


def test_gaussian_moments_of_tanh_match_sampling():
    z = 0.5 + 2.0 * torch.randn(4_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    m = theory.gaussian_moments(torch.tanh, 0.5, 4.0)
    assert m.second == pytest.approx(float((torch.tanh(z) ** 2).mean()), rel=2e-3)
    assert m.slope2 == pytest.approx(float(((1 - torch.tanh(z) ** 2) ** 2).mean()), rel=5e-3)


@pytest.mark.parametrize("name,param", [("identity", None), ("relu", None), ("leaky_relu", 0.2), ("prelu", None)])
@pytest.mark.parametrize("mean,var", [(0.0, 1.0), (0.7, 0.3), (-1.2, 2.5), (0.3, 0.0)])
def test_closed_form_moments_match_sampling_through_torch(name, param, mean, var):
    from initcheck.theory import activation_fn, gaussian_moments

    fn = activation_fn(name, param)
    g = torch.Generator().manual_seed(0)
    x = (mean + math.sqrt(var) * torch.randn(2_000_000, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = fn(x)
    (dy,) = torch.autograd.grad(y.sum(), x)
    y = y.detach()
    m = gaussian_moments(fn, mean, var)
    assert m.mean == pytest.approx(float(y.mean()), abs=3e-3)
    assert m.second == pytest.approx(float((y * y).mean()), rel=3e-3, abs=1e-9)
    assert m.slope2 == pytest.approx(float((dy * dy).mean()), abs=3e-3)


def test_grid_moments_are_computed_once_per_rounded_mean_and_variance(monkeypatch):
    from initcheck import theory

    calls = []
    real = theory._grid_moments

    def counting(fn, mean, var):
        calls.append((mean, var))
        return real(fn, mean, var)

    monkeypatch.setattr(theory, "_grid_moments", counting)
    theory._grid_moments_cached.cache_clear()
    a = theory.gaussian_moments(torch.tanh, 0.1, 0.5)
    b = theory.gaussian_moments(torch.tanh, 0.1, 0.5 * (1 + 1e-12))  # the same to 8 digits
    theory._grid_moments_cached.cache_clear()
    assert len(calls) == 1 and a == b
    # the grid is the integral: E[tanh(x)^2] against sampling
    x = 0.1 + math.sqrt(0.5) * torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert a.second == pytest.approx(float(torch.tanh(x).pow(2).mean()), rel=3e-3)
