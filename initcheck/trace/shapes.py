"""Shapes for an fx graph: an fx Interpreter (ShapeProp's pattern) run on the meta copy with meta
inputs, so no weight is read and no activation is allocated; a graph whose run fails keeps no shapes."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..devices import move

Inputs = tuple[tuple[Any, ...], dict[str, Any]]
Described = dict[str, Any]

# Candidate inputs tried before giving up: each failure costs one meta forward.
_TRIES = 3


def described(value: Any) -> Described:
    """Op fields for the shape and dtype of a value's first tensor (none when it holds no tensor):
    read from the tensor's metadata, so meta and real tensors alike cost nothing."""
    for _ in range(4):
        if isinstance(value, torch.Tensor):
            return {"shape": tuple(int(n) for n in value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if isinstance(value, (tuple, list)) and value:
            value = next((v for v in value if isinstance(v, torch.Tensor)), value[0])
        elif isinstance(value, dict) and value:
            value = next(iter(value.values()))
        else:
            return {}
    return {}


class _Shapes(fx.Interpreter):
    """Runs the graph and keeps each node's output shape and dtype, and the value of the nodes that
    compute a plain number from shapes (`(d // heads) ** -0.5`: an attention's scale); each tensor is
    freed as soon as its last reader has run, which fx's Interpreter does for us."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.found: dict[fx.Node, Described] = {}
        self.fitted = False  # a module or a parameter has read the input: it fits the model

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.fitted = self.fitted or n.op == "call_module" or any(
            isinstance(a, fx.Node) and a.op == "get_attr" for a in (*n.args, *n.kwargs.values()))
        if d := described(out):
            self.found[n] = d
        elif isinstance(out, (int, float)) and n.op in ("call_function", "call_method"):
            self.found[n] = {"value": out}
        return out


# Ops whose signal handler reads shapes (the number of keys of an attention, a contracted size):
# a graph without one is not run at all, since the first meta run of a process costs 1-2 s
# (torch imports its decompositions): a plain MLP or an unpadded CNN is not run.
_READS_SHAPES = frozenset({"scaled_dot_product_attention", "softmax", "matmul", "__matmul__", "bmm", "einsum",
                           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "mean", "conv2d",
                           "max", "amax", "sum", "setitem", "topk", "baddbmm", "index_add", "index_add_",
                           "scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_", "cumsum"})


def _reads_shapes(mod: nn.Module) -> bool:
    """Modules whose signal handler reads shapes: attention (its keys), a zero-padded conv (the taps
    inside its input), an adaptive average (its window)."""
    if isinstance(mod, nn.modules.conv._ConvNd):
        padding = mod.padding
        return padding == "same" if isinstance(padding, str) else any(int(v) for v in padding)
    if isinstance(mod, nn.RNN) and mod.nonlinearity == "relu":  # an identity recurrence reads its length
        return True
    return isinstance(mod, (nn.MultiheadAttention, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d))


def wanted(root: nn.Module, graph: fx.Graph) -> bool:
    """Whether some op of the graph reads shapes."""
    for n in graph.nodes:
        if n.op in ("call_function", "call_method"):
            name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
            if name in _READS_SHAPES:
                return True
        elif n.op == "call_module" and _reads_shapes(root.get_submodule(str(n.target))):
            return True
    return False


def propagate(root: nn.Module, graph: fx.Graph, candidates: Iterable[Inputs]) -> dict[fx.Node, Described]:
    """Node -> {"shape", "dtype"} of its (first) output tensor, or {"value"} for a number computed
    from shapes, from the first candidate input the graph runs on; when none runs to the end, the
    nodes before the failure of the furthest run that a layer accepted ({} when none did). `root` must be a meta copy: it is run, the user's model never."""
    if not wanted(root, graph):
        return {}
    module = fx.GraphModule(root, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    partial: dict[fx.Node, Described] = {}
    for tries, (args, kwargs) in enumerate(candidates):
        if tries >= _TRIES:
            break
        positional = _positional(placeholders, move(args, torch.device("meta")), move(kwargs, torch.device("meta")))
        if positional is None:
            continue
        run = _Shapes(module)
        try:
            # the user's forward run a second time must not warn twice (its warnings are the trace's)
            with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run.run(*positional)
        except Exception:  # a guessed input that does not fit, or an op without a meta kernel
            # (a data-dependent shape: an MoE's torch.where(mask) has none on meta): the shapes up to
            # the op that failed are still those of that input; the furthest run is kept
            if run.fitted and len(run.found) > len(partial):
                partial = run.found
            continue
        return run.found
    return partial


def _positional(placeholders: list[fx.Node], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """The graph's inputs in placeholder order: positional first, then by name, then the default."""
    out: list[Any] = []
    for i, node in enumerate(placeholders):
        name = str(node.target).lstrip("*")
        if i < len(args):
            out.append(args[i])
        elif name in kwargs:
            out.append(kwargs[name])
        elif node.args:
            out.append(node.args[0])  # the forward's default value
        else:
            return None
    return out
