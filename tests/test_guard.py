"""guard: a plain loop's gate raises InitError with the report, and never changes the model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from initcheck.guard import Guard, InitError, guard


def mlp(std: float | None) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std if std is not None else math.sqrt(1 / m.in_features) * 5 / 3)
                nn.init.zeros_(m.bias)
    return net


def test_bad_init_raises_with_the_report():
    with pytest.raises(InitError) as err:
        guard(mlp(1.0))  # N(0, 1) saturates tanh
    report = err.value.report
    assert not report.ok
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("Sequential: ")
    assert any(f.code in str(err.value) for f in report.findings if f.severity == "error")


def test_context_manager_and_call_on_a_good_model():
    model = mlp(None)
    g = guard(model)
    assert isinstance(g, Guard) and g.report.ok
    with guard(model) as report:
        assert report.ok
    with pytest.raises(InitError), guard(mlp(0.01)):
        pytest.fail("the body must not run")


def test_fail_on_levels():
    bad = mlp(0.01)
    guard(bad, fail_on="never")
    warned = guard(mlp(None), fail_on="warning").report
    assert all(f.severity < "warning" for f in warned.findings)
    with pytest.raises(ValueError, match="expected one of info, warning, error, never"):
        guard(bad, fail_on="fatal")


def test_guard_leaves_the_model_alone():
    model = mlp(1.0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(InitError):
        guard(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_block_exceptions_pass_through():
    with pytest.raises(KeyError), guard(mlp(None)):
        raise KeyError("from the loop")
