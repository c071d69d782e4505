"""Graph + model -> one frozen record per weight tensor: fans, the activation that follows it,
normalization, residual ends, the recommended scheme and the weight's actual statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import theory
from .activations import Role, function_role, match_elementwise, module_role
from .graph import Graph, Op
from .layers import WeightUse, function_weight, module_weights, weight_views
from .stats import TensorStats, tensor_stats


@dataclass(frozen=True)
class LayerFacts:
    name: str  # qualified module name as in named_modules() ("" for the root)
    param: str  # the parameter's path inside that module ("weight", "in_proj_weight")
    kind: str  # module class ("Linear") or function ("linear")
    shape: tuple[int, ...]
    layout: str
    role: str
    fan_in: int
    fan_out: int
    activation: str
    activation_param: float | None
    normalized: bool
    residual_end: bool
    is_output: bool
    in_residual_branch: bool  # on the branch side of a residual add (Fixup, GPT-2 blocks, ReZero)
    scheme: str
    gain: float
    recommended_std: float
    stats: TensorStats | None
    aliases: tuple[str, ...]
    op: int  # graph op that reads the weight
    preact_op: int  # graph op whose output the activation receives
    norm: str | None = None  # the normalization module that directly follows, if a module
    convention: str | None = None  # a recognized deliberate init (conventions.py)
    attention_score: bool = False  # a query or key projection: its output meets only q·kᵀ

    @property
    def qualname(self) -> str:
        return f"{self.name}.{self.param}" if self.name else self.param

    @property
    def actual_std(self) -> float | None:
        return None if self.stats is None else self.stats.std

    @property
    def actual_mean(self) -> float | None:
        return None if self.stats is None else self.stats.mean

    @property
    def variance_ratio(self) -> float | None:
        if self.stats is None or self.recommended_std == 0:
            return None
        return self.stats.second / (self.recommended_std ** 2)


@dataclass(frozen=True)
class Follow:
    activation: str
    param: float | None
    normalized: bool
    residual_end: bool
    is_output: bool
    preact_op: int
    custom_gain: float | None = None
    norm: str | None = None


class _View:
    """Read-only helpers over a graph and the model its leaf modules came from."""

    def __init__(self, graph: Graph, model: nn.Module):
        self.graph = graph
        self.model = model
        self.param_ops = {op.index for op in graph.ops if op.kind == "param"}
        self.views = weight_views(graph.ops, self.param_ops)
        self._modules = dict(model.named_modules())
        self._weight_op: dict[int, bool] = {}
        self._roles: dict[int, Role] = {}
        self.depth = self._weight_depth()
        self.branch_ops = self._residual_branches()
        self.reaches_output = self._reaching_output()

    def module(self, op: Op) -> nn.Module | None:
        return self._modules.get(op.module) if op.module is not None else None

    def is_weight_op(self, op: Op) -> bool:
        hit = self._weight_op.get(op.index)
        if hit is None:
            if op.kind == "module":
                mod = self.module(op)
                hit = mod is not None and bool(module_weights(mod))
            else:
                hit = op.kind == "function" and function_weight(op, self.views) is not None
            self._weight_op[op.index] = hit
        return hit

    def role(self, op: Op) -> Role:
        hit = self._roles.get(op.index)
        if hit is None:
            if op.kind == "module":
                mod = self.module(op)
                hit = module_role(mod) if mod is not None else Role("other")
            elif op.kind == "function":
                hit = function_role(op)
            else:
                hit = Role("other")
            self._roles[op.index] = hit
        return hit

    def _reaching_output(self) -> list[bool]:
        """Per op: its value reaches the model's output without passing a weight layer or a norm
        (one reverse sweep, so every layer's question costs nothing)."""
        ops, users = self.graph.ops, self.graph.consumers
        out = [False] * len(ops)
        for op in reversed(ops):
            for u in users[op.index]:
                user = ops[u]
                if user.kind == "output" or (out[u] and not self.is_weight_op(user) and self.role(user).kind != "norm"):
                    out[op.index] = True
                    break
        return out

    def data_operands(self, op: Op) -> list[int]:
        return [i for i in op.inputs if self.graph.ops[i].kind not in ("param", "buffer")]

    def _residual_branches(self) -> set[int]:
        """Ops on the deeper side of an add whose other side is shallower (x + f(x)), back to the
        depth where the shortcut leaves."""
        out: set[int] = set()
        for op in self.graph.ops:
            if op.kind != "function" or op.target != "add":
                continue
            data = self.data_operands(op)
            if len(data) < 2:
                continue
            deep = max(data, key=lambda i: self.depth[i])
            floor = min(self.depth[i] for i in data)
            if self.depth[deep] == floor:
                continue
            stack = [deep]
            while stack:
                i = stack.pop()
                if i in out or self.depth[i] <= floor:
                    continue
                out.add(i)
                stack.extend(self.graph.ops[i].inputs)
        return out

    def _weight_depth(self) -> list[int]:
        depth = [0] * len(self.graph.ops)
        for op in self.graph.ops:
            d = max((depth[i] for i in op.inputs), default=0)
            depth[op.index] = d + (1 if self.is_weight_op(op) else 0)
        return depth


def follow(view: _View, start: int) -> Follow:
    """Walk from a weight op's output to the activation it feeds, through transparent ops, the
    bias add, scalings, one normalization and one residual add."""
    ops, users = view.graph.ops, view.graph.consumers
    normalized = residual_end = is_output = merged = False
    norm_module: str | None = None
    chain = {start}
    frontier = [start]
    seen = {start}
    found: tuple[str, float | None, int, float | None] | None = None
    while frontier and found is None:
        nxt: list[int] = []
        for i in frontier:
            for u in users[i]:
                if u in seen:
                    continue
                seen.add(u)
                op = ops[u]
                if op.kind == "output":
                    is_output = True
                    continue
                if view.is_weight_op(op):
                    continue
                role = view.role(op)
                data = view.data_operands(op)
                if role.kind == "activation":
                    found = _activation(view, op, role, i, chain)
                    break
                if role.kind == "other" and op.kind == "module":
                    custom = _custom_activation(view, op)
                    if custom is not None and custom[0] != "identity":
                        found = (custom[0], None, i, custom[1])
                        break
                    chain.add(u)  # an opaque helper (a reshape, a transpose): look through it
                    nxt.append(u)
                    continue
                if merged and role.kind in ("norm", "add", "scale"):
                    continue  # past a merge only a directly following activation (ResNet's ReLU) counts
                if role.kind == "norm":
                    normalized = True
                    norm_module = norm_module or (op.module if op.kind == "module" else None)
                    chain.add(u)
                    nxt.append(u)
                elif role.kind == "add" and len(data) >= 2:
                    merged = True
                    other = [d for d in data if d != i]
                    if other and view.depth[i] > max(view.depth[d] for d in other):
                        residual_end = True
                    chain.add(u)
                    nxt.append(u)
                elif role.kind in ("transparent", "add", "scale"):
                    if role.kind == "scale" and len(data) >= 2:
                        continue  # a gate (x * g(y)), not a scaling
                    chain.add(u)
                    nxt.append(u)
        frontier = nxt
    if found is None:
        is_output = is_output or _reaches_output(view, start)
        return Follow("identity", None, normalized, residual_end, is_output, start, norm=norm_module)
    name, param, preact, custom_gain = found
    is_output = is_output or _reaches_output(view, start)
    return Follow(name, param, normalized, residual_end, is_output, preact, custom_gain, norm_module)


def _activation(view: _View, op: Op, role: Role, preact: int, chain: set[int]):
    """An activation op, or the hand-written gate x * f(x) around it (SiLU, QuickGELU, Mish)."""
    ops, users = view.graph.ops, view.graph.consumers
    for u in users[op.index]:
        gate = ops[u]
        if gate.kind == "function" and gate.target == "mul":
            others = [d for d in view.data_operands(gate) if d != op.index]
            if others and others[0] in chain | {preact}:
                fn = theory.activation_fn(role.activation or "", role.param)
                scale = _inner_scale(view, op)
                if fn is not None:
                    def gated(x, fn=fn, scale=scale):
                        return x * fn(scale * x)
                    matched = match_elementwise(gated)
                    if matched:
                        return _matched(matched) + (preact, None)
                    g = theory.gain_of(gated)
                    return (f"unknown:x*{role.activation}", None, preact, g)
    return (role.activation or "identity", role.param, preact, None)


def _inner_scale(view: _View, act: Op) -> float:
    """c in f(c * x): the scalar an activation's input was multiplied by, if any."""
    data = view.data_operands(act)
    if data:
        src = view.graph.ops[data[0]]
        if src.kind == "function" and src.target == "mul":
            for _, v in src.scalars:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return float(v)
    return 1.0


def _matched(name: str) -> tuple[str, float | None]:
    if name.startswith("leaky_relu:"):
        return "leaky_relu", float(name.split(":")[1])
    return name, None


def _custom_activation(view: _View, op: Op) -> tuple[str, float | None] | None:
    """A parameter-free module judged by what it computes: (canonical name or unknown:<Class>, gain)."""
    mod = view.module(op)
    if mod is None or any(True for _ in mod.parameters()):
        return None
    matched = match_elementwise(mod)
    if matched is None:
        return None
    if matched:
        return _matched(matched)[0], None
    return f"unknown:{type(mod).__name__}", theory.gain_of(mod)


# ops a query or key passes on its way to q·kᵀ: reshapes, scalings, rotary embeddings (x*cos +
# rotate_half(x)*sin), repeat_kv, a mask add
_TOWARDS_SCORES = ("transparent", "scale", "add")


def feeds_attention_scores(view: _View, start: int, limit: int = 64) -> bool:
    """Whether a weight op's output is a query or a key and nothing else: every path from it runs,
    through reshapes, scalings and adds only, into scaled_dot_product_attention's first two
    operands or into a matmul whose product goes on to a softmax (a packed q/k/v projection also
    feeds the values: no). Such a layer's gradient is proportional to the other side's scale (a
    bilinear form), small at init by design: not a vanishing gradient."""
    ops, users = view.graph.ops, view.graph.consumers
    frontier, seen = [start], {start}
    scores = False
    while frontier:
        nxt = []
        for i in frontier:
            for u in users[i]:
                op = ops[u]
                if op.target == "scaled_dot_product_attention":
                    if i not in (op.operand("0", "query"), op.operand("1", "key")):
                        return False
                    scores = True
                elif op.target == "matmul" and not view.is_weight_op(op):
                    if not _reaches_softmax(view, u):
                        return False
                    scores = True
                elif op.kind == "function" and view.role(op).kind in _TOWARDS_SCORES:
                    if u not in seen:  # every edge into attention is checked, every op walked once
                        seen.add(u)
                        if len(seen) > limit:
                            return False
                        nxt.append(u)
                else:
                    return False  # an activation, a weight layer, a norm, the output: not only a score
        frontier = nxt
    return scores


def _reaches_softmax(view: _View, start: int, limit: int = 16) -> bool:
    ops, users = view.graph.ops, view.graph.consumers
    frontier, seen = [start], {start}
    while frontier and len(seen) < limit:
        nxt = []
        for i in frontier:
            for u in users[i]:
                if u in seen:
                    continue
                seen.add(u)
                role = view.role(ops[u])
                if role.kind == "activation":
                    if role.activation in ("softmax", "log_softmax"):
                        return True
                elif role.kind in _TOWARDS_SCORES and not view.is_weight_op(ops[u]):
                    nxt.append(u)
        frontier = nxt
    return False


def _reaches_output(view: _View, start: int) -> bool:
    """The layer's output reaches the model's output without another weight layer or norm."""
    return view.reaches_output[start]


def collect(graph: Graph, model: nn.Module) -> tuple[LayerFacts, ...]:
    """One LayerFacts per weight tensor the graph reads, in execution order, tied weights once,
    each with the library convention it follows, if one is recognized."""
    from dataclasses import replace

    from .conventions import recognize

    return tuple(replace(lf, convention=recognize(lf, model)) for lf in _collect(graph, model))


def _collect(graph: Graph, model: nn.Module) -> tuple[LayerFacts, ...]:
    view = _View(graph, model)
    aliases = _aliases(model)
    out: list[LayerFacts] = []
    judged: set[int] = set()
    for op in graph.ops:
        if op.kind == "module":
            mod = view.module(op)
            if mod is None:
                continue
            for use in module_weights(mod):
                p = _get(mod, use.param)
                if isinstance(p, torch.Tensor) and id(p) not in judged:
                    judged.add(id(p))
                    out.append(_facts(view, op, op.module or "", use, p, type(mod).__name__, aliases))
        elif op.kind == "function":
            hit = function_weight(op, view.views)
            if hit is None:
                continue
            pname = graph.ops[hit[0]].target
            p = model.get_parameter(pname)
            if id(p) in judged:
                continue
            judged.add(id(p))
            owner, _, attr = pname.rpartition(".")
            out.append(_facts(view, op, owner, _with_param(hit[1], attr), p, op.target, aliases))
    return tuple(out)


def _with_param(use: WeightUse, attr: str) -> WeightUse:
    return WeightUse(attr, use.layout, use.role, use.groups, use.stride, use.blocks, use.activation, use.stacked)


def _facts(view: _View, op: Op, owner: str, use: WeightUse, p: torch.Tensor, kind: str, aliases) -> LayerFacts:
    shape = tuple(int(s) for s in p.shape) if not isinstance(p, nn.parameter.UninitializedParameter) else ()
    fan_shape = shape[1:] if use.stacked else shape  # one expert's slice
    fan = theory.fans(use.layout, fan_shape, groups=use.groups, stride=use.stride, blocks=use.blocks) if shape else theory.Fans(0, 0)
    if use.activation is not None and use.role != "embedding":
        # The layer applies its own activation (RNN gates) or feeds attention's softmax.
        after = follow(view, op.index) if use.param.startswith("out_proj") or use.param.startswith("weight_hr") else None
        f = after or Follow(use.activation, None, False, False, False, op.index)
    else:
        f = follow(view, op.index)
    activation = f.activation
    if use.role == "embedding":
        rec = theory.recommend("identity", None, fan, role="embedding")
    elif fan.fan_in == 0:
        rec = theory.Recommendation("unknown", 1.0, math.nan)
    else:
        rec = theory.recommend(activation, f.param, fan, role=use.role, custom_gain=f.custom_gain)
    qual = f"{owner}.{use.param}" if owner else use.param
    return LayerFacts(
        name=owner,
        param=use.param,
        kind=kind,
        shape=shape,
        layout=use.layout,
        role=use.role,
        fan_in=fan.fan_in,
        fan_out=fan.fan_out,
        activation=activation,
        activation_param=f.param,
        normalized=f.normalized,
        residual_end=f.residual_end,
        is_output=f.is_output,
        in_residual_branch=op.index in view.branch_ops,
        scheme=rec.scheme,
        gain=rec.gain,
        recommended_std=rec.std,
        stats=tensor_stats(p),
        aliases=tuple(a for a in aliases.get(id(p), ()) if a != qual),
        op=op.index,
        preact_op=f.preact_op,
        norm=f.norm,
        attention_score=use.role != "embedding" and feeds_attention_scores(view, op.index),
    )


def _get(module: nn.Module, path: str):
    obj = module
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _aliases(model: nn.Module) -> dict[int, tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {k: tuple(v) for k, v in names.items()}
