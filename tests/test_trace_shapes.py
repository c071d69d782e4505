"""Shapes on the graph: every op's output shape, from the recorded pass's tensors and from fx's
meta run, checked against the shapes a real forward gives (torch is the oracle); the user's model
is left bit for bit as it was; a graph that cannot be run keeps no shapes and is still analyzed."""

import torch
import torch.nn.functional as F
from torch import nn

from initcheck import diagnose
from initcheck.graph import OpKind
from initcheck.trace import trace, trace_fx, trace_recorded


class Attention(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


def real_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Each leaf module's output shape in a real forward (forward hooks)."""
    out: dict[str, tuple[int, ...]] = {}

    def hook_for(name: str):  # a hook that returns nothing keeps the module's output
        def hook(m: nn.Module, i: object, y: torch.Tensor) -> None:
            out.setdefault(name, tuple(y.shape))
        return hook

    hooks = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules() if name and not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def test_both_tracers_give_each_module_call_the_shape_of_a_real_forward():
    model, x = Attention(), torch.randn(3, 7, 32)
    expected = real_shapes(model, x)
    for graph in (trace_fx(model, [((x,), {})]), trace_recorded(model, (x,), {}, on_meta=True)):
        got = {op.module: op.shape for op in graph.ops if op.kind is OpKind.MODULE}
        assert got == expected, graph.tracer
        sdpa = next(op for op in graph.ops if op.target == "scaled_dot_product_attention")
        assert sdpa.shape == (3, 4, 7, 8) and sdpa.dtype == "float32"
        assert graph.ops[sdpa.operand("1")].size(-2) == 7  # the number of keys


def test_fx_shapes_come_from_the_guessed_input_when_none_is_given():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    traced = trace(model, None, None, build_inputs=lambda: [((torch.randn(2, 3, 32, 32),), {})])
    assert traced.graph.tracer == "fx"
    shapes = {op.module: op.shape for op in traced.graph.ops if op.kind is OpKind.MODULE}
    assert shapes == {"0": (2, 8, 30, 30), "1": (2, 8, 30, 30), "2": (2, 7200), "3": (2, 10)}


def test_no_input_that_fits_leaves_the_shapes_unknown_and_the_analysis_whole():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    graph = trace_fx(model, [((torch.randn(2, 5),), {})])  # the wrong width: the meta run fails
    assert all(op.shape is None for op in graph.ops)
    assert len(diagnose(model).layers) == 2


def test_shape_propagation_leaves_the_model_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    rng = torch.random.get_rng_state()
    graph = trace_fx(model, [((x,), {})])
    assert any(op.shape is not None for op in graph.ops)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].device == after[k].device for k in before)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training
