"""Per-weight facts: fans from use, packed and recurrent weights, custom weights."""

import models as M
import pytest
import torch

from initcheck import diagnose


def layers(model, inputs=None):
    return {lr.qualname: lr for lr in diagnose(model, inputs).layers}


def test_grouped_depthwise_and_transposed_convolutions():
    got = layers(M.Convs(), torch.randn(1, 8, 8, 8))
    assert (got["grouped.weight"].fan_in, got["grouped.weight"].fan_out) == (18, 72)
    assert (got["depthwise.weight"].fan_in, got["depthwise.weight"].fan_out) == (9, 9)
    assert (got["up.weight"].fan_in, got["up.weight"].fan_out) == (128, 256)


def test_attention_packed_projection():
    got = layers(M.Attention())
    assert (got["attn.in_proj_weight"].fan_in, got["attn.in_proj_weight"].fan_out) == (32, 32)
    assert got["attn.out_proj.weight"].residual_end


def test_recurrent_weights():
    got = layers(M.Recurrent())
    ih, hh = got["lstm.weight_ih_l0"], got["lstm.weight_hh_l0"]
    assert (ih.fan_in, ih.fan_out) == (16, 32) and ih.scheme == "xavier"
    assert (hh.fan_in, hh.fan_out) == (32, 32) and hh.scheme == "orthogonal"
    assert got["emb.weight"].scheme == "embedding"


def test_custom_weights_used_through_functions():
    got = layers(M.CustomWeight())
    assert (got["w1"].fan_in, got["w1"].fan_out, got["w1"].activation) == (16, 32, "relu")
    assert (got["w2"].fan_in, got["w2"].fan_out) == (32, 8)  # x @ W: [in, out]


def test_statistics_are_the_weights_own():
    model = M.CustomWeight()
    got = layers(model)
    assert got["w1"].actual_std == pytest.approx(torch.std(model.w1.detach().double(), unbiased=False).item(), rel=1e-6)


def test_execution_order_not_registration_order():
    assert list(layers(M.CallOrder())) == ["fc1.weight", "fc2.weight"]


def test_model_without_weights():
    r = diagnose(M.NoWeights(), torch.randn(2, 3))
    assert r.layers == () and r.findings == ()


@pytest.mark.parametrize("sdpa", [False, True], ids=["eager", "sdpa"])
def test_queries_and_keys_are_told_apart_from_values_and_packed_projections(sdpa):
    from initcheck.api import analyze

    x = torch.randint(0, 500, (2, 8))
    separate = {lf.qualname for lf in analyze(M.HandAttention(sdpa=sdpa), x).layers if lf.attention_score}
    assert separate == {"q.weight", "k.weight"}
    packed = analyze(M.HandAttention(packed=True, sdpa=sdpa), x).layers
    assert not any(lf.attention_score for lf in packed)  # qkv also feeds the values
