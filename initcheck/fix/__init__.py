"""Reinitialize in place.

Static: every misinitialized weight is drawn afresh (schemes.py; from `generator` when given), its
bias zeroed; deliberate patterns (zero residual ends, a zero classifier, scaled-down branches) are
kept. The draw is chosen from depth and activation (`choose_draw`): in a deep stack of near-linear
activations (tanh, sigmoid, identity: derivative at 0 non-zero, no kink) orthogonal weights, and
delta-orthogonal kernels for convolutions, since their input-output Jacobian stays an isometry at any
depth where Gaussian weights' spectrum widens (Saxe et al. 2014; Pennington et al. 2017; Xiao et al.
2018); each layer's recommended Gaussian/uniform scheme elsewhere (the ReLU family cannot be
isometric). `scheme=` forces one.

Data-driven: ONE forward pass in which each weight layer, inside its own forward hook and so in
execution order, measures its pre-activation std (its output less its bias), scales its weight to
its parameter's target and hands the corrected output on, so that every later layer already sees a
corrected input. A layer called again (a shared layer, a tied weight) is measured at every call and
ends at the geometric mean of the scales its uses ask for; registration order does not matter. A
second pass verifies every use of every parameter and gives the worst error; where every parameter
has one use whose output is linear in it (no RNN rerun), the scaling pass itself ran on the fixed
model and measured each use after its factor, the forward a verifying pass would repeat: none is
run. This is LSUV (Mishkin &
Matas, 2016) without its one-pass-per-layer cost and without its defects (docs/fix.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..api import Analysis, analyze, reanalyze, reselect
from ..compiled import original
from ..errors import UsageError
from ..findings import Selection, Severity
from ..inputs import ArgsKwargs
from ..memory import Activity, guard
from ..ops.parametrized import keeps_parametrizations
from ..records import DataDriven, FixResult, Scaled
from ..report import Report
from ..schemes import Scheme
from .scaling import data_driven_pass, rescale, targets
from .static import (
    DrawChoice,
    Progress,
    _restored_on_failure,
    choose_draw,
    param_pass,
    residual_pass,
    static_pass,
    suppressed,
    to_reinit,
    unit_targets,
)
from .temperature import temperature_pass


@keeps_parametrizations
def fix(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    device: str = "auto",
    generator: torch.Generator | None = None,
    data_driven: bool | None = None,
    target_std: float | None = None,
    keep_intentional: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
    target: str | None = None,
    scheme: Scheme | str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
    selection: Selection | None = None,
    sources: Mapping[str, str] | None = None,
    analysis: Analysis | None = None,
    max_memory: int | None = None,
) -> Report:
    """Fix `model`'s initialization in place and return the report after the fix.

    Static unless `example_inputs` are given or `data_driven=True` (then synthetic inputs are
    built from the model). target_std: None aims each parameter at the pre-activation std its
    recommended scheme gives on unit-variance inputs; a number aims every layer at it (LSUV's 1.0).
    scheme: force the draw of the replaced weights ("orthogonal", a `schemes.Scheme`); by default
    `choose_draw` picks it from depth and activation, and says why in `report.fix.draw` and a note.
    select/ignore/per_layer_ignore (or `selection`): a weight whose finding the selection suppresses
    is not touched, by either step; nor is a frozen parameter (requires_grad=False: a pretrained
    backbone, LoRA's base weight), said in a note. sources: parameter name -> "path:line" that last wrote it (as
    for diagnose): a weight whose finding an `# initcheck: ignore[...]` comment on that line
    suppresses is not touched either, exactly like one the selection ignores. analysis: `api.analyze(model, ...)` already run on this model
    as it is now (the command line diagnoses before fixing): reused, so the model is traced once. The model's train/eval mode, device and requires_grad flags are
    kept; no hook is left behind, even when its forward raises. Data-driven, it is all or nothing:
    when the forward raises (or the run is interrupted) every parameter gets its value back.
    max_memory: bytes the data-driven step may take (None: half the available memory, 0: no
    limit); estimated on the meta device and refused before anything is allocated (memory.py).
    """
    model = original(model)  # type: ignore[assignment]  # a torch.compile'd model: the same tensors, uncompiled
    sel = selection or Selection(select=tuple(select), ignore=tuple(ignore), per_layer_ignore=tuple(per_layer_ignore))
    if analysis is not None and analysis.model is not model:
        raise ValueError("analysis= must be an analysis of the model being fixed")
    if (sharded := _sharded(model)) is not None:
        raise UsageError(target or type(model).__name__, f"cannot redraw sharded parameters ({sharded} is a DTensor)",
                         "call initcheck.fix on the model before sharding it (fully_shard / FSDP / tensor parallel)")
    dynamic = bool(data_driven or (data_driven is None and example_inputs is not None))
    if dynamic:
        guard(model, example_inputs, activity=Activity.FIX, max_memory=max_memory, device=device, target=target)
    if analysis is not None and sources is not None:
        analysis = replace(analysis, sources=sources)
    # every finding, whatever the selection, to know what the selection and the comments keep;
    # a given analysis is of the model as it is now: only its rules are rerun
    before = (reselect(analysis, Selection()) if analysis is not None
              else analyze(model, example_inputs, target=target, sources=sources))
    # a frozen parameter is not trained from an init (a pretrained backbone, LoRA's base): never redrawn
    frozen = frozenset(n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad)
    kept = suppressed(before.report, sel) | frozen
    choice = choose_draw(before, scheme)
    if dynamic and example_inputs is None:  # a guessed batch, judged before the forward that tries it
        example_inputs = ArgsKwargs(*before.inputs(None, admit=lambda a, k: guard(
            model, ArgsKwargs(a, k), activity=Activity.FIX, max_memory=max_memory, device=device, target=target)))
    acted = max((f.severity for f in before.report.findings if f.layer not in kept), default=None)
    dd: DataDriven | None = None
    with _restored_on_failure(model) if dynamic else nullcontext():
        reinitialized = static_pass(model, before, generator, keep_intentional, progress, choice=choice, kept=kept)
        reset = param_pass(model, before, kept)
        branches = residual_pass(model, before, kept)
        queries = temperature_pass(model, before, kept)
        if dynamic:
            scaled, passes, worst = data_driven_pass(model, before, example_inputs, device=device, target_std=target_std,
                                                     keep_intentional=keep_intentional, verify=verify, progress=progress,
                                                     kept=kept, unit=unit_targets(before, choice))
            dd = DataDriven(passes, target_std, worst, tuple(scaled))
    # the weights changed, the graph did not: the report after the fix reuses the trace and index
    after = reanalyze(before, selection=sel).report
    notes = [f"fix drew replaced weights by {choice.reason}"] if reinitialized else []
    if dd is not None and (left := _left(after, acted)):
        # never worse by initcheck's own standard: a data-driven step that leaves findings at the
        # severity the fix acted on is undone where the static step alone leaves fewer
        rescale(model, before, dd.layers, undo=True)
        alone = reanalyze(before, selection=sel).report
        if len(_left(alone, acted)) < len(left):
            code, layer = next(f for f in left if f not in _left(alone, acted))
            after, dd = alone, None
            notes.append(f"the data-driven step was undone: it left {code} on {layer}, which the static step alone does not")
        else:
            rescale(model, before, dd.layers, undo=False)
    result = FixResult(choice.record(), tuple(reinitialized), tuple(reset), tuple(branches), dd, acted, tuple(queries))
    if frozen:
        notes.append(f"fix left the {len(frozen)} frozen parameter(s) (requires_grad=False) as they were")
    return replace(after, notes=after.notes + tuple(notes), fix=result)


def _left(after: Report, acted: Severity | None) -> list[tuple[str, str | None]]:
    """(code, layer) of each finding after the fix at or above the severity it acted on (a warning
    at least)."""
    floor = max(acted, Severity.WARNING) if acted is not None else Severity.WARNING
    return [(f.code, f.layer) for f in after.findings if f.severity >= floor]


def _sharded(model: nn.Module) -> str | None:
    """The first parameter that is a DTensor (FSDP2, tensor parallel): a draw into its local shard
    would give each rank its own slice of a different matrix. By class name, so that checking
    imports nothing of torch.distributed."""
    for name, p in model.named_parameters():
        if any(c.__name__ == "DTensor" for c in type(p).__mro__):  # a Parameter of a DTensor is one
            return name
    return None


__all__ = ["DrawChoice", "Progress", "Scaled", "choose_draw", "data_driven_pass", "fix", "static_pass", "targets", "to_reinit"]
