"""compiled.py: a torch.compile'd model is judged and fixed through the module it wraps, never run
compiled (running it compiles it: a minute on a CPU)."""

import pytest
import seeds
import torch
from torch import nn

from initcheck import diagnose, fix, probe


def check(compiled: nn.Module, plain: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(type(compiled), "__call__", lambda self, *a, **k: calls.append(1))
    got, want = diagnose(compiled), diagnose(plain)
    assert [lr.qualname for lr in got.layers] == [lr.qualname for lr in want.layers] == ["net.0.weight", "net.2.weight",
                                                                                        "net.4.weight"]
    assert [(f.code, f.layer) for f in got.findings] == [(f.code, f.layer) for f in want.findings]
    assert probe(compiled, torch.randn(8, 784)).probe
    before = plain.net[0].weight.detach().clone()
    fix(compiled, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain.net[0].weight, before)  # the compiled model's own tensors were fixed
    assert calls == []  # the compiled wrapper itself never ran


class OptimizedModule(nn.Module):
    """What torch.compile returns, as initcheck sees it (the class name, `_orig_mod`), without the
    6 s import of torch._dynamo that building the real one costs."""

    def __init__(self, mod: nn.Module) -> None:
        super().__init__()
        self._orig_mod = mod

    def forward(self, *args: object) -> object:
        raise AssertionError("the compiled forward must not run")


def test_a_compiled_model_is_judged_as_the_module_it_wraps_and_fixed_in_place(monkeypatch):
    plain = seeds.Uniform01()
    check(OptimizedModule(plain), plain, monkeypatch)


@pytest.mark.slow  # torch.compile imports torch._dynamo: 6 s
def test_torch_compile_itself(monkeypatch):
    plain = seeds.Uniform01()
    check(torch.compile(plain), plain, monkeypatch)
