"""`preserved(model)`: whatever runs inside (a traced or probing forward that writes to its own
weights, a backward, a mode switch, random draws) leaves the model and torch's RNG as they were,
bit for bit, also when it raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _Tensor:
    """One parameter or buffer: the object itself, a copy of its values, and its grad."""

    obj: torch.Tensor
    values: torch.Tensor
    requires_grad: bool
    grad: torch.Tensor | None  # a copy: backward accumulates into the existing grad in place


@dataclass(frozen=True)
class Snapshot:
    """What `restore` puts back: each module's parameter and buffer slots (the objects, in case a
    forward reassigns them), their values, train/eval flags, requires_grad and grads, the RNG."""

    slots: tuple[tuple[nn.Module, dict[str, nn.Parameter | None], dict[str, torch.Tensor | None]], ...]
    tensors: tuple[_Tensor, ...]
    training: tuple[tuple[nn.Module, bool], ...]
    cpu_rng: torch.Tensor
    cuda_rng: tuple[torch.Tensor, ...] | None


def snapshot(model: nn.Module) -> Snapshot:
    """Copy everything of `model` a forward or backward can change (see Snapshot)."""
    modules = list(model.modules())
    seen: set[int] = set()
    tensors = []
    for m in modules:
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is None or id(t) in seen:  # a tied weight is one tensor: copy it once
                continue
            seen.add(id(t))
            grad = t.grad.detach().clone() if t.grad is not None else None
            tensors.append(_Tensor(t, t.detach().clone(), t.requires_grad, grad))
    return Snapshot(
        slots=tuple((m, dict(m._parameters), dict(m._buffers)) for m in modules),
        tensors=tuple(tensors),
        training=tuple((m, m.training) for m in modules),
        cpu_rng=torch.get_rng_state(),
        cuda_rng=tuple(torch.cuda.get_rng_state_all()) if _cuda_started() else None,
    )


def restore(snap: Snapshot) -> None:
    """Put back what `snapshot` copied, in place: references the user holds stay valid."""
    for m, params, buffers in snap.slots:
        # a forward may have added, removed or replaced entries: the dicts get their old contents
        m._parameters.clear()
        m._parameters.update(params)
        m._buffers.clear()
        m._buffers.update(buffers)
    with torch.no_grad():
        for s in snap.tensors:
            t = s.obj
            if t.shape == s.values.shape and t.dtype == s.values.dtype and t.device == s.values.device:
                t.copy_(s.values)
            else:  # `.data` itself was replaced (another shape, dtype or device)
                t.data = s.values
            if t.is_leaf:
                t.requires_grad_(s.requires_grad)
            t.grad = s.grad
    for m, flag in snap.training:
        m.training = flag  # not m.train(flag): that would set every child to the parent's flag
    torch.set_rng_state(snap.cpu_rng)
    if snap.cuda_rng is not None:
        torch.cuda.set_rng_state_all(list(snap.cuda_rng))


def _cuda_started() -> bool:
    """CUDA's RNG only once CUDA is in use: reading it would start CUDA (seconds, and memory)."""
    return bool(torch.cuda.is_available() and torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block on `model` and undo every change it made to it and to torch's RNG."""
    snap = snapshot(model)
    try:
        yield model
    finally:
        restore(snap)
