"""The bug reproductions are caught on the right parameter; the sound inits get no error."""

import attention_cases as A
import cases as C
import pytest
import torch
import torch.nn.functional as F

from initcheck import diagnose, fix
from initcheck.findings import Severity

BUGS = [
    (C.NaNWeight, None, {("IC104", "fc1.weight")}),
    (C.InfNormWeight, None, {("IC104", "ln.weight")}),
    (C.ToEmptyNeverInitialized, None, {("IC105", "fc1.weight"), ("IC105", "fc2.bias")}),
    (C.ZeroLayerNorm, None, {("IC106", "ln.weight")}),
    (C.SwappedLayerNorm, None, {("IC106", "ln.weight"), ("IC107", "ln.bias")}),
    (C.ZeroBatchNormPlainCNN, None, {("IC106", "bn.weight")}),
    (C.TiedUnitEmbedding, (torch.randint(0, 1000, (2, 8)),), {("IC206", "emb.weight")}),
    (C.NormFreeResidual, None, {("IC201", None)}),
    (C.SharedTanhUnitNormal, None, {("IC203", "shared.weight")}),
    (C.DepthwiseFanOutNoNorm, None, {("IC103", "dw.weight")}),
    (A.UnscaledAttention, (torch.randn(2, 32, 256),), {("IC207", "q.weight")}),
    (A.UnitNormalQK, (torch.randn(2, 32, 256),), {("IC207", "q.weight")}),
    (lambda: C.EqualizedDiscriminator(normal_std=0.02), (torch.randn(2, 3, 16, 16),),
     {("IC103", f"convs.{i}.weight") for i in range(4)}),
    (lambda: C.LSTMCellDecoder(unit_normal=True), (torch.randint(0, 100, (4, 6)),), {("IC203", "cell.weight_ih")}),
]


@pytest.mark.parametrize("make,inputs,expected", BUGS, ids=[b[0].__name__ for b in BUGS[:-2]] + ["equalized_lr_normal_init", "lstm_cell_unit_normal"])
def test_bug_is_caught_on_the_right_parameter(make, inputs, expected):
    report = diagnose(make(), inputs)
    got = {(f.code, f.layer) for f in report.findings if f.severity >= Severity.WARNING}
    for code, layer in expected:
        if layer is None:
            assert code in {c for c, _ in got}, report
        else:
            assert (code, layer) in got, report


SOUND = [
    (C.AdaLNZeroBlock, None),
    (C.Siren, None),
    (C.ZeroInitResidualBN, None),
    (C.TinyViT, (torch.randn(2, 16, 48),)),
    (lambda: C.TiedUnitEmbedding(std=0.02), (torch.randint(0, 1000, (2, 8)),)),
    (C.WeightNormed, None),
    (A.DefaultMultiheadAttention, (torch.randn(2, 64, 256),)),
    (A.GPT2Attention, (torch.randn(2, 64, 256),)),
    (A.SelfAttention, (torch.randn(2, 64, 256),)),
    (C.StandardizedConv, (torch.randn(2, 3, 16, 16),)),
    (C.RWKVTimeMix, (torch.randn(2, 12, 64),)),
    (C.MagnitudePreservingNet, (torch.randn(2, 3, 16, 16),)),
    (C.LearnedQueries, (torch.randn(2, 50, 32),)),
    (C.EqualizedDiscriminator, (torch.randn(2, 3, 16, 16),)),
    (C.LoRAAdapted, (torch.randn(8, 64),)),
    (C.LSTMCellDecoder, (torch.randint(0, 100, (4, 6)),)),
]


@pytest.mark.parametrize("make,inputs", SOUND, ids=["adaln_zero", "siren", "zero_init_residual", "tiny_vit",
                                                    "tied_0.02", "weight_norm", "multihead_attention",
                                                    "gpt2_attention", "scaled_attention", "weight_standardization", "rwkv_zeros",
                                                    "edm2_magnitude_preserving", "learned_queries",
                                                    "equalized_lr", "lora", "lstm_cell"])
def test_sound_init_gets_no_error(make, inputs):
    report = diagnose(make(), inputs)
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]
    assert "IC207" not in {f.code for f in report.findings}
    assert "IC001" not in {f.code for f in report.findings}


def test_a_film_layer_is_a_modulation_not_followed_by_the_features_activation():
    report = diagnose(C.FiLMResBlock(), (torch.randn(2, 32, 8, 8), torch.randn(2, 256)))
    emb = next(lr for lr in report.layers if lr.name == "emb.1")
    assert emb.activation == "identity"
    assert not [f for f in report.findings if f.layer == "emb.1.weight"], report.findings
    assert report.ok


def test_every_parameter_is_reported_with_its_kind():
    model = C.TinyViT()
    report = diagnose(model, (torch.randn(2, 16, 48),))
    kinds = {p.name: p.kind for p in report.params}
    assert set(kinds) == {n for n, _ in model.named_parameters()}
    assert kinds["cls_token"] == "token" and kinds["pos_embedding"] == "position"
    assert kinds["gamma"] == "scale" and kinds["norm.weight"] == "norm-weight" and kinds["norm.bias"] == "norm-bias"
    assert kinds["fc1.bias"] == "bias" and kinds["fc1.weight"] == "weight"
    as_json = report.to_dict()["params"]
    assert {p["name"] for p in as_json} == set(kinds)


def test_non_finite_message_names_the_count_and_the_to_empty_trap():
    f = next(f for f in diagnose(C.NaNWeight()).findings if f.code == "IC104")
    assert "1 of 2048 values" in f.message and "to_empty()" in f.message


def test_tied_logit_scale_is_std_times_sqrt_d():
    report = diagnose(C.TiedUnitEmbedding(), (torch.randint(0, 1000, (2, 8)),))
    f = next(f for f in report.findings if f.code == "IC206")
    # the LayerNorm before the head makes rms(x) = 1, so the logit rms is 1 * sqrt(384) = 19.6
    predicted = float(f.message.split("predicted logit rms ")[1].split(" ")[0])
    assert predicted == pytest.approx(384 ** 0.5, rel=0.05)


def test_residual_explosion_fix_names_depth_scaled_branches():
    f = next(f for f in diagnose(C.NormFreeResidual()).findings if f.code == "IC201")
    assert "1/sqrt(2*" in f.fix and "zero-init" in f.fix


def test_siren_layers_are_named_as_its_scheme():
    layers = {lr.qualname: lr for lr in diagnose(C.Siren()).layers}
    assert layers["first.weight"].convention == "SIREN first layer U(-1/fan_in, 1/fan_in)"
    assert layers["hidden.0.weight"].convention.startswith("SIREN hidden layer")


def test_adaln_zero_modulation_is_a_convention_not_symmetry():
    layers = {lr.qualname: lr for lr in diagnose(C.AdaLNZeroBlock()).layers}
    assert "gate" in layers["ada.weight"].convention


@pytest.mark.parametrize("make, inputs, head", [
    (C.SpatialTransformer, lambda: (torch.randn(4, 1, 28, 28),), "fc_loc.2.weight"),
    (C.FlowWarp, lambda: (torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)), "flow.weight"),
])
def test_a_zero_layer_that_steers_a_warp_is_not_symmetric(make, inputs, head):
    """The coefficients of a transform (theta) or a flow field: each output unit has its own role
    where the image is read, so a zero start is the identity warp, not units stuck together. The
    fix keeps it at 0, and no warp op is left unmodelled."""
    model = make()
    report = diagnose(model, inputs())
    assert not [f for f in report.findings if f.layer == head], report.findings
    assert not any("no handler" in n for n in report.notes), report.notes
    fix(model, inputs())
    assert model.get_parameter(head).abs().max() == 0


@pytest.mark.parametrize("iterations", [1, 3])
def test_capsnet_routing_is_predicted_and_not_an_explosion(iterations):
    """W @ u with W [1, 288, 10, 16, 8] is one 8 -> 16 matrix per route and capsule (fans 8, 16,
    not the whole tensor); the routing logits made by torch.zeros in forward give a coupling of
    1/288, so a capsule averages 288 predictions; the squash shrinks the small average by its norm.
    Every layer's prediction within 1.5x of the probe's measurement, and no error."""
    from initcheck import probe

    torch.manual_seed(0)
    report = probe(C.CapsNet(iterations), torch.randn(32, 1, 28, 28))
    w = next(lr for lr in report.layers if lr.qualname == "W")
    assert (w.fan_in, w.fan_out) == (8, 16)
    for pl in report.probe:
        assert pl.predicted_rms == pytest.approx(pl.measured_rms, rel=0.5), pl.name
    assert not [f for f in report.findings if f.severity is Severity.ERROR], report.findings


def test_a_standardized_weight_is_judged_and_replayed():
    """The conv of StandardizedConv reads its weight through (w - mean) / std: the layer is the base
    parameter, and replaying the chain gives filters of mean 0 and std 1, as torch computes them."""
    from initcheck.api import analyze
    from initcheck.facts.follow import rebuilt_weight

    model = C.StandardizedConv()
    a = analyze(model, torch.randn(2, 3, 16, 16))
    assert [lf.qualname for lf in a.layers][:1] == ["weight"]
    op = next(op for op in a.context.index.ops if op.target == "conv2d")
    w = rebuilt_weight(a.context.index, model, op)
    assert w is not None
    per_filter = w.reshape(32, -1)
    assert torch.allclose(per_filter.mean(1), torch.zeros(32), atol=1e-6)
    assert torch.allclose(per_filter.std(1), torch.ones(32), atol=1e-4)


def test_a_weight_normalized_in_forward_is_judged_on_what_the_conv_receives():
    """EDM2's MPConv reads its weight through .float(), a vector norm and a division: each conv is
    judged on the rebuilt filters (std 1/sqrt(fan_in), not the stored N(0, 1)), and the norm of a
    weight, which no data passes, is no op the signal model lacks (no 'no handler' note)."""
    report = diagnose(C.MagnitudePreservingNet(), torch.randn(2, 3, 16, 16))
    rows = {lr.qualname: lr for lr in report.layers}
    assert len(rows) == 8
    for name in ("inp.weight", "blocks.0.0.weight", "blocks.2.1.weight"):
        fan_in = rows[name].fan_in
        assert rows[name].actual_std == pytest.approx(fan_in ** -0.5, rel=2e-3)
    assert not any("no handler" in n for n in report.notes), report.notes
    # magnitude preserving: every hidden conv's raw output stays near unit rms
    assert all(0.7 < rows[f"blocks.{b}.{i}.weight"].predicted_rms < 1.4 for b in range(3) for i in range(2))


def test_a_parameter_broadcast_over_the_batch_is_a_learned_input():
    report = diagnose(C.LearnedQueries(), torch.randn(2, 50, 32))
    kinds = {p.name: p.kind for p in report.params}
    assert kinds["latents"] == "token" and kinds["query_embed.weight"] == "token"
    assert {p.name for p in report.params} == {n for n, _ in C.LearnedQueries().named_parameters()}


def test_an_added_reshaped_bias_is_a_shift_not_a_residual_merge():
    report = diagnose(C.EqualizedDiscriminator(normal_std=0.02), torch.randn(2, 3, 16, 16))
    for lr in report.layers[:4]:
        assert "branch" not in lr.verdict, lr


def test_loras_a_before_a_zero_b_and_a_frozen_base_are_not_init_findings():
    report = diagnose(C.LoRAAdapted(frozen_std=1.0), torch.randn(8, 64))  # 32x He's variance
    verdicts = {lr.qualname: lr.verdict for lr in report.layers}
    assert verdicts["l1.lora_A.weight"] == "ok: feeds a zero-initialized layer"
    assert verdicts["l1.base.weight"] == "ok: frozen (requires_grad=False)"
    ic103 = {f.layer for f in report.findings if f.code == "IC103"}
    assert not ic103 & {"l1.base.weight", "l2.base.weight", "l1.lora_A.weight", "l2.lora_A.weight"}
    # what the frozen weights do to the signal is still judged: std 1 at fan_in 64 and 128 grows the
    # pre-activation rms 8x, then about 8x again (a true IC201, whoever set those weights)
    assert "IC201" in {f.code for f in report.findings}


def test_an_rnn_cell_called_in_a_loop_is_judged_and_fixed():
    """nn.LSTMCell's weight_ih and weight_hh are weights (not 'unused'), judged at the recurrence's
    fixed point; a fix of the N(0, 1) cell brings its gates back in range."""
    model = C.LSTMCellDecoder(unit_normal=True)
    ids = torch.randint(0, 100, (4, 6))
    report = diagnose(model, ids)
    assert {"cell.weight_ih", "cell.weight_hh"} <= {lr.qualname for lr in report.layers}
    from initcheck import fix
    for data_driven in (False, True):
        model = C.LSTMCellDecoder(unit_normal=True)
        fix(model, ids, data_driven=data_driven, generator=torch.Generator().manual_seed(0))
        after = diagnose(model, ids)
        assert not [f for f in after.findings if f.severity >= Severity.WARNING], after.findings


def test_a_rebuilt_weight_is_replayed_without_an_input_too():
    """With no input (and MPConv's functional conv gives none to guess), fx traces without shapes:
    `w[0].numel() ** 0.5` stays in the graph as getitem, numel and sqrt, replayed on the weight
    itself. The stored N(0, 1) weights were judged instead: 100x over He, a false IC201."""
    report = diagnose(C.MagnitudePreservingNet())
    assert report.ok, [f.message for f in report.findings if f.severity is Severity.ERROR]
    rows = {lr.qualname: lr for lr in report.layers}
    assert rows["blocks.0.0.weight"].actual_std == pytest.approx(288 ** -0.5, rel=2e-3)


class RelPosBiasAttention(torch.nn.Module):
    """timm's vit_relpos: a relative-position MLP (Linear(2, 64), ReLU, Linear(64, heads)) at PyTorch's
    default (fc1 6.4x below He) gives a bias that F.scaled_dot_product_attention adds to its logits
    through attn_mask. That MLP's scale is the softmax's sharpness (IC207 judges it), no signal path:
    no IC103 on it."""

    def __init__(self, d: int = 64, heads: int = 4, side: int = 4) -> None:
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(2, 64), torch.nn.Linear(64, heads)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).float()
        self.register_buffer("rel", (pos[:, None] - pos[None]).reshape(-1, 2) / side)
        self.heads, self.n = heads, side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.fc2(torch.relu(self.fc1(self.rel))).view(n, n, self.heads).permute(2, 0, 1).unsqueeze(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


def test_a_bias_added_to_sdpas_logits_is_no_signal_path():
    report = diagnose(RelPosBiasAttention(), torch.randn(2, 16, 64))
    verdicts = {lr.qualname: lr.verdict for lr in report.layers}
    assert verdicts["fc1.weight"] == "ok: attention logits only, none saturated", verdicts
    assert not [f for f in report.findings if f.code == "IC103" and f.layer.startswith("fc")]
