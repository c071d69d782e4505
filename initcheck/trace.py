"""Model -> Graph: torch.fx first, a recorded forward pass when fx cannot trace or misses weights.

Both tracers work on a copy whose parameters and buffers are meta-device twins (a deepcopy with a
pre-filled memo), so tracing never reads a weight, never changes the user's model, and costs no
memory. The recorded pass falls back to real tensors (parameters shared, read-only, buffers
copied) when the model's forward needs data (`.item()`, data-dependent branches).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from .devices import move
from .graph import Graph, Op, canonical_name
from .layers import function_weight, is_leaf, module_weights, weight_views


@dataclass(frozen=True)
class Traced:
    graph: Graph
    notes: tuple[str, ...]  # why a tracer was skipped, what was not reached
    unreached: tuple[str, ...]  # weight parameters that no traced op read


class TraceFailure(Exception):
    """The recorded forward pass raised: the message says in which layer."""


def weight_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """Qualified name -> parameter for every weight a report must judge (tied ones once)."""
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for use in module_weights(module):
            p = _get(module, use.param)
            if isinstance(p, torch.Tensor) and id(p) not in seen:
                seen.add(id(p))
                out[_join(mname, use.param)] = p
    for name, p in model.named_parameters():
        if p.dim() >= 2 and id(p) not in seen and not _owned_by_norm(model, name):
            seen.add(id(p))
            out[name] = p
    return out


def _owned_by_norm(model: nn.Module, pname: str) -> bool:
    from .activations import is_norm_module

    owner = pname.rpartition(".")[0]
    return is_norm_module(model.get_submodule(owner)) if owner else False


def _get(module: nn.Module, path: str):
    obj: Any = module
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def meta_copy(model: nn.Module, share_params: bool = False) -> nn.Module:
    """A structural copy of `model`: parameters become meta twins (or are shared), buffers are
    meta twins (or copies), and the user's module hooks are dropped. The user's model is never
    touched."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        if share_params:
            memo[id(p)] = p
        else:
            # global shape: a DTensor shard becomes a plain meta tensor of the whole weight
            memo[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
    if not share_params:
        for b in model.buffers():
            memo[id(b)] = torch.empty(b.shape, dtype=b.dtype, device="meta")
    try:
        root = copy.deepcopy(model, memo)
    except Exception:  # FSDP2 and others refuse deepcopy: copy the structure, share the rest
        root = _structural_copy(model, memo)
    for m in root.modules():  # the user's hooks must not run (or count, or log) during a check
        for hooks in _HOOK_TABLES:
            table = getattr(m, hooks, None)
            if isinstance(table, dict):
                table.clear()
    return root


_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs",
                "_state_dict_hooks", "_load_state_dict_pre_hooks")


def _structural_copy(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """The same classes and forward code with new parameter, buffer, child and hook tables; other
    attributes are shared (shallow), so a forward that mutates one would touch the original's."""
    new = object.__new__(module.__class__)  # not cls.__new__: FSDP2 re-runs __init__ there
    new.__dict__.update(module.__dict__)
    new._parameters = {k: (memo.get(id(v), v) if v is not None else None) for k, v in module._parameters.items()}
    new._buffers = {k: (memo.get(id(v), v) if v is not None else None) for k, v in module._buffers.items()}
    new._modules = {k: (_structural_copy(c, memo) if c is not None else None) for k, c in module._modules.items()}
    for hooks in _HOOK_TABLES:
        if isinstance(getattr(module, hooks, None), dict):
            setattr(new, hooks, type(getattr(module, hooks))())
    return new


# --- torch.fx --------------------------------------------------------------------------------

class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m)


def trace_fx(model: nn.Module) -> Graph:
    """Symbolically trace (a meta copy of) the model and convert the fx graph."""
    root = meta_copy(model)
    fx_graph = _LeafTracer().trace(root)
    ops: list[Op] = []
    index: dict[fx.Node, int] = {}
    param_names = {name for name, _ in root.named_parameters(remove_duplicate=False)}

    def add(node: fx.Node | None, **kw) -> None:
        op = Op(index=len(ops), **kw)
        ops.append(op)
        if node is not None:
            index[node] = op.index

    for node in fx_graph.nodes:
        if node.op == "placeholder":
            add(node, kind="input", target=str(node.target))
        elif node.op == "get_attr":
            kind = "param" if node.target in param_names else "buffer"
            add(node, kind=kind, target=_canonical_param(root, node.target) if kind == "param" else node.target)
        elif node.op == "call_module":
            sub = root.get_submodule(node.target)
            operands, scalars = _split_args(node.args, node.kwargs, lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(node, kind="module", target=type(sub).__name__, module=node.target, operands=operands, scalars=scalars)
        elif node.op in ("call_function", "call_method"):
            raw = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if raw == "getattr":
                continue  # x.shape, x.dtype: metadata reads, not data flow
            operands, scalars = _split_args(node.args, node.kwargs, lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(node, kind="function", target=canonical_name(raw), operands=operands, scalars=scalars)
        elif node.op == "output":
            operands, _ = _split_args((node.args[0],), {}, lambda a: index.get(a) if isinstance(a, fx.Node) else None)
            add(None, kind="output", target="output", operands=operands)
    return Graph.build("fx", ops)


def _canonical_param(root: nn.Module, name: str) -> str:
    """The name under which named_parameters() lists a (possibly tied) parameter."""
    target = root.get_parameter(name)
    for pname, p in root.named_parameters():
        if p is target:
            return pname
    return name


def _split_args(args, kwargs, lookup) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, Any], ...]]:
    operands: list[tuple[str, int]] = []
    scalars: list[tuple[str, Any]] = []

    def visit(key: str, value: Any, depth: int = 0) -> None:
        idx = lookup(value)
        if idx is not None:
            operands.append((key, idx))
        elif isinstance(value, (list, tuple)) and depth < 2 and any(lookup(v) is not None or isinstance(v, (list, tuple, dict)) for v in value):
            for j, v in enumerate(value):
                visit(f"{key}.{j}", v, depth + 1)
        elif isinstance(value, dict) and depth < 2:
            for k, v in value.items():
                visit(f"{key}.{k}", v, depth + 1)
        elif isinstance(value, (int, float, bool, str, type(None))) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, bool)) for v in value)
        ):
            scalars.append((key, tuple(value) if isinstance(value, list) else value))

    for i, a in enumerate(args):
        visit(str(i), a)
    for k, v in kwargs.items():
        visit(k, v)
    return tuple(operands), tuple(scalars)


# --- recorded forward pass -------------------------------------------------------------------

class _Recorder(TorchFunctionMode):
    """Records every torch function call made outside leaf modules, and every leaf module call.

    Tensors are tagged through a weak reference, never keyed by a bare id(): the id of a freed
    intermediate tensor is reused by the next allocation and would wire wrong edges.
    """

    def __init__(self, params: dict[int, str]):
        super().__init__()
        self.ops: list[Op] = []
        self._tags: dict[int, tuple[weakref.ref, int]] = {}
        self._params = params
        self._param_ops: dict[str, int] = {}
        self.depth = 0
        self.current: list[str] = []  # leaf modules being run, for error messages
        self.answer_meta = False
        self.guesses = 0

    def lookup(self, value: Any) -> int | None:
        if not isinstance(value, torch.Tensor):
            return None
        entry = self._tags.get(id(value))
        if entry is not None and entry[0]() is value:
            return entry[1]
        name = self._params.get(id(value))
        if name is not None:
            if name not in self._param_ops:
                self._param_ops[name] = self._new(kind="param", target=name)
            return self._param_ops[name]
        return None

    def _new(self, **kw) -> int:
        op = Op(index=len(self.ops), **kw)
        self.ops.append(op)
        return op.index

    def tag(self, value: Any, idx: int) -> None:
        for t in tensors_in(value):
            try:
                self._tags[id(t)] = (weakref.ref(t), idx)
            except TypeError:
                pass

    def add_input(self, name: str, value: Any) -> None:
        for t in tensors_in(value):
            self.tag(t, self._new(kind="input", target=name))

    # On meta tensors a data-dependent question (if mask.all(): ..., x.item()) has no answer; the
    # pass answers it with a neutral default and counts it (the report says how many).
    _DEFAULTS = {"__bool__": lambda t: True, "item": lambda t: True if t.dtype == torch.bool else 0,
                 "__int__": lambda t: 0, "__float__": lambda t: 0.0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.answer_meta and name in self._DEFAULTS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            self.guesses += 1
            return self._DEFAULTS[name](args[0])
        out = func(*args, **kwargs)
        if self.depth == 0 and any(True for _ in tensors_in(out)):
            raw = getattr(func, "__name__", str(func))
            if raw == "__get__":  # a property such as x.T
                raw = getattr(getattr(func, "__self__", None), "__name__", raw)
            operands, scalars = _split_args(args, kwargs, self.lookup)
            if operands:
                self.tag(out, self._new(kind="function", target=canonical_name(raw), operands=operands, scalars=scalars))
        return out


def tensors_in(value: Any, depth: int = 0):
    """Every tensor in a (nested) tuple, list or dict, such as a forward's output."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v, depth + 1)


def trace_recorded(model: nn.Module, args: tuple, kwargs: dict, on_meta: bool = True, answer_meta: bool = False) -> Graph:
    """Run one forward pass of a copy of the model and record it.

    answer_meta: on meta tensors, answer data-dependent questions (bool(t), t.item()) with neutral
    defaults instead of failing; for models that only exist on the meta device."""
    root = meta_copy(model, share_params=not on_meta)
    params = {id(p): name for name, p in root.named_parameters()}
    rec = _Recorder(params)
    rec.answer_meta = on_meta and answer_meta
    handles = []

    def pre_hook(module, margs, mkwargs):
        if rec.depth == 0:
            operands, scalars = _split_args(margs, mkwargs, rec.lookup)
            module._initcheck_call = (operands, scalars)
        rec.depth += 1
        rec.current.append(names[module])

    def post_hook(module, margs, mkwargs, out):
        rec.depth -= 1
        rec.current.pop()
        if rec.depth == 0:
            operands, scalars = module.__dict__.pop("_initcheck_call")
            idx = rec._new(kind="module", target=type(module).__name__, module=names[module], operands=operands, scalars=scalars)
            rec.tag(out, idx)

    names: dict[nn.Module, str] = {}
    for name, module in root.named_modules():
        if is_leaf(module) and name:
            names[module] = name
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    if on_meta:
        args, kwargs = move(args, torch.device("meta")), move(kwargs, torch.device("meta"))
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for i, a in enumerate(args):
                rec.add_input(str(i), a)
            for k, v in kwargs.items():
                rec.add_input(k, v)
            with rec:
                out = root(*args, **kwargs)
    except Exception as e:
        where = f" in {rec.current[-1]}" if rec.current else ""
        raise TraceFailure(f"forward failed{where}: {type(e).__name__}: {_first_line(e)}") from e
    finally:
        for h in handles:
            h.remove()
    operands, _ = _split_args((out,), {}, rec.lookup)
    rec._new(kind="output", target="output", operands=operands)
    graph = Graph.build("recorded", rec.ops)
    return replace(graph, guesses=rec.guesses) if rec.guesses else graph


# Below this many parameters a real forward pass is cheaper than a meta one (meta kernels of
# attention and friends run through Python decompositions: ~1 s for a small transformer).
META_ABOVE = 20_000_000


def _meta_first(model: nn.Module) -> tuple[bool, ...]:
    """Meta first for big models (reads no weight, allocates nothing), real tensors as fallback."""
    numel = sum(p.numel() for p in model.parameters())
    if any(p.is_meta for p in model.parameters()):
        return (True,)
    return (True, False) if numel > META_ABOVE else (False, True)


def accepts(model: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether the model's forward runs on these inputs."""
    for on_meta in _meta_first(model):
        try:
            trace_recorded(model, args, kwargs, on_meta=on_meta)
            return True
        except TraceFailure:
            continue
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


# --- coverage and the choice of tracer -------------------------------------------------------

def reached_weights(graph: Graph, model: nn.Module) -> set[str]:
    """Canonical names of the weight parameters that a recognized weight op of the graph reads
    (a tied weight reached under any of its names counts once)."""
    canonical = {id(p): name for name, p in model.named_parameters()}
    reached: set[str] = set()
    views = weight_views(graph.ops, {op.index for op in graph.ops if op.kind == "param"})
    for op in graph.ops:
        if op.kind == "module" and op.module is not None:
            module = model.get_submodule(op.module)
            for use in module_weights(module):
                p = _get(module, use.param)
                if isinstance(p, torch.Tensor) and id(p) in canonical:
                    reached.add(canonical[id(p)])
        elif op.kind == "function":
            hit = function_weight(op, views)
            if hit is not None:
                reached.add(graph.ops[hit[0]].target)
    return reached


# A parameter read only through these is added or concatenated to the signal (a class token, a
# position table, a layer scale): data, not a weight with fans.
_ADDITIVE = frozenset({"add", "sub", "cat", "concat", "stack", "expand", "expand_as", "getitem", "view", "reshape",
                       "to", "repeat", "unsqueeze", "squeeze", "permute", "transpose", "flatten", "mul", "div",
                       "type", "float", "clone", "contiguous", "interpolate", "pad", "narrow", "select"})


def additive_params(graph: Graph) -> set[str]:
    """Parameters that the graph reads, but only to add, scale or concatenate."""
    out = set()
    for op in graph.ops:
        if op.kind != "param":
            continue
        stack, seen, additive = [op.index], set(), True
        while stack and additive:
            here = stack.pop()
            for u in graph.consumers[here]:
                if u in seen:
                    continue
                seen.add(u)
                user = graph.ops[u]
                if user.target == "scaled_dot_product_attention" and any(
                        key in ("3", "attn_mask") and i == here for key, i in user.operands):
                    continue  # a bias added to the attention scores
                if user.kind != "function" or user.target not in _ADDITIVE:
                    additive = user.kind == "output"
                    break
                if user.target not in ("add", "sub", "cat", "concat", "stack", "mul", "div"):
                    stack.append(u)  # a view of the parameter: look at its users too
        if additive:
            out.add(op.target)
    return out


def missing_weights(graph: Graph, model: nn.Module, expected: set[str]) -> set[str]:
    return expected - reached_weights(graph, model) - additive_params(graph)


def trace(model: nn.Module, args: tuple | None, kwargs: dict | None, build_inputs) -> Traced:
    """fx when it traces and reaches every weight; otherwise the recorded forward pass.

    build_inputs: a callable giving candidate (args, kwargs) pairs for the recorded pass when none
    were given; the first that runs is used.
    """
    expected = set(weight_params(model))
    notes: list[str] = []
    try:
        graph = trace_fx(model)
        missing = missing_weights(graph, model, expected)
        if not missing:
            return Traced(graph, (), ())
        notes.append(f"fx reached {len(expected) - len(missing)} of {len(expected)} weights; recorded a forward pass instead")
    except Exception as e:  # fx raises many types on untraceable code
        notes.append(f"fx could not trace ({type(e).__name__}: {_first_line(e)}); recorded a forward pass instead")
    proposals = [(args or (), kwargs or {})] if (args is not None or kwargs is not None) else list(build_inputs())
    if not proposals:
        raise TraceFailure("cannot guess an input from the model's first layer")
    graph, error = None, None
    meta_only = any(p.is_meta for p in model.parameters())
    for answer in ((True,) if meta_only else (False,)):  # a meta-only model has no real fallback
        for a, k in proposals:  # a guessed input that does not fit: try the next proposal
            for on_meta in _meta_first(model):
                try:
                    graph = trace_recorded(model, a, k, on_meta=on_meta, answer_meta=answer)
                    break
                except TraceFailure as e:
                    error = error or e
            if graph is not None:
                break
        if graph is not None:
            break
    if graph is None:
        raise error
    if graph.guesses:
        notes.append(f"the model lives on the meta device: {graph.guesses} data-dependent check(s) in its forward "
                     "were answered with a default (True / 0)")
    missing = sorted(missing_weights(graph, model, expected))
    return Traced(graph, tuple(notes), tuple(missing))
