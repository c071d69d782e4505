"""torch.fx: symbolic tracing of a meta copy, converted to initcheck's Graph."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch.fx as fx
from torch import nn

from ..graph import Graph, Op, OpKind, canonical_name
from ..ops.layers import is_leaf
from .copying import meta_copy
from .shapes import Inputs, propagate


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m)


def trace_fx(model: nn.Module, inputs: Iterable[Inputs] = (), training: bool | None = None) -> Graph:
    """Symbolically trace (a meta copy of) the model and convert the fx graph. inputs: candidate
    example inputs; the first the graph runs on gives every op its shape (on meta tensors), when
    some op's handler reads shapes (shapes.wanted). training: the copy's flags while it is traced
    (fx bakes `self.training` into the graph: `F.dropout(x, p, self.training)`); None keeps the
    model's."""
    root = meta_copy(model, training=training)
    for m in root.modules():
        # decided before tracing: deciding may run a parameter-free module on a small tensor
        # (ops.layers.is_leaf), which inside fx's patched module calls confuses its module stack
        is_leaf(m)
    tracer = _LeafTracer()
    try:
        fx_graph = tracer.trace(root)
    finally:
        # fx's tracer sits in reference cycles (closures over itself) and holds the meta copy: without
        # this the copy, a few objects per module, waits for a full garbage collection
        tracer.__dict__.clear()
    shapes = propagate(root, fx_graph, inputs)
    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    param_names = {name for name, _ in root.named_parameters(remove_duplicate=False)}

    numbers = {n: d["value"] for n, d in shapes.items() if "value" in d}

    def known(a: Any) -> Any:  # a number computed from shapes is a scalar argument, not data
        return fx.node.map_arg(a, lambda n: numbers.get(n, n))

    def add(node: fx.Node | None, **kw: Any) -> None:
        meta = shapes.get(node, {}) if node is not None else {}
        op = Op(index=len(ops), **kw, shape=meta.get("shape"), dtype=meta.get("dtype"))
        ops.append(op)
        if node is not None:
            index[node] = op.index

    for node in fx_graph.nodes:
        if node.op == "placeholder":
            add(node, kind=OpKind.INPUT, target=str(node.target))
        elif node.op == "get_attr":
            kind = OpKind.PARAM if node.target in param_names else OpKind.BUFFER
            add(node, kind=kind, target=_canonical_param(root, node.target) if kind is OpKind.PARAM else node.target)
        elif node.op == "call_module":
            sub = root.get_submodule(node.target)
            operands, scalars = split_args(node.args, node.kwargs, lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(node, kind=OpKind.MODULE, target=type(sub).__name__, module=node.target, operands=operands, scalars=scalars)
        elif node.op in ("call_function", "call_method"):
            raw = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if raw == "getattr" or node in numbers:
                continue  # x.shape, x.dtype, d // heads: metadata, not data flow
            operands, scalars = split_args(known(node.args), known(node.kwargs),
                                           lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(node, kind=OpKind.FUNCTION, target=canonical_name(raw), operands=operands, scalars=scalars)
            if (canonical_name(raw) == "setitem" or _in_place(node, raw)) and node.args and isinstance(node.args[0], fx.Node):
                # x[idx] = v, x.index_add_(...) write x in place: later readers of x read the write
                # (MViTv2 adds its relative-position terms to the logits so; an MoE sums its experts
                # into a zeros tensor), not the value before it
                index[node.args[0]] = index[node]
        elif node.op == "output":
            operands, _ = split_args((node.args[0],), {}, lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(None, kind=OpKind.OUTPUT, target="output", operands=operands)
    return Graph.build("fx", ops)


def _canonical_param(root: nn.Module, name: str) -> str:
    """The name under which named_parameters() lists a (possibly tied) parameter."""
    target = root.get_parameter(name)
    for pname, p in root.named_parameters():
        if p is target:
            return pname
    return name


def split_args(args: Sequence[Any], kwargs: Mapping[str, Any], lookup: Callable[[Any], int | None]
               ) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, Any], ...]]:
    operands: list[tuple[str, int]] = []
    scalars: list[tuple[str, Any]] = []
    for i, a in enumerate(args):
        _visit(str(i), a, 0, lookup, operands, scalars)
    for k, v in kwargs.items():
        _visit(k, v, 0, lookup, operands, scalars)
    return tuple(operands), tuple(scalars)


# A module-level function, not a closure calling itself: a self-referencing closure is a reference
# cycle per call (one per op traced), garbage that only a full collection frees.
def _visit(key: str, value: Any, depth: int, lookup: Callable[[Any], int | None],
           operands: list[tuple[str, int]], scalars: list[tuple[str, Any]]) -> None:
    idx = lookup(value)
    if idx is not None:
        operands.append((key, idx))
    elif isinstance(value, (list, tuple)) and depth < 2 and any(lookup(v) is not None or isinstance(v, (list, tuple, dict)) for v in value):
        for j, v in enumerate(value):
            _visit(f"{key}.{j}", v, depth + 1, lookup, operands, scalars)
    elif isinstance(value, dict) and depth < 2:
        for k, v in value.items():
            _visit(f"{key}.{k}", v, depth + 1, lookup, operands, scalars)
    elif isinstance(value, (int, float, bool, str, type(None))) or (
        isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, bool)) for v in value)
    ):
        scalars.append((key, tuple(value) if isinstance(value, list) else value))


def _in_place(node: fx.Node, raw: str) -> bool:
    """A tensor method that writes its tensor (`x.index_add_(...)`, `x.masked_fill_(...)`), whose
    result the code may drop: fx keeps reading x's node after it."""
    return node.op == "call_method" and raw.endswith("_") and not raw.startswith("_")
