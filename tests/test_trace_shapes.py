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


class Classifier(nn.Module):
    """Conv stem, tokens, one attention, a linear head: the attention makes fx propagate shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.norm, self.attn, self.head = nn.Conv2d(3, 32, 4, 4), nn.BatchNorm2d(32), Attention(), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.stem(x)).flatten(2).transpose(1, 2)
        return self.head(self.attn(t).mean(1))


def test_fx_shapes_come_from_the_guessed_input_when_none_is_given():
    model = Classifier()
    traced = trace(model, None, None, build_inputs=lambda: [((torch.randn(2, 3, 32, 32),), {})])
    assert traced.graph.tracer == "fx"
    shapes = {op.module: op.shape for op in traced.graph.ops if op.kind is OpKind.MODULE}
    assert shapes["stem"] == (2, 32, 8, 8) and shapes["attn.qkv"] == (2, 64, 96) and shapes["head"] == (2, 10)


def test_a_graph_without_attention_is_not_run_for_shapes():
    """No handler reads a CNN's shapes yet, and the first meta run costs seconds: none are computed."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    graph = trace_fx(model, [((torch.randn(2, 3, 32, 32),), {})])
    assert all(op.shape is None for op in graph.ops)


def test_no_input_that_fits_leaves_the_shapes_unknown_and_the_analysis_whole():
    model = Classifier()
    graph = trace_fx(model, [((torch.randn(2, 5),), {})])  # not an image: the meta run fails
    assert all(op.shape is None for op in graph.ops)
    assert len(diagnose(model).layers) == 4


def test_shape_propagation_leaves_the_model_bit_for_bit():
    torch.manual_seed(0)
    model = Classifier()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    rng = torch.random.get_rng_state()
    graph = trace_fx(model, [((x,), {})])
    assert any(op.shape is not None for op in graph.ops)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].device == after[k].device for k in before)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert model.training
