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


@contextmanager
def working_copy(model: nn.Module, device: torch.device, write_back: bool) -> Iterator[nn.Module]:
    """The model itself when it already lives on `device`; otherwise a copy there, whose
    parameters and buffers are copied back on success when `write_back`."""
    if model_device(model) == device or (device.type == model_device(model).type and device.index is None):
        yield model
        return
    work = copy.deepcopy(model).to(device)
    yield work
    if write_back:
        with torch.no_grad():
            originals = dict(model.named_parameters(remove_duplicate=False))
            for name, p in work.named_parameters(remove_duplicate=False):
                originals[name].copy_(p.to(originals[name].device))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for a measurement (no dropout, no batch-norm statistic updates), restoring each
    module's own flag afterwards, even when the forward raises."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag


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
