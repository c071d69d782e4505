"""schemes.py against torch.nn.init: the same generator gives torch's numbers, the promised std is
the closed form, and every call text, exec'd on a real model, gives the std its scheme promises."""

import math

import pytest
import torch
from torch import nn

import initcheck
from initcheck import diagnose
from initcheck.api import analyze
from initcheck.remedy import for_layer, init_call
from initcheck.schemes import Init, Mode, Scheme, call_text, draw, draw_batch, expected_std, orthogonal_batch

LINEAR = (96, 160)  # [out, in]
CONV = (32, 16, 3, 3)


def _fans(shape):
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def _same(scheme, init, torch_call, shape):
    ours, theirs = torch.empty(shape), torch.empty(shape)
    draw(scheme, ours, init, torch.Generator().manual_seed(7))
    torch_call(theirs, torch.Generator().manual_seed(7))
    return torch.equal(ours, theirs)


@pytest.mark.parametrize("shape", [LINEAR, CONV])
def test_each_scheme_draws_torchs_own_numbers_from_the_same_generator(shape):
    fi, fo = _fans(shape)
    relu, tanh = math.sqrt(2.0), 5.0 / 3.0
    cases = [
        (Scheme.HE_NORMAL, Init(fi, fo, relu), lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="relu", generator=g)),
        (Scheme.HE_NORMAL, Init(fi, fo, relu, Mode.FAN_OUT),
         lambda t, g: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g)),
        (Scheme.HE_UNIFORM, Init(fi, fo, relu), lambda t, g: nn.init.kaiming_uniform_(t, nonlinearity="relu", generator=g)),
        (Scheme.XAVIER_NORMAL, Init(fi, fo, tanh), lambda t, g: nn.init.xavier_normal_(t, gain=5.0 / 3.0, generator=g)),
        (Scheme.XAVIER_UNIFORM, Init(fi, fo), lambda t, g: nn.init.xavier_uniform_(t, generator=g)),
        (Scheme.LECUN_NORMAL, Init(fi, fo), lambda t, g: nn.init.kaiming_normal_(t, nonlinearity="linear", generator=g)),
        (Scheme.ORTHOGONAL, Init(fi, fo, 1.3), lambda t, g: nn.init.orthogonal_(t, gain=1.3, generator=g)),
        (Scheme.EMBEDDING, Init(1, shape[1]), lambda t, g: nn.init.normal_(t, 0.0, 1.0, generator=g)),
        (Scheme.EMBEDDING_SMALL, Init(1, shape[1]), lambda t, g: nn.init.normal_(t, 0.0, 0.02, generator=g)),
        (Scheme.NORMAL, Init(fi, fo, std=0.037), lambda t, g: nn.init.normal_(t, 0.0, 0.037, generator=g)),
        (Scheme.ZEROS, Init(fi, fo), lambda t, g: nn.init.zeros_(t)),
    ]
    for scheme, init, call in cases:
        assert _same(scheme, init, call, shape), scheme


def test_orthogonal_blocks_are_each_orthogonal_as_torch_draws_them():
    h = 24
    w = torch.empty(4 * h, h)
    draw(Scheme.ORTHOGONAL, w, Init(h, h, blocks=4), torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    for block in w.chunk(4):
        ref = nn.init.orthogonal_(torch.empty(h, h), generator=g)
        assert torch.equal(block, ref)
        assert torch.allclose(block @ block.T, torch.eye(h), atol=1e-5)


def test_delta_orthogonal_is_an_orthogonal_centre_tap_and_the_conv_an_isometry():
    w = torch.empty(CONV)
    draw(Scheme.DELTA_ORTHOGONAL, w, Init(*_fans(CONV)), torch.Generator().manual_seed(2))
    centre = w[:, :, 1, 1].clone()
    ref = nn.init.orthogonal_(torch.empty(CONV[:2]), generator=torch.Generator().manual_seed(2))
    assert torch.equal(centre, ref)
    w[:, :, 1, 1] = 0
    assert torch.count_nonzero(w) == 0
    # out >= in: columns orthonormal, so the conv preserves every input's norm (circular padding)
    w[:, :, 1, 1] = centre
    conv = nn.Conv2d(16, 32, 3, padding=1, padding_mode="circular", bias=False)
    conv.weight.data.copy_(w)
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        assert float(conv(x).norm()) == pytest.approx(float(x.norm()), rel=1e-4)


@pytest.mark.parametrize("scheme,shape,init,closed_form", [
    (Scheme.HE_NORMAL, (512, 256), Init(256, 512, math.sqrt(2)), math.sqrt(2 / 256)),
    (Scheme.HE_UNIFORM, (512, 256), Init(256, 512, math.sqrt(2), Mode.FAN_OUT), math.sqrt(2 / 512)),
    (Scheme.XAVIER_NORMAL, (512, 256), Init(256, 512, 5 / 3), 5 / 3 * math.sqrt(2 / 768)),
    (Scheme.XAVIER_UNIFORM, (512, 256), Init(256, 512), math.sqrt(2 / 768)),
    (Scheme.LECUN_NORMAL, (512, 256), Init(256, 512), 1 / 16),
    (Scheme.ORTHOGONAL, (512, 256), Init(256, 512, 2.0), 2 / math.sqrt(512)),
    (Scheme.ORTHOGONAL, (256, 512), Init(512, 256), 1 / math.sqrt(512)),
    (Scheme.DELTA_ORTHOGONAL, (64, 32, 3, 3), Init(288, 576), 1 / math.sqrt(64 * 9)),
    (Scheme.EMBEDDING, (1000, 64), Init(1, 64), 1.0),
    (Scheme.EMBEDDING_SMALL, (1000, 64), Init(1, 64), 0.02),
])
def test_expected_std_is_the_closed_form_and_a_draw_has_it(scheme, shape, init, closed_form):
    assert expected_std(scheme, shape, init) == pytest.approx(closed_form, rel=1e-12)
    w = torch.empty(shape)
    draw(scheme, w, init, torch.Generator().manual_seed(0))
    # sampling error of a std over n values is ~1/sqrt(2n): 3% is over 10 of them here
    assert float(w.std()) == pytest.approx(closed_form, rel=0.03)


def _exec_std(text, model):
    exec(text, {"nn": nn, "model": model, "initcheck": initcheck, "torch": torch})
    return float(next(p for n, p in model.named_parameters() if n.endswith("weight")).detach().std())


@pytest.mark.parametrize("scheme,build,init", [
    (Scheme.HE_NORMAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, math.sqrt(2), nonlinearity="relu")),
    (Scheme.HE_NORMAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, 1.387, nonlinearity="leaky_relu", slope=0.2)),
    (Scheme.HE_NORMAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, 1.533, nonlinearity="gelu")),
    (Scheme.HE_UNIFORM, lambda: nn.Sequential(nn.Conv2d(32, 64, 3)), Init(288, 576, math.sqrt(2), Mode.FAN_OUT, nonlinearity="relu")),
    (Scheme.XAVIER_UNIFORM, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, 5 / 3, nonlinearity="tanh")),
    (Scheme.XAVIER_NORMAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, 1.0, nonlinearity="identity")),
    (Scheme.LECUN_NORMAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, nonlinearity="selu")),
    (Scheme.ORTHOGONAL, lambda: nn.Sequential(nn.Linear(300, 400)), Init(300, 400, 5 / 3)),
    (Scheme.ORTHOGONAL, lambda: nn.Sequential(nn.LSTM(40, 50)), Init(50, 50, blocks=4)),
    (Scheme.DELTA_ORTHOGONAL, lambda: nn.Sequential(nn.Conv2d(32, 64, 3)), Init(288, 576, 1.2)),
    (Scheme.EMBEDDING, lambda: nn.Sequential(nn.Embedding(500, 64)), Init(1, 64)),
    (Scheme.EMBEDDING_SMALL, lambda: nn.Sequential(nn.Embedding(500, 64)), Init(1, 64)),
    # grouped conv: fans from use differ from torch's shape rule, so the text is an explicit std
    (Scheme.HE_NORMAL, lambda: nn.Sequential(nn.Conv2d(64, 64, 3, groups=4)), Init(144, 144, math.sqrt(2), nonlinearity="relu")),
])
def test_call_text_execd_on_a_real_model_gives_the_promised_std(scheme, build, init):
    torch.manual_seed(0)
    model = build()
    weight = next(p for n, p in model.named_parameters() if n.endswith("weight") or "weight_hh" in n)
    name = next(n for n, p in model.named_parameters() if p is weight)
    text = call_text(scheme, "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in name.split(".")), tuple(weight.shape), init)
    nn.init.constant_(weight, 9.0)  # nothing of the old value may survive
    exec(text, {"nn": nn, "model": model, "initcheck": initcheck})
    assert float(weight.detach().std()) == pytest.approx(expected_std(scheme, tuple(weight.shape), init), rel=0.05), text


def test_call_text_names_torchs_helper_where_its_fans_and_gain_are_ours():
    assert call_text(Scheme.HE_NORMAL, "w", (400, 300), Init(300, 400, math.sqrt(2), nonlinearity="relu")) == \
        'nn.init.kaiming_normal_(w, nonlinearity="relu")'
    assert call_text(Scheme.XAVIER_UNIFORM, "w", (400, 300), Init(300, 400, 5 / 3, nonlinearity="tanh")) == \
        'nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh"))'
    assert call_text(Scheme.HE_NORMAL, "w", (64, 16, 3, 3), Init(144, 144, math.sqrt(2), nonlinearity="relu")).startswith("nn.init.normal_(w, std=")


def test_an_unknown_scheme_name_lists_the_valid_ones():
    assert Scheme.parse("orthogonal") is Scheme.ORTHOGONAL
    with pytest.raises(ValueError, match="orthogonal.*delta_orthogonal"):
        Scheme.parse("orthogonl")


class Bad(nn.Module):
    """One weight of each kind the remedies cover, each far off its scheme."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.conv = nn.Conv1d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, 10)
        for p in (self.emb.weight, self.fc1.weight, self.fc2.weight, self.conv.weight, self.head.weight):
            nn.init.uniform_(p, 0.0, 1.0)

    def forward(self, idx):
        x = torch.relu(self.fc1(self.emb(idx)))
        x = torch.tanh(self.fc2(x))
        x = torch.nn.functional.leaky_relu(self.conv(x.transpose(1, 2)), 0.2).mean(2)
        return self.head(x)


def test_every_findings_fix_execd_gives_the_layers_recommended_std():
    torch.manual_seed(0)
    model = Bad()
    analysis = analyze(model)
    layers = {lf.qualname: lf for lf in analysis.layers}
    assert {"fc1.weight", "fc2.weight", "conv.weight", "head.weight"} <= set(layers)
    for q, lf in layers.items():
        text = init_call(lf)
        exec(text, {"nn": nn, "model": model, "initcheck": initcheck})
        scheme, init = for_layer(lf)
        std = float(model.get_parameter(q).detach().std())
        assert std == pytest.approx(lf.recommended_std, rel=0.1), (q, text)
        assert expected_std(scheme, lf.shape, init) == pytest.approx(lf.recommended_std, rel=1e-9), q
    assert not [f for f in diagnose(model).findings if f.code.startswith("IC1")]


# ---- the fix's batched orthogonal draw: torch.nn.init.orthogonal_'s distribution, not its numbers


def _sphere_abs_mean(n):
    """E|x_1| for x uniform on the unit sphere in R^n: every entry of a Haar orthogonal matrix."""
    return math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)


@pytest.mark.parametrize(("rows", "cols", "gain"), [(64, 64, 1.0), (96, 40, 2.0), (40, 96, 5.0 / 3.0)])
def test_batched_orthogonal_draws_are_orthogonal_times_the_gain(rows, cols, gain):
    q = orthogonal_batch(5, rows, cols, gain, torch.Generator().manual_seed(0))
    assert q.shape == (5, rows, cols)
    k = min(rows, cols)
    gram = q.mT @ q if rows >= cols else q @ q.mT  # the orthonormal side, as orthogonal_ gives it
    assert torch.allclose(gram / gain**2, torch.eye(k).expand(5, k, k), atol=1e-5)
    ref = nn.init.orthogonal_(torch.empty(rows, cols), gain=gain)  # torch's: the same norms
    assert float(q[0].norm()) == pytest.approx(float(ref.norm()), rel=1e-5)


def test_batched_orthogonal_draws_follow_torchs_distribution_and_sign_convention():
    n, count = 6, 20000
    q = orthogonal_batch(count, n, n, 1.0, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    ref = torch.stack([nn.init.orthogonal_(torch.empty(n, n), generator=g) for _ in range(2000)])
    # Haar: every entry is a coordinate of a uniform unit vector. Without orthogonal_'s sign
    # convention (R's diagonal positive) a Householder product's first entry is always negative.
    se = (1 / n / count) ** 0.5
    for i, j in ((0, 0), (n - 1, n - 1), (2, 4)):
        assert abs(float(q[:, i, j].mean())) < 4 * se
        assert float(q[:, i, j].abs().mean()) == pytest.approx(_sphere_abs_mean(n), abs=4 * se)
        assert float(ref[:, i, j].abs().mean()) == pytest.approx(_sphere_abs_mean(n), abs=4 * (1 / n / 2000) ** 0.5)
    # both determinants, equally often, as torch's draws
    det = torch.linalg.det(q)
    assert torch.allclose(det.abs(), torch.ones(count), atol=1e-4)
    assert abs(float((det > 0).float().mean()) - 0.5) < 4 * (0.25 / count) ** 0.5


def test_batched_orthogonal_draws_are_deterministic_for_a_seed():
    a = orthogonal_batch(3, 32, 16, 1.0, torch.Generator().manual_seed(3))
    b = orthogonal_batch(3, 32, 16, 1.0, torch.Generator().manual_seed(3))
    c = orthogonal_batch(3, 32, 16, 1.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # independent matrices within a batch


def test_draw_batch_fills_linear_and_delta_orthogonal_conv_weights():
    ws = [torch.empty(48, 24) for _ in range(3)]
    draw_batch(Scheme.ORTHOGONAL, ws, 1.5, torch.Generator().manual_seed(0))
    assert all(torch.allclose(w.T @ w, 2.25 * torch.eye(24), atol=1e-5) for w in ws)
    convs = [torch.full(CONV, 7.0) for _ in range(2)]
    draw_batch(Scheme.DELTA_ORTHOGONAL, convs, 1.0, torch.Generator().manual_seed(0))
    for w in convs:
        centre = w[:, :, 1, 1].clone()
        assert torch.allclose(centre.T @ centre, torch.eye(CONV[1]), atol=1e-5)
        w[:, :, 1, 1] = 0
        assert torch.count_nonzero(w) == 0
