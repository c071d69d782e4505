"""fix(): static and data-driven, one pass, call order, shared layers, nothing left behind."""

import models as M
import pytest
import seeds
import torch
from torch import nn

from initcheck import diagnose, fix
from initcheck.errors import ForwardError


class CountingForward(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("seed", [seeds.Zeros, seeds.Ones, seeds.Uniform01, seeds.UniformMinus1To1, seeds.UniformHalf,
                                  seeds.UniformTiny, seeds.InvSqrtN, seeds.PyTorchDefault, seeds.DeepPyTorchDefault,
                                  seeds.TanhNormal1, seeds.TanhNormal001, seeds.SigmoidNormal1])
def test_static_fix_then_diagnose_shows_no_error(seed):
    model = seed()
    report = fix(model, generator=torch.Generator().manual_seed(0))
    assert report.ok, [f.message for f in report.findings]
    assert diagnose(model).ok


def test_static_fix_keeps_sound_layers_and_deliberate_zeros():
    model = seeds.He()
    nn.init.zeros_(model.net[4].weight)  # a zero classifier
    kept = model.net[0].weight.detach().clone()
    fix(model)
    assert torch.equal(model.net[0].weight, kept)
    assert torch.count_nonzero(model.net[4].weight) == 0
    fixup = M.Fixup()
    fix(fixup)
    assert all(torch.count_nonzero(b.fc2.weight) == 0 for b in fixup.blocks)


def test_static_fix_draws_only_from_the_generator():
    a, b = seeds.Uniform01(), seeds.Uniform01()
    b.load_state_dict(a.state_dict())
    state = torch.get_rng_state()
    fix(a, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    fix(b, generator=torch.Generator().manual_seed(3))
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_data_driven_fix_takes_one_pass_plus_one_to_verify():
    inner = seeds.DeepPyTorchDefault()
    model = CountingForward(inner)
    x = torch.randn(64, 784)
    diagnose(model, x)  # fx: no forward call
    before = model.calls
    report = fix(model, x)
    dd = report.extra["data_driven"]
    assert model.calls - before == 2  # the model's own forward: one pass to scale, one to verify
    assert dd["forward_passes"] == 2
    assert dd["worst_rel_error"] < 0.05
    assert report.ok


def test_data_driven_fix_meets_every_target_and_respects_call_order():
    model = M.CallOrder()
    nn.init.uniform_(model.fc1.weight, -1, 1)
    nn.init.uniform_(model.fc2.weight, -1, 1)
    x = torch.randn(128, 32)
    report = fix(model, x, target_std=1.0)
    dd = report.extra["data_driven"]
    assert [layer["name"] for layer in dd["layers"]] == ["fc1", "fc2"]  # execution order
    with torch.no_grad():
        h = model.fc1(x)
        assert float((h - model.fc1.bias).std()) == pytest.approx(1.0, abs=0.05)
        out = model.fc2(torch.relu(h))
        assert float((out - model.fc2.bias).std()) == pytest.approx(1.0, abs=0.05)


def test_a_shared_layer_is_scaled_once_and_converges():
    model = M.Shared()
    nn.init.normal_(model.shared.weight, 0, 1.0)
    x = torch.randn(128, 16)
    report = fix(model, x, target_std=1.0)
    dd = report.extra["data_driven"]
    assert [layer["name"] for layer in dd["layers"]].count("shared") == 1
    assert torch.isfinite(model.shared.weight).all()
    assert dd["layers"][1]["after"] == pytest.approx(1.0, abs=0.05)


def test_mode_and_hooks_are_restored_even_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.armed = False

        def forward(self, x):
            if self.armed:
                raise RuntimeError("boom")
            return self.fc(x)

    model = Boom()
    model.train()
    model.armed = True
    from initcheck.api import analyze
    from initcheck.fix import data_driven_pass
    model.armed = False
    analysis = analyze(model, torch.randn(2, 4))
    model.armed = True
    with pytest.raises(ForwardError, match="RuntimeError: boom"):
        data_driven_pass(model, analysis, torch.randn(2, 4))
    assert model.training and model.fc.training
    assert not model.fc._forward_hooks


def test_a_failed_data_driven_fix_leaves_every_parameter_as_it_was():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    nn.init.uniform_(model[0].weight, 0.0, 1.0)  # flagged: the static step replaces it

    def late(module, args):  # the user's hook fires after the first layer was reinitialized and scaled
        raise ValueError("late")

    model[2].register_forward_pre_hook(late)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ForwardError, match="ValueError: late"):
        fix(model, torch.randn(8, 16))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_biases_are_kept_by_the_data_driven_pass():
    model = seeds.He()
    nn.init.constant_(model.net[0].bias, 0.1)
    fix(model, torch.randn(64, 784))
    assert torch.allclose(model.net[0].bias, torch.full((256,), 0.1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fix_of_a_cpu_model_writes_back_and_stays_on_cpu():
    model = seeds.UniformMinus1To1()
    report = fix(model, torch.randn(256, 784), device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    assert report.ok and report.extra["data_driven"]["worst_rel_error"] < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_stays_on_cuda():
    model = seeds.UniformMinus1To1().cuda()
    fix(model, torch.randn(256, 784, device="cuda"), device="auto")
    assert next(model.parameters()).is_cuda


def test_data_driven_fix_covers_embeddings_and_recurrent_layers():
    model = M.Recurrent()
    nn.init.normal_(model.emb.weight, 0, 0.001)  # far too small: not a recognized convention
    nn.init.uniform_(model.lstm.weight_ih_l0, -2, 2)
    idx = torch.randint(0, 50, (32, 7))
    report = fix(model, idx, target_std=1.0)
    layers = {d["name"]: d for d in report.extra["data_driven"]["layers"]}
    assert {"emb", "lstm", "gru"} <= set(layers)
    for name in ("emb", "lstm", "gru"):
        assert layers[name]["after"] == pytest.approx(1.0, abs=0.05), (name, layers[name])
    with torch.no_grad():
        assert float(model.emb(idx).std()) == pytest.approx(1.0, abs=0.05)
    assert report.extra["data_driven"]["forward_passes"] == 2


def test_progress_is_told_every_stage_in_order_and_each_reaches_its_total():
    model = seeds.DeepPyTorchDefault()
    calls = []
    fix(model, torch.randn(64, 784), progress=lambda *a: calls.append(a))
    stages = [c[0] for c in calls]
    assert list(dict.fromkeys(stages)) == ["reinitializing", "scaling", "verifying"]
    for stage in ("reinitializing", "scaling", "verifying"):
        done = [d for s, d, _ in calls if s == stage]
        total = {t for s, _, t in calls if s == stage}
        assert done == sorted(done) and len(total) == 1 and done[-1] == total.pop()
