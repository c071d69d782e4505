"""An init plan for models that do not exist yet: built on the meta device, applied after
`to_empty()`, or used as FSDP's `param_init_fn`. No weight is materialized to make it.

    with torch.device("meta"):
        model = build()
    p = initcheck.plan(model)                 # fans, activations, schemes: the static report
    model.to_empty(device="cuda")
    p.apply(model)                            # every parameter initialized by the plan

    FSDP(model, param_init_fn=p.param_init_fn(device))    # or per module, as FSDP calls it

Weights get their recommended scheme (normal, or orthogonal blocks for recurrent matrices), biases
zero; modules with `reset_parameters` are reset, other norms get scale 1 and shift 0 (Gemma's
`1 + w` scale: w = 0); any other parameter the plan does not cover (a class token, a position table)
is zeroed, and `apply` returns its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .api import analyze
from .fix import _orthogonal_
from .ops.activations import is_norm_module
from .ops.layers import module_weights


@dataclass(frozen=True)
class PlanEntry:
    param: str  # qualified parameter name
    scheme: str
    std: float
    blocks: int  # orthogonal blocks (RNN gates), else 1


@dataclass(frozen=True)
class InitPlan:
    entries: tuple[PlanEntry, ...]
    report: Any  # the static Report the plan comes from

    def apply(self, model: nn.Module, generator: torch.Generator | None = None) -> tuple[str, ...]:
        """Initialize every parameter of a materialized model (after to_empty) in place; returns
        the names it zeroed for want of a rule."""
        return _apply(model, self._by_name(), generator, prefix="")

    def param_init_fn(self, device: torch.device | str, generator: torch.Generator | None = None,
                      model: nn.Module | None = None) -> Callable[[nn.Module], None]:
        """A callable for FSDP's `param_init_fn`: materializes one module's own parameters on
        `device` and initializes them. `model`: the root the plan was made for, to name modules."""
        names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
        by_name = self._by_name()

        def init(module: nn.Module) -> None:
            module.to_empty(device=device, recurse=False)
            _apply(module, by_name, generator, prefix=names.get(id(module), ""), recurse=False)

        return init

    def _by_name(self) -> dict[str, PlanEntry]:
        return {e.param: e for e in self.entries}


def plan(model: nn.Module, example_inputs: Any = None) -> InitPlan:
    """The init plan of a (meta-device or materialized) model, from its static analysis."""
    analysis = analyze(model, example_inputs)
    entries = []
    for lf in analysis.layers:
        if not lf.shape:
            continue
        blocks = max(lf.shape[0] // max(lf.fan_out, 1), 1) if lf.scheme == "orthogonal" else 1
        entries.append(PlanEntry(lf.qualname, lf.scheme, lf.recommended_std, blocks))
        entries.extend(PlanEntry(a, lf.scheme, lf.recommended_std, blocks) for a in lf.aliases)
    return InitPlan(tuple(entries), analysis.report)


def _apply(root: nn.Module, by_name: dict[str, PlanEntry], generator, prefix: str, recurse: bool = True) -> tuple[str, ...]:
    zeroed = []
    modules = root.named_modules() if recurse else [("", root)]
    with torch.no_grad():
        for mname, module in modules:
            full = ".".join(x for x in (prefix, mname) if x)
            weight_names = {u.param for u in module_weights(module)}  # MHA's out_proj is its child's
            reset = getattr(module, "reset_parameters", None)
            if not weight_names and callable(reset) and next(module.parameters(recurse=False), None) is not None:
                reset()  # norms and friends know their own init (ones and zeros)
                continue
            if is_norm_module(module):
                # a library norm without reset_parameters (LlamaRMSNorm): scale 1, shift 0;
                # Gemma's norms scale by (1 + w), so their w starts at 0
                one = 0.0 if type(module).__name__.startswith("Gemma") else 1.0
                for pname, p in module.named_parameters(recurse=False):
                    (p.to_local() if hasattr(p, "to_local") else p).fill_(one if pname == "weight" else 0.0)
                continue
            for pname, p in module.named_parameters(recurse=False):
                qual = f"{full}.{pname}" if full else pname
                entry = by_name.get(qual)
                local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor shard draws locally
                if entry is None:
                    local.zero_()
                    if pname != "bias" and not pname.startswith("bias_"):
                        zeroed.append(qual)
                elif entry.scheme == "orthogonal" and local is p:
                    for block in p.data.chunk(entry.blocks):
                        _orthogonal_(block, generator)
                else:
                    local.normal_(0.0, entry.std, generator=generator)
    return tuple(zeroed)
