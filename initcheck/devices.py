"""Where probe and fix run: "auto" is CUDA when there is one. A CPU model is copied to the GPU
and its new weights copied back, so the user's model stays where it was."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


def resolve(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch.cuda.is_available() is False; use --device cpu or auto")
    return dev


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def full_copy(model: nn.Module) -> nn.Module:
    """A full copy of `model` (its values, hooks and all) to run forwards on. A tensor that a hook
    computes and keeps on a module (the old `torch.nn.utils.weight_norm` and `spectral_norm` keep
    `weight` as a non-leaf tensor between forwards) is copied detached: deepcopy refuses non-leaf
    tensors, and the copy's own hook computes it again before its forward."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


@contextmanager
def working_copy(model: nn.Module, device: torch.device, write_back: bool) -> Iterator[nn.Module]:
    """The model itself when it already lives on `device`; otherwise a copy there, whose
    parameters and buffers are copied back on success when `write_back`."""
    if model_device(model) == device or (device.type == model_device(model).type and device.index is None):
        yield model
        return
    work = full_copy(model).to(device)
    yield work
    if write_back:
        with torch.no_grad():
            originals = dict(model.named_parameters(remove_duplicate=False))
            for name, p in work.named_parameters(remove_duplicate=False):
                originals[name].copy_(p.to(originals[name].device))


@contextmanager
def judged_forward(model: nn.Module, training: bool) -> Iterator[None]:
    """The forward an analysis judged, run on `model`: every module's flag set to `training`, then
    put back, with every buffer's values (a training BatchNorm updates its running statistics), even
    when the forward raises: the model leaves in its own mode with its own statistics."""
    modes = {m: m.training for m in model.modules()}
    kept = [(b, b.detach().clone()) for b in model.buffers()] if training else []
    model.train(training)
    try:
        yield
    finally:
        with torch.no_grad():
            for b, values in kept:
                b.copy_(values)
        for m, flag in modes.items():
            m.training = flag  # not m.train(flag): that would set every child to the parent's flag


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG a forward on `device` draws from (for torch.random.fork_rng)."""
    return [device.index or 0] if device.type == "cuda" else []


def move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(move(v, device) for v in value)
    if isinstance(value, list):
        return [move(v, device) for v in value]
    if isinstance(value, dict):
        return {k: move(v, device) for k, v in value.items()}
    return value
