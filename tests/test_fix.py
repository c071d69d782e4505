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


def test_data_driven_fix_takes_one_pass_when_every_weight_has_one_use():
    """Each layer is scaled inside its own hook and hands its corrected output on, so the rest of
    the pass already runs on the fixed model: its record after the factor is the measurement a
    verifying pass would make, and none is run."""
    inner = seeds.DeepPyTorchDefault()
    model = CountingForward(inner)
    x = torch.randn(64, 784)
    diagnose(model, x)  # fx: no forward call
    before = model.calls
    report = fix(model, x)
    dd = report.fix.data_driven
    assert model.calls - before == 1
    assert dd.forward_passes == 1
    assert dd.worst_rel_error < 0.05
    assert report.ok
    measured: dict[str, float] = {}
    hooks = [m.register_forward_hook(lambda m, i, y, name=name: measured.__setitem__(name, float((y - m.bias).std())))
             for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        inner(x)
    for h in hooks:
        h.remove()
    for s in dd.layers:  # what the fix reports after it is what the fixed model gives
        assert s.after == pytest.approx(measured[s.name], rel=1e-4), s.name


def test_data_driven_fix_verifies_a_shared_layer_in_a_second_pass():
    model = M.Shared()
    report = fix(model, torch.randn(256, 16))
    assert report.fix.data_driven.forward_passes >= 2


def test_data_driven_fix_meets_every_target_and_respects_call_order():
    model = M.CallOrder()
    nn.init.uniform_(model.fc1.weight, -1, 1)
    nn.init.uniform_(model.fc2.weight, -1, 1)
    x = torch.randn(128, 32)
    report = fix(model, x, target_std=1.0)
    dd = report.fix.data_driven
    assert [layer.name for layer in dd.layers] == ["fc1", "fc2"]  # execution order
    with torch.no_grad():
        h = model.fc1(x)
        assert float((h - model.fc1.bias).std()) == pytest.approx(1.0, abs=0.05)
        out = model.fc2(torch.relu(h))
        assert float((out - model.fc2.bias).std()) == pytest.approx(1.0, abs=0.05)


def _every_use(model, x, modules):
    """The std of each listed module's output less its bias, at every call (the oracle)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, float((o - m.bias).std())))) for m in modules]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_a_shared_layer_is_one_entry_and_every_use_ends_near_its_target():
    model = M.Shared()
    nn.init.normal_(model.shared.weight, 0, 1.0)
    x = torch.randn(128, 16)
    report = fix(model, x, target_std=1.0)
    dd = report.fix.data_driven
    assert [layer.name for layer in dd.layers].count("shared") == 1
    assert torch.isfinite(model.shared.weight).all()
    uses = [std for m, std in _every_use(model, x, [model.shared])]
    assert len(uses) == 3
    assert all(abs(u - 1.0) <= 0.35 for u in uses), uses
    # the reported worst error is the worst over every use of every parameter, measured after the fix
    every = [abs(std - 1.0) for _, std in _every_use(model, x, [model.inp, model.shared, model.out])]
    assert dd.worst_rel_error == pytest.approx(max(every), abs=1e-4)


class SharedTanh(nn.Module):
    """One tanh Linear called four times on its own output."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 64)
        self.shared = nn.Linear(64, 64)
        self.out = nn.Linear(64, 4)

    def forward(self, x):
        x = torch.tanh(self.inp(x))
        for _ in range(4):
            x = torch.tanh(self.shared(x))
        return self.out(x)


def test_a_layer_shared_by_four_calls_compromises_across_them():
    torch.manual_seed(0)
    model = SharedTanh()
    nn.init.normal_(model.shared.weight, 0, 0.5)
    x = torch.randn(256, 16)
    report = fix(model, x)
    layer = next(d for d in report.fix.data_driven.layers if d.param == "shared.weight")
    uses = [std for _, std in _every_use(model, x, [model.shared])]
    assert len(uses) == 4 and len(layer.uses) == 4
    assert max(abs(u / layer.target - 1.0) for u in uses) <= 0.35, (uses, layer.target)
    assert layer.uses == pytest.approx(uses, rel=1e-4)


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
    assert report.ok and report.fix.data_driven.worst_rel_error < 0.05


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
    layers = {d.name: d for d in report.fix.data_driven.layers}
    assert {"emb", "lstm", "gru"} <= set(layers)
    for name in ("emb", "lstm", "gru"):
        assert layers[name].after == pytest.approx(1.0, abs=0.05), (name, layers[name])
    with torch.no_grad():
        assert float(model.emb(idx).std()) == pytest.approx(1.0, abs=0.05)
    assert report.fix.data_driven.forward_passes == 2


@pytest.mark.parametrize("build, x, expected", [
    (seeds.DeepPyTorchDefault, (64, 784), ["reinitializing", "scaling"]),  # one use each: no verifying pass
    (M.Shared, (256, 16), ["reinitializing", "scaling", "verifying"]),
])
def test_progress_is_told_every_stage_in_order_and_each_reaches_its_total(build, x, expected):
    model = build()
    calls = []
    fix(model, torch.randn(*x), progress=lambda *a: calls.append(a))
    stages = [c[0] for c in calls]
    assert list(dict.fromkeys(stages)) == expected
    for stage in expected:
        done = [d for s, d, _ in calls if s == stage]
        total = {t for s, _, t in calls if s == stage}
        assert done == sorted(done) and len(total) == 1 and done[-1] == total.pop()


def _deep(act, depth=20, width=64):
    layers = [nn.Linear(32, width), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _orthogonal(w, gain):
    return torch.allclose(w @ w.T, gain ** 2 * torch.eye(w.shape[0]), atol=1e-4)


def test_a_deep_tanh_stack_is_drawn_orthogonal_and_the_fix_says_why():
    torch.manual_seed(0)
    model = _deep(nn.Tanh)  # PyTorch's default: 8x too small a variance before tanh, all flagged
    report = fix(model, generator=torch.Generator().manual_seed(0))
    draw = report.fix.draw
    assert draw.scheme == "orthogonal" and not draw.forced and draw.depth == 20
    assert any("orthogonal" in n and "20 weight layers" in n for n in report.notes)
    gain = nn.init.calculate_gain("tanh")
    hidden = [m.weight.detach() for m in model if isinstance(m, nn.Linear)][1:-1]
    assert hidden and all(_orthogonal(w, gain) for w in hidden)
    assert report.ok


def test_a_deep_relu_stack_keeps_gaussian_draws_and_says_why():
    torch.manual_seed(0)
    model = _deep(nn.ReLU)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -1.0, 1.0)
    report = fix(model, generator=torch.Generator().manual_seed(0))
    assert report.fix.draw.scheme is None
    assert any("ReLU-family" in n for n in report.notes)
    w = model[2].weight.detach()
    assert not _orthogonal(w / w.norm(dim=1).mean(), 1.0)
    assert float(w.std()) == pytest.approx((2 / 64) ** 0.5, rel=0.1)  # He, fan_in 64


def test_a_deep_plain_conv_stack_gets_delta_orthogonal_kernels():
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 16, 3, padding=1), nn.Tanh()]
    for _ in range(12):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    fix(model, generator=torch.Generator().manual_seed(0))
    w = model[2].weight.detach()
    centre = w[:, :, 1, 1].clone()
    w = w.clone()
    w[:, :, 1, 1] = 0
    assert torch.count_nonzero(w) == 0
    assert _orthogonal(centre, nn.init.calculate_gain("tanh"))


def test_a_forced_scheme_redraws_every_weight_layer_by_it():
    model = seeds.He()  # sound: nothing would be redrawn
    report = fix(model, scheme="orthogonal", generator=torch.Generator().manual_seed(0))
    assert report.fix.draw.forced and report.fix.draw.scheme == "orthogonal"
    w = model.net[2].weight.detach()  # 128 x 256: orthonormal rows times the gain
    assert _orthogonal(w, 2 ** 0.5)
    with pytest.raises(ValueError, match="orthogonal"):
        fix(seeds.He(), scheme="orthogonl")


@pytest.mark.parametrize("data_driven", [False, True])
def test_a_weight_whose_finding_the_selection_suppresses_is_not_touched(data_driven):
    from initcheck.findings import Selection

    model = seeds.Uniform01()
    kept = model.net[0].weight.detach().clone()
    x = torch.randn(64, 784) if data_driven else None
    report = fix(model, x, per_layer_ignore=(("IC", "net.0.weight"),), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.net[0].weight, kept)
    assert "net.0.weight" not in report.fix.reinitialized
    assert "net.2.weight" in report.fix.reinitialized
    model = seeds.Uniform01()
    kept = {n: p.detach().clone() for n, p in model.named_parameters()}
    fix(model, x, selection=Selection(ignore=("IC",)))  # every finding ignored: nothing is touched
    assert all(torch.equal(p, kept[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("data_driven", [False, True])
def test_a_frozen_parameter_is_never_redrawn_or_scaled(data_driven):
    """Uniform [0, 1) weights everywhere (IC103 and worse on every layer), the first layer frozen
    (requires_grad=False: a pretrained backbone in practice): the fix changes every trainable weight
    and leaves the frozen one bit for bit, and says so."""
    model = seeds.Uniform01()
    model.net[0].requires_grad_(False)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    x = torch.randn(64, 784) if data_driven else None
    report = fix(model, x, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(dict(model.named_parameters())[n], v) for n, v in frozen.items())
    assert "net.0.weight" not in report.fix.reinitialized and "net.2.weight" in report.fix.reinitialized
    assert any("2 frozen parameter(s)" in n for n in report.notes)
    assert not model.net[0].weight.requires_grad  # the flag itself is kept too


def test_each_recurrent_parameter_reaches_its_own_target_in_a_measured_forward():
    from initcheck.api import analyze
    from initcheck.fix import targets

    torch.manual_seed(0)
    model = M.Recurrent()
    nn.init.uniform_(model.lstm.weight_ih_l0, -2, 2)
    nn.init.uniform_(model.gru.weight_ih_l0, -2, 2)
    idx = torch.randint(0, 50, (32, 7))
    goal = targets(analyze(model, idx))
    assert goal["lstm.weight_ih_l0"] != pytest.approx(goal["lstm.weight_hh_l0"], rel=0.05)
    report = fix(model, idx)
    with torch.no_grad():
        x = model.emb(idx)
        lstm_pre = torch.nn.functional.linear(x, model.lstm.weight_ih_l0)
        h, _ = model.lstm(x)
        gru_pre = torch.nn.functional.linear(h, model.gru.weight_ih_l0)
    assert float(lstm_pre.std()) == pytest.approx(goal["lstm.weight_ih_l0"], rel=0.05)
    assert float(gru_pre.std()) == pytest.approx(goal["gru.weight_ih_l0"], rel=0.05)
    assert report.fix.data_driven.worst_rel_error < 0.05


def _zoo():
    import inspect

    for mod in (M, seeds):
        for name, cls in vars(mod).items():
            ours = inspect.isclass(cls) and issubclass(cls, nn.Module) and cls.__module__ == mod.__name__
            if ours and not name.startswith("_") and all(p.default is not p.empty for p in inspect.signature(cls).parameters.values()):
                yield pytest.param(cls, id=f"{mod.__name__}.{name}")


NEEDS_INPUT = {"Transparent", "CustomWeight", "DictInput"}  # no input can be guessed: static only


@pytest.mark.parametrize("cls", list(_zoo()))
@pytest.mark.parametrize("data_driven", [False, True])
def test_fix_never_leaves_a_finding_at_the_severity_it_acted_on(cls, data_driven):
    from initcheck.findings import Severity

    if data_driven and cls.__name__ in NEEDS_INPUT:
        pytest.skip("no input can be guessed for this model")
    torch.manual_seed(0)
    model = cls()
    before = diagnose(model).findings
    acted = max((f.severity for f in before), default=Severity.WARNING)
    fix(model, data_driven=data_driven, generator=torch.Generator().manual_seed(0))
    after = [f for f in diagnose(model).findings if f.severity >= acted]
    assert not after, [f.message for f in after]


def test_a_data_driven_fix_of_a_transformer_encoder_adds_no_warning():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Linear(16, 64), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(64, 10))
    x = torch.randn(8, 12, 16)
    assert diagnose(model, x).ok
    fix(model, x)
    found = diagnose(model, x).findings
    assert not found, [f.message for f in found]


def _bug_cases():
    import cases as C

    for name in ("NaNWeight", "InfNormWeight", "ToEmptyNeverInitialized", "ZeroLayerNorm", "SwappedLayerNorm",
                 "ZeroBatchNormPlainCNN", "TiedUnitEmbedding", "SharedTanhUnitNormal", "AdaLNZeroBlock", "WeightNormed"):
        yield pytest.param(getattr(C, name), id=name)
    yield pytest.param(C.NormFreeResidual, id="NormFreeResidual")


@pytest.mark.parametrize("cls", list(_bug_cases()))
def test_the_static_fix_of_a_bug_case_leaves_nothing_at_the_severity_it_acted_on(cls):
    torch.manual_seed(0)
    model = cls()
    before = diagnose(model).findings
    acted = max(f.severity for f in before)
    fix(model, generator=torch.Generator().manual_seed(0))
    after = [f for f in diagnose(model).findings if f.severity >= acted]
    assert not after, [f.message for f in after]
    assert all(torch.isfinite(p).all() and p.abs().max() < 1e6 for p in model.parameters())


def test_norm_scales_are_reset_to_one_and_shifts_to_zero_but_a_zero_residual_end_stays():
    import cases as C

    model = C.SwappedLayerNorm()  # weight 0, bias 2
    report = fix(model, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.ln.weight, torch.ones(32)) and torch.equal(model.ln.bias, torch.zeros(32))
    assert set(report.fix.reset) >= {"ln.weight", "ln.bias"}
    resnet = C.ZeroInitResidualBN()  # zero gamma ending each residual branch: a convention
    zeros = {n: p.detach().clone() for n, p in resnet.named_parameters() if p.dim() == 1 and not p.any()}
    assert zeros, "the case must have zero norm scales, or this test could not fail"
    fix(resnet, generator=torch.Generator().manual_seed(0))
    params = dict(resnet.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in zeros.items())


def test_a_tied_unit_embedding_is_redrawn_at_gpt2s_scale_and_stays_tied():
    import cases as C

    model = C.TiedUnitEmbedding()
    fix(model, generator=torch.Generator().manual_seed(0))
    assert model.head.weight is model.emb.weight
    assert float(model.emb.weight.detach().std()) == pytest.approx(0.02, rel=0.05)


def test_a_weight_normed_layer_is_redrawn_through_its_parametrization():
    import cases as C

    torch.manual_seed(0)
    model = C.WeightNormed()
    fix(model, generator=torch.Generator().manual_seed(0))
    # He for a ReLU layer with fan_in 32: std sqrt(2/32) = 0.25, measured on the effective weight
    assert float(model.fc1.weight.detach().std()) == pytest.approx(0.25, rel=0.1)
    assert torch.nn.utils.parametrize.is_parametrized(model.fc1, "weight")


def test_fix_traces_once_and_probe_runs_the_pipeline_once(monkeypatch):
    from initcheck import api, facts
    from initcheck.probe import probe

    traces, collects = [], []
    real_trace, real_collect = api.trace, facts.collect
    monkeypatch.setattr(api, "trace", lambda *a, **k: traces.append(1) or real_trace(*a, **k))
    monkeypatch.setattr(api.facts_mod, "collect", lambda *a, **k: collects.append(1) or real_collect(*a, **k))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # PyTorch's default: the fix acts
    fix(model, generator=torch.Generator().manual_seed(0))
    assert len(traces) == 1 and len(collects) == 2  # facts before and after the fix, one trace
    traces.clear()
    collects.clear()
    probe(model)
    assert len(traces) == 1 and len(collects) == 1


@pytest.mark.parametrize("cls", [seeds.Ones, seeds.DeepPyTorchDefault, seeds.TanhNormal1])
def test_reanalyze_after_the_weights_change_matches_a_fresh_analysis(cls):
    from initcheck.api import analyze, reanalyze

    torch.manual_seed(0)
    model = cls()
    first = analyze(model)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)  # the weights change, the graph does not
    again, fresh = reanalyze(first).report, analyze(model).report
    assert [(f.code, f.layer, f.message) for f in again.findings] == [(f.code, f.layer, f.message) for f in fresh.findings]
    assert [(lr.actual_std, lr.predicted_rms) for lr in again.layers] == [(lr.actual_std, lr.predicted_rms) for lr in fresh.layers]
    assert again.findings != first.report.findings  # the change was seen, or this test could not fail


def test_fix_reuses_a_given_analysis_and_does_not_trace_again(monkeypatch):
    from initcheck import api

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    first = api.analyze(model)
    traces = []
    real = api.trace
    monkeypatch.setattr(api, "trace", lambda *a, **k: traces.append(1) or real(*a, **k))
    collected = []
    real_collect = api.facts_mod.collect
    monkeypatch.setattr(api.facts_mod, "collect", lambda *a, **k: collected.append(1) or real_collect(*a, **k))
    report = fix(model, generator=torch.Generator().manual_seed(0), analysis=first)
    assert traces == [] and report.fix.reinitialized
    assert collected == [1]  # the facts once, after the fix: before it, the given analysis's are reused
    # the same draws as a fix that analyses by itself
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    fix(other, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(ValueError, match="analysis"):
        fix(other, analysis=first)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_fix_refuses_sharded_weights_in_one_line_and_leaves_the_shard_alone():
    """A DTensor parameter (FSDP2, tensor parallel) holds one rank's slice: a draw into it would give
    each rank a slice of a different matrix, so fix() refuses instead of reporting a repair."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from initcheck.errors import UsageError

    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        model = nn.Sequential(nn.Linear(4, 4))
        nn.init.zeros_(model[0].weight)  # a finding fix() would otherwise act on
        mesh = init_device_mesh("cpu", (1,))
        model[0].weight = nn.Parameter(distribute_tensor(model[0].weight.detach(), mesh, [Shard(0)]))
        with pytest.raises(UsageError, match=r"^Sequential: cannot redraw sharded parameters \(0\.weight is a DTensor\)"):
            fix(model)
        assert float(model[0].weight.detach().to_local().abs().sum()) == 0.0
    finally:
        dist.destroy_process_group()


def test_the_data_driven_pass_measures_the_forward_the_analysis_judged():
    """Physics: the analysis judges training's forward, where each Dropout(0.5) doubles E[x^2] of
    what it keeps and each BatchNorm normalizes by the batch. Measured in eval mode instead, the
    pass saw neither: it scaled the classifier up by sqrt(2) per dropout and left the layers after a
    fresh (identity) BatchNorm at whatever the conv gave, so the fixed model's logits came out ~2x
    over their target in training (torchvision's vgg11_bn: a new IC201 after the fix). Measured in
    the judged forward, each layer's raw output in that forward lands on its target, and the user's
    mode flags and RNG stream are as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(1),
                          nn.Linear(16 * 64, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 256), nn.ReLU(),
                          nn.Dropout(0.5), nn.Linear(256, 10))
    model.eval()
    x = torch.randn(64, 3, 8, 8)
    rng = torch.get_rng_state()
    stats = [b.clone() for b in model.buffers()]
    report = fix(model, x, generator=torch.Generator().manual_seed(0))
    assert all(not m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))  # running statistics untouched
    targets = {s.param: s.target for s in report.fix.data_driven.layers}
    outs = {}
    hooks = [model[i].register_forward_hook(lambda m, a, y, i=i: outs.__setitem__(i, y)) for i in (10, 13)]
    model.train()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        model(x)
    model.eval()
    for h in hooks:
        h.remove()
    for i in (10, 13):
        raw = outs[i] - model[i].bias.detach()
        assert float(raw.std()) == pytest.approx(targets[f"{i}.weight"], rel=0.2), i


def test_a_weight_rebuilt_with_a_factor_is_drawn_through_it():
    """StyleGAN's equalized convs multiply the stored weight by 1/sqrt(fan_in) in forward; drawn at
    N(0, 0.02) they receive 0.02/sqrt(fan_in) (IC103, 50x below in std). A fix that drew the stored
    weight at the scheme's std would leave the conv at scheme/sqrt(fan_in): the parameter is divided
    by the rebuild's factor, so the conv receives the scheme's std and nothing is left."""
    import cases as C

    model = C.EqualizedDiscriminator(normal_std=0.02)
    x = torch.randn(2, 3, 16, 16)
    fix(model, x, generator=torch.Generator().manual_seed(0))
    after = diagnose(model, x)
    assert not [f for f in after.findings if f.code == "IC103"], after.findings
    rows = {lr.qualname: lr for lr in after.layers}
    assert rows["convs.1.weight"].actual_std == pytest.approx(rows["convs.1.weight"].recommended_std, rel=0.05)


def test_a_data_driven_step_that_leaves_worse_than_the_static_one_is_undone():
    """LoRA layers whose A and B were both drawn N(0, 1), a head at N(0, 1), frozen bases: the
    data-driven step aims each layer at the signal the recommended schemes give, and here that
    signal grows through base + 2 * B(A(x)) to an IC201 at the head, which the static step alone
    does not leave. The fix keeps the better of the two and says so: nothing is left at the
    severity it acted on."""
    import cases as C

    from initcheck.findings import Severity

    model = C.LoRAAdapted()
    model.l1, model.l2, model.head = C.LoRALinear(64, 256), C.LoRALinear(256, 256), torch.nn.Linear(256, 10)
    with torch.no_grad():
        for layer in (model.l1, model.l2):
            layer.lora_A.weight.normal_(0.0, 1.0)
            layer.lora_B.weight.normal_(0.0, 1.0)
        model.head.weight.normal_(0.0, 1.0)
    x = torch.randn(16, 64)
    report = fix(model, x, data_driven=True, generator=torch.Generator().manual_seed(0))
    acted = report.fix.acted_on
    assert not [f for f in diagnose(model, x).findings if f.severity >= max(acted, Severity.WARNING)]
    assert report.fix.data_driven is None and any("data-driven step was undone" in n for n in report.notes)
