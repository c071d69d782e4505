"""From a weight op forward to what its output meets: the activation (a module, a function, a method,
a hand-written gate x * f(x), a custom module judged numerically), a normalization, a residual add,
the model's output; and whether the output only ever becomes an attention score."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import theory
from ..graph import Op, OpKind
from ..ops.activations import Role, RoleKind, match_elementwise
from ..trace.index import GraphIndex


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
    pre_scale: float = 1.0  # |c| of scalar multiplications between the layer and its activation (SIREN's w0)
    gated: bool = False  # the output multiplies another tensor (a gate, a modulation: adaLN, SE, GLU)
    modulation: bool = False  # split into a scale and a shift of another tensor (FiLM, adaLN)


def follow(view: GraphIndex, start: int) -> Follow:
    """Walk from a weight op's output to the activation it feeds, through transparent ops, the
    bias add, scalings, one normalization and one residual add."""
    ops, users = view.ops, view.graph.consumers
    normalized = residual_end = is_output = merged = gated = False
    norm_module: str | None = None
    scale_at = {start: 1.0}
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
                if op.kind is OpKind.OUTPUT:
                    is_output = True
                    continue
                if view.is_weight_op(op):
                    continue
                role = view.role(op)
                data = view.signal_operands(op)  # `x + bias.view(1, -1, 1, 1)` is a shift, not a merge
                if role.kind is RoleKind.ACTIVATION:
                    found = _activation(view, op, role, i, chain)
                    break
                if role.kind is RoleKind.OTHER and op.kind is OpKind.MODULE:
                    custom = _custom_activation(view, op)
                    if custom is not None and custom[0] != "identity":
                        found = (custom[0], None, i, custom[1])
                        break
                    chain.add(u)  # an opaque helper (a reshape, a transpose): look through it
                    nxt.append(u)
                    continue
                if op.target in _AGGREGATIONS and all(view.depth[d] == 0 for d in data if d != i):
                    # a fixed matrix (a graph's normalized adjacency: a buffer, or an input no weight
                    # reaches) times the layer's output: it mixes rows, the activation after it is
                    # still this layer's (pygcn: relu(adj @ (x W)), adj a forward argument)
                    chain.add(u)
                    nxt.append(u)
                    continue
                if merged and role.kind in (RoleKind.NORM, RoleKind.ADD, RoleKind.SCALE):
                    continue  # past a merge only a directly following activation (ResNet's ReLU) counts
                if role.kind is RoleKind.NORM:
                    normalized = True
                    norm_module = norm_module or (op.module if op.kind is OpKind.MODULE else None)
                    chain.add(u)
                    nxt.append(u)
                elif role.kind is RoleKind.ADD and len(data) >= 2:
                    merged = True
                    other = [d for d in data if d != i]
                    if other and view.depth[i] > max(view.depth[d] for d in other):
                        residual_end = True
                    chain.add(u)
                    nxt.append(u)
                elif role.kind in (RoleKind.TRANSPARENT, RoleKind.ADD, RoleKind.SCALE):
                    if role.kind is RoleKind.SCALE and len(data) >= 2:
                        # a gate or a modulation (x * g(y)), not a scaling: every output unit scales its
                        # own channel; a gated branch that is then added to a shallower stream still ends
                        # a residual branch (DiT's gate * attn(x), LayerScale as a tensor)
                        gated = True
                        residual_end = residual_end or _ends_residual(view, u)
                        continue
                    scale_at[u] = scale_at.get(i, 1.0) * (_scalar_factor(op) if role.kind is RoleKind.SCALE else 1.0)
                    chain.add(u)
                    nxt.append(u)
        frontier = nxt
    if found is None:
        is_output = is_output or _reaches_output(view, start)
        return Follow("identity", None, normalized, residual_end, is_output, start, norm=norm_module, gated=gated)
    name, param, preact, custom_gain = found
    is_output = is_output or _reaches_output(view, start)
    if merged and _modulates(view, start):
        # FiLM / adaLN: the output is split into a scale that multiplies another tensor and a shift
        # added to it; the activation past that sum is the other tensor's, not this layer's
        return Follow("identity", None, normalized, residual_end, is_output, start, norm=norm_module, gated=True,
                      modulation=True)
    return Follow(name, param, normalized, residual_end, is_output, preact, custom_gain, norm_module,
                  pre_scale=abs(scale_at.get(preact, 1.0)) or 1.0, gated=gated)


def meets_another_tensor(view: GraphIndex, start: int, limit: int = 64) -> bool:
    """Whether the layer's output, through its activation, reshapes, chunks and scalings (no weight
    op, no norm), is multiplied with or added to another tensor of the graph: then each output unit
    scales, shifts or gates its own channel and gets its own gradient, so equal units are not stuck
    together (DiT's adaLN-Zero modulation, RWKV's zeroed gates, a zero residual branch end). The
    coordinates another tensor is sampled at count too: each unit is one coefficient of the warp
    (a spatial transformer's theta, zero-initialized to the identity; a flow field; a deformable
    conv's offsets and mask)."""

    def step(role: Role, data: tuple[int, ...], op: Op, came: int) -> bool | None:
        if op.target == "affine_grid" or (op.target in _WARPS and came != data[0]):
            return True  # a transform's coefficients, or the points another tensor is read at
        if role.kind in (RoleKind.ADD, RoleKind.SCALE) and len(data) >= 2:
            return True
        if role.kind in (RoleKind.ACTIVATION, RoleKind.TRANSPARENT, RoleKind.ADD, RoleKind.SCALE):
            return False
        # a function of this output alone (exp, square, cumsum): still its channels
        return False if role.kind is RoleKind.OTHER and len(data) == 1 else None

    return downstream(view, start, limit, step, warps=True)


def _modulates(view: GraphIndex, start: int, limit: int = 32) -> bool:
    """Whether the layer's output, through views, chunks and scalar arithmetic only (no activation),
    multiplies another tensor: a scale (FiLM, adaLN), not a signal."""

    def step(role: Role, data: tuple[int, ...], op: Op, came: int) -> bool | None:
        if role.kind is RoleKind.SCALE and len(data) >= 2:
            return True
        single = role.kind in (RoleKind.ADD, RoleKind.SCALE) and len(data) == 1
        return False if role.kind is RoleKind.TRANSPARENT or single else None

    return downstream(view, start, limit, step)


def downstream(view: GraphIndex, start: int, limit: int,
               step: Callable[[Role, tuple[int, ...], Op, int], bool | None], warps: bool = False) -> bool:
    """Walk the ops that use a layer's output (functions and modules, no weight op but, with
    `warps`, a deformable conv, which reads its offsets), breadth first: `step(role, data operands,
    op, the operand walked from)` says True (found: stop), False (walk on through it) or None (not
    through it)."""
    frontier, seen = [start], {start}
    while frontier and len(seen) < limit:
        nxt = []
        for i in frontier:
            for u in view.users(i):
                if u in seen:
                    continue
                seen.add(u)
                op = view.ops[u]
                if op.kind not in (OpKind.FUNCTION, OpKind.MODULE) or (view.is_weight_op(op) and not (warps and op.target in _WARPS)):
                    continue
                verdict = step(view.role(op), view.data_operands(op), op, i)
                if verdict:
                    return True
                if verdict is False:
                    nxt.append(u)
        frontier = nxt
    return False


# Ops that sample their first operand at coordinates given by another (torchvision's DeformConv2d
# is traced through to deform_conv2d, a weight op)
_WARPS = frozenset({"affine_grid", "grid_sample", "deform_conv2d"})

# products whose other operand is not data (a buffer, a constant matrix): sparse or dense aggregation
_AGGREGATIONS = frozenset({"matmul", "spmm", "sparse_mm"})


def _scalar_factor(op: Op) -> float:
    """c for x * c, 1/c for x / c, -1 for -x; 1 when the factor is not a plain number."""
    if op.target == "neg":
        return -1.0
    for key, v in op.scalars:
        if key in ("0", "1", "other") and isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0:
            return 1.0 / float(v) if op.target == "div" else float(v)
    return 1.0


def _ends_residual(view: GraphIndex, gate: int, limit: int = 4) -> bool:
    """Whether a gated output runs, through transparent ops, into an add whose other operand is
    shallower: the branch of a residual block."""
    frontier = [gate]
    for _ in range(limit):
        nxt = []
        for i in frontier:
            for u in view.users(i):
                op = view.ops[u]
                role = view.role(op)
                data = view.signal_operands(op)
                if role.kind is RoleKind.ADD and len(data) >= 2:
                    other = [d for d in data if d != i]
                    if other and view.depth[i] > max(view.depth[d] for d in other):
                        return True
                elif role.kind is RoleKind.TRANSPARENT:
                    nxt.append(u)
        frontier = nxt
    return False


def _activation(view: GraphIndex, op: Op, role: Role, preact: int,
                chain: set[int]) -> tuple[str, float | None, int, float | None]:
    """An activation op, or the hand-written gate x * f(x) around it (SiLU, QuickGELU, Mish)."""
    ops, users = view.ops, view.graph.consumers
    for u in users[op.index]:
        gate = ops[u]
        if gate.kind is OpKind.FUNCTION and gate.target == "mul":
            others = [d for d in view.data_operands(gate) if d != op.index]
            if others and others[0] in chain | {preact}:
                fn = theory.activation_fn(role.activation or "", role.param)
                scale = _inner_scale(view, op)
                if fn is not None:
                    def gated(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor] = fn,
                              scale: float = scale) -> torch.Tensor:
                        return x * fn(scale * x)
                    matched = match_elementwise(gated)
                    if matched and matched[0]:
                        return matched + (preact, None)
                    g = theory.gain_of(gated)
                    return (f"unknown:x*{role.activation}", None, preact, g)
    return (role.activation or "identity", role.param, preact, None)


def _inner_scale(view: GraphIndex, act: Op) -> float:
    """c in f(c * x): the scalar an activation's input was multiplied by, if any."""
    data = view.data_operands(act)
    if data:
        src = view.graph.ops[data[0]]
        if src.kind is OpKind.FUNCTION and src.target == "mul":
            for _, v in src.scalars:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return float(v)
    return 1.0


def _custom_activation(view: GraphIndex, op: Op) -> tuple[str, float | None] | None:
    """A parameter-free module judged by what it computes: (canonical name or unknown:<Class>, gain)."""
    mod = view.module(op)
    if mod is None or any(True for _ in mod.parameters()):
        return None
    matched = match_elementwise(mod)
    if matched is None:
        return None
    if matched[0]:
        return matched[0], None
    return f"unknown:{type(mod).__name__}", theory.gain_of(mod)


# ops a query or key passes on its way to q·kᵀ: reshapes, scalings, rotary embeddings (x*cos +
# rotate_half(x)*sin), repeat_kv, a mask add
_TOWARDS_SCORES = ("transparent", "scale", "add")


def feeds_attention_scores(view: GraphIndex, start: int, limit: int = 64) -> bool:
    """Whether a weight op's output is a query or a key and nothing else: every path from it runs,
    through reshapes, scalings and adds only, into scaled_dot_product_attention's first two
    operands or into a matmul whose product goes on to a softmax (a packed q/k/v projection also
    feeds the values: no). Such a layer's gradient is proportional to the other side's scale (a
    bilinear form), small at init by design: not a vanishing gradient."""
    ops, users = view.ops, view.graph.consumers
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
                elif op.kind is OpKind.FUNCTION and view.role(op).kind in _TOWARDS_SCORES:
                    if u not in seen:  # every edge into attention is checked, every op walked once
                        seen.add(u)
                        if len(seen) > limit:
                            return False
                        nxt.append(u)
                else:
                    return False  # an activation, a weight layer, a norm, the output: not only a score
        frontier = nxt
    return scores


def _reaches_softmax(view: GraphIndex, start: int, limit: int = 16) -> bool:
    ops, users = view.ops, view.graph.consumers
    frontier, seen = [start], {start}
    while frontier and len(seen) < limit:
        nxt = []
        for i in frontier:
            for u in users[i]:
                if u in seen:
                    continue
                seen.add(u)
                role = view.role(ops[u])
                if role.kind is RoleKind.ACTIVATION:
                    if role.activation in ("softmax", "log_softmax"):
                        return True
                elif role.kind in _TOWARDS_SCORES and not view.is_weight_op(ops[u]):
                    nxt.append(u)
        frontier = nxt
    return False


def _reaches_output(view: GraphIndex, start: int) -> bool:
    """The layer's output reaches the model's output without another weight layer or norm."""
    return view.reaches_output[start]




def rebuilt_weight(view: GraphIndex, model: torch.nn.Module, op: Op, keys: tuple[str, ...] = ("1", "weight")
                   ) -> torch.Tensor | None:
    """The weight a functional conv/linear really receives when forward rebuilds it from parameters
    (NF-Net's weight * gain, (w - mean) / std): the parameter-only chain behind its weight operand
    replayed on the parameters' values (no data involved, so it costs one weight's size); None when
    the operand is the parameter itself or a step cannot be replayed."""
    start = op.operand(*keys)
    if start is None or view.ops[start].kind is OpKind.PARAM:
        return None
    memo: dict[int, object] = {}

    def value(i: int, depth: int = 0) -> object:
        if i in memo:
            return memo[i]
        o = view.ops[i]
        out: object
        if o.kind is OpKind.PARAM:
            out = model.get_parameter(o.target).detach()
        elif o.kind is OpKind.FUNCTION and depth < 32:
            slots: dict[str, object] = {k: value(j, depth + 1) for k, j in o.operands}
            slots.update(dict(o.scalars))
            args = [slots.pop(str(n)) for n in range(len(slots)) if str(n) in slots]
            out = _replay(o.target, args, slots)
        else:
            raise LookupError(o.target)
        memo[i] = out
        return out

    try:
        with torch.no_grad():
            w = value(start)
    except (LookupError, TypeError, RuntimeError, ValueError):
        return None
    return w if isinstance(w, torch.Tensor) and not w.is_meta else None


# Arithmetic on plain numbers read off a weight (`w[0].numel() ** 0.5` is traced without shapes as
# numel, then sqrt): replayed as Python computes it.
_NUMBERS: dict[str, Callable[..., object]] = {
    "sqrt": math.sqrt, "rsqrt": lambda x: x ** -0.5, "div": operator.truediv, "truediv": operator.truediv,
    "mul": operator.mul, "add": operator.add, "sub": operator.sub, "pow": operator.pow,
    "floordiv": operator.floordiv, "neg": operator.neg,
}


def _replay(name: str, args: list[object], kwargs: dict[str, object]) -> object:
    """Call the op a graph node names: torch.nn.functional's signature first (F.batch_norm and
    torch.batch_norm take different arguments), then torch's, then the Tensor method
    (`w.reshape(1, n, -1)` passes its sizes one by one). A number in, a number out (numel, then
    arithmetic on it)."""
    import torch.nn.functional as F

    if args and not kwargs and name in _NUMBERS and all(isinstance(a, (int, float)) for a in args):
        return _NUMBERS[name](*args)
    if name == "getitem" and len(args) == 2 and not kwargs and isinstance(args[0], torch.Tensor):
        return args[0][args[1]]  # type: ignore[index]  # w[0], w[:, :k]: indexing, not a torch function

    spaces: tuple[object, ...] = (F, torch, torch.Tensor)
    if name.startswith("linalg_"):  # torch.linalg.vector_norm is recorded as linalg_vector_norm
        name, spaces = name[len("linalg_"):], (torch.linalg,)
    for space in spaces:
        fn = getattr(space, name, None)
        if callable(fn):
            try:
                out = fn(*args, **kwargs)
            except TypeError:
                continue  # another signature: try the next namespace
            if isinstance(out, (torch.Tensor, int, float)):
                return out
    raise LookupError(name)
