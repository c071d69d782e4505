"""Parametrized weights (weight_norm, spectral_norm, orthogonal; torch's parametrizations and the
older hook forms): judged through the effective weight, scaled through the tensor that carries the
scale, and left alone where the parametrization fixes the scale (no init can change it)."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as P

from initcheck import diagnose, fix
from initcheck.ops.parametrized import assign, computed, fixed_scale, is_original, scale_carrier


def _hook_weight_norm(m: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(m)


WEIGHT_NORM = {"parametrization": P.weight_norm, "hook": _hook_weight_norm}
SPECTRAL_NORM = {"parametrization": P.spectral_norm, "hook": nn.utils.spectral_norm}


class Discriminator(nn.Module):
    """An SN-GAN discriminator: every weight spectrally normalized, leaky ReLU between."""

    def __init__(self, sn):
        super().__init__()
        self.c1 = sn(nn.Conv2d(3, 32, 4, 2, 1))
        self.c2 = sn(nn.Conv2d(32, 64, 4, 2, 1))
        self.fc = sn(nn.Linear(64 * 8 * 8, 1))

    def forward(self, x):
        x = nn.functional.leaky_relu(self.c1(x), 0.1)
        x = nn.functional.leaky_relu(self.c2(x), 0.1)
        return self.fc(x.flatten(1))


def tanh_mlp(wrap, std=1.0):
    """Six weight-normed tanh layers whose weights start at N(0, 1): 8x He's std at fan_in 64."""
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        lin = nn.Linear(64, 64)
        nn.init.normal_(lin.weight, 0.0, std)
        layers += [wrap(lin), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


@pytest.mark.parametrize("form", SPECTRAL_NORM)
def test_spectral_norm_sets_the_scale_so_init_is_not_judged(form):
    # w / σ_max(w) has std about 1/(2 sqrt(fan)) whatever the original holds: 1/8 of He's variance
    # for a square layer, by design (SN-GAN trains with it); no init can move it, so no IC103
    report = diagnose(Discriminator(SPECTRAL_NORM[form]), torch.randn(2, 3, 32, 32))
    codes = {(f.code, f.layer) for f in report.findings}
    assert not codes, codes
    rows = {f"{lr.name}.{lr.param}": lr for lr in report.layers}
    assert set(rows) == {"c1.weight", "c2.weight", "fc.weight"}
    for lr in rows.values():
        assert "spectral_norm" in (lr.convention or ""), lr


@pytest.mark.parametrize("form", SPECTRAL_NORM)
def test_fix_leaves_spectral_norm_untouched(form):
    model = Discriminator(SPECTRAL_NORM[form])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = fix(model, torch.randn(8, 3, 32, 32))
    assert report.fix is not None and report.fix.data_driven is not None
    assert report.fix.data_driven.layers == ()  # nothing to scale: the parametrization owns the scale
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("form", WEIGHT_NORM)
def test_fix_reaches_weight_normed_layers_through_their_magnitude(form):
    model = tanh_mlp(WEIGHT_NORM[form])
    x = torch.randn(256, 64)
    flagged = {f.layer for f in diagnose(model, x).findings if f.code == "IC103"}
    assert flagged == {f"{i}.weight" for i in range(0, 12, 2)}  # N(0, 1) is 64x Xavier's variance
    report = fix(model, x)
    assert report.fix is not None and report.fix.data_driven is not None
    assert report.fix.data_driven.worst_rel_error < 0.05
    left = [(f.code, f.layer) for f in diagnose(model, x).findings if f.severity in ("warning", "error")]
    assert not left, left


@pytest.mark.parametrize("form", WEIGHT_NORM)
def test_weight_norm_scale_lives_in_g(form):
    lin = WEIGHT_NORM[form](nn.Linear(5, 4))
    g = scale_carrier(lin, "weight")
    assert g is not None and g.shape == (4, 1)
    assert computed(lin, "weight") and fixed_scale(lin, "weight") is None
    with torch.no_grad():
        g.mul_(3.0)
    lin(torch.zeros(1, 5))  # the hook form recomputes its weight before each forward
    # w = g v / ||v|| row by row: each row's norm is its g
    torch.testing.assert_close(lin.weight.detach().norm(dim=1), g.detach().squeeze(1))


@pytest.mark.parametrize("form", WEIGHT_NORM)
def test_assign_sets_the_effective_weight(form):
    lin = WEIGHT_NORM[form](nn.Linear(6, 3))
    value = torch.randn(3, 6)
    assign(lin, "weight", value)
    torch.testing.assert_close(lin.weight, value)
    lin(torch.zeros(1, 6))  # the hook form recomputes before the forward: still the same weight
    torch.testing.assert_close(lin.weight, value)


@pytest.mark.parametrize("form", SPECTRAL_NORM)
def test_spectral_norm_originals_are_recognized(form):
    lin = SPECTRAL_NORM[form](nn.Linear(6, 3))
    assert fixed_scale(lin, "weight") == "spectral_norm" and scale_carrier(lin, "weight") is None
    if form == "hook":
        assert is_original(lin, "weight_orig") and not is_original(lin, "bias")
    else:
        assert is_original(lin.parametrizations.weight, "original")


def test_orthogonal_parametrization_sets_the_scale():
    lin = P.orthogonal(nn.Linear(8, 8))
    assert fixed_scale(lin, "weight") == "orthogonal" and scale_carrier(lin, "weight") is None
    plain = nn.Linear(8, 8)
    assert fixed_scale(plain, "weight") is None and scale_carrier(plain, "weight") is plain.weight
    assert not computed(plain, "weight")


@pytest.mark.parametrize("form", SPECTRAL_NORM)
def test_diagnose_leaves_the_power_iteration_alone(form):
    # in training mode spectral_norm's power iteration rewrites u and v at every access of the
    # weight: judging the weight must not be one
    model = Discriminator(SPECTRAL_NORM[form])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diagnose(model, torch.randn(2, 3, 32, 32))
    diagnose(model)
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert all(m.training for m in model.modules())


def _pruned(amount: float = 0.5, std: float | None = None) -> nn.Sequential:
    """torch.nn.utils.prune at init (lottery-ticket experiments): fc0.weight becomes a plain tensor
    recomputed as weight_orig * weight_mask before each forward; weight_orig is the parameter."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    prune.l1_unstructured(model[0], "weight", amount=amount)
    if std is not None:
        with torch.no_grad():
            nn.init.normal_(model[0].weight_orig, std=std)
            model[0].weight = model[0].weight_orig * model[0].weight_mask
    return model


def test_a_pruned_weight_is_judged_through_its_mask_and_its_original_is_not_unused():
    report = diagnose(_pruned(), torch.randn(8, 64))
    assert not [f for f in report.findings if f.code == "IC001"], report.findings
    layer = next(lr for lr in report.layers if lr.qualname == "0.weight")
    assert layer.actual_std == pytest.approx(float(_pruned()[0].weight.detach().std()), rel=1e-3)  # the masked, effective one
    assert {p.name for p in report.params} == {"0.weight_orig", "0.bias", "2.weight", "2.bias"}


@pytest.mark.parametrize("data_driven", [False, True])
def test_fix_draws_a_pruned_weight_through_its_mask(data_driven):
    """Half the entries masked: the original is drawn up by 1/sqrt(density) so that the effective
    weight has He's variance for its fan-in (2/64: std 0.177), and the mask stays."""
    model = _pruned(std=1.0)  # far off: IC103, the static step redraws it
    mask = model[0].weight_mask.clone()
    report = fix(model, torch.randn(256, 64)) if data_driven else fix(model)
    assert isinstance(model[0].weight_orig, nn.Parameter) and torch.equal(model[0].weight_mask, mask)
    effective = (model[0].weight_orig * model[0].weight_mask).detach()
    if not data_driven:
        assert float(effective.std()) == pytest.approx((2 / 64) ** 0.5, rel=0.1)
    assert "IC103" not in {f.code for f in report.findings if f.layer == "0.weight"}


def _script(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.script; models still use it
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


class _Scripted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = _script(nn.Sequential(nn.Linear(64, 64), nn.ReLU()))
        self.b = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_a_torchscript_submodule_is_named_as_not_judged_not_unused():
    report = diagnose(_Scripted(), torch.randn(8, 64))
    assert "IC001" not in {f.code for f in report.findings}
    assert any("inside TorchScript modules" in n and "a.0.weight" in n for n in report.notes), report.notes
    assert {p.name for p in report.params} == {"a.0.weight", "a.0.bias", "b.weight", "b.bias"}


def test_a_scripted_model_is_refused_in_one_line():
    from initcheck.errors import NotAModule

    with pytest.raises(NotAModule, match="is a TorchScript module .* before scripting it"):
        diagnose(_script(nn.Sequential(nn.Linear(64, 64), nn.ReLU())), torch.randn(8, 64))
