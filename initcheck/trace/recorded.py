"""The recorded forward pass: one run of a copy of the model under a TorchFunctionMode and leaf-module
hooks, for models fx cannot trace (data-dependent control flow, Hugging Face, wrapped functions)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..devices import move
from ..graph import CREATED, WITH_INDICES, Graph, Op, OpKind, canonical_name
from ..ops.layers import is_leaf
from .copying import meta_copy
from .fx_trace import split_args
from .shapes import described


class TraceFailure(Exception):
    """The recorded forward pass raised: the message says in which layer."""


# In-place operator methods that a TorchFunctionMode sees by name (methods ending in "_", such as
# mul_ or copy_, are recognized by their suffix).
_INPLACE_DUNDER = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                             "__imod__", "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
                             "__imatmul__"})


def _storage(t: torch.Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


class _CopyOnWrite:
    """On real tensors the traced copy shares the user's parameters: the first time the forward
    writes one in place (weight standardization, a norm clamping its own scale), a copy of its value
    is saved, and `restore` puts it back. What preserve.preserved() guarantees, for the price of the
    parameters actually written instead of a copy of all of them."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self._by_storage = {_storage(p): p for p in params if p.numel()}
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def before(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        targets = list(tensors_in(kwargs.get("out")))
        if args and isinstance(args[0], torch.Tensor) and (name in _INPLACE_DUNDER or (name.endswith("_") and not name.endswith("__"))):
            targets.append(args[0])
        for t in targets:
            p = self._by_storage.get(_storage(t)) if not t.is_meta else None
            if p is not None and id(p) not in self._saved:
                self._saved[id(p)] = (p, p.detach().clone(), p.requires_grad)

    def restore(self) -> None:
        with torch.no_grad():
            for p, value, requires_grad in self._saved.values():
                if p.shape == value.shape and p.dtype == value.dtype:
                    p.copy_(value)
                else:
                    p.data = value
                if p.is_leaf:
                    p.requires_grad_(requires_grad)
        self._saved.clear()


class _Recorder(TorchFunctionMode):
    """Records every torch function call made outside leaf modules, and every leaf module call.

    Tensors are tagged through a weak reference, never keyed by a bare id(): the id of a freed
    intermediate tensor is reused by the next allocation and would wire wrong edges.
    """

    def __init__(self, params: dict[int, str], buffers: dict[int, str] | None = None) -> None:
        super().__init__()
        self.ops: list[Op] = []
        self._tags: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}
        self._params = params
        self._buffers = buffers or {}  # read outside leaf modules: BERT's token_type_ids, a causal mask
        self._param_ops: dict[tuple[OpKind, str], int] = {}
        self.depth = 0
        self.current: list[str] = []  # leaf modules being run, for error messages
        self.answer_meta = False
        self.guesses = 0
        self.cow: _CopyOnWrite | None = None

    def lookup(self, value: Any) -> int | None:
        if not isinstance(value, torch.Tensor):
            return None
        entry = self._tags.get(id(value))
        if entry is not None and entry[0]() is value:
            return entry[1]
        for kind, table in ((OpKind.PARAM, self._params), (OpKind.BUFFER, self._buffers)):
            name = table.get(id(value))
            if name is not None:
                if (kind, name) not in self._param_ops:
                    self._param_ops[(kind, name)] = self._new(kind=kind, target=name, **described(value))
                return self._param_ops[(kind, name)]
        return None

    def _new(self, **kw: Any) -> int:
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
            self.tag(t, self._new(kind=OpKind.INPUT, target=name, **described(t)))

    # On meta tensors a data-dependent question (if mask.all(): ..., x.item()) has no answer; the
    # pass answers it with a neutral default and counts it (the report says how many).
    _DEFAULTS: dict[str, Callable[[torch.Tensor], object]] = {"__bool__": lambda t: True, "item": lambda t: True if t.dtype == torch.bool else 0,
                 "__int__": lambda t: 0, "__float__": lambda t: 0.0}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if self.answer_meta and name in self._DEFAULTS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            self.guesses += 1
            return self._DEFAULTS[name](args[0])
        if self.cow is not None:
            self.cow.before(name, args, kwargs)
        out = func(*args, **kwargs)
        if self.depth == 0 and name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            # x[idx] = v writes x in place: later readers of x read the write
            operands, scalars = split_args(args, kwargs, self.lookup)
            if operands:
                self.tag(args[0], self._new(kind=OpKind.FUNCTION, target="setitem", operands=operands, scalars=scalars,
                                            **described(args[0])))
            return out
        if self.depth == 0 and any(True for _ in tensors_in(out)):
            raw = getattr(func, "__name__", str(func))
            if raw == "__get__":  # a property such as x.T
                raw = getattr(getattr(func, "__self__", None), "__name__", raw)
            operands, scalars = split_args(args, kwargs, self.lookup)
            if not operands and canonical_name(raw) in CREATED and isinstance(out, torch.Tensor) and out.is_floating_point():
                self.tag(out, self._new(kind=OpKind.FUNCTION, target=canonical_name(raw), scalars=scalars, **described(out)))
            elif operands:
                idx = self._new(kind=OpKind.FUNCTION, target=canonical_name(raw), operands=operands, scalars=scalars,
                                **described(out))
                self.tag(out, idx)
                if canonical_name(raw) in WITH_INDICES and isinstance(out, tuple) and len(out) == 2:
                    # (values, indices): the indices as fx writes them, out[1], so that they are
                    # known for what they are (trace.index's index-valued ops), not as the values
                    self.tag(out[1], self._new(kind=OpKind.FUNCTION, target="getitem", operands=(("0", idx),),
                                               scalars=(("1", 1),), **described(out[1])))
        return out


def tensors_in(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor in a (nested) tuple, list or dict, such as a forward's output."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors_in(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v, depth + 1)


def trace_recorded(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], on_meta: bool = True,
                   answer_meta: bool = False, training: bool | None = None) -> Graph:
    """Run one forward pass of a copy of the model and record it.

    answer_meta: on meta tensors, answer data-dependent questions (bool(t), t.item()) with neutral
    defaults instead of failing; for models that only exist on the meta device. training: the
    copy's flags during the pass (None keeps the model's)."""
    root = meta_copy(model, share_params=not on_meta, training=training)
    params = {id(p): name for name, p in root.named_parameters()}
    rec = _Recorder(params, {id(b): name for name, b in root.named_buffers()})
    rec.answer_meta = on_meta and answer_meta
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def pre_hook(module: nn.Module, margs: tuple[Any, ...], mkwargs: dict[str, Any]) -> None:
        if rec.depth == 0:
            module.__dict__["_initcheck_call"] = split_args(margs, mkwargs, rec.lookup)
        rec.depth += 1
        rec.current.append(names[module])

    def post_hook(module: nn.Module, margs: tuple[Any, ...], mkwargs: dict[str, Any], out: Any) -> None:
        rec.depth -= 1
        rec.current.pop()
        if rec.depth == 0:
            call_operands, call_scalars = module.__dict__.pop("_initcheck_call")
            idx = rec._new(kind=OpKind.MODULE, target=type(module).__name__, module=names[module], operands=call_operands,
                           scalars=call_scalars, **described(out))
            rec.tag(out, idx)

    names: dict[nn.Module, str] = {}
    for name, module in root.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            continue  # TorchScript runs its ops in C++ and takes no hooks: what it computes is not seen
        if is_leaf(module) and name:
            names[module] = name
            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(post_hook, with_kwargs=True))
    if on_meta:
        args, kwargs = move(args, torch.device("meta")), move(kwargs, torch.device("meta"))
    # on real tensors the copy shares the user's parameters: a forward that writes its own weights
    # (in-place standardization) would write the user's; the written ones are saved and put back
    if not on_meta:
        rec.cow = _CopyOnWrite(list(root.parameters()))
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
        raise TraceFailure(f"forward failed{where}: {type(e).__name__}: {first_line(e)}") from e
    finally:
        for h in handles:
            h.remove()
        if rec.cow is not None:
            rec.cow.restore()
    operands, _ = split_args((out,), {}, rec.lookup)
    rec._new(kind=OpKind.OUTPUT, target="output", operands=operands)
    graph = Graph.build("recorded", rec.ops)
    return replace(graph, guesses=rec.guesses) if rec.guesses else graph


# Below this many parameters a real forward pass is cheaper than a meta one (meta kernels of
# attention and friends run through Python decompositions: ~1 s for a small transformer).
META_ABOVE = 20_000_000


def meta_first(model: nn.Module) -> tuple[bool, ...]:
    """Meta first for big models (reads no weight, allocates nothing), real tensors as fallback."""
    numel = sum(p.numel() for p in model.parameters())
    if any(p.is_meta for p in model.parameters()):
        return (True,)
    return (True, False) if numel > META_ABOVE else (False, True)


def accepts(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the model's forward runs on these inputs."""
    for on_meta in meta_first(model):
        try:
            trace_recorded(model, args, kwargs, on_meta=on_meta)
            return True
        except TraceFailure:
            continue
    return False


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


