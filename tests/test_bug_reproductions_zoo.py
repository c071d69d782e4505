"""Patterns the torchvision/timm zoo showed (issue #9), written by hand so the default suite needs
neither library: each parameter is reported and used, and a sound init gets no error. Each
expectation is written from the physics in the test's docstring, before running the tool."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initcheck import diagnose
from initcheck.findings import Severity
from initcheck.rules.weights import THREE_SIGMA, student_t


class ScaledStdConv(nn.Conv2d):
    """timm's ScaledStdConv2d: the weight standardized per filter by batch_norm over the weight itself,
    times gain * gamma / sqrt(fan_in), inside forward."""

    def __init__(self, cin: int, cout: int, gamma: float = 1.0, gain: float = 1.0) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self.gain = nn.Parameter(torch.full((cout, 1, 1, 1), gain))
        self.scale = gamma * self.weight[0].numel() ** -0.5

    def effective(self) -> torch.Tensor:
        return F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                            weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                            eps=1e-6).reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective(), self.bias, self.stride, self.padding)


class NormFreeNet(nn.Module):
    """NF-ResNet's trunk: ScaledStdConvs with ReLU's gamma sqrt(2 / (1 - 1/pi)) = 1.71 and no norm."""

    def __init__(self) -> None:
        super().__init__()
        gamma = math.sqrt(2 / (1 - 1 / math.pi))
        self.convs = nn.ModuleList(ScaledStdConv(c, 32, gamma) for c in (3, 32, 32, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.head(x.mean((2, 3)))


def test_weight_standardized_by_batch_norm_is_reached_and_judged_on_what_the_conv_receives():
    """Physics: the conv receives the standardized weight, std gamma / sqrt(fan_in) per filter whatever
    the parameter's own draw; that (oracle: torch's batch_norm) is what the layer's std must be, and
    every weight and gain is used (no IC001)."""
    model = NormFreeNet()
    with torch.no_grad():
        model.convs[1].weight.mul_(7.0)  # the parameter's scale is standardized away
    report = diagnose(model, torch.randn(2, 3, 16, 16))
    assert "IC001" not in {f.code for f in report.findings}
    layers = {lr.qualname: lr for lr in report.layers}
    for i, conv in enumerate(model.convs):
        expected = conv.effective().detach().std().item()
        assert layers[f"convs.{i}.weight"].actual_std == pytest.approx(expected, rel=1e-3)
    assert layers["convs.1.weight"].actual_std == pytest.approx(1.71 / math.sqrt(32 * 9), rel=0.02)
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]


class CosineAttention(nn.Module):
    """Swin V2's attention: q and k L2-normalized, logits scaled by exp(clamp(logit_scale, max=ln 100))
    with logit_scale a [heads, 1, 1] parameter at ln 10."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class Affine(nn.Module):
    """ResMLP's Affine: addcmul(beta, alpha, x) with alpha, beta of shape [1, 1, dim]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


@pytest.mark.parametrize("make", [CosineAttention, lambda: nn.Sequential(Affine(32), nn.Linear(32, 8))],
                         ids=["swin_v2_logit_scale", "resmlp_affine"])
def test_parameters_read_elementwise_are_used_scales_not_unreached_weights(make):
    """A [heads, 1, 1] or [1, 1, dim] parameter that reaches the signal through elementwise functions
    (exp, clamp) and a product or addcmul has no fans: it scales or shifts, and it is used."""
    model = make()
    report = diagnose(model, torch.randn(2, 16, 32))
    assert "IC001" not in {f.code for f in report.findings}
    kinds = {p.name: p.kind for p in report.params}
    assert set(kinds) == {n for n, _ in model.named_parameters()}
    assert all(k != "unused-weight" for k in kinds.values())


class Sigmoid(nn.Module):
    """A library's own gate activation (timm's), not torch.nn.Sigmoid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sigmoid()


class EcaBlock(nn.Module):
    """An NF-Net block with ECA: conv -> relu -> conv3 whose output starts at zero (the branch's end,
    zero-initialized), an ECA gate on its spatial mean, then x + branch."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.conv1, self.conv3 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)
        nn.init.kaiming_normal_(self.conv1.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv3.weight)
        self.gate_conv, self.gate = nn.Conv1d(1, 1, 5, padding=2, bias=False), Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.relu(self.conv1(x)))
        g = self.gate(self.gate_conv(y.mean((2, 3)).view(x.shape[0], 1, -1))).view(x.shape[0], -1, 1, 1)
        return x + y * g.expand_as(y)


def test_a_gate_inside_a_zero_initialized_branch_is_not_a_vanishing_signal():
    """Physics: the gate conv reads the spatial mean of a branch that is exactly 0 at init, so its
    input-driven signal and its gradient are 0; the sigmoid then gates at 0.5 and the trunk passes
    through the skip. A gate scales a signal path, it is not one: no IC202/IC204 on it, no error."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), EcaBlock(), EcaBlock(), nn.Flatten(1), nn.LazyLinear(10))
    model(torch.randn(1, 3, 8, 8))  # materialize the head
    report = diagnose(model, torch.randn(2, 3, 8, 8))
    layers = {lr.qualname: lr for lr in report.layers}
    assert layers["1.gate_conv.weight"].activation == "sigmoid"
    assert not {(f.code, f.layer) for f in report.findings} & {("IC202", "1.gate_conv.weight"), ("IC204", "1.gate_conv.weight")}
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]


class NormFreeSqueeze(nn.Module):
    """A norm-free residual block in NF-Net's shape: six 3x3 convs at 0.3 of He's variance before
    ReLUs (inside the band IC103 allows), a squeeze-excitation (fc1 -> ReLU -> fc2 -> sigmoid) on the
    branch's spatial mean gating the branch, and the skip."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(6))
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=(0.6 / (9 * c)) ** 0.5)
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for conv in self.convs:
            y = conv(F.relu(y))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return x + y * gate


def test_the_first_layer_of_a_squeeze_excitation_is_part_of_its_gate():
    """Physics: the stem at PyTorch's default (0.41 of He's rms) and six convs at sqrt(0.3) of He's
    rms each leave the branch at about 0.41 * 0.548^6 = 0.011: fc1, on the branch's spatial mean,
    sees an input-driven signal just under 0.01 (timm's NF-Net: attn_last.fc1 at 0.008), each conv
    inside IC103's band. fc1 only feeds the sigmoid layer: it computes the gate, which then sits near
    sigmoid(bias), a fixed scale on the branch, and the trunk goes on through the skip. A gate's
    branch is no signal path (neither is fc2): no IC202/IC204 on either, no error. caused-by 1: the
    reference keeps a residual branch's own scale, which would otherwise hide the case."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), NormFreeSqueeze(), nn.Flatten(1), nn.LazyLinear(10))
    model(torch.randn(1, 3, 16, 16))  # materialize the head
    report = diagnose(model, torch.randn(2, 3, 16, 16), thresholds={"caused-by": 1.0})
    assert not [f for f in report.findings if f.code in ("IC202", "IC204") and ".fc" in f.layer], report.findings
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]
    # one conv more puts the branch's last conv under 0.01, but the skip carries the input on, so
    # the output still depends on it: no IC202 inside the branch. A stem drawn 100x too small fades
    # the stream itself, and the first layer outside the branches that it reaches is named.
    deeper = NormFreeSqueeze()
    deeper.convs.append(nn.Conv2d(16, 16, 3, padding=1, bias=False))
    nn.init.normal_(deeper.convs[-1].weight, std=(0.6 / (9 * 16)) ** 0.5)
    model[1] = deeper
    inside = diagnose(model, torch.randn(2, 3, 16, 16), thresholds={"caused-by": 1.0})
    assert not [f for f in inside.findings if f.code == "IC202"], inside.findings
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].bias.zero_()
    faded = diagnose(model, torch.randn(2, 3, 16, 16), thresholds={"caused-by": 1.0})
    assert [f.layer for f in faded.findings if f.code == "IC202"] == ["3.weight"], faded.findings


class SqueezeExcite(nn.Module):
    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


@pytest.mark.parametrize("std,flagged", [(None, False), (1.0, True)])
def test_a_squeeze_excitation_drawn_small_is_quiet_and_one_drawn_large_is_not(std, flagged):
    """Physics: at PyTorch's default (1/6 of He's variance before fc1's ReLU) the gate's input is
    small, the sigmoid sits near sigmoid(bias) and scales the path by a fixed ~0.5: nothing is lost.
    At N(0, 1) fc1 (fan_in 64) gives pre-activations of rms ~8 x the input's, fc2 then ~30: the
    sigmoid saturates and gates channels off at random. Only that one is an IC103."""
    torch.manual_seed(0)
    se = SqueezeExcite()
    if std is not None:
        for fc in (se.fc1, se.fc2):
            nn.init.normal_(fc.weight, std=std)
    conv = nn.Conv2d(3, 64, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    model = nn.Sequential(conv, nn.ReLU(), se, nn.Flatten(1), nn.Linear(64 * 64, 10))
    report = diagnose(model, torch.randn(2, 3, 8, 8))
    named = {f.layer for f in report.findings if f.code == "IC103"}
    assert bool(named & {"2.fc1.weight", "2.fc2.weight"}) is flagged, named
    if not flagged:  # fc1 is off He's band: the report says why it is quiet
        assert {lr.qualname: lr.verdict for lr in report.layers}["2.fc1.weight"] == "ok: small gate"


def test_student_t_quantile_matches_scipy():
    """Oracle: scipy's t distribution; within 3% at 3 degrees of freedom, 0.2% from 8 on."""
    st = pytest.importorskip("scipy.stats")
    for dof, tol in ((1, 1e-9), (2, 1e-9), (3, 0.03), (4, 0.01), (8, 0.002), (30, 1e-4), (1000, 1e-6)):
        assert student_t(THREE_SIGMA, dof) == pytest.approx(st.t.ppf(THREE_SIGMA, dof), rel=tol)


def test_a_five_value_filter_is_not_called_non_centered_on_a_chance_mean():
    """ECA's Conv1d(1, 1, 5) at PyTorch's default U(-0.45, 0.45): five draws whose mean is 2.5 of their
    own std happen by chance (t = 2.5 * sqrt(5) = 5.6 against Student's 6.6 at 4 degrees of freedom);
    the same ratio over 256 x 64 values is a real shift and stays an error."""
    small = nn.Sequential(nn.Conv1d(1, 1, 5, bias=False), nn.Flatten(1), nn.Linear(12, 4))
    with torch.no_grad():
        small[0].weight.copy_((-0.2 + 0.08 * torch.tensor([-1.265, -0.632, 0.0, 0.632, 1.265])).view(1, 1, 5))
    assert "IC102" not in {f.code for f in diagnose(small, torch.randn(2, 1, 16)).findings}
    big = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 4))
    with torch.no_grad():
        big[0].weight.normal_(-0.2, 0.08)
    assert ("IC102", "0.weight") in {(f.code, f.layer) for f in diagnose(big, torch.randn(2, 64)).findings}


def test_guessing_an_input_draws_each_proposed_shape_once(monkeypatch):
    """MaxViT asked for 212 random tensors (up to 2x256x224x224, 90 s) to propose 24 distinct inputs:
    a stack of 30 identical convs proposes a few shapes, and each is drawn once."""
    import initcheck.expected as expected

    drawn = []
    real = expected._randn

    def counting(*shape, generator):
        drawn.append(shape)
        return real(*shape, generator=generator)

    monkeypatch.setattr(expected, "_randn", counting)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[nn.Conv2d(16, 16, 3, padding=1) for _ in range(30)])
    found = expected.proposals(model)
    shapes = {tuple(p.inputs[0][0].shape) for p in found}
    assert len(drawn) == len(set(drawn)) == len(shapes)
    assert tuple(found[0].inputs[0][0].shape)[:2] == (2, 3)


def dcgan_discriminator(first_bias: bool = False) -> nn.Sequential:
    d = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1, bias=first_bias), nn.LeakyReLU(0.2),
                      nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
                      nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2),
                      nn.Conv2d(256, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return d


def test_dcgans_first_discriminator_conv_is_scaled_away_by_the_next_norm():
    """Physics (DCGAN's own init, N(0, 0.02) everywhere): conv1 has no bias and LeakyReLU is
    positively homogeneous, so conv1's scale c carries through conv2 (no bias either) as c, and
    the BatchNorm after conv2 divides it out (conv2's output rms ~0.06, far above the eps). 100x
    below He's variance changes nothing downstream: no IC103. With a bias on conv1 the scale no
    longer factors out (the bias dominates a 0.02 conv): the warning stays."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    quiet = diagnose(dcgan_discriminator(), x)
    assert not [f.layer for f in quiet.findings if f.code == "IC103"]
    assert quiet.layers[0].verdict == "ok: scale removed by a later norm"  # the report says why it is quiet
    loud = diagnose(dcgan_discriminator(first_bias=True), x)
    assert [f.layer for f in loud.findings if f.code == "IC103"] == ["0.weight"]
    zeroed = dcgan_discriminator(first_bias=True)
    nn.init.zeros_(zeroed[0].bias)  # a zero bias adds nothing: the scale factors out again
    assert not [f for f in diagnose(zeroed, x).findings if f.code == "IC103"]
