"""Every must-be-an-error and must-not-be-an-error case of the issue, one test each."""


import models as M
import pytest
import seeds
import torch
from torch import nn

from initcheck import RULES, diagnose
from initcheck.findings import Selection


def selected(code, select, ignore):
    return Selection(select, ignore).selects(code)



def codes(model, inputs=None, severity="error"):
    return {f.code for f in diagnose(model, inputs).findings if f.severity == severity}


# --- must be errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [seeds.Zeros, seeds.Ones])
def test_constant_hidden_weights(seed):
    assert "IC101" in codes(seed())


def test_uniform_0_1_is_non_centered():
    assert "IC102" in codes(seeds.Uniform01())


def test_tanh_and_sigmoid_nets_with_unit_normal_weights_saturate():
    assert "IC203" in codes(seeds.TanhNormal1())
    assert "IC203" in codes(seeds.SigmoidNormal1())


def test_tanh_net_with_normal_001_vanishes_by_the_fourth_layer():
    r = diagnose(seeds.TanhNormal001())
    vanish = [f for f in r.findings if f.code == "IC202"]
    assert vanish and vanish[0].layer == "net.6.weight"  # the fourth Linear's input


def test_uniform_minus1_1_explodes():
    assert "IC201" in codes(seeds.UniformMinus1To1())


def test_uniform_tiny_vanishes_even_with_default_biases():
    assert "IC202" in codes(seeds.UniformTiny())


def test_pytorch_default_on_a_20_layer_relu_mlp():
    found = codes(seeds.DeepPyTorchDefault())
    assert "IC204" in found and "IC202" in found


# --- must not be errors -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", [seeds.He, seeds.TanhXavier, seeds.SigmoidXavier, seeds.TruncNormal01,
                                  seeds.PyTorchDefault, seeds.InvSqrtN, seeds.NormalInvSqrtN, seeds.XavierReLU])
def test_sound_or_shallow_inits_are_not_errors(seed):
    assert codes(seed()) == set()


def test_pytorch_default_on_a_shallow_net_is_a_warning():
    assert codes(seeds.PyTorchDefault(), severity="warning") == {"IC103"}


def test_a_layer_followed_by_batchnorm_is_not_judged_on_scale():
    assert codes(M.ConvBN()) == set()
    assert "IC103" not in codes(M.ConvBN(), severity="warning")


def test_constant_weights_are_an_error_even_before_batchnorm():
    model = M.ConvBN()
    nn.init.constant_(model.conv.weight, 0.3)
    assert "IC101" in codes(model)


def test_gpt_style_normal_002_with_layernorm_and_scaled_projections():
    r = diagnose(M.TinyGPT())
    assert r.ok
    assert not [f for f in r.findings if f.severity == "warning"]


def test_zero_init_residual_fixup_and_rezero():
    assert codes(M.ResNetish(zero_init_residual=True)) == set()
    assert codes(M.Fixup()) == set()
    assert codes(M.ReZero()) == set()


def test_zero_init_residual_is_named():
    layers = {lr.qualname: lr for lr in diagnose(M.ResNetish(zero_init_residual=True)).layers}
    assert layers["blocks.0.conv2.weight"].convention.startswith("zero_init_residual")
    assert layers["blocks.0.conv1.weight"].convention is None or "zero_init" not in layers["blocks.0.conv1.weight"].convention
    plain = {lr.qualname: lr for lr in diagnose(M.ResNetish(zero_init_residual=False)).layers}
    assert not (plain["blocks.0.conv2.weight"].convention or "").startswith("zero_init_residual")


def test_a_zero_initialized_classifier():
    model = seeds.He()
    nn.init.zeros_(model.net[4].weight)
    assert codes(model) == set()


def test_a_zero_hidden_layer_is_one_error_not_a_cascade():
    model = seeds.He()
    nn.init.zeros_(model.net[2].weight)
    r = diagnose(model)
    assert [(f.code, f.layer) for f in r.findings if f.severity == "error"] == [("IC101", "net.2.weight")]


def test_tied_weights_are_judged_once():
    r = diagnose(M.TinyGPT())
    assert sum(lr.qualname == "wte.weight" for lr in r.layers) == 1


# --- messages, fixes, selection -----------------------------------------------------------------

def test_message_carries_numbers_and_the_fix_is_exact():
    r = diagnose(seeds.PyTorchDefault())
    f = r.findings[0]
    assert f.code == "IC103" and f.layer == "net.0.weight"
    # PyTorch's default U(±1/sqrt(784)) has variance 1/(3*784); He's is 2/784: 6x below, said in variance
    assert "(PyTorch default)" in f.message and "He (std 0.05051, fan_in 784)" in f.message
    assert "is 6x below" in f.message and f"{1 / (3 * 784):.3g}" in f.message
    assert f.fix == 'nn.init.kaiming_normal_(model.net[0].weight, nonlinearity="relu")'


def test_every_fix_runs_and_clears_the_finding():
    model = seeds.UniformMinus1To1()
    for f in diagnose(model).findings:
        exec(f.fix.split("  #")[0], {"nn": nn, "model": model, "initcheck": None})
    assert diagnose(model).ok


def test_select_and_ignore_by_prefix():
    assert selected("IC103", (), ("IC1",)) is False
    assert selected("IC103", ("IC103",), ("IC1",)) is True
    assert selected("IC201", ("IC1",), ()) is False
    assert {f.code for f in diagnose(seeds.Uniform01(), ignore=("IC1",)).findings} == {"IC201"}


def test_per_layer_ignore():
    r = diagnose(seeds.PyTorchDefault(), per_layer_ignore=(("IC103", "net.0.*"),))
    assert [f.layer for f in r.findings] == ["net.2.weight"]


def test_registry_codes_are_unique_documented_and_named():
    for code, r in RULES.items():
        assert code.startswith("IC") and len(code) == 5
        assert r.severity in ("info", "warning", "error")
        assert r.summary and r.why and "-" in r.name


def test_ic001_tells_a_weight_read_by_an_unmodelled_op_from_one_never_read():
    # "never used" is a claim about the forward: a weight it reads through a batched matmul of an
    # unsqueezed copy is used, only its fans are unknown
    class Bmm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(16, 32) * 0.35)
            self.spare = nn.Linear(3, 3)
            self.h = nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.h(torch.relu(torch.bmm(x.unsqueeze(0), self.w.unsqueeze(0)).squeeze(0)))

    found = {f.layer: f.message for f in diagnose(Bmm(), torch.randn(8, 16)).findings if f.code == "IC001"}
    assert set(found) == {"w", "spare.weight"}
    assert "never used" not in found["w"] and "read by the traced forward pass only through" in found["w"]
    assert "never used" in found["spare.weight"]


def test_a_ratio_that_rounds_to_the_band_is_printed_with_a_third_digit():
    """Weights of +-a with a^2 = He's 2/100 over 4.02: 4.02x below, just past the 4x band. Two
    digits would print "4x below ...; allowed band 4x", a sentence that contradicts itself."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 100, bias=False), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    with torch.no_grad():
        signs = torch.randint(0, 2, (100, 100)).float() * 2 - 1
        model[0].weight.copy_(signs * (0.02 / 4.02) ** 0.5)
    f = next(f for f in diagnose(model).findings if f.code == "IC103" and f.layer == "0.weight")
    assert "is 4.02x below" in f.message and "allowed band 4x" in f.message
