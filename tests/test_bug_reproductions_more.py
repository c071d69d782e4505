"""More init-bug reproductions and sound-but-unusual inits from issue #9's patterns, each expectation
written from the physics (in the docstring) before running the tool: a bug is caught with at least a
warning on the right parameter, a sound init gets no error and no unreached weight."""

import math

import pytest
import torch
from torch import nn

from initcheck import diagnose, fix
from initcheck.findings import Severity


class RMSNormMLP(nn.Module):
    """Linear -> RMSNorm -> GELU -> Linear, no residual: the RMSNorm is on the only path."""

    def __init__(self, zero: bool = False) -> None:
        super().__init__()
        self.fc1, self.norm, self.act, self.fc2 = nn.Linear(64, 128), nn.RMSNorm(128), nn.GELU(), nn.Linear(128, 10)
        if zero:
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


class GroupNormCNN(nn.Module):
    """conv -> GroupNorm -> ReLU -> conv -> pool -> head, no residual."""

    def __init__(self, zero: bool = False) -> None:
        super().__init__()
        self.conv1, self.gn, self.conv2 = nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)
        if zero:
            nn.init.zeros_(self.gn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.gn(self.conv1(x))))
        return self.head(y.mean((2, 3)))


class TokenNet(nn.Module):
    """A class token concatenated before a LayerNorm and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 32))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.proj, self.norm, self.head = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.proj(x)], dim=1)
        return self.head(self.norm(t)[:, 0])


class LSTMNet(nn.Module):
    """An LSTM language-model trunk: embedding -> LSTM(128) -> head."""

    def __init__(self, unit_normal: bool = False) -> None:
        super().__init__()
        self.emb, self.lstm, self.head = nn.Embedding(100, 128), nn.LSTM(128, 128, batch_first=True), nn.Linear(128, 100)
        if unit_normal:
            for name, p in self.lstm.named_parameters():
                if "weight" in name:
                    nn.init.normal_(p, 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.emb(x))[0])


def _zero_rms():
    return RMSNormMLP(zero=True)


def _zero_gn():
    return GroupNormCNN(zero=True)


def _nan_token():
    m = TokenNet()
    with torch.no_grad():
        m.cls_token[0, 0, 3] = float("nan")
    return m


def _huge_bias():
    m = RMSNormMLP()
    with torch.no_grad():
        m.fc1.bias[5] = 1e18
    return m


def _huge_norm_weight():
    m = TokenNet()
    with torch.no_grad():
        m.norm.weight.fill_(1e18)
    return m


X_MLP, X_IMG, X_TOK, X_IDS = torch.randn(4, 64), torch.randn(2, 3, 16, 16), torch.randn(2, 8, 16), torch.randint(0, 100, (2, 12))

BUGS = [
    # RMSNorm's output is weight * x / rms(x): a zero weight outputs 0 whatever the input, on the only path
    (_zero_rms, X_MLP, ("IC106", "norm.weight")),
    # GroupNorm with gamma 0 outputs its shift (0): the ReLU and conv2 see a constant
    (_zero_gn, X_IMG, ("IC106", "gn.weight")),
    # one NaN in the class token makes every output and gradient NaN at the first step
    (_nan_token, X_TOK, ("IC104", "cls_token")),
    # a bias of 1e18 is no init: fc1's unit 5 outputs 1e18, the RMSNorm and everything after overflow in fp16/bf16
    (_huge_bias, X_MLP, ("IC105", "fc1.bias")),
    # a norm scale of 1e18 (uninitialized memory after to_empty) multiplies every normalized unit by 1e18
    (_huge_norm_weight, X_TOK, ("IC105", "norm.weight")),
]


@pytest.mark.parametrize("make,inputs,expected", BUGS, ids=[b[0].__name__.lstrip("_") for b in BUGS])
def test_bug_is_caught_on_the_right_parameter(make, inputs, expected):
    report = diagnose(make(), inputs)
    got = {(f.code, f.layer) for f in report.findings if f.severity >= Severity.WARNING}
    assert expected in got, sorted(got)


def test_unit_normal_lstm_saturates_its_gates():
    """N(0, 1) LSTM weights with 128 inputs and 128 hidden units: a gate's pre-activation sums 128
    input terms of variance E[x^2] (the embedding's N(0, 1): 1) plus the recurrent ones, so its rms is
    over sqrt(128) = 11, far past tanh/sigmoid's knee (3): IC203 on the LSTM."""
    report = diagnose(LSTMNet(unit_normal=True), X_IDS)
    assert any(f.code == "IC203" and f.layer.startswith("lstm.") for f in report.findings), \
        sorted((f.code, f.layer) for f in report.findings)


def _spectral_discriminator():
    sn = nn.utils.parametrizations.spectral_norm
    return nn.Sequential(sn(nn.Linear(64, 256)), nn.LeakyReLU(0.2), sn(nn.Linear(256, 256)), nn.LeakyReLU(0.2),
                         sn(nn.Linear(256, 1)))


class ZeroGammaResidual(nn.Module):
    """Two residual blocks conv -> GN -> ReLU -> conv -> GN whose last GroupNorm starts at gamma 0
    (zero-init of the branch's last norm, Goyal et al. 2017): each block starts as the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
                                                  nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32)) for _ in range(2))
        for b in self.blocks:
            nn.init.kaiming_normal_(b[0].weight, nonlinearity="relu")
            nn.init.zeros_(b[4].weight)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(x + b(x))
        return self.head(x.mean((2, 3)))


SOUND = [
    # spectral norm divides each weight by its top singular value: gain <= 1 per layer, three layers
    # with leaky ReLU keep the signal within ~(1/2)^3 of the input's; the effective weight is judged
    (_spectral_discriminator, torch.randn(4, 64)),
    # PyTorch's LSTM default U(-1/sqrt(H), 1/sqrt(H)): gate pre-activation variance (I + H) / (3H) E[x^2] ~ 0.7
    (LSTMNet, X_IDS),
    # zero gamma on the last norm of each residual branch is the deliberate identity start
    (ZeroGammaResidual, X_IMG),
    # RMSNorm at its default weight 1 and PyTorch's default Linear init: a sound small MLP
    (RMSNormMLP, X_MLP),
    # a trunc_normal(0.02) class token concatenated before a LayerNorm
    (TokenNet, X_TOK),
]


@pytest.mark.parametrize("make,inputs", SOUND, ids=["spectral_norm", "lstm_default", "zero_gamma_residual",
                                                    "rmsnorm_default", "cls_token"])
def test_sound_init_gets_no_error(make, inputs):
    model = make()
    report = diagnose(model, inputs)
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]
    assert "IC001" not in {f.code for f in report.findings}, [f.message for f in report.findings if f.code == "IC001"]
    assert {p.name for p in report.params} == {n for n, _ in model.named_parameters()}


class UntiedLM(nn.Module):
    """Embedding(33000, 256) -> LayerNorm -> untied Linear(256, 33000) head, all at N(0, 0.02)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.norm, self.head = nn.Embedding(33000, 256), nn.LayerNorm(256), nn.Linear(256, 33000, bias=False)
        nn.init.normal_(self.emb.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.emb(x)))


def test_a_large_vocabulary_head_at_002_is_quiet():
    """After the LayerNorm rms(x) = 1, so the logits have rms 0.02 * sqrt(256) = 0.32: a near-uniform
    softmax over 33k words, the first loss at ln(33000); Xavier's variance for 256 -> 33000 is tiny,
    but nothing is harmed: no error and no IC103 on the head."""
    report = diagnose(UntiedLM(), torch.randint(0, 33000, (2, 8)))
    assert report.ok and ("IC103", "head.weight") not in {(f.code, f.layer) for f in report.findings}


class MatmulReLU(nn.Module):
    """relu(x @ W1) @ W2 with raw parameters (pygcn's style), W1 at He for ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.empty(64, 128)), nn.Parameter(torch.empty(128, 10))
        nn.init.normal_(self.w1, std=(2 / 64) ** 0.5)
        nn.init.normal_(self.w2, std=(1 / 128) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1) @ self.w2


def test_an_activation_after_a_raw_matmul_is_followed():
    """x @ W1 then a ReLU: W1's activation is the ReLU (not identity), and He's std for fan_in 64 is
    what it has, so its variance ratio is 1 within sampling noise."""
    layers = {lr.qualname: lr for lr in diagnose(MatmulReLU(), torch.randn(4, 64)).layers}
    assert layers["w1"].activation == "relu"
    assert layers["w1"].variance_ratio == pytest.approx(1.0, rel=0.1)


def test_a_default_init_is_not_labelled_as_the_002_transformer_init():
    """PyTorch's Linear default is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std 1/sqrt(3 * 64) = 0.072 for
    fan_in 64, 3.6x the 0.02 of a transformer init: no layer may claim normal(0, 0.02)."""
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))
    report = diagnose(model, torch.randn(4, 64))
    assert not [lr.convention for lr in report.layers if lr.convention and "0.02" in lr.convention]


class PaddedBag(nn.Module):
    """nn.Embedding(1000, 128, padding_idx=0) whose table is then drawn N(0, 0.02) by a custom init,
    overwriting the zero row: the padding token gets no gradient, so its vector (rms 0.02) is added
    unchanged at every padded position for all of training."""

    def __init__(self, redraw: bool = True) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(1000, 128, padding_idx=0), nn.Linear(128, 10)
        if redraw:
            nn.init.normal_(self.emb.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(1))


class BlanketNormalBN(nn.Module):
    """`for m in model.modules(): nn.init.normal_(m.weight)` reaching the BatchNorms: gamma ~ N(0, 1),
    a draw around 0, so each channel starts at a random gain and sign (8% of them under 0.1 in
    magnitude). `mean` and `std`: DCGAN's N(1, 0.02), timm's RepVGG N(0.1, 0.1) (three branches summed,
    each small) or PyTorch < 1.2's U(0, 1) default are sound."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, uniform: bool = False) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.Linear(32, 10)
        if uniform:
            nn.init.uniform_(self.bn.weight, 0.0, 1.0)
        else:
            nn.init.normal_(self.bn.weight, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_padding_row_drawn_over_is_flagged_and_the_fix_zeroes_it():
    model = PaddedBag()
    report = diagnose(model, torch.randint(0, 1000, (2, 12)))
    f = next(f for f in report.findings if f.code == "IC108")
    assert f.layer == "emb.weight" and "row 0 (padding_idx)" in f.message and f.severity is Severity.WARNING
    before = model.emb.weight[1:].clone()
    after = fix(model)
    assert torch.count_nonzero(model.emb.weight[0]) == 0
    assert torch.equal(model.emb.weight[1:], before)  # only the row: the table's draw is the user's
    assert "IC108" not in {g.code for g in after.findings}


def test_an_embedding_built_with_a_padding_row_is_quiet():
    assert "IC108" not in {f.code for f in diagnose(PaddedBag(redraw=False), torch.randint(0, 1000, (2, 12))).findings}


def test_a_redrawn_embedding_keeps_its_padding_row_at_zero():
    """The static fix redraws a flagged embedding over its whole table (N(0, 1) here, far off its
    scheme); the padding row goes back to zero with it, so the fix leaves no IC108 behind."""
    model = PaddedBag(redraw=False)
    nn.init.normal_(model.emb.weight, std=50.0)
    with torch.no_grad():
        model.emb.weight[0].zero_()
    fix(model)
    assert torch.count_nonzero(model.emb.weight[0]) == 0


@pytest.mark.parametrize("kwargs, flagged", [({}, True), ({"mean": 1.0, "std": 0.02}, False), ({"uniform": True}, False),
                                             ({"mean": 0.1, "std": 0.1}, False)],
                         ids=["normal_0_1", "dcgan_1_0.02", "uniform_0_1", "repvgg_0.1_0.1"])
def test_a_norm_scale_drawn_around_zero_is_flagged(kwargs, flagged):
    report = diagnose(BlanketNormalBN(**kwargs), X_IMG)
    got = [f for f in report.findings if f.code == "IC106" and f.layer == "bn.weight"]
    assert bool(got) == flagged, [f.message for f in report.findings]
    if flagged:
        assert "drawn around 0" in got[0].message and got[0].fix == "nn.init.ones_(model.bn.weight)"


class BiasedLSTM(nn.Module):
    """An LSTM whose biases are set by a blanket `constant_(bias, 5)`: each gate unit adds
    b_ih + b_hh = 10 whatever its input. The cell candidate (tanh) sits at tanh(10) = 1 - 4e-9, no
    gradient through it; its weights cannot be blamed (the recommended schemes keep the biases).
    `chrono`: Tallec & Ollivier's chrono init instead, forget biases log(U(1, T - 1)) up to 4.1 and
    input biases their negatives, the candidate's 0: gates open or shut by design, sound."""

    def __init__(self, chrono: bool = False, forget_one: bool = False) -> None:
        super().__init__()
        self.emb, self.lstm, self.head = nn.Embedding(100, 64), nn.LSTM(64, 128, batch_first=True), nn.Linear(128, 10)
        h = 128
        with torch.no_grad():
            if chrono:
                forget = torch.log(torch.empty(h).uniform_(1.0, 63.0))
                for b in (self.lstm.bias_ih_l0, self.lstm.bias_hh_l0):
                    b.zero_()
                self.lstm.bias_ih_l0[h:2 * h] = forget
                self.lstm.bias_ih_l0[:h] = -forget
            elif forget_one:
                self.lstm.bias_ih_l0.zero_()
                self.lstm.bias_hh_l0.zero_()
                self.lstm.bias_ih_l0[h:2 * h] = 1.0
            else:
                self.lstm.bias_ih_l0.fill_(5.0)
                self.lstm.bias_hh_l0.fill_(5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.emb(x))[0][:, -1])


class BiasedTanh(nn.Module):
    """Linear -> tanh with a bias drawn N(0, 5): rms 5 by itself, past tanh's knee (3) on most units."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)
        nn.init.xavier_uniform_(self.fc1.weight, gain=nn.init.calculate_gain("tanh"))
        nn.init.normal_(self.fc1.bias, std=5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def test_a_bias_that_saturates_a_tanh_by_itself_is_blamed_and_zeroed():
    torch.manual_seed(0)
    report = diagnose(BiasedTanh(), X_MLP)
    assert ("IC203", "fc1.bias") in {(f.code, f.layer) for f in report.findings}
    model = BiasedLSTM()
    report = diagnose(model, X_IDS)
    f = next(f for f in report.findings if f.code == "IC203" and f.layer == "lstm.bias_ih_l0")
    assert "cell candidate" in f.message and "rms 10" in f.message
    # the weights are PyTorch's default, whose gates are in range: the bias is blamed, not them
    assert not [g for g in report.findings if g.code == "IC103"], report.findings
    assert {p.name: p.kind for p in report.params}["lstm.bias_hh_l0"] == "bias"  # not "other": a recurrent bias
    after = fix(model)
    assert not [g for g in after.findings if g.code == "IC203"], after.findings
    with torch.no_grad():
        assert float(model.lstm.bias_ih_l0[256:384].abs().max()) == 0.0 == float(model.lstm.bias_hh_l0[256:384].abs().max())
        assert float(model.lstm.bias_ih_l0[:256].min()) == 5.0  # the sigmoid gates' biases are the user's


@pytest.mark.parametrize("kwargs", [{"chrono": True}, {"forget_one": True}], ids=["chrono", "forget_bias_1"])
def test_gate_bias_conventions_are_not_saturation(kwargs):
    torch.manual_seed(0)
    report = diagnose(BiasedLSTM(**kwargs), X_IDS)
    assert report.ok and "IC203" not in {f.code for f in report.findings}, [f.message for f in report.findings]


class PriorHead(nn.Module):
    """RetinaNet's classification head: a sigmoid output whose bias starts at -log((1 - pi) / pi) =
    -4.6 for pi = 0.01 (every anchor starts as background), and a highway layer whose carry gate's
    bias starts at -3 (mostly carry): sigmoid biases that set an opening on purpose, not saturation."""

    def __init__(self) -> None:
        super().__init__()
        self.h, self.t, self.cls = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 20)
        nn.init.constant_(self.t.bias, -3.0)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log(99.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.t(x))
        x = gate * torch.relu(self.h(x)) + (1 - gate) * x
        return torch.sigmoid(self.cls(x))


def test_a_sigmoid_bias_that_sets_an_opening_is_not_saturation():
    report = diagnose(PriorHead(), X_MLP)
    assert report.ok and "IC203" not in {f.code for f in report.findings}, [f.message for f in report.findings]
