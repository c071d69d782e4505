"""The graph indexed once: each op's role, whether it reads a weight, its data operands, its weight
depth, the residual branches and what reaches the output. Built once per analysis; facts, signal and
the rules all read this one immutable object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from ..graph import Graph, Op, OpKind
from ..ops.activations import Role, RoleKind, function_role, module_role
from ..ops.layers import WeightUse, function_weight, module_weights, weight_views

_OTHER = Role(RoleKind.OTHER)


@dataclass(frozen=True)
class GraphIndex:
    graph: Graph
    modules: Mapping[str, nn.Module] = field(repr=False)
    roles: tuple[Role, ...]  # per op: what it does to the signal
    weight_op: tuple[bool, ...]  # per op: a module call or function that reads a weight
    data: tuple[tuple[int, ...], ...]  # per op: operands that are not parameters or buffers
    depth: tuple[int, ...]  # per op: weight ops on the longest path from an input
    branch_ops: frozenset[int]  # ops on the deeper side of a residual add
    reaches_output: tuple[bool, ...]  # per op: reaches the output without a weight op or a norm
    views: Mapping[int, tuple[int, bool, bool]] = field(repr=False)  # op -> (param op, transposed, sliced)
    # module op -> the weights its module holds (ops.layers.module_weights), for the ops that hold some
    uses: Mapping[int, tuple[WeightUse, ...]] = field(default_factory=dict, repr=False)

    @property
    def ops(self) -> tuple[Op, ...]:
        return self.graph.ops

    def users(self, i: int) -> tuple[int, ...]:
        return self.graph.consumers[i]

    def module(self, op: Op) -> nn.Module | None:
        return self.modules.get(op.module) if op.module is not None else None

    def role(self, op: Op) -> Role:
        return self.roles[op.index]

    def is_weight_op(self, op: Op) -> bool:
        return self.weight_op[op.index]

    def data_operands(self, op: Op) -> tuple[int, ...]:
        return self.data[op.index]


def index_graph(graph: Graph, model: nn.Module, modules: Mapping[str, nn.Module] | None = None) -> GraphIndex:
    """Index `graph`, whose leaf modules are `model`'s, in a few linear sweeps. modules:
    dict(model.named_modules()) when the caller has it (the trace walked it)."""
    modules = dict(model.named_modules()) if modules is None else modules
    ops = graph.ops
    param_ops = {op.index for op in ops if op.kind is OpKind.PARAM}
    views = weight_views(ops, param_ops)
    roles: list[Role] = []
    weight: list[bool] = []
    uses: dict[int, tuple[WeightUse, ...]] = {}
    for op in ops:
        mod = modules.get(op.module) if op.module is not None else None
        if op.kind is OpKind.MODULE:
            roles.append(module_role(mod) if mod is not None else _OTHER)
            held = module_weights(mod) if mod is not None else ()
            if held:
                uses[op.index] = held
            weight.append(bool(held))
        elif op.kind is OpKind.FUNCTION:
            roles.append(function_role(op))
            weight.append(function_weight(op, views) is not None)
        else:
            roles.append(_OTHER)
            weight.append(False)
    data = tuple(tuple(i for i in op.inputs if ops[i].kind not in (OpKind.PARAM, OpKind.BUFFER)) for op in ops)
    depth = _weight_depth(graph, weight)
    return GraphIndex(graph, modules, tuple(roles), tuple(weight), data, depth,
                      _residual_branches(graph, data, depth), _reaching_output(graph, roles, weight), views, uses)


def _weight_depth(graph: Graph, weight: list[bool]) -> tuple[int, ...]:
    depth = [0] * len(graph.ops)
    for op in graph.ops:
        d = max((depth[i] for i in op.inputs), default=0)
        depth[op.index] = d + (1 if weight[op.index] else 0)
    return tuple(depth)


def _residual_branches(graph: Graph, data: tuple[tuple[int, ...], ...], depth: tuple[int, ...]) -> frozenset[int]:
    """Ops on the deeper side of an add whose other side is shallower (x + f(x)), back to the
    depth where the shortcut leaves."""
    out: set[int] = set()
    for op in graph.ops:
        if op.kind is not OpKind.FUNCTION or op.target != "add" or len(data[op.index]) < 2:
            continue
        operands = data[op.index]
        deep = max(operands, key=lambda i: depth[i])
        floor = min(depth[i] for i in operands)
        if depth[deep] == floor:
            continue
        stack = [deep]
        while stack:
            i = stack.pop()
            if i in out or depth[i] <= floor:
                continue
            out.add(i)
            stack.extend(graph.ops[i].inputs)
    return frozenset(out)


def _reaching_output(graph: Graph, roles: list[Role], weight: list[bool]) -> tuple[bool, ...]:
    """Per op: its value reaches the model's output without passing a weight layer or a norm
    (one reverse sweep, so every layer's question costs nothing)."""
    ops, users = graph.ops, graph.consumers
    out = [False] * len(ops)
    for op in reversed(ops):
        for u in users[op.index]:
            if ops[u].kind is OpKind.OUTPUT or (out[u] and not weight[u] and roles[u].kind is not RoleKind.NORM):
                out[op.index] = True
                break
    return tuple(out)
