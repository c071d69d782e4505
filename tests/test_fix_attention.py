"""The fix and the variance rule around attention logits: q and k set the softmax's sharpness, not
a signal's scale. Expectations from the logit std s = sqrt(d_head E[q^2] E[k^2]) * scale against
the freezing point sqrt(2 ln n) of n keys (IC207), written before running."""

import math

import torch
import torch.nn.functional as F
from attention_cases import DefaultMultiheadAttention, GPT2Attention, UnitNormalQK, UnscaledAttention
from torch import nn

from initcheck import diagnose, fix


class T5Attention(nn.Module):
    """T5's attention (no residual, so no branch exemption): logits q·k with no 1/sqrt(d_kv), which
    T5 folds into its init instead: q ~ N(0, 1/(d_model d_kv)), k and v ~ N(0, 1/d_model), o ~
    N(0, 1/(H d_kv)). After the RMS-scaled input (E[x^2] = 1): E[q^2] = 1/d_kv, E[k^2] = 1, so
    s = sqrt(d_kv * 1/d_kv * 1) = 1, under sqrt(2 ln 32) = 2.6: sound. q's variance is 1/64 of
    Xavier's for d_kv = 64 x 4 heads = 256: a convention, not a bug."""

    def __init__(self, d: int = 256, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.dk = heads, d // heads
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        nn.init.normal_(self.q.weight, std=(d * self.dk) ** -0.5)
        nn.init.normal_(self.k.weight, std=d ** -0.5)
        nn.init.normal_(self.v.weight, std=d ** -0.5)
        nn.init.normal_(self.o.weight, std=(heads * self.dk) ** -0.5)
        self.head = nn.Linear(d, 10)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.dk).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.split(self.q(h)), self.split(self.k(h)), self.split(self.v(h))
        y = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.head(self.o(y.transpose(1, 2).reshape(x.shape)))


def x() -> torch.Tensor:
    return torch.randn(4, 32, 256, generator=torch.Generator().manual_seed(1))


def test_a_t5_style_query_is_a_convention_not_a_variance_mismatch():
    torch.manual_seed(0)
    report = diagnose(T5Attention(), x())
    assert [(f.code, f.layer) for f in report.findings] == []


def test_the_data_driven_fix_keeps_the_scale_a_model_folded_into_its_queries():
    # aimed at a signal's std, q would be scaled up by sqrt(d_kv) = 8: logit std 8, saturated
    torch.manual_seed(0)
    model = T5Attention()
    q, k = model.q.weight.detach().clone(), model.k.weight.detach().clone()
    report = fix(model, x())
    assert torch.equal(model.q.weight, q) and torch.equal(model.k.weight, k)
    assert report.fix is not None and report.fix.data_driven is not None
    assert "q.weight" not in {s.param for s in report.fix.data_driven.layers}
    assert [f.code for f in diagnose(model, x()).findings] == []


def test_a_missing_scale_is_folded_into_the_query_projection():
    # Xavier q/k after a LayerNorm: E[q^2] = E[k^2] = 1, no 1/sqrt(64): s = 8 > 2.6. A redraw cannot
    # help; q * 1/s brings s to 1 (T5's way), k, v and o stay as they were
    for data_driven in (False, True):
        torch.manual_seed(0)
        model = UnscaledAttention()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert {f.code for f in diagnose(model, x()).findings} == {"IC207"}
        report = fix(model, x(), data_driven=data_driven)
        assert report.fix is not None and report.fix.queries_scaled == ("q.weight",)
        factor = (model.q.weight / before["q.weight"]).mean().item()
        assert abs(factor * 8.0 - 1.0) < 0.15, factor
        assert torch.equal(model.k.weight, before["k.weight"])
        assert not [f for f in diagnose(model, x()).findings if f.severity in ("warning", "error")]


def test_sound_attentions_are_left_alone():
    for cls in (DefaultMultiheadAttention, GPT2Attention):
        torch.manual_seed(0)
        model = cls()
        report = fix(model, x())
        assert report.fix is not None and report.fix.queries_scaled == ()
        assert diagnose(model, x()).ok


def test_unit_normal_queries_are_redrawn_and_then_sound():
    # q/k at N(0, 1): s = 256. The static step redraws both (IC103: 256x Xavier's variance); after
    # that s = 1 with sdpa's own scale: nothing left for the query pass
    torch.manual_seed(0)
    model = UnitNormalQK()
    report = fix(model, x(), data_driven=False)
    assert report.fix is not None
    assert set(report.fix.reinitialized) >= {"q.weight", "k.weight"} and report.fix.queries_scaled == ()
    assert math.isclose(model.q.weight.std().item(), (2 / 512) ** 0.5, rel_tol=0.05)
    assert not [f for f in diagnose(model, x()).findings if f.severity in ("warning", "error")]


def test_only_projections_that_feed_nothing_but_logits_set_the_temperature():
    from initcheck.api import analyze

    class Packed(nn.Module):
        """One Linear makes q, k and v (GPT-2's c_attn): v is a signal path, so it is not one."""

        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.o = nn.Linear(64, 192), nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).split(64, dim=-1)
            return self.o(torch.nn.functional.scaled_dot_product_attention(q, k, v))

    for model, expected in ((UnscaledAttention(), {"q.weight", "k.weight"}), (T5Attention(), {"q.weight", "k.weight"}),
                            (Packed(), set())):
        a = analyze(model, torch.randn(2, 16, 256 if not isinstance(model, Packed) else 64))
        assert {lf.qualname for lf in a.layers if lf.attention_score} == expected, type(model).__name__


class PositionBiasAttention(nn.Module):
    """Swin V2's logits: cosine q·k (scale 10, so |logit| <= 10 and std ~10/sqrt(d_head)) plus
    16 * sigmoid(mlp(coords)), a bias table from a small MLP (2 -> 64 -> heads) at PyTorch's default
    on coordinates of rms ~0.5. At init the MLP's output is ~0.1 rms, sigmoid ~0.5 +- 0.02: the table
    adds ~8 +- 0.4 to every logit, nearly a constant, and the softmax is far from frozen. Aimed at
    unit pre-activations the MLP's first layer grows ~x4 and its output ~x10: sigmoid saturates, the
    table spreads logits over 0..16 (std ~8 > sqrt(2 ln 16) = 2.4) and the attention freezes."""

    def __init__(self, d: int = 64, heads: int = 2, n: int = 16) -> None:
        super().__init__()
        self.heads, self.n = heads, n
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, heads, bias=False))
        g = torch.Generator().manual_seed(1)
        self.register_buffer("coords", torch.rand(n * n, 2, generator=g) - 0.5)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = 10.0 * (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1))
        bias = 16.0 * torch.sigmoid(self.mlp(self.coords)).view(n, n, self.heads).permute(2, 0, 1)
        attn = torch.softmax(logits + bias.unsqueeze(0), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.head(self.proj(y).mean(1))


def test_a_position_bias_mlp_is_left_to_the_attention_it_sharpens():
    torch.manual_seed(0)
    model = PositionBiasAttention()
    x = torch.randn(4, 16, 64)
    assert not [f for f in diagnose(model, x).findings if f.code == "IC207"]
    mlp = [p.detach().clone() for p in model.mlp.parameters()]
    fix(model, x, data_driven=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(mlp, model.mlp.parameters()))  # its scale is IC207's
    after = diagnose(model, x)
    assert not [f for f in after.findings if f.code == "IC207"], after.findings


def test_a_classifiers_output_softmax_is_no_attention():
    from initcheck.api import analyze
    from initcheck.rules.paths import logit_only

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(-1))
    assert logit_only(analyze(model, torch.randn(2, 8)).context) == frozenset()
