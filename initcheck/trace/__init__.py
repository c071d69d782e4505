"""Model -> Graph: torch.fx first, a recorded forward pass when fx cannot trace or misses weights.

Both tracers work on a copy whose parameters and buffers are meta-device twins (copying.py), so
tracing never reads a weight, never changes the user's model, and costs no memory. The recorded pass
falls back to real tensors (parameters shared, read-only, buffers copied) when the model's forward
needs data (`.item()`, data-dependent branches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..graph import Graph, OpKind
from ..ops.activations import is_norm_module
from ..ops.layers import function_weight, get_path, module_weights, weight_views
from ..ops.parametrized import computed, is_original
from .copying import meta_copy
from .fx_trace import trace_fx
from .index import BROADCASTS
from .recorded import TraceFailure, accepts, first_line, meta_first, tensors_in, trace_recorded

__all__ = ["Traced", "TraceFailure", "accepts", "learned_inputs", "meta_copy", "tensors_in", "trace", "trace_fx", "trace_recorded",
           "weight_params"]


@dataclass(frozen=True)
class Traced:
    graph: Graph
    notes: tuple[str, ...]  # why a tracer was skipped, what was not reached
    unreached: tuple[str, ...]  # weight parameters that no traced op read
    # the model's named_modules() as the trace walked them: the index needs the same map
    modules: Mapping[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)


def weight_params(model: nn.Module, modules: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Qualified name -> parameter for every weight a report must judge (tied ones once). modules:
    dict(model.named_modules()), when the caller walked it already."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for mname, module in (model.named_modules() if modules is None else modules.items()):
        for use in module_weights(module):
            p = get_path(module, use.param)
            if isinstance(p, torch.Tensor) and id(p) not in seen:
                seen.add(id(p))
                out[_join(mname, use.param)] = p
    for name, p in model.named_parameters():
        owner, _, attr = name.rpartition(".")
        if is_original(model.get_submodule(owner) if owner else model, attr):
            continue  # the original of a parametrization: its module's effective weight is judged
        if p.dim() >= 2 and id(p) not in seen and not _owned_by_norm(model, name):
            seen.add(id(p))
            out[name] = p
    return out


def _owned_by_norm(model: nn.Module, pname: str) -> bool:
    owner = pname.rpartition(".")[0]
    return is_norm_module(model.get_submodule(owner)) if owner else False


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --- coverage and the choice of tracer -------------------------------------------------------

def reached_weights(graph: Graph, model: nn.Module) -> set[str]:
    """Canonical names of the weight parameters that a recognized weight op of the graph reads
    (a tied weight reached under any of its names counts once)."""
    canonical = {id(p): name for name, p in model.named_parameters()}
    reached: set[str] = set()
    views = weight_views(graph.ops, {op.index for op in graph.ops if op.kind is OpKind.PARAM})
    for op in graph.ops:
        if op.kind is OpKind.MODULE and op.module is not None:
            module = model.get_submodule(op.module)
            for use in module_weights(module):
                if computed(module, use.param):
                    reached.add(_join(op.module, use.param))  # recomputed at each access: named by its module
                    continue
                p = get_path(module, use.param)
                if isinstance(p, torch.Tensor) and id(p) in canonical:
                    reached.add(canonical[id(p)])
        elif op.kind is OpKind.FUNCTION:
            hit = function_weight(op, views)
            if hit is not None:
                reached.add(graph.ops[hit[0]].target)
    return reached


# A parameter read only through these is added or concatenated to the signal (a class token, a
# position table, a layer scale): data, not a weight with fans.
_ADDITIVE = frozenset({"add", "sub", "cat", "concat", "stack", "expand", "expand_as", "getitem", "view", "reshape",
                       "to", "repeat", "unsqueeze", "squeeze", "permute", "transpose", "flatten", "mul", "div",
                       "type", "float", "clone", "contiguous", "interpolate", "pad", "narrow", "select",
                       "addcmul", "addcdiv"})
# Elementwise functions of a parameter alone (Swin V2's exp(clamp(logit_scale)), a softplus'd
# temperature): what they give is still one number per element, so its users decide.
_ELEMENTWISE = frozenset({"clamp", "clamp_min", "clamp_max", "clip", "exp", "log", "sigmoid", "tanh", "softplus",
                          "abs", "sqrt", "rsqrt", "pow", "square", "reciprocal", "neg", "exp2", "log1p", "expm1"})


def additive_params(graph: Graph) -> set[str]:
    """Parameters that the graph reads, but only to add, scale or concatenate."""
    out = set()
    for op in graph.ops:
        if op.kind is not OpKind.PARAM:
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
                if user.kind is not OpKind.FUNCTION or user.target not in _ADDITIVE | _ELEMENTWISE:
                    additive = user.kind is OpKind.OUTPUT
                    break
                if user.target not in ("add", "sub", "cat", "concat", "stack", "mul", "div", "addcmul", "addcdiv"):
                    stack.append(u)  # a view of the parameter: look at its users too
        if additive:
            out.add(op.target)
    return out


# Ops that show a parameter's values another way (no arithmetic): followed from a parameter to its
# broadcast over the batch.
_RESHAPES = frozenset({"unsqueeze", "squeeze", "view", "reshape", "to", "float", "type", "clone", "contiguous",
                       "getitem", "select", "permute", "transpose", "flatten"})


def learned_inputs(graph: Graph) -> set[str]:
    """Parameters broadcast over the batch before any arithmetic (`latents.expand(b, -1, -1)`, a
    class token, DETR's queries `.unsqueeze(1).repeat(1, b, 1)`): a learned input, the signal
    itself, whatever reads it next (a norm, an attention); no weight is broadcast over a batch."""
    out = set()
    for op in graph.ops:
        if op.kind is not OpKind.PARAM:
            continue
        stack, seen = [op.index], set()
        while stack:
            here = stack.pop()
            users = [u for u in graph.consumers[here] if u not in seen and graph.ops[u].kind is OpKind.FUNCTION]
            seen.update(users)
            if any(graph.ops[u].target in BROADCASTS and graph.ops[u].inputs[:1] == (here,) for u in users):
                out.add(op.target)
                break
            stack.extend(u for u in users if graph.ops[u].target in _RESHAPES and graph.ops[u].inputs[:1] == (here,))
    return out


def _scripted(modules: Mapping[str, nn.Module], name: str) -> bool:
    """Whether the parameter `name` lives inside a TorchScript module."""
    parts = name.split(".")
    return any(isinstance(modules.get(".".join(parts[:i])), torch.jit.ScriptModule) for i in range(len(parts)))


def missing_weights(graph: Graph, model: nn.Module, expected: set[str]) -> set[str]:
    return expected - reached_weights(graph, model) - additive_params(graph) - learned_inputs(graph)


def trace(model: nn.Module, args: tuple[Any, ...] | None, kwargs: dict[str, Any] | None,
          build_inputs: Callable[[], Iterable[tuple[tuple[Any, ...], dict[str, Any]]]],
          training: bool | None = None) -> Traced:
    """fx when it traces and reaches every weight; otherwise the recorded forward pass.

    build_inputs: a callable giving candidate (args, kwargs) pairs for the recorded pass when none
    were given; the first that runs is used. training: the flags the copy is traced with, the
    judged forward's (None keeps the model's): code that reads `self.training` is traced as that
    forward runs it.
    """
    modules = dict(model.named_modules())
    expected = set(weight_params(model, modules))
    notes: list[str] = []
    scripted = sorted(n for n in expected if _scripted(modules, n))
    if scripted:
        # TorchScript runs its ops in C++: no tracer sees them, and no hook can be put on it
        expected -= set(scripted)
        shown = ", ".join(scripted[:3]) + (f" and {len(scripted) - 3} more" if len(scripted) > 3 else "")
        notes.append(f"{len(scripted)} weight(s) inside TorchScript modules (torch.jit.script) are not judged: "
                     f"their ops run out of any trace's sight ({shown}); script the model after diagnosing it")
    given = args is not None or kwargs is not None
    try:
        graph = trace_fx(model, [(args or (), kwargs or {})] if given else _lazy(build_inputs), training)
        missing = missing_weights(graph, model, expected)
        if not missing:
            return Traced(graph, tuple(notes), (), modules)
        notes.append(f"fx reached {len(expected) - len(missing)} of {len(expected)} weights; recorded a forward pass instead")
    except Exception as e:  # fx raises many types on untraceable code
        notes.append(f"fx could not trace ({type(e).__name__}: {first_line(e)}); recorded a forward pass instead")
    proposals = [(args or (), kwargs or {})] if given else build_inputs()
    graph = _record(model, proposals, training)
    if graph.guesses:
        notes.append(f"the model lives on the meta device: {graph.guesses} data-dependent check(s) in its forward "
                     "were answered with a default (True / 0)")
    return Traced(graph, tuple(notes), tuple(sorted(missing_weights(graph, model, expected))), modules)


def _lazy(build: Callable[[], Iterable[tuple[tuple[Any, ...], dict[str, Any]]]]
          ) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The candidate inputs, built only when the shape propagation asks for the first."""
    yield from build()


def _record(model: nn.Module, proposals: Iterable[tuple[tuple[Any, ...], dict[str, Any]]],
            training: bool | None = None) -> Graph:
    """The first recorded pass that runs: each proposed input (built as it is reached), on meta
    tensors first for big models; a meta-only model answers its data-dependent checks with defaults
    (it has no real fallback)."""
    error: TraceFailure | None = None
    answer = any(p.is_meta for p in model.parameters())
    for a, k in proposals:  # a guessed input that does not fit: try the next proposal
        for on_meta in meta_first(model):
            try:
                return trace_recorded(model, a, k, on_meta=on_meta, answer_meta=answer, training=training)
            except TraceFailure as e:
                error = error or e
    if error is None:
        raise TraceFailure("cannot guess an input from the model's first layer")
    raise error
