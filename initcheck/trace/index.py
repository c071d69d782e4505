"""The graph indexed once: each op's role, whether it reads a weight, its data operands, its weight
depth, the residual branches and what reaches the output. Built once per analysis; facts, signal and
the rules all read this one immutable object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from ..graph import CREATED, WITH_INDICES, Graph, Op, OpKind
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
    # ops computed from parameters and buffers alone (a weight's norm, `gamma.exp()`, a bias reshaped
    # to broadcast, `bias.view(1, -1, 1, 1)`): constants of the forward, no data flows through them, so
    # the signal model owes them no handler and an add of one is a shift, not a residual merge. A
    # parameter broadcast over the batch (`latents.expand(b, -1, -1)`, trace.learned_inputs) is the
    # signal itself from there on: not a constant.
    constant: frozenset[int] = frozenset()
    # ops that compute an inline RMS norm's statistic (`x.pow(2).mean(-1, keepdim=True)`, its eps and
    # rsqrt): the norm op reads them, no signal passes them (see _inline_rms_norms)
    statistics: frozenset[int] = frozenset()
    # ops that compute indices, masks or positions from integer data alone (an attention mask's
    # cumsum, ALiBi's positions, an MoE's expert counts from its top-k indices): not the signal, so
    # an op among them without a handler is no gap in the signal model (see _index_valued)
    indexing: frozenset[int] = frozenset()

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

    def signal_operands(self, op: Op) -> tuple[int, ...]:
        """The data operands that carry the input's signal: constants (a reshaped bias) left out."""
        return tuple(i for i in self.data[op.index] if i not in self.constant)


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
    data = [tuple(i for i in op.inputs if ops[i].kind not in (OpKind.PARAM, OpKind.BUFFER)) for op in ops]
    statistics: set[int] = set()
    for at, (x, chain) in _inline_rms_norms(ops).items():
        roles[at], data[at] = _NORM, (x,)  # the statistic is the norm's business, x its one data operand
        statistics.update(chain)
    depth = _weight_depth(graph, weight)
    constant = _constants(ops)
    carrying = tuple(tuple(i for i in d if i not in constant) for d in data)
    return GraphIndex(graph, modules, tuple(roles), tuple(weight), tuple(data), depth,
                      _residual_branches(graph, carrying, depth), _reaching_output(graph, roles, weight), views, uses,
                      constant, frozenset(statistics), _index_valued(ops, weight))


_NORM = Role(RoleKind.NORM)
_CASTS = frozenset({"to", "float", "type", "contiguous"})


def _inline_rms_norms(ops: tuple[Op, ...]) -> dict[int, tuple[int, frozenset[int]]]:
    """RMS norms written out (StyleGAN's pixel norm, hand-written RMSNorms): `x * rsqrt(mean(x^2) +
    eps)` or `x / sqrt(mean(x^2) + eps)`, the square as pow(x, 2), square(x) or x * x. The mul or div
    -> (x, the ops of its statistic)."""
    def base(i: int) -> int:
        while ops[i].kind is OpKind.FUNCTION and ops[i].target in _CASTS and len(ops[i].inputs) == 1:
            i = ops[i].inputs[0]
        return i

    def squared(i: int) -> int | None:
        op = ops[i]
        if op.target == "pow" and len(op.inputs) == 1 and op.scalar("1", "exponent") == 2:
            return base(op.inputs[0])
        if op.target == "square" and len(op.inputs) == 1:
            return base(op.inputs[0])
        if op.target == "mul" and len(op.inputs) == 2 and base(op.inputs[0]) == base(op.inputs[1]):
            return base(op.inputs[0])
        return None

    found: dict[int, tuple[int, frozenset[int]]] = {}
    for op in ops:
        if op.kind is not OpKind.FUNCTION or op.target not in ("mul", "div") or len(op.inputs) != 2:
            continue
        for x, r in ((op.inputs[0], op.inputs[1]), (op.inputs[1], op.inputs[0])):
            if op.target == "div" and x != op.inputs[0]:
                break  # r / x is no norm
            chain = [r]
            root = ops[r]
            if root.target != ("rsqrt" if op.target == "mul" else "sqrt") or len(root.inputs) != 1:
                continue
            stat = root.inputs[0]
            if ops[stat].target == "add" and len(ops[stat].inputs) == 1:  # + eps
                chain.append(stat)
                stat = ops[stat].inputs[0]
            if ops[stat].target != "mean" or len(ops[stat].inputs) != 1:
                continue
            chain += [stat, ops[stat].inputs[0]]
            if squared(ops[stat].inputs[0]) == base(x):
                found[op.index] = (x, frozenset(chain))
                break
    return found


# ops that broadcast a tensor over new (batch) dimensions: a parameter through one is a learned input
BROADCASTS = frozenset({"expand", "expand_as", "repeat", "broadcast_to", "tile"})


# Functions whose result is integer or boolean data computed from the data: an index for a lookup,
# a flag for a test (VQ-VAE's nearest code, an MoE's `if mask.any()`), a shape (`x.size()` passed
# to affine_grid or view)
INDEX_FUNCTIONS = frozenset({"argmin", "argmax", "argsort", "any", "all", "isnan", "isinf", "isfinite", "one_hot",
                             "size", "dim", "numel", "nelement", "ndimension"})
_INTEGER = ("int", "uint", "bool")


def _index_valued(ops: tuple[Op, ...], weight: list[bool]) -> frozenset[int]:
    """Integer inputs (token ids, an attention mask), index functions, the indices of a top-k, and
    every op (no weight op) whose tensor operands all come from those alone. A weight op (an
    embedding's lookup) turns indices into the signal and ends the set."""
    out: set[int] = set()
    for op in ops:
        if op.kind is OpKind.INPUT:
            if op.dtype is not None and op.dtype.startswith(_INTEGER):
                out.add(op.index)
        elif op.kind is OpKind.FUNCTION and not weight[op.index]:
            indices = op.target == "getitem" and op.scalar("1") == 1 and len(op.inputs) == 1 \
                and ops[op.inputs[0]].target in WITH_INDICES
            if op.target in INDEX_FUNCTIONS or indices:
                out.add(op.index)
            else:
                data = [i for i in op.inputs if ops[i].kind not in (OpKind.PARAM, OpKind.BUFFER)]
                if data and all(i in out for i in data):
                    out.add(op.index)
    return frozenset(out)


def _constants(ops: tuple[Op, ...]) -> frozenset[int]:
    out: set[int] = set()
    for op in ops:
        if op.kind in (OpKind.PARAM, OpKind.BUFFER):
            out.add(op.index)
        elif op.kind is OpKind.FUNCTION and not op.inputs and op.target in CREATED:
            out.add(op.index)  # a tensor made from sizes alone (the recorded pass keeps them)
        elif op.kind is OpKind.FUNCTION and op.inputs and op.target not in BROADCASTS and all(i in out for i in op.inputs):
            out.add(op.index)
    return frozenset(out)


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
