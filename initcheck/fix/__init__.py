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
second pass verifies every use of every parameter and gives the worst error. This is LSUV (Mishkin &
Matas, 2016) without its one-pass-per-layer cost and without its defects (docs/fix.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn

from ..api import Analysis, analyze, reanalyze
from ..findings import Selection, Severity
from ..memory import Activity, guard
from ..report import Report
from ..schemes import Scheme
from .scaling import data_driven_pass, targets
from .static import (
    DrawChoice,
    Progress,
    Scaled,
    _restored_on_failure,
    choose_draw,
    param_pass,
    residual_pass,
    static_pass,
    suppressed,
    to_reinit,
    unit_targets,
)


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
    analysis: Analysis | None = None,
    max_memory: int | None = None,
) -> Report:
    """Fix `model`'s initialization in place and return the report after the fix.

    Static unless `example_inputs` are given or `data_driven=True` (then synthetic inputs are
    built from the model). target_std: None aims each parameter at the pre-activation std its
    recommended scheme gives on unit-variance inputs; a number aims every layer at it (LSUV's 1.0).
    scheme: force the draw of the replaced weights ("orthogonal", a `schemes.Scheme`); by default
    `choose_draw` picks it from depth and activation, and says why in `report.extra["draw"]` and a note.
    select/ignore/per_layer_ignore (or `selection`): a weight whose finding the selection suppresses
    is not touched, by either step. analysis: `api.analyze(model, ...)` already run on this model
    as it is now (the command line diagnoses before fixing): reused, so the model is traced once. The model's train/eval mode, device and requires_grad flags are
    kept; no hook is left behind, even when its forward raises. Data-driven, it is all or nothing:
    when the forward raises (or the run is interrupted) every parameter gets its value back.
    max_memory: bytes the data-driven step may take (None: half the available memory, 0: no
    limit); estimated on the meta device and refused before anything is allocated (memory.py).
    """
    sel = selection or Selection(select=tuple(select), ignore=tuple(ignore), per_layer_ignore=tuple(per_layer_ignore))
    if analysis is not None and analysis.model is not model:
        raise ValueError("analysis= must be an analysis of the model being fixed")
    dynamic = bool(data_driven or (data_driven is None and example_inputs is not None))
    if dynamic:
        guard(model, example_inputs, activity=Activity.FIX, max_memory=max_memory, device=device, target=target)
    before = reanalyze(analysis, selection=Selection()) if analysis is not None else analyze(model, example_inputs, target=target)
    kept = suppressed(before.report.findings, sel)
    choice = choose_draw(before, scheme)
    extra: dict[str, Any] = {"draw": asdict(choice)}
    acted = max((f.severity for f in before.report.findings if f.layer not in kept), default=None)
    with _restored_on_failure(model) if dynamic else nullcontext():
        extra["reinitialized"] = static_pass(model, before, generator, keep_intentional, progress, choice=choice, kept=kept)
        extra["reset"] = param_pass(model, before, kept)
        extra["branches_scaled"] = residual_pass(model, before, kept)
        if dynamic:
            scaled, passes, worst = data_driven_pass(model, before, example_inputs, device=device, target_std=target_std,
                                                     keep_intentional=keep_intentional, verify=verify, progress=progress,
                                                     kept=kept, unit=unit_targets(before, choice))
            extra["data_driven"] = {"forward_passes": passes, "target_std": target_std, "worst_rel_error": worst,
                                    "layers": [asdict(s) for s in scaled]}
    extra["acted_on"] = acted.value if isinstance(acted, Severity) else None
    # the weights changed, the graph did not: the report after the fix reuses the trace and index
    after = reanalyze(before, selection=sel).report
    note = f"fix drew replaced weights by {choice.reason}" if extra["reinitialized"] else None
    notes = after.notes + ((note,) if note else ())
    return replace(after, notes=notes, extra={**after.extra, **extra})


__all__ = ["DrawChoice", "Progress", "Scaled", "choose_draw", "data_driven_pass", "fix", "static_pass", "targets", "to_reinit"]
