"""An init plan for models that do not exist yet: built on the meta device, applied after
`to_empty()`, or used as FSDP's `param_init_fn`. No weight is materialized to make it.

    with torch.device("meta"):
        model = build()
    p = initcheck.plan(model)                 # fans, activations, schemes: the static report
    model.to_empty(device="cuda")
    p.apply(model)                            # every parameter initialized by the plan

    FSDP(model, param_init_fn=p.param_init_fn(device))    # or per module, as FSDP calls it

Weights get their recommended scheme (schemes.py: the draw a finding's fix shows), biases
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
from .ops.activations import is_norm_module
from .ops.layers import module_weights
from .remedy import for_layer
from .schemes import Init, Scheme, draw, expected_std


@dataclass(frozen=True)
class PlanEntry:
    param: str  # qualified parameter name
    scheme: Scheme
    init: Init  # fans, gain, blocks: what schemes.draw needs
    std: float  # the std the scheme gives this parameter (schemes.expected_std)

    @property
    def blocks(self) -> int:
        return self.init.blocks


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
    entries: list[PlanEntry] = []
    for lf in analysis.layers:
        if not lf.shape:
            continue
        scheme, init = for_layer(lf)
        std = expected_std(scheme, lf.shape, init)
        entries.extend(PlanEntry(name, scheme, init, std) for name in (lf.qualname, *lf.aliases))
    return InitPlan(tuple(entries), analysis.report)


def _apply(root: nn.Module, by_name: dict[str, PlanEntry], generator: torch.Generator | None, prefix: str,
           recurse: bool = True) -> tuple[str, ...]:
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
                elif local is p or entry.scheme not in (Scheme.ORTHOGONAL, Scheme.DELTA_ORTHOGONAL):
                    draw(entry.scheme, local, entry.init, generator)
                else:  # a DTensor shard cannot be made orthogonal locally: its scheme's std
                    draw(Scheme.NORMAL, local, Init(entry.init.fan_in, entry.init.fan_out, std=entry.std), generator)
    return tuple(zeroed)
