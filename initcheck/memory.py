"""The memory a probe or a data-driven fix will take, estimated before anything large is allocated,
and the --max-memory guard that refuses a run over its limit.

The activations come from the run itself, played on the meta device: a meta copy of the model
(trace/copying.py) runs on meta inputs of the real shapes and dtypes, so no value is computed and
no byte is allocated. A TorchDispatchMode sees every tensor each op produces and keeps a weak
reference to its storage; the estimate is the peak of the bytes whose storage is still alive. That
one number covers both runs: under a probe's autograd the saved tensors stay alive until the
backward (which is played too, for the gradients), under the fix's no-grad forward each activation
dies when the next layer no longer needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from . import devices
from .errors import InputTooLarge
from .inputs import Inputs, free_memory, map_tensors, normalize
from .sizes import MAX_MEMORY_FRACTION, NO_LIMIT, human_bytes
from .trace import meta_copy, tensors_in

# purge dead storages only when the running count passes the peak by this much: the estimate is at
# most this much above the true peak, and a deep autograd graph (whose storages all stay alive)
# costs O(log) purges instead of one per op
_SLACK = 1.05


class Activity(str, Enum):
    """What the guarded run does with the model: what it keeps alive differs."""

    PROBE = "probing"  # a copy of the model, a forward with autograd, a backward
    FIX = "fixing"  # a saved copy of the parameters, forwards without autograd


@dataclass(frozen=True)
class Estimate:
    """Bytes a run needs, by what holds them."""

    inputs: int  # the example inputs
    params: int  # the copies of the parameters (and buffers) the run makes
    activations: int | None  # the peak of the tensors the forward (and backward) keeps; None if unknown

    @property
    def total(self) -> int:
        return self.inputs + self.params + (self.activations or 0)


@dataclass(frozen=True)
class Limit:
    """The bytes a run may take (None: no guard) and how the number was set, for messages."""

    bytes: int | None
    why: str


def resolve_limit(max_memory: int | None, device: str | torch.device = "cpu") -> Limit:
    """max_memory: None for the default (MAX_MEMORY_FRACTION of the memory available now on the
    run's device: RAM, or free CUDA memory), NO_LIMIT (0) for no guard, else bytes."""
    if max_memory is not None:
        return Limit(None if max_memory == NO_LIMIT else int(max_memory), "")
    dev = str(device)
    free = free_memory(dev)
    if free is None:
        return Limit(None, "")
    share = "half" if MAX_MEMORY_FRACTION == 0.5 else f"{MAX_MEMORY_FRACTION:.0%} of"
    where = "the free CUDA memory" if dev.startswith("cuda") else "the available memory"
    return Limit(int(free * MAX_MEMORY_FRACTION), f"{share} {where}")


def guard(model: nn.Module, example_inputs: Any, *, activity: Activity, max_memory: int | None = None,
          device: str | torch.device = "auto", target: str | None = None) -> Estimate | None:
    """Refuse (InputTooLarge, one line) a run whose estimate exceeds the limit, before it allocates
    anything; return the estimate (None when there is no input to judge or no limit)."""
    given = normalize(example_inputs, model)
    limit = resolve_limit(max_memory, devices.resolve(device))
    if given is None or limit.bytes is None:
        return None
    found = estimate(model, given, activity)
    if found.total > limit.bytes:
        raise InputTooLarge(target or type(model).__name__, _refusal(activity, given, found, limit),
                            hint="pass a smaller --input or raise --max-memory; max_memory= in the API")
    return found


def estimate(model: nn.Module, inputs: Inputs, activity: Activity) -> Estimate:
    """What `activity` on `inputs` needs; the activations are left out (None) when the model's
    forward does not run on the meta device (it reads a value, mixes devices): then the input and
    the copies alone are judged, and the run goes on."""
    held = sum(_nbytes(t) for t in _tensors(inputs))
    copies = sum(_nbytes(t) for t in model.parameters())
    if activity is Activity.PROBE:
        copies += sum(_nbytes(b) for b in model.buffers())  # probe deep-copies the whole model
    try:
        peak = activation_peak(model, inputs, backward=activity is Activity.PROBE)
    except Exception:  # whatever the user's forward raises on meta tensors
        peak = None
    return Estimate(held, copies, peak)


def activation_peak(model: nn.Module, inputs: Inputs, *, backward: bool) -> int:
    """Peak bytes of the tensors produced by the model's forward (with autograd, then the backward
    of the probe's loss, when `backward`; else without autograd, as the fix runs it), played on
    meta tensors in training mode: the forward a fix and a default probe run (modes.py), and for an
    eval-mode probe an upper bound (dropout's masks and BatchNorm's batch statistics are extra
    tensors). Raises what the forward raises."""
    work = meta_copy(model, training=True)
    if backward:
        for p in work.parameters():
            p.requires_grad_(True)  # the probe asks for every weight's gradient
    args, kwargs = map_tensors(inputs, _meta)
    counter = _Peak([*work.parameters(), *work.buffers(), *_tensors((args, kwargs))])
    with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(backward), counter:
        out = work(*args, **kwargs)
        if backward:
            loss = sum(t.float().pow(2).mean() for t in tensors_in(out) if t.is_floating_point())
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                torch.autograd.backward(loss)
        del out
    return counter.peak


class _Peak(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's mode is untyped
    """The peak of the bytes held by the storages that ops produced and that are still alive."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.existing = {_weak(t).cdata for t in existing}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.known = 0  # bytes of self.live, dead storages not yet purged included
        self.peak = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing here is compiled; wrapping for dynamo would import it (3 s)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._produced(t)
        if self.known > self.peak * _SLACK:
            self._purge()
            self.peak = max(self.peak, self.known)
        return out

    def _produced(self, t: torch.Tensor) -> None:
        ref = _weak(t)
        key = ref.cdata
        if key in self.existing:
            return  # a view of a parameter, a buffer or an input
        seen = self.live.get(key)
        if seen is not None:
            if not _expired(seen[0]):
                return  # a view of an activation already counted
            self.known -= seen[1]  # a dead storage whose address was reused
        n = t.untyped_storage().nbytes()
        self.live[key] = (ref, n)
        self.known += n

    def _purge(self) -> None:
        dead = [k for k, (ref, _) in self.live.items() if _expired(ref)]
        for k in dead:
            self.known -= self.live.pop(k)[1]


def _weak(t: torch.Tensor) -> StorageWeakRef:
    """A weak reference to the tensor's storage: `.cdata` names the storage, whatever view holds it."""
    return StorageWeakRef(t.untyped_storage())  # type: ignore[no-untyped-call]


def _expired(ref: StorageWeakRef) -> bool:
    return bool(ref.expired())  # type: ignore[no-untyped-call]


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside the inputs, whatever their structure (inputs.map_tensors walks it)."""
    found: list[torch.Tensor] = []
    map_tensors(obj, found.append)
    return found


def _nbytes(t: torch.Tensor) -> int:
    return math.prod(t.shape) * t.element_size()


def _refusal(activity: Activity, inputs: Inputs, found: Estimate, limit: Limit) -> str:
    parts = [f"{human_bytes(found.activations)} of activations" if found.activations is not None else None,
             f"{human_bytes(found.inputs)} of input",
             f"{human_bytes(found.params)} of parameter copies" if found.params else None]
    unknown = "" if found.activations is not None else "; the activations could not be estimated"
    return (f"{activity.value} on {_shapes(inputs)} needs ~{human_bytes(found.total)} "
            f"({', '.join(p for p in parts if p)}{unknown}), over the --max-memory limit {human_bytes(limit.bytes or 0)}"
            + (f" ({limit.why})" if limit.why else ""))


def _shapes(inputs: Inputs) -> str:
    """`1x3x8000x8000`, `1x80x3000, tokens=1x16`: the inputs as the user wrote them."""
    args, kwargs = inputs

    def one(x: Any) -> str:
        shapes = ["x".join(map(str, t.shape)) or "scalar" for t in _tensors(x)]
        return " + ".join(shapes) or type(x).__name__

    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]) or "no input"
