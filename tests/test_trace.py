"""The tracers: fx first, the recorded pass when fx fails or misses weights; nothing of the
user's changes."""

import copy

import models as M
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from initcheck import diagnose
from initcheck.trace import TraceFailure, trace_recorded, weight_params


def test_fx_is_used_when_it_traces():
    assert diagnose(M.FunctionalActs()).tracer == "fx"


def test_data_dependent_control_flow_falls_back_to_a_recorded_pass():
    r = diagnose(M.DataDependent())
    assert r.tracer == "recorded"
    assert any("fx could not trace" in n for n in r.notes)
    assert [lr.qualname for lr in r.layers] == ["fc1.weight", "fc2.weight"]
    assert r.layers[0].activation == "tanh"


@torch.fx.wrap
def hidden_linear(x, w):
    return F.linear(x, w)


class Wrapped(nn.Module):
    """fx traces, but a wrapped function receives the weight: the graph misses it."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.w = nn.Parameter(torch.randn(16, 16) * 0.25)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        return self.out(torch.relu(hidden_linear(torch.relu(self.inp(x)), self.w)))


def test_fx_graph_that_misses_a_weight_falls_back():
    r = diagnose(Wrapped())
    assert r.tracer == "recorded"
    assert "fx reached 2 of 3 weights" in r.notes[0]
    assert {lr.qualname for lr in r.layers} == {"inp.weight", "w", "out.weight"}
    assert {lr.qualname: lr.activation for lr in r.layers}["w"] == "relu"


def test_recorded_pass_sees_the_same_facts_as_fx():
    model = M.Transparent()
    fx_layers = diagnose(model).layers
    graph = trace_recorded(model, (torch.randn(2, 3, 8, 8),), {})
    from initcheck.facts import collect
    from initcheck.trace.index import index_graph
    rec = collect(index_graph(graph, model), model).layers
    assert [(lf.qualname, lf.activation) for lf in rec] == [(lr.qualname, lr.activation) for lr in fx_layers]


def test_recorded_pass_follows_call_order_and_shared_layers():
    graph = trace_recorded(M.Shared(), (torch.randn(2, 16),), {})
    calls = [op.module for op in graph.ops if op.kind == "module"]
    assert calls == ["inp", "shared", "shared", "shared", "out"]


def test_meta_pass_reads_no_weight_and_real_pass_is_the_fallback():
    model = M.DataDependent()
    with pytest.raises(TraceFailure, match="forward failed"):
        trace_recorded(model, (torch.randn(2, 16),), {}, on_meta=True)
    assert trace_recorded(model, (torch.randn(2, 16),), {}, on_meta=False).tracer == "recorded"


def test_diagnose_changes_nothing():
    model, branchy = M.ResNetish(), M.DataDependent()
    model.train()
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    diagnose(branchy)  # runs a real forward pass
    diagnose(model)
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert [p.requires_grad for p in model.parameters()] == grads
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks for m in model.modules())


def test_real_forward_pass_leaves_batchnorm_statistics_alone():
    class Branchy(M.ConvBN):
        def forward(self, x):
            y = super().forward(x)
            return y * 2 if y.sum() > 0 else y
    model = Branchy()
    stats = model.bn.running_mean.clone()
    diagnose(model)
    assert torch.equal(model.bn.running_mean, stats)
    assert int(model.bn.num_batches_tracked) == 0


def test_tied_weights_are_judged_once():
    model = M.TinyGPT()
    names = [lr.qualname for lr in diagnose(model).layers]
    assert names.count("wte.weight") == 1 and "lm_head.weight" not in names
    assert diagnose(model).layers[0].aliases == ("lm_head.weight",)


def test_weight_params_lists_custom_and_packed_weights():
    assert set(weight_params(M.CustomWeight())) == {"w1", "w2"}
    assert "attn.in_proj_weight" in weight_params(M.Attention())


def test_dict_inputs_and_outputs():
    r = diagnose(M.DictInput(), ({"x": torch.randn(2, 8), "y": torch.randn(2, 4)},))
    assert {lr.qualname for lr in r.layers} == {"a.weight", "b.weight", "head.weight"}


class _WritesOneWeightThroughAView(nn.Module):
    """fx cannot trace it (data-dependent branch), so a real forward runs; it writes one row of fc1's
    weight through a view, with an out= call into fc2's bias, and leaves fc3 alone."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > -1e30:
            with torch.no_grad():
                self.fc1.weight[0].mul_(3.0)
                torch.add(self.fc2.bias, 1.0, out=self.fc2.bias)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_a_real_recorded_pass_puts_back_exactly_the_parameters_it_wrote(monkeypatch):
    from initcheck import diagnose
    from initcheck.trace import recorded

    saved = []
    real = recorded._CopyOnWrite.before

    def spy(self, name, args, kwargs):
        real(self, name, args, kwargs)
        saved.append(len(self._saved))

    monkeypatch.setattr(recorded._CopyOnWrite, "before", spy)
    torch.manual_seed(0)
    model = _WritesOneWeightThroughAView()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = diagnose(model, torch.randn(4, 8))
    assert report.tracer == "recorded"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert max(saved) == 2  # fc1.weight and fc2.bias were copied; nothing else was
