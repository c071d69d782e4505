"""Models that do not fit one machine: meta-device configs, the init plan, lazy and odd models."""

import warnings

import models as M
import pytest
import torch
from torch import nn

import initcheck
from initcheck import diagnose

T = pytest.importorskip("transformers")


def llama(**cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            return T.LlamaForCausalLM(T.LlamaConfig(**cfg))


@pytest.mark.zoo
def test_a_70b_llama_config_on_the_meta_device_gets_a_static_report():
    model = llama(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, vocab_size=32000)
    report = diagnose(model)
    assert len(report.layers) == 80 * 7 + 2 and report.ok
    q = report.layers[1]
    assert (q.qualname, q.fan_in, q.fan_out, q.scheme) == ("model.layers.0.self_attn.q_proj.weight", 8192, 8192, "xavier")
    assert q.actual_std is None and q.predicted_rms is None  # nothing was materialized
    assert any("meta device" in n for n in report.notes)
    assert all(p.is_meta for p in model.parameters())


def test_init_plan_applies_after_to_empty():
    model = llama(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000)
    plan = initcheck.plan(model)
    assert {e.param for e in plan.entries} >= {"model.layers.0.mlp.down_proj.weight", "lm_head.weight"}
    model.to_empty(device="cpu")
    assert plan.apply(model, generator=torch.Generator().manual_seed(0)) == ()
    assert torch.equal(model.model.norm.weight, torch.ones(64))
    report = diagnose(model)
    assert report.ok and not [f for f in report.findings if f.severity == "warning"]
    q = report.layers[1]
    assert q.actual_std == pytest.approx(q.recommended_std, rel=0.05)


def test_plan_as_an_fsdp_style_param_init_fn():
    with torch.device("meta"):
        model = M.mlp((32, 64, 10))
    plan = initcheck.plan(model, torch.randn(2, 32))
    init = plan.param_init_fn("cpu", torch.Generator().manual_seed(0), model=model)
    for module in model.modules():  # what FSDP does for each module with meta parameters
        if any(p.is_meta for p in module.parameters(recurse=False)):
            init(module)
    assert not any(p.is_meta for p in model.parameters())
    assert diagnose(model).ok
    assert float(model[0].weight.detach().std()) == pytest.approx(plan.entries[0].std, rel=0.1)


def test_lazy_modules_give_a_clear_finding():
    class Lazy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LazyLinear(8)
            self.b = nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    report = diagnose(Lazy(), torch.randn(2, 5))
    assert report.tracer == "none" and report.layers == ()
    assert [(f.code, f.layer) for f in report.findings] == [("IC002", "a.weight"), ("IC002", "a.bias")]


def test_non_tensor_outputs():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return {"loss": None, "n": 3, "y": [self.a(x)], "s": "text"}

    class Scalar(Odd):
        def forward(self, x):
            return float(self.a(x).sum())

    assert [lr.qualname for lr in diagnose(Odd(), torch.randn(2, 4)).layers] == ["a.weight"]
    assert [lr.qualname for lr in diagnose(Scalar(), torch.randn(2, 4)).layers] == ["a.weight"]


# ---- the analysis' shortcuts give the answers of the long way


def _zero_middle():
    """A ReLU MLP whose middle layer is zero: its effective weights (its scheme's) differ from the
    actual ones there only, so the effective sweep reuses the actual one up to that layer."""
    torch.manual_seed(0)
    model = M.mlp((32, 64, 64, 64, 10))
    nn.init.zeros_(model[4].weight)
    return model


@pytest.mark.parametrize("build", [_zero_middle, M.TinyGPT, M.Recurrent, M.Attention, M.ResNetish, M.Shared, M.Fixup])
def test_a_sweep_from_an_earlier_one_equals_a_sweep_from_scratch(build):
    from initcheck import signal
    from initcheck.api import analyze
    from initcheck.stats import StatsCache

    torch.manual_seed(0)
    model = build()
    a = analyze(model)
    ctx = a.context
    every = tuple(sorted(ctx.layers + ctx.tied_uses, key=lambda lf: lf.op))
    actual_w = signal.actual_weights(every)
    effective_w = signal.effective_weights(every, ctx.thresholds)
    with torch.no_grad():
        base = signal.sweep(ctx.index, model, every, actual_w, StatsCache())
        reused = signal.sweep(ctx.index, model, every, effective_w, StatsCache(), base=base).signal
        scratch = signal.propagate(ctx.index, model, every, effective_w, StatsCache())
    assert reused == scratch  # every forward and backward moment, the unhandled ops, the gates
    if build is _zero_middle:
        middle, last = a.layers[2].op, a.layers[3].op
        assert all(r is b for r, b in zip(reused.forward[:middle], base.signal.forward[:middle]))  # reused
        assert reused.forward[last] != base.signal.forward[last]  # the zero layer did change the signal


def test_a_quantized_model_says_it_has_no_float_weight_to_judge():
    """torch.ao's dynamic quantization packs each Linear's weight into int8: nothing for diagnose
    to read, so an empty 'ok' report would be a silent pass; the note says why and what to do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's own deprecation notice
        model = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
                                                       {nn.Linear}, dtype=torch.qint8)
    report = diagnose(model, torch.randn(8, 64))
    assert any("2 quantized module(s)" in n and "before quantizing" in n for n in report.notes), report.notes
