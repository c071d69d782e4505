"""The signal model's ops the real torchvision/timm zoo taught it, one by one, against a measured
forward (torch is the oracle): the predicted raw output rms of the weight layer after the op
(signal.raw_rms: bias aside, before any norm) beside the one a forward hook measures, in train mode."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from initcheck import diagnose
from initcheck.api import analyze
from initcheck.signal import raw_rms


def predicted_and_measured(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[float, float]:
    model.train()
    a = analyze(model, x)
    lf = next(lf for lf in a.layers if lf.name == layer)
    pred = raw_rms(a.context.actual, a.context.index, lf, model)
    got: list[float] = []

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
        if getattr(m, "bias", None) is not None:
            shape = [1] * y.ndim
            shape[1 if isinstance(m, nn.modules.conv._ConvNd) else -1] = -1
            y = y - m.bias.view(shape)
        got.append(float(y.pow(2).mean().sqrt()))

    h = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad(), torch.random.fork_rng():
            model(x)
    finally:
        h.remove()
    assert pred is not None
    return pred, got[0]


def assert_modelled(model: nn.Module, x: torch.Tensor, layer: str, rel: float):
    """No op of the model passed through as identity, and `layer`'s predicted raw rms within `rel`
    of a measured forward; (the report, the prediction)."""
    report = diagnose(model, x)
    assert not any("no handler" in n for n in report.notes), report.notes
    pred, got = predicted_and_measured(model, x, layer)
    assert pred == pytest.approx(got, rel=rel)
    return report, pred


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's fused norm + activation: one module, so the trace sees one norm op."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def test_a_norm_with_its_activation_inside_applies_it():
    """BN in train mode gives N(0, 1) per channel; the ReLU inside keeps E[relu(z)^2] = 1/2 of it,
    so a 1x1 conv of fan_in n with E[w^2] = 1/n after it has rms sqrt(1/2 + mean part), not 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), BatchNormAct2d(64),
                          nn.Conv2d(64, 256, 1, bias=False))
    nn.init.normal_(model[2].weight, std=64 ** -0.5)
    pred, got = predicted_and_measured(model, torch.randn(32, 3, 16, 16), "2")
    assert pred == pytest.approx(got, rel=0.1)
    assert got < 0.95  # the activation matters: a bare norm would give rms 1


class TalkingHeads(nn.Module):
    """CaiT's talking-heads attention: a Linear over the heads mixes the softmax weights themselves."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj_w = nn.Linear(heads, heads)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("tokens", [16, 128])
def test_a_layer_reading_softmax_weights_sees_probabilities(tokens):
    """The weights of n keys sum to one: mean 1/n, E[p^2] from 1/n^2 up. A layer on them is ~1/n
    in rms, not 1 (CaiT was 480x over); the layer after the attention follows."""
    torch.manual_seed(0)
    model = TalkingHeads()
    x = torch.randn(16, tokens, 64)
    pred, got = predicted_and_measured(model, x, "proj_w")
    assert pred == pytest.approx(got, rel=0.3)
    assert got < 2.0 / tokens
    pred, got = predicted_and_measured(model, x, "proj")
    assert pred == pytest.approx(got, rel=0.3)


class Untraceable(nn.Module):
    """A net fx cannot trace (a branch on the data), so the recorded pass gives the graph its shapes."""

    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 1)
        self.norm = nn.BatchNorm2d(64)
        self.tail = tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.abs().sum() > 0):
            x = self.norm(self.stem(x))
        return self.tail(x)


def test_zero_padding_on_a_small_map_reads_fewer_taps():
    """A 7x7 depthwise conv (padding 3) on a 4x4 map: per axis 18 of 28 taps fall inside, so
    E[y^2] is (18/28)^2 = 0.41 of the unpadded prediction (ConvNeXt's last stage at 128 px)."""
    torch.manual_seed(0)
    model = Untraceable(nn.Sequential(nn.Conv2d(64, 64, 7, padding=3, groups=64)))
    pred, got = predicted_and_measured(model, torch.randn(32, 3, 4, 4), "tail.0")
    assert pred == pytest.approx(got, rel=0.1)


def test_global_average_counts_the_positions_from_the_shapes():
    """After BN every channel is N(0, 1) over the batch's positions, which the 1x1 stem keeps
    independent: the mean over a 32x32 map has variance 1/1024, not 1/16 (a fixed guess), so the
    conv after it (a squeeze-excitation's reduction) is 8x smaller in rms than the guess says."""
    torch.manual_seed(0)
    model = Untraceable(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(64, 16, 1)))
    pred, got = predicted_and_measured(model, torch.randn(16, 3, 32, 32), "tail.1")
    assert pred == pytest.approx(got, rel=0.15)


def test_a_norm_behind_a_tiny_signal_keeps_var_over_var_plus_eps():
    """MobileNetV3's depthwise conv at kaiming fan_out (fan 576*25) gives a per-channel variance of
    ~6e-4; BatchNorm's eps of 1e-3 then leaves var / (var + eps) = 0.37 of the unit variance, not 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64, eps=1e-3),
                          nn.Conv2d(64, 64, 1, bias=False))
    nn.init.normal_(model[0].weight, std=0.005)  # input variance 27 * 2.5e-5 = 6.75e-4 per channel
    nn.init.normal_(model[2].weight, std=64 ** -0.5)
    pred, got = predicted_and_measured(model, torch.randn(32, 3, 16, 16), "2")
    assert pred == pytest.approx(got, rel=0.1)
    assert got < 0.75  # sqrt(0.4): the eps matters


class SplitAttention(nn.Module):
    """ResNeSt's split attention (radix 2): the splits summed, pooled, a softmax over the radix
    weighting each split, the weighted splits summed again."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.c = c
        self.conv = nn.Conv2d(3, 2 * c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(2 * c)
        self.fc1 = nn.Conv2d(c, 16, 1)
        self.fc2 = nn.Conv2d(16, 2 * c, 1)
        self.conv3 = nn.Conv2d(c, 64, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = torch.relu(self.bn0(self.conv(x))).reshape(b, 2, self.c, x.shape[2], x.shape[3])
        gap = x.sum(dim=1).mean((2, 3), keepdim=True)
        attn = self.fc2(torch.relu(self.fc1(gap))).view(b, 2, self.c, 1, 1).softmax(dim=1)
        return self.conv3((x * attn).sum(dim=1))


def test_a_sum_over_splits_adds_them():
    """Two post-ReLU splits summed: mean 2 * 0.399, variance 2 * 0.34 (different channels,
    independent); the softmax over the radix weighs each about 1/2, and their sum is one split again."""
    torch.manual_seed(0)
    model = SplitAttention()
    x = torch.randn(32, 3, 8, 8)
    for layer in ("fc1", "conv3"):
        pred, got = predicted_and_measured(model, x, layer)
        assert pred == pytest.approx(got, rel=0.2), layer


def test_a_concatenation_of_parameters_alone_carries_no_signal():
    # BEiT builds its qkv bias as cat(q_bias, zeros buffer, v_bias): no data operand at all
    class Beit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(16, 48, bias=False)
            self.q_bias, self.v_bias = nn.Parameter(torch.zeros(16)), nn.Parameter(torch.zeros(16))
            self.register_buffer("k_bias", torch.zeros(16), persistent=False)
            self.out = nn.Linear(48, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            return self.out(F.linear(x, self.qkv.weight, bias))

    report = diagnose(Beit(), torch.randn(8, 16))
    assert {f"{lr.name}.{lr.param}" for lr in report.layers} == {"qkv.weight", "out.weight"}
    assert report.ok



class ConvAttention(nn.Module):
    """guided-diffusion's QKVAttentionLegacy: qkv from a 1x1 conv, q and k each scaled by
    1/sqrt(sqrt(ch)), logits and the weighted sum written as einsums ("bct,bcs->bts",
    "bts,bcs->bct"), or (`einsum=False`) as the same products with matmul."""

    def __init__(self, c: int = 64, einsum: bool = True) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Conv1d(c, 3 * c, 1), nn.Conv1d(c, c, 1)
        self.einsum = einsum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        s = q.shape[1] ** -0.25
        if self.einsum:
            w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
            return self.proj(torch.einsum("bts,bcs->bct", w, v))
        w = torch.softmax((q * s).transpose(1, 2) @ (k * s), dim=-1)
        return self.proj((w @ v.transpose(1, 2)).transpose(1, 2))


def test_an_einsum_of_two_activations_is_the_product_it_writes():
    """The einsums contract what the matmuls contract (c, then s): the same predictions forward and
    backward, no op passed through as identity, and the prediction holds against a measured forward."""
    torch.manual_seed(0)
    ein = ConvAttention()
    mat = ConvAttention(einsum=False)
    mat.load_state_dict(ein.state_dict())
    x = torch.randn(16, 64, 48)
    a, b = diagnose(ein, x), diagnose(mat, x)
    assert not any("no handler" in n for n in a.notes), a.notes
    for la, lb in zip(a.layers, b.layers):
        assert la.predicted_rms == pytest.approx(lb.predicted_rms, rel=1e-9)
        assert la.grad_rms == pytest.approx(lb.grad_rms, rel=1e-9)
    pred, got = predicted_and_measured(ein, x, "proj")
    assert pred == pytest.approx(got, rel=0.15)


class Reparameterized(nn.Module):
    """A VAE's sampling step: z = mu + eps * exp(logvar / 2), eps = torch.randn_like(mu) (unit
    Gaussian noise, independent of everything), then a decoder layer."""

    def __init__(self) -> None:
        super().__init__()
        self.mu, self.logvar, self.dec = nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(32, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.mu(x), self.logvar(x)
        return self.dec(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar))


def test_noise_drawn_in_forward_is_unit_gaussian_noise():
    torch.manual_seed(0)
    assert_modelled(Reparameterized(), torch.randn(4096, 64), "dec", rel=0.1)


class InlineRMSNorm(nn.Module):
    """An RMS norm written out between two layers, in the three spellings code uses: StyleGAN's
    pixel norm `x * rsqrt(mean(x^2) + eps)`, LLaMA's `x.to(float32)` then `pow(2).mean(-1)`, and a
    division by `sqrt(mean(x * x))`. fc1 is drawn 3x too large: a norm removes that, so fc2 sees unit
    E[x^2] and outputs rms sqrt(64 * E[w^2]) whatever fc1's scale."""

    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False)
        with torch.no_grad():
            self.fc1.weight.mul_(3 * 3 ** 0.5)  # std 3 / sqrt(64): PyTorch's default is 1 / sqrt(3 * 64)
        self.spelling = spelling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.spelling == "pixel":
            h = h * torch.rsqrt(h.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        elif self.spelling == "llama":
            h = h.to(torch.float32)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        else:
            h = h / torch.sqrt((h * h).mean(-1, keepdim=True))
        return self.fc2(torch.tanh(h))


@pytest.mark.parametrize("spelling", ["pixel", "llama", "divide"])
def test_an_rms_norm_written_out_is_a_norm(spelling):
    torch.manual_seed(0)
    report, _ = assert_modelled(InlineRMSNorm(spelling), torch.randn(2048, 64), "fc2", rel=0.1)
    assert report.layers[0].normalized  # fc1's scale is removed: not blamed


class GlobalMaxFeature(nn.Module):
    """PointNet: per-point features (a 1x1 conv, BatchNorm), the max over all 256 points
    (`torch.max(x, 2, keepdim=True)[0]`), then a Linear. The max of 256 unit normals has
    E[max^2] about 8.1 (moments.max_gain), so fc sees E[x^2] about 8, not 1: at PyTorch's default
    (E[w^2] = 1/(3 * 128)) it outputs rms about sqrt(8.1 / 3) = 1.6."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.Linear(128, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        return self.fc(torch.max(h, 2, keepdim=True)[0].view(-1, 128))


def test_a_max_over_a_whole_dimension_is_a_max_pool_of_that_size():
    torch.manual_seed(0)
    _, pred = assert_modelled(GlobalMaxFeature(), torch.randn(64, 3, 256), "fc", rel=0.2)
    assert pred > 1.3  # the max's gain, which a pass-through (rms ~0.58) leaves out


class RotaryAttention(nn.Module):
    """Meta's llama attention: q and k rotated by RoPE, written through view_as_complex (each pair of
    channels times a unit complex number: a rotation, the scale unchanged), view_as_real and
    type_as, then causal SDPA and an output projection."""

    def __init__(self, d: int = 64, heads: int = 4, ctx: int = 32) -> None:
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.heads = heads
        angles = torch.outer(torch.arange(ctx).float(), 1.0 / 10000 ** (torch.arange(0, d // heads, 2).float() * heads / d))
        self.register_buffer("freqs", torch.polar(torch.ones_like(angles), angles))

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(z * self.freqs.view(1, z.shape[1], 1, z.shape[-1])).flatten(3).type_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (w(x).view(b, n, self.heads, -1) for w in (self.wq, self.wk, self.wv))
        q, k = self.rotate(q), self.rotate(k)
        o = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, n, d))


def test_a_rotary_embedding_is_a_rotation():
    torch.manual_seed(0)
    assert_modelled(RotaryAttention(), torch.randn(64, 32, 64), "wo", rel=0.15)


class NearestCode(nn.Module):
    """VQ-VAE's quantizer: squared distances (pow(2)) to a codebook, argmin, a lookup of the nearest
    code with a straight-through estimator, then a decoder layer. The indices carry no signal; the
    decoder reads codebook rows."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.codebook, self.dec = nn.Linear(16, 8), nn.Embedding(32, 8), nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        if not torch.isfinite(z).all():  # a test on the data (fx cannot trace it: the recorded pass runs)
            raise ValueError("non-finite encoding")
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.weight.t() + self.codebook.weight.pow(2).sum(1)
        q = self.codebook(dist.argmin(1))
        return self.dec(z + (q - z).detach())


def test_indices_and_powers_are_no_unhandled_ops():
    report = diagnose(NearestCode(), torch.randn(64, 16))
    assert not any("no handler" in n for n in report.notes), report.notes


class RepeatedSquares(nn.Module):
    """fc1 at N(0, 1) with bias 10 (E[y^2] = 164), then h = h * (h + 1) ten times: E[h^2] squares at each step, past
    float's range by the fifth (the real forward is inf in float32 too), then fc2. Python's float **
    raises OverflowError where * gives inf: a selective scan with N(0, 1) weights (Mamba) crashed
    diagnose with it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 8)
        nn.init.normal_(self.fc1.weight, 0.0, 1.0)
        nn.init.constant_(self.fc1.bias, 10.0)  # a mean of 10: the product's mean squares too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        for _ in range(10):
            h = h * (h + 1.0)
        return self.fc2(h)


def test_a_signal_past_the_float_range_is_an_explosion_not_a_crash():
    report = diagnose(RepeatedSquares(), torch.randn(8, 64))
    assert any(f.code == "IC201" for f in report.findings)
    assert not any("nan" in f.message for f in report.findings)


class WrittenOutGELU(nn.Module):
    """minGPT's new_gelu written in forward, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with
    torch.pow(x, 3.0), and a square as x * x, between two layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = 0.5 * h * (1.0 + torch.tanh(0.7978845608 * (h + 0.044715 * torch.pow(h, 3.0))))
        s = self.fc2(h)
        return self.fc3(s * s)


def test_a_square_and_a_whole_float_power_are_modelled():
    """x * x is x^2 (E[x^4] = 3 E[x^2]^2 for a Gaussian), not x times an independent copy of 1; a
    float exponent 3.0 is the whole power 3."""
    torch.manual_seed(0)
    model, x = WrittenOutGELU(), torch.randn(4096, 64)
    for layer in ("fc2", "fc3"):
        assert_modelled(model, x, layer, rel=0.2)


class GatedConv(nn.Module):
    """Conformer's convolution module: a pointwise conv to 2C, F.glu along the channels (a * sigmoid(b)),
    then a pointwise conv; and the same with nn.GLU."""

    def __init__(self, module: bool = False) -> None:
        super().__init__()
        self.pw1, self.pw2 = nn.Conv1d(64, 128, 1), nn.Conv1d(64, 64, 1)
        self.glu = nn.GLU(dim=1) if module else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw1(x)
        return self.pw2(self.glu(h) if self.glu is not None else F.glu(h, dim=1))


@pytest.mark.parametrize("module", [False, True])
def test_a_gated_linear_unit_multiplies_one_half_by_the_others_sigmoid(module):
    torch.manual_seed(0)
    assert_modelled(GatedConv(module), torch.randn(32, 64, 50), "pw2", rel=0.1)


class SliceWrite(nn.Module):
    """h[:, :32] = 10 * h[:, :32] between two layers: an in-place write that later code reads
    through the same tensor (MViTv2 adds its relative-position terms to the logits so). fc2 sees half
    of its inputs 10x larger: E[x^2] = (1 + 100) / 2 of fc1's. `recorded`: a test on the data makes fx
    give up, so the recorded pass sees the write (Tensor.__setitem__)."""

    def __init__(self, recorded: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64, bias=False), nn.Linear(64, 64)
        self.recorded = recorded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.recorded and not torch.isfinite(h).all():
            raise ValueError("non-finite")
        h[:, :32] = 10.0 * h[:, :32]
        return self.fc2(h)


@pytest.mark.parametrize("recorded", [False, True])
def test_an_in_place_write_reaches_the_layers_that_read_the_tensor_after_it(recorded):
    torch.manual_seed(0)
    assert_modelled(SliceWrite(recorded), torch.randn(2048, 64), "fc2", rel=0.1)


class AlibiAttention(nn.Module):
    """BLOOM's attention: logits = baddbmm(bias, q, k^T, beta=1, alpha=1/sqrt(d)), then softmax and
    bmm with v. The product is a contraction over the head dim like q @ k^T, times alpha^2 in
    E[.^2]; the bias adds to it (zero here: a constant built in forward is not evaluated). Without
    the contraction the logits would pass as q itself, 16x too spread for 16 head dims."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.dense = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = (z.reshape(b, t, self.heads, hd).transpose(1, 2).reshape(b * self.heads, t, hd)
                   for z in self.qkv(x).split(d, -1))
        bias = torch.zeros(b * self.heads, 1, t, dtype=x.dtype)
        logits = torch.baddbmm(bias, q, k.transpose(1, 2), beta=1.0, alpha=1 / math.sqrt(hd))
        out = torch.bmm(F.softmax(logits, -1), v)
        return self.dense(out.reshape(b, self.heads, t, hd).transpose(1, 2).reshape(b, t, d))


def test_baddbmm_logits_are_a_scaled_product_plus_the_bias():
    torch.manual_seed(0)
    assert_modelled(AlibiAttention(), torch.randn(8, 32, 64), "dense", rel=0.1)


class MessagePassing(nn.Module):
    """A graph network's sum aggregation: every node receives `degree` neighbours' messages,
    index_add_ (or scatter_add_) into zeros. The messages are independent with mean ~0, so the sum
    has `degree` times their variance: relu(sum) then lin2 sees E[x^2] = degree E[h^2] / 2."""

    def __init__(self, scatter: bool = False, nodes: int = 200, degree: int = 8, d: int = 32) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, d, bias=False), nn.Linear(d, d)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("src", torch.randint(0, nodes, (nodes * degree,), generator=g))
        self.register_buffer("dst", torch.arange(nodes).repeat_interleave(degree))
        self.scatter = scatter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin1(x)[self.src]
        agg = torch.zeros(x.shape[0], h.shape[1], dtype=x.dtype)
        if self.scatter:
            agg.scatter_add_(0, self.dst[:, None].expand(-1, h.shape[1]), h)
        else:
            agg.index_add_(0, self.dst, h)
        return self.lin2(torch.relu(agg))


@pytest.mark.parametrize("scatter", [False, True])
def test_a_scatter_add_sums_each_rows_messages(scatter):
    torch.manual_seed(0)
    _, pred = assert_modelled(MessagePassing(scatter), torch.randn(200, 32), "lin2", rel=0.1)
    assert pred > 0.3  # not the zeros the messages were added into


class TopValues(nn.Module):
    """x.topk(16) of 256 values of N(0, v): the top 6% of a Gaussian sample, about 1.9 sd each, so
    E[y^2] is ~3.7x E[x^2], where an identity would say 1x."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 256), nn.Linear(16, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x).topk(16, dim=-1)[0])


def test_topk_values_are_the_top_order_statistics():
    torch.manual_seed(0)
    assert_modelled(TopValues(), torch.randn(512, 64), "fc2", rel=0.1)


class MaskedByData(nn.Module):
    """Masks the data make: where(h > 0, h, 0.01 h) (a leaky ReLU written out), h * (h > 0) (a
    ReLU), h.masked_fill(h < -0.3, 0). A comparison of N(m, v) with c is one with probability
    Phi((m - c) / sd); the branches mix at that rate, so fc2 sees about half of E[h^2]."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 64)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "where":
            h = torch.where(h > 0, h, 0.01 * h)
        elif self.kind == "mask":
            h = h * (h > 0).float()
        else:
            h = h.masked_fill(h < -0.3, 0.0)
        return self.fc2(h)


@pytest.mark.parametrize("kind", ["where", "mask", "masked_fill"])
def test_a_mask_from_a_comparison_keeps_its_rate_of_the_signal(kind):
    torch.manual_seed(0)
    assert_modelled(MaskedByData(kind), torch.randn(512, 64), "fc2", rel=0.15)


class CausalMaskedFill(nn.Module):
    """nanoGPT's attention: att.masked_fill(bias[:, :, :T, :T] == 0, -inf) on the logits. The mask
    is constant (a buffer) and its value a logit never chosen: the logits pass on, the softmax knows
    the triangle (masks.py)."""

    def __init__(self, d: int = 64, t: int = 16) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("bias", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, d = x.shape[1], x.shape[2]
        q, k, v = self.qkv(x).split(d, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d)
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        return self.proj(F.softmax(att, -1) @ v)


def test_a_causal_masked_fill_passes_the_logits_on():
    torch.manual_seed(0)
    assert_modelled(CausalMaskedFill(), torch.randn(16, 16, 64), "proj", rel=0.15)


class Aggregation(nn.Module):
    """A fixed row-normalized adjacency (a buffer, sparse or dense) times x W: each node averages
    its ~6 neighbours, so the rows' fluctuations add at sum_j A_ij^2 ~ 1/6 of one row's; relu, then
    l2 sees about a sixth of what it would without the aggregation."""

    def __init__(self, sparse: bool, nodes: int = 100) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(32, 32), nn.Linear(32, 32)
        g = torch.Generator().manual_seed(0)
        a = (torch.rand(nodes, nodes, generator=g) < 0.05).float() + torch.eye(nodes)
        a = a / a.sum(1, keepdim=True)
        self.register_buffer("adj", a.to_sparse() if sparse else a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.relu(torch.spmm(self.adj, self.l1(x)) if self.adj.is_sparse else self.adj @ self.l1(x)))


@pytest.mark.parametrize("sparse", [False, True])
def test_a_fixed_adjacency_averages_the_rows(sparse):
    torch.manual_seed(0)
    assert_modelled(Aggregation(sparse), torch.randn(100, 32), "l2", rel=0.15)


class TopKMixture(nn.Module):
    """A mixture of experts as Mixtral writes it: softmax router, top-2 of 4, one_hot masks,
    torch.where for each expert's tokens (a data-dependent shape: no meta kernel, so shape
    propagation stops there) and index_add_ into a zeros tensor, in place, the result dropped."""

    def __init__(self, d: int = 64, experts: int = 4) -> None:
        super().__init__()
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(d, 128), nn.SiLU(), nn.Linear(128, d)) for _ in range(experts))
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = x.reshape(-1, d)
        w, chosen = torch.topk(F.softmax(self.gate(h), -1), 2, -1)
        w = w / w.sum(-1, keepdim=True)
        final = torch.zeros_like(h)
        mask = F.one_hot(chosen, num_classes=len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            slot, token = torch.where(mask[e])
            final.index_add_(0, token, expert(h[token]) * w[token, slot, None])
        return self.out(final.reshape(b, t, d))


def test_a_mixture_of_experts_sums_its_experts_into_the_output():
    torch.manual_seed(0)
    _, pred = assert_modelled(TopKMixture(), torch.randn(4, 32, 64), "out", rel=0.2)
    assert pred > 0.0  # the zeros tensor the experts were added into is not the output


class MaskedRouted(nn.Module):
    """What a transformer computes from integer data besides its signal: positions from the
    attention mask (ALiBi's cumsum), expert counts from a router's top-k indices (Mixtral's histc).
    Those ops are no gap in the signal model; an unhandled op on the signal itself (a running
    log-sum-exp) is one, and is named."""

    def __init__(self, signal_cumsum: bool = False) -> None:
        super().__init__()
        self.emb, self.router, self.fc = nn.Embedding(100, 32), nn.Linear(32, 4), nn.Linear(32, 32)
        self.signal_cumsum = signal_cumsum

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        positions = (mask.cumsum(-1) - 1) * mask
        h = h + 0.01 * positions[..., None].to(h.dtype)
        _, chosen = torch.topk(self.router(h), 2, dim=-1)
        counts = torch.histc(chosen.float(), bins=4, min=0, max=3)
        h = h * (1 + 0 * counts.sum())
        if self.signal_cumsum:
            h = torch.logcumsumexp(h, 1)
        return self.fc(h)


@pytest.mark.parametrize("signal_cumsum", [False, True])
def test_ops_on_integer_data_and_indices_are_no_gap_in_the_signal_model(signal_cumsum):
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 100, (4, 16)), torch.ones(4, 16, dtype=torch.long)
    notes = [n for n in diagnose(MaskedRouted(signal_cumsum), (ids, mask)).notes if "no handler" in n]
    if signal_cumsum:
        assert len(notes) == 1 and "no handler for logcumsumexp" in notes[0] and "fc.weight" in notes[0]
    else:
        assert notes == []


class SamePad(nn.Module):
    """wav2vec 2.0's SamePadLayer: no parameters, drops the last step of an even conv kernel. Not
    elementwise, so it is traced through (a slice: transparent), not left as an opaque op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-1]


def test_a_parameter_free_module_that_is_not_elementwise_is_traced_through():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(16, 32, 4, padding=2), SamePad(), nn.GELU(), nn.Conv1d(32, 16, 1))
    report, _ = assert_modelled(model, torch.randn(32, 16, 64), "3", rel=0.1)
    # deciding that it is not elementwise runs it on a small tensor: before fx traces, not inside
    assert not any("fx could not trace" in n for n in report.notes), report.notes


class PooledPreactivation(nn.Module):
    """NF-ResNet's stem: a conv's raw output max-pooled (3x3), then ReLU, then a conv whose weight
    rows sum to zero (weight standardization). The max of 9 N(0, s^2) values has mean 1.49 s and
    E[m^2] = 2.5 s^2, mostly that mean, which zero-sum rows do not pass on: conv2 sees E[var] only
    (about 0.4 s^2 of the 2.5 s^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=3, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 1, bias=False)
        with torch.no_grad():
            self.conv2.weight -= self.conv2.weight.mean((1, 2, 3), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.pool(self.conv1(x))))


def test_a_max_pool_of_a_pre_activation_raises_its_mean():
    torch.manual_seed(0)
    assert_modelled(PooledPreactivation(), torch.randn(16, 3, 64, 64), "conv2", rel=0.1)


class GatedThenAveraged(nn.Module):
    """ResNeSt's split attention (radix 2) then its 3x3 average pool: relu(bn(conv)) split in two
    radix groups, each times a softmax-over-radix gate computed per sample and channel and broadcast
    over the positions, summed over the radix. What every position of a sample's channel shares (the
    relu's mean, times that sample's gate) survives the average; only the rest is divided by 9."""

    def __init__(self, c: int = 64, radix: int = 2) -> None:
        super().__init__()
        self.radix = radix
        self.conv, self.bn = nn.Conv2d(c, c * radix, 3, padding=1, groups=radix, bias=False), nn.BatchNorm2d(c * radix)
        self.fc1, self.fc2 = nn.Conv2d(c, 32, 1), nn.Conv2d(32, c * radix, 1)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c, 2 * c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = torch.relu(self.bn(self.conv(x)))
        h = h.reshape(b, self.radix, -1, h.shape[2], h.shape[3])
        gap = h.sum(1).mean((2, 3), keepdim=True)
        attn = self.fc2(torch.relu(self.fc1(gap))).reshape(b, self.radix, -1)
        attn = F.softmax(attn, 1).reshape(b, self.radix, -1, 1, 1)
        return self.conv3(self.pool((h * attn).sum(1)))


def test_a_split_attention_then_an_average_keeps_what_every_position_shares():
    torch.manual_seed(0)
    assert_modelled(GatedThenAveraged(), torch.randn(16, 64, 16, 16), "conv3", rel=0.15)


class IdentityRNN(nn.Module):
    """Le et al. 2015's IRNN: a ReLU RNN whose recurrent matrix is the identity, input weights
    N(0, 0.001^2). h_t = relu(h_(t-1) + u_t) loses nothing once h >= 0: a reflected random walk,
    E[h_t^2] = t E[u^2], (T + 1) / 2 of it over T steps on average, where a random recurrent matrix
    of the same variance would settle at E[u^2] (each ReLU halving it): 5x lower in rms at T = 50.
    `last`: the paper reads the last state (T E[u^2]: the sequence average is sqrt(2) under it)."""

    def __init__(self, last: bool = False) -> None:
        super().__init__()
        self.rnn, self.fc = nn.RNN(32, 128, nonlinearity="relu", batch_first=True), nn.Linear(128, 10)
        nn.init.eye_(self.rnn.weight_hh_l0)
        nn.init.normal_(self.rnn.weight_ih_l0, std=0.001)
        nn.init.zeros_(self.rnn.bias_hh_l0)
        nn.init.zeros_(self.rnn.bias_ih_l0)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)[0]
        return self.fc(out[:, -1] if self.last else out)


def test_an_identity_recurrence_accumulates_its_inputs():
    torch.manual_seed(0)
    assert_modelled(IdentityRNN(), torch.randn(64, 50, 32), "fc", rel=0.15)


def test_the_irnn_recipe_is_sound():
    torch.manual_seed(0)
    report = diagnose(IdentityRNN(last=True), torch.randn(4, 50, 32))
    assert report.ok, [f.message for f in report.findings]


class NoiseInjection(nn.Module):
    """StyleGAN2's noise injection (rosinality's port draws image.new_empty(b, 1, h, w).normal_(), one
    value per position shared by the channels; here one per element, whose sum over a conv's inputs
    does not hang on the realized row sums), added times a per-channel weight (1 here, 0 at
    StyleGAN2's init). The conv after it sees E[x^2] + 1: the draw's unit variance, not the zeros
    new_empty was read as."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
        self.weight = nn.Parameter(torch.ones(1, 16, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        noise = h.new_empty(h.shape).normal_()
        return self.conv2(h + self.weight * noise)


def test_noise_drawn_in_place_in_forward_is_noise():
    torch.manual_seed(0)
    assert_modelled(NoiseInjection(), torch.randn(16, 8, 16, 16), "conv2", rel=0.1)


class RunningSum(nn.Module):
    """h.cumsum(1) over 32 time steps of a layer's output: step k sums k values, so the sequence
    carries (n + 1) / 2 = 16.5 times E[h^2] on average where h has no mean; fc2 reads all steps."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 64, bias=False), nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x).cumsum(1))


def test_a_cumulative_sum_adds_the_steps_up():
    torch.manual_seed(0)
    assert_modelled(RunningSum(), torch.randn(64, 32, 16), "fc2", rel=0.1)


class CopiedInto(nn.Module):
    """A buffer of the right shape written with copy_ (a preallocated output, a KV cache): the
    layer after it reads what was copied in, 3 * fc1's output (9x its E[h^2]), not the empty tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 32, bias=False), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        out = torch.zeros_like(h)
        out.copy_(3.0 * h)
        return self.fc2(out)


def test_a_tensor_written_with_copy_holds_what_was_copied():
    torch.manual_seed(0)
    assert_modelled(CopiedInto(), torch.randn(256, 32), "fc2", rel=0.1)


class WrittenOutNorm(nn.Module):
    """A LayerNorm written out, (x - mean) / sqrt(var + eps), on an input at 5x unit scale: the
    ratio divides by the spread it measures, so the Linear after it reads unit variance; nothing
    is 'kept at the scale' of the numerator."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 64, bias=False)
        self.out = nn.Linear(64, 64, bias=False)
        nn.init.normal_(self.inp.weight, std=5 / 8)  # rms 5 on unit inputs
        nn.init.normal_(self.out.weight, std=1 / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        mu = h.mean(-1, keepdim=True)
        var = (h - mu).pow(2).mean(-1, keepdim=True)
        return self.out((h - mu) / torch.sqrt(var + 1e-5))


def test_a_division_by_a_measured_spread_normalizes():
    torch.manual_seed(0)
    _, pred = assert_modelled(WrittenOutNorm(), torch.randn(256, 64), "out", rel=0.1)
    assert pred == pytest.approx(1.0, rel=0.1)  # not 5: the numerator's scale divided away


class Squashed(nn.Module):
    """CapsNet's squash, |s|^2 / (1 + |s|^2) * s / |s|: a capsule vector s of 16 small components
    (rms 0.03) leaves with norm |s|^2, so each component shrinks by |s| = 0.12 again: the Linear
    after it reads rms ~0.004, not the 0.03 that 'a ratio keeps the scale' would give."""

    def __init__(self) -> None:
        super().__init__()
        self.caps = nn.Linear(32, 10 * 16, bias=False)
        self.dec = nn.Linear(160, 64, bias=False)
        nn.init.normal_(self.caps.weight, std=0.03 / 32 ** 0.5)
        nn.init.normal_(self.dec.weight, std=160 ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.caps(x).view(-1, 10, 16)
        n2 = (s ** 2).sum(-1, keepdim=True)
        v = n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)
        return self.dec(v.flatten(1))


def test_a_squash_shrinks_small_capsules_by_their_norm():
    torch.manual_seed(0)
    _, pred = assert_modelled(Squashed(), torch.randn(512, 32), "dec", rel=0.2)
    assert pred < 0.01
