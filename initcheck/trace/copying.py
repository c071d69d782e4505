"""Copies of a model to trace: parameters and buffers as meta twins (or shared), the user's hooks
dropped, so that tracing never reads a weight, never changes the user's model and costs no memory."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def meta_copy(model: nn.Module, share_params: bool = False, training: bool | None = None) -> nn.Module:
    """A structural copy of `model`: parameters become meta twins (or are shared), buffers are
    meta twins (or copies), and the user's module hooks are dropped. The user's model is never
    touched. training: the copy's flags (the forward a report judges, modes.py); None keeps the
    model's."""
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
    if training is not None:
        root.train(training)  # a copied module's flag is its own attribute: the user's stay
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


