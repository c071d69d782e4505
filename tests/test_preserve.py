"""preserved(model): the model and torch's RNG come out bit for bit as they went in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initcheck.preserve import preserved


class SelfNormalizing(nn.Module):
    """A conv whose forward, in training mode, normalizes its own weight in place and counts its
    calls in a buffer: what a UNet with in-place weight standardization does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                w = self.conv.weight
                w.sub_(w.mean(dim=(1, 2, 3), keepdim=True)).div_(w.std(dim=(1, 2, 3), keepdim=True))
                self.calls += 1
        return self.bn(self.conv(x)) + torch.randn_like(x[:, :1, 1:-1, 1:-1])  # a random draw, too


def _bits(sd: dict[str, torch.Tensor]) -> dict[str, bytes]:
    return {k: v.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() for k, v in sd.items()}


def test_a_forward_that_writes_its_weights_leaves_the_state_dict_bit_identical():
    model = SelfNormalizing().train()
    before = _bits(model.state_dict())
    weight = model.conv.weight
    with preserved(model):
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        # the forward did change the state: otherwise this test could not fail
        assert _bits(model.state_dict()) != before
        assert model.calls.item() == 1
    assert _bits(model.state_dict()) == before
    assert model.conv.weight is weight  # in place: the user's references stay valid
    assert weight.grad is None  # backward's grads are gone too


def test_it_restores_on_an_exception():
    model = SelfNormalizing().train()
    before = _bits(model.state_dict())
    with pytest.raises(RuntimeError, match="channels"), preserved(model):
        model(torch.randn(2, 3, 8, 8))
        model(torch.randn(2, 5, 8, 8))  # wrong channel count: raises after the first forward wrote
    assert _bits(model.state_dict()) == before


def test_modes_per_submodule_requires_grad_and_existing_grads_are_restored():
    model = SelfNormalizing().train()
    model.bn.eval()  # a mixed state that model.train(flag) would flatten
    model.conv.bias.requires_grad_(False)
    model.conv.weight.grad = torch.full_like(model.conv.weight, 0.5)
    with preserved(model):
        model.train()
        model.conv.bias.requires_grad_(True)
        model(torch.randn(2, 3, 8, 8)).sum().backward()  # accumulates into the existing grad in place
        model.eval()
    assert model.training and not model.bn.training and model.conv.training
    assert not model.conv.bias.requires_grad and model.conv.weight.requires_grad
    assert torch.equal(model.conv.weight.grad, torch.full_like(model.conv.weight, 0.5))


def test_torchs_rng_continues_as_if_nothing_ran():
    model = nn.Linear(2, 2)  # built before the seed: building draws from the RNG too
    torch.manual_seed(123)
    expected = torch.rand(5)  # the stream without the block
    torch.manual_seed(123)
    with preserved(model):
        torch.rand(1000)
    assert torch.equal(torch.rand(5), expected)


def test_reassigned_parameters_and_buffers_are_put_back():
    model = SelfNormalizing()
    weight, calls = model.conv.weight, model.calls
    before = _bits(model.state_dict())
    with preserved(model):
        model.conv.weight = nn.Parameter(torch.zeros(8, 3, 3, 3))
        model.calls = torch.ones(())
        weight.data = torch.zeros(1)  # another shape under the user's own parameter object
        model.register_buffer("extra", torch.ones(3))
    assert model.conv.weight is weight and model.calls is calls
    assert "extra" not in dict(model.named_buffers())
    assert _bits(model.state_dict()) == before


def test_tied_weights_stay_tied():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    original = emb.weight.detach().clone()
    with preserved(model), torch.no_grad():
        emb.weight.mul_(2)
    assert model["head"].weight is model["emb"].weight
    assert torch.equal(emb.weight, original)


class Untraceable(SelfNormalizing):
    """The same, with data-dependent control flow: fx cannot trace it, so initcheck records a real
    forward pass, which normalizes the weight in place."""

    def forward(self, x):
        if float(x.abs().sum()) >= 0:
            return super().forward(x)
        return x


def test_wrapping_diagnose_in_preserved_keeps_the_model():
    from initcheck import diagnose

    model = Untraceable().train()
    before = _bits(model.state_dict())
    with preserved(model):
        diagnose(model, torch.randn(2, 3, 8, 8))
    assert _bits(model.state_dict()) == before


@pytest.mark.parametrize("entry", ["diagnose", "probe"])
def test_diagnose_and_probe_never_change_a_model_that_writes_its_weights(entry):
    import initcheck

    model = Untraceable().train()
    before = _bits(model.state_dict())
    getattr(initcheck, entry)(model, torch.randn(2, 3, 8, 8))
    assert _bits(model.state_dict()) == before


class _Noise(nn.Module):
    """Parameter-free and random: x plus noise (an elementwise-looking module that initcheck runs
    on a grid to identify it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * torch.randn_like(x)


class _SampleDrop(nn.Module):
    """Parameter-free and random, not elementwise: drops whole samples (a hand-written drop path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (torch.rand(x.shape[0], 1) > 0.1).float() / 0.9


@pytest.mark.parametrize("entry", ["diagnose", "probe"])
def test_looking_at_random_modules_leaves_torchs_rng_where_it_was(entry):
    """Identifying a parameter-free module runs it on a grid; pushing a Gaussian through it too: a
    module that draws random numbers draws them from a fork, so the user's stream continues as if
    nothing ran."""
    import initcheck

    model = nn.Sequential(nn.Linear(8, 8), _Noise(), nn.ReLU(), _SampleDrop(), nn.Linear(8, 2))
    x = torch.randn(4, 8)
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    getattr(initcheck, entry)(model, x)
    assert torch.equal(torch.rand(5), expected)
