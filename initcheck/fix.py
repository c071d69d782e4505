"""Reinitialize in place.

Static: every misinitialized weight gets its recommended scheme (torch.nn.init's formulas, drawn
from `generator` when given), its bias zero; deliberate patterns (zero residual ends, a zero
classifier, scaled-down branches) are kept.

Data-driven: ONE forward pass in which each weight layer, inside its own forward hook and so in
execution order, measures its pre-activation std (its output less its bias), scales its weight to
the target and hands the corrected output on, so that every later layer already sees a corrected
input. A layer called again (a shared layer) is scaled at its first call only; registration order
does not matter. A second pass only verifies. This is LSUV (Mishkin & Matas, 2016) without its
one-pass-per-layer cost and without its defects (docs/fix.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from . import devices
from .api import Analysis, analyze, run_forward
from .facts import LayerFacts
from .ops.layers import is_hf_conv1d
from .report import Report
from .rules import intentional_small, mis_scaled

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total), called as the work advances (stages: "reinitializing",
"scaling", "verifying"); the command line draws it as one bar per stage."""

# Layers whose scale the data-driven pass sets: the output less its bias for weight layers and
# embeddings (a lookup of weight rows); for RNNs the first layer's input-to-hidden pre-activation
# x W_ih^T (the recurrent matrix keeps its orthogonal init, the state is bounded by the gates).
SCALED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Embedding, nn.RNNBase)


def scaled_here(module: nn.Module) -> bool:
    """Whether the data-driven pass sets this module's scale (output linear in its weight)."""
    return isinstance(module, SCALED) or is_hf_conv1d(module)


def to_reinit(analysis: Analysis, keep_intentional: bool = True) -> list[LayerFacts]:
    """The weights the static fix replaces: those a per-weight rule flags, and, when the signal
    rules fire, every mis-scaled layer they blame. keep_intentional=False also replaces the
    deliberate patterns (zero or scaled-down residual ends, a zero classifier)."""
    flagged = {f.layer for f in analysis.report.findings if f.code.startswith("IC1")}
    signal_problem = any(f.code.startswith("IC2") for f in analysis.report.findings)

    def off(lf: LayerFacts) -> bool:
        if keep_intentional:
            return mis_scaled(lf)
        r = lf.variance_ratio
        return r is not None and not lf.normalized and lf.role != "embedding" and not 0.5 <= r <= 2.0

    return [lf for lf in analysis.layers if lf.stats is not None and lf.shape
            and (lf.qualname in flagged or ((signal_problem or not keep_intentional) and off(lf)))]


def reinit_(weight: torch.Tensor, lf: LayerFacts, generator: torch.Generator | None = None) -> None:
    """Draw `weight` afresh from the layer's recommended scheme."""
    with torch.no_grad():
        if lf.scheme == "orthogonal":
            blocks = max(lf.shape[0] // max(lf.fan_out, 1), 1)
            for block in weight.data.chunk(blocks):
                _orthogonal_(block, generator)
        else:
            weight.data.normal_(0.0, lf.recommended_std, generator=generator)


def _orthogonal_(t: torch.Tensor, generator: torch.Generator | None) -> None:
    rows, cols = t.shape[0], t.numel() // t.shape[0]
    a = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    q = q if rows >= cols else q.T
    t.copy_(q[:rows, :cols].reshape(t.shape).to(t.dtype))


@dataclass(frozen=True)
class Scaled:
    """One layer of the data-driven pass: its std before and after, and the factor applied."""

    name: str
    target: float
    before: float
    after: float
    factor: float


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
) -> Report:
    """Fix `model`'s initialization in place and return the report after the fix.

    Static unless `example_inputs` are given or `data_driven=True` (then synthetic inputs are
    built from the model). target_std: None aims each layer at the pre-activation std its
    recommended scheme gives on unit-variance inputs; a number aims every layer at it (LSUV's 1.0).
    The model's train/eval mode, device and requires_grad flags are kept; no hook is left behind,
    even when its forward raises. `progress(stage, done, total)` is told how the work advances.
    Data-driven, it is all or nothing: when the forward raises (or the run is interrupted) every
    parameter gets its value back, at the cost of one copy of the parameters while it runs.
    """
    before = analyze(model, example_inputs, target=target)
    dynamic = bool(data_driven or (data_driven is None and example_inputs is not None))
    extra: dict[str, Any] = {}
    with _restored_on_failure(model) if dynamic else nullcontext():
        extra["reinitialized"] = static_pass(model, before, generator, keep_intentional, progress)
        if dynamic:
            scaled, passes, worst = data_driven_pass(model, before, example_inputs, device=device, target_std=target_std,
                                                     keep_intentional=keep_intentional, verify=verify, progress=progress)
            extra["data_driven"] = {"forward_passes": passes, "target_std": target_std, "worst_rel_error": worst,
                                    "layers": [vars(s) for s in scaled]}
    after = analyze(model, example_inputs, target=target).report
    return Report(after.target, after.tracer, after.layers, after.findings, after.notes, after.probe, extra)


def static_pass(model: nn.Module, analysis: Analysis, generator: torch.Generator | None = None,
                keep_intentional: bool = True, progress: Progress | None = None) -> list[str]:
    """Redraw the weights `to_reinit` picks from their schemes, zero their biases; their names."""
    chosen = to_reinit(analysis, keep_intentional)
    for i, lf in enumerate(chosen, 1):
        reinit_(model.get_parameter(lf.qualname), lf, generator)
        _zero_bias(model, lf)
        if progress:
            progress("reinitializing", i, len(chosen))
    return [lf.qualname for lf in chosen]


@contextmanager
def _restored_on_failure(model: nn.Module) -> Iterator[None]:
    """Every parameter's value back when the body raises or is interrupted."""
    saved = [(p, p.detach().clone()) for p in model.parameters()]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
        raise


def _zero_bias(model: nn.Module, lf: LayerFacts) -> None:
    if lf.param != "weight" or not lf.name:
        return
    bias = getattr(model.get_submodule(lf.name), "bias", None)
    if isinstance(bias, torch.Tensor):
        with torch.no_grad():
            bias.zero_()


def data_driven_pass(
    model: nn.Module,
    analysis: Analysis,
    example_inputs: Any = None,
    *,
    device: str = "auto",
    target_std: float | None = None,
    keep_intentional: bool = True,
    verify: bool = True,
    progress: Progress | None = None,
) -> tuple[list[Scaled], int, float]:
    """Scale every scalable layer to its target in one forward pass; (layers, passes, worst error)."""
    dev = devices.resolve(device)
    args, kwargs = analysis.inputs(example_inputs)
    goal = analysis.target_stds()
    keep = {lf.name: (target_std if target_std is not None else goal.get(lf.name, 1.0))
            for lf in analysis.layers if _scalable(lf, keep_intentional)}
    with devices.working_copy(model, dev, write_back=True) as work:
        targets = {m: (name, keep[name]) for name, m in work.named_modules() if name in keep and scaled_here(m)}
        args, kwargs = devices.move(args, dev), devices.move(kwargs, dev)
        passes = 0
        with torch.no_grad(), devices.eval_mode(work):
            target = analysis.report.target
            before = _run_with_hooks(target, work, targets, args, kwargs, scale=True, progress=progress)
            passes += 1
            after: dict[str, torch.Tensor] = {}
            if verify:
                after = _run_with_hooks(target, work, targets, args, kwargs, scale=False, progress=progress)
                passes += 1
        # one host transfer for every statistic of the pass
        names = list(before)
        values = torch.stack([torch.stack([before[n][0], before[n][1], after.get(n, before[n])[0]]) for n in names]).cpu().tolist() if names else []
    scaled = [Scaled(n, keep[n], v[0], v[2] if verify else keep[n], v[1]) for n, v in zip(names, values)]
    worst = max((abs(s.after - s.target) / s.target for s in scaled), default=0.0)
    return scaled, passes, worst


def _scalable(lf: LayerFacts, keep_intentional: bool = True) -> bool:
    if lf.stats is None or lf.normalized or lf.param not in ("weight", "in_proj_weight", "weight_ih_l0"):
        return False
    if keep_intentional and lf.convention and not lf.convention.startswith("zero"):
        return False  # a recognized library convention (HF's 0.02 embeddings) is kept
    if not keep_intentional:
        return not (lf.stats.constant and lf.stats.mean == 0.0)  # nothing to scale in a zero
    if lf.stats.constant and lf.stats.mean == 0.0:
        return False  # a deliberate zero (fix would have replaced any other constant)
    # a scaled-down residual end (GPT-2's c_proj, Fixup) is a design; a small but nonzero
    # classifier is a default, not a design: scale it
    return not (lf.residual_end and intentional_small(lf))


def _run_with_hooks(model_name: str, work: nn.Module, targets: dict[nn.Module, tuple[str, float]], args, kwargs,
                    scale: bool, progress: Progress | None = None):
    """One forward pass; in each target's hook measure (and, when `scale`, correct) its output."""
    seen: dict[str, torch.Tensor] = {}
    stage = "scaling" if scale else "verifying"
    total = len({name for name, _ in targets.values()})

    def hook(module, inputs, out):
        name, target = targets[module]
        if name in seen or name in busy:
            return None  # a later call of a shared layer (already scaled at its first), or our own rerun
        if isinstance(module, nn.RNNBase):
            return _rnn(module, name, target, inputs, out)
        y, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        weight, bias = _weight_and_bias(module)
        b = _broadcast_bias(bias, module, y)
        core = y - b if b is not None else y
        factor = measure(name, core.float().std(), weight, target)
        if factor is None:
            return None
        new = core * factor.to(core.dtype) + (b if b is not None else 0)
        return (new, *rest) if rest is not None else new

    def measure(name, std, weight, target):
        """Record a layer's std; when scaling, scale its weight to the target and return the
        factor. Everything stays on the device: no Python bool of a tensor, no host sync."""
        if not scale:
            record(name, torch.stack([std, torch.ones_like(std)]))
            return None
        factor = target / std.clamp_min(1e-12)
        factor = torch.where(torch.isfinite(factor), factor, torch.ones_like(factor))
        weight.mul_(factor.to(weight.dtype))
        record(name, torch.stack([std, factor]))
        return factor

    def record(name, value):
        seen[name] = value
        if progress:
            progress(stage, len(seen), total)

    busy: set[str] = set()

    def _rnn(module, name, target, inputs, out):
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            return None  # a PackedSequence: keep the static init
        std = torch.nn.functional.linear(x, module.weight_ih_l0).float().std()
        if measure(name, std, module.weight_ih_l0, target) is None:
            return None
        busy.add(name)
        try:
            return module(*inputs)  # the RNN's own output again, with the corrected weight
        finally:
            busy.discard(name)

    handles = [m.register_forward_hook(hook) for m in targets]
    try:
        run_forward(model_name, work, args, kwargs)
    finally:
        for h in handles:
            h.remove()
    if progress and len(seen) < total:
        progress(stage, total, total)  # layers the pass never called: nothing more to wait for
    return seen


def _weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(module, nn.MultiheadAttention):
        return module.out_proj.weight, module.out_proj.bias
    return module.weight, getattr(module, "bias", None)


def _broadcast_bias(bias: torch.Tensor | None, module: nn.Module, y: torch.Tensor) -> torch.Tensor | None:
    if bias is None:
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        return bias.view(1, -1, *([1] * (y.dim() - 2)))
    return bias  # Linear, Bilinear, MHA (batch first or not), Embedding: the last dim
