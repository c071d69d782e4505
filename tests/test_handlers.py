"""The signal model's op handlers, one by one, against a measured forward (torch is the oracle):
the predicted raw output rms of the weight layer after the op (signal.raw_rms: bias aside, before
any norm) beside the one a forward hook measures, in train mode, on a unit-variance batch."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initcheck.api import analyze
from initcheck.signal import raw_rms


def predicted_and_measured(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[float, float]:
    a = analyze(model, x, mode="train" if model.training else "eval")  # the forward the hook measures
    lf = next(lf for lf in a.layers if lf.name == layer)
    pred = raw_rms(a.context.actual, a.context.index, lf, model)
    mod = model.get_submodule(layer)
    got: list[float] = []

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
        if m.bias is not None:
            shape = [1] * y.ndim
            shape[1 if isinstance(m, nn.Conv2d) else -1] = -1
            y = y - m.bias.view(shape)
        got.append(float(y.pow(2).mean().sqrt()))

    h = mod.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    assert pred is not None
    return pred, got[0]


def test_dropout_in_training_scales_the_second_moment_by_one_over_keep():
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 256))
    model.train()
    pred, got = predicted_and_measured(model, torch.randn(4096, 64), "3")
    assert pred == pytest.approx(got, rel=0.1)
    model.eval()  # dropout is the identity in eval mode: the prediction drops by sqrt(2)
    pred_eval, got_eval = predicted_and_measured(model, torch.randn(4096, 64), "3")
    assert pred_eval == pytest.approx(got_eval, rel=0.1)
    assert pred / pred_eval == pytest.approx(math.sqrt(2.0), rel=0.05)


def test_global_average_keeps_the_mean_and_shrinks_the_fluctuation():
    """After BN + ReLU every channel has mean E[relu(z)] = 0.399; the spatial mean keeps it."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64))
    pred, got = predicted_and_measured(model, torch.randn(256, 3, 8, 8), "5")
    assert pred == pytest.approx(got, rel=0.2)


def test_max_pool_after_relu_takes_the_max_of_the_window():
    """No norm: the window's values share their channel's mean; the max acts on the rest."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1))
    for m in model:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    pred, got = predicted_and_measured(model, torch.randn(256, 3, 16, 16), "3")
    assert pred == pytest.approx(got, rel=0.2)


class SkipInit(nn.Module):
    """x + alpha * f(x) with alpha = 0: the branch adds nothing at init."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.branch, self.out = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 64)
        self.alpha = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.branch.weight, 0.0, 1.0)  # a huge branch, silenced by alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.out(h + 0.2 * self.alpha * F.relu(self.branch(h)))


def test_a_gate_made_of_parameters_scales_the_branch():
    pred, got = predicted_and_measured(SkipInit(), torch.randn(2048, 32), "out")
    assert pred == pytest.approx(got, rel=0.1)


def test_the_mean_term_uses_the_actual_row_sums():
    """Inputs after a ReLU have mean 0.4: a layer whose rows happen to sum far from zero gets
    m^2 (sum_i w_ji)^2 on top of n E[w^2] v."""
    model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 8))
    with torch.no_grad():
        model[3].weight.normal_(0.0, 0.02)
        model[3].weight[:4] += 0.05  # four rows with a large sum
    pred, got = predicted_and_measured(model, torch.randn(4096, 64), "3")
    assert pred == pytest.approx(got, rel=0.05)


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_normalizes_in_training_and_uses_running_statistics_in_eval(train):
    """Fresh running statistics (0, 1) make an eval-mode BatchNorm the identity: the scale of the
    conv before it (x20 here) reaches the next conv; in training it is normalized away."""
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
    with torch.no_grad():
        model[0].weight.mul_(20.0)
    model.train(train)
    pred, got = predicted_and_measured(model, torch.randn(128, 3, 12, 12), "3")
    assert pred == pytest.approx(got, rel=0.15)


class ExplicitAttention(nn.Module):
    """softmax(q k^T / sqrt(d_head)) @ v written out, then a projection: the op under test is @ v."""

    def __init__(self, d: int = 64, heads: int = 4, sdpa: bool = False) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MHA(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.attn, self.proj = nn.MultiheadAttention(d, heads, batch_first=True), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attn(x, x, x, need_weights=False)[0])


@pytest.mark.parametrize("tokens", [16, 64])
@pytest.mark.parametrize("sdpa", [False, True])
@pytest.mark.parametrize("qk_std", [None, 0.15])
def test_attention_averages_the_values_over_the_keys(tokens, sdpa, qk_std):
    """With default init the logits are small (std ~0.2): the weights are nearly uniform and the
    projection after attention sees V's rms shrunk by about sqrt(tokens) (4x and 8x here). With
    the qkv weights at N(0, 0.15), q and k have E[q^2] = 64 * 0.15^2 = 1.44 and the logit std is
    sqrt(16 * 1.44^2) / 4 = 1.44: the weights concentrate (sum p^2 ~ 0.2 over 16 keys, not 1/16)
    and V shrinks less, as the participation says. Not modelled: a key and its value come from the
    same token, so the softmax's tilt towards large logits also tilts the average of V, adding
    about E[v^2] s^2 / width to E[out^2] (measured: 30% at 64 tokens, 14% in rms): hence 20% there."""
    torch.manual_seed(0)
    model = ExplicitAttention(sdpa=sdpa)
    if qk_std is not None:
        with torch.no_grad():
            model.qkv.weight.normal_(0.0, qk_std)  # all of q, k, v: the packed layer has one scale
    pred, got = predicted_and_measured(model, torch.randn(256, tokens, 64), "proj")
    assert pred == pytest.approx(got, rel=0.15 if qk_std is None else 0.2)


@pytest.mark.parametrize("tokens", [16, 64])
def test_multihead_attention_averages_the_values_over_the_keys(tokens):
    torch.manual_seed(0)
    pred, got = predicted_and_measured(MHA(), torch.randn(256, tokens, 64), "proj")
    assert pred == pytest.approx(got, rel=0.15)


def test_participation_has_its_closed_forms_at_the_limits():
    """Uniform weights at s = 0 give exactly 1/n; small logits the annealed e^{s^2}/n; far past the
    freezing point sqrt(2 ln n) the weights condense on a few keys and sum p^2 nears 1."""
    from initcheck.signal.attention import freezing_std, participation

    assert participation(64, 0.0) == pytest.approx(1 / 64)
    assert participation(1024, 0.5) == pytest.approx(math.exp(0.25) / 1024, rel=0.03)
    assert participation(16, 4 * freezing_std(16)) > 0.7
    # causal: query i sees i + 1 keys, so the mean participation is the harmonic sum H_n / n
    assert participation(256, 0.0, causal=True) == pytest.approx(sum(1 / k for k in range(1, 257)) / 256, rel=0.05)


def test_global_average_keeps_each_channels_own_mean():
    """No norm: after a ReLU the inputs have mean 0.4 and the next conv's channels have means
    0.4 * (their row sum), one per channel: a spatial average keeps those (they are the same at
    every position) and shrinks only the fluctuation around them, as a squeeze-excite's pool does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 64))
    with torch.no_grad():
        model[2].weight[:16].add_(0.02)  # rows that sum well away from zero, half of them each way:
        model[2].weight[16:].sub_(0.02)  # the channel means spread around a global mean of zero
    pred, got = predicted_and_measured(model, torch.randn(256, 3, 16, 16), "5")
    assert pred == pytest.approx(got, rel=0.2)


class TokenTypes(nn.Module):
    """BERT's embeddings: word + token-type, the types read from a buffer of zeros, so every token
    adds the same row (half of the variance, both tables N(0, 1)); a LayerNorm keeps that shared
    half; attention averages only the other half over the keys."""

    def __init__(self) -> None:
        super().__init__()
        self.word, self.types, self.norm = nn.Embedding(1000, 64), nn.Embedding(2, 64), nn.LayerNorm(64)
        self.register_buffer("token_type_ids", torch.zeros(1, 512, dtype=torch.long), persistent=False)
        self.attn = ExplicitAttention(sdpa=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        types = self.token_type_ids[:, : ids.shape[1]].expand(ids.shape[0], -1)
        return self.attn(self.norm(self.word(ids) + self.types(types)))


def test_a_row_every_token_shares_is_not_averaged_away():
    """Predicted as V's rms * sqrt(1/2 + 1/2 * 1/16) at 16 keys, not V's rms / 4 (2.9x lower)."""
    torch.manual_seed(0)
    pred, got = predicted_and_measured(TokenTypes(), torch.randint(0, 1000, (256, 16)), "attn.proj")
    assert pred == pytest.approx(got, rel=0.15)


def test_a_collapsed_signal_keeps_its_scale_through_an_activation():
    # pre-activations of rms 1e-6 (variance 1e-12): tanh is the identity there, so the next layer
    # sees rms 1e-6 too; a cache key rounded to 9 decimals once made that variance 0
    model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Tanh(), nn.Linear(64, 64, bias=False))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model[0].weight.normal_(0.0, 1e-6 / 8.0, generator=g)
        model[2].weight.normal_(0.0, 1.0 / 8.0, generator=g)
    pred, got = predicted_and_measured(model, torch.randn(4096, 64), "2")
    assert got == pytest.approx(1e-6, rel=0.1)
    assert pred == pytest.approx(got, rel=0.1)
