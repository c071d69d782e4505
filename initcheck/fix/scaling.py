"""The data-driven step of the fix: every weight scaled to its target in one forward pass, in
execution order, inside its own forward hook; shared and tied weights at a compromise; a verifying
pass measures every use."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import devices
from ..api import Analysis, run_forward
from ..modes import Mode
from ..ops.parametrized import scale_carrier
from ..records import Scaled
from ..rules.paths import logit_only
from .static import COMPROMISE_PASSES, Progress, _scalable, scaled_here, scaled_param


def targets(analysis: Analysis) -> dict[str, float]:
    """Per parameter (qualified name), the pre-activation std (bias aside) that its recommended
    scheme gives on unit-variance model inputs: what the data-driven fix aims at. Keyed by
    parameter, not module: an LSTM's weight_ih and weight_hh, MHA's in_proj and out_proj differ."""
    ref = analysis.context.reference
    out: dict[str, float] = {}
    for lf in analysis.layers:
        src = analysis.context.data_operand.get(lf.op)
        m = ref.forward[src] if ref is not None and src is not None else None
        q_in = m.second if m is not None and math.isfinite(m.second) else 1.0
        if lf.role == "embedding":
            out[lf.qualname] = lf.recommended_std  # a lookup: its rows are its output
        elif not math.isnan(lf.recommended_std):
            out[lf.qualname] = lf.recommended_std * math.sqrt(max(lf.fan_in, 1) * q_in)
    return out


Use = tuple[str, float]  # (parameter's canonical qualified name, this use's target std)


PASS_SEED = 0x5CA1E  # the dropout masks of every pass (a forked RNG: the user's stream is not touched)


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
    kept: frozenset[str] = frozenset(),
    unit: frozenset[str] = frozenset(),
) -> tuple[list[Scaled], int, float]:
    """Scale every scalable parameter to its target in one forward pass (plus up to
    COMPROMISE_PASSES when a weight is used several times); (parameters, passes, worst error over
    every use of every parameter, measured by the verifying pass)."""
    dev = devices.resolve(device)
    args, kwargs = analysis.inputs(example_inputs)
    goal = targets(analysis)
    # q, k and position-bias MLPs: their scale is the softmax's sharpness (IC207's), not a signal to aim
    temperature = {lf.op for lf in analysis.layers if lf.attention_score} | logit_only(analysis.context)
    keep = {lf.qualname: (target_std if target_std is not None else 1.0 if lf.qualname in unit else goal.get(lf.qualname, 1.0))
            for lf in analysis.layers
            if lf.qualname not in kept and lf.op not in temperature and _scalable(lf, keep_intentional)}
    canonical = {a: lf.qualname for lf in analysis.layers for a in lf.aliases}
    # aiming at the schemes' own targets, a weight stays within the band the per-weight rules accept
    band = {} if target_std is not None else {lf.qualname: lf.recommended_std for lf in analysis.layers
                                              if lf.qualname in keep and math.isfinite(lf.recommended_std)}
    with devices.working_copy(model, dev, write_back=True) as work:
        uses = _uses(work, keep, canonical, target_std)
        weights = {m: _carrier(m) for m in uses}
        args, kwargs = devices.move(args, dev), devices.move(kwargs, dev)
        name = analysis.report.target
        # the forward the analysis judged (training's by default: BatchNorm on the batch's statistics,
        # dropout on); dropout draws from a forked RNG: the user's stream is untouched
        with torch.no_grad(), devices.judged_forward(work, analysis.context.mode is Mode.TRAIN), \
                torch.random.fork_rng(devices=devices.rng_devices(dev)):
            first = _run_with_hooks(name, work, uses, args, kwargs, scale=set(keep), progress=progress, band=band)
            passes = 1
            factors = {k: recs[0][2] for k, recs in first.items()}
            shared = {k for k, recs in first.items() if len(recs) > 1}
            last = first
            for extra_pass in range(COMPROMISE_PASSES + 1 if shared else 1):
                if extra_pass:  # the single-use layers follow the compromise upstream of them
                    # no progress of its own: the scaling bar has reached its total once
                    last = _run_with_hooks(name, work, uses, args, kwargs, scale=set(keep) - shared, band=band)
                    passes += 1
                    for k in set(keep) - shared:
                        if k in last:
                            factors[k] = factors[k] * last[k][0][2]
                for k in shared:
                    c = _compromise(last[k])
                    if k in band:
                        c = _within_band(c, _effective(next(m for m, (key, _) in uses.items() if key == k)), band[k])
                    _scale_param(weights, uses, k, c)
                    factors[k] = factors[k] * c
            after = first
            if verify and not shared and not any(isinstance(m, _RERUN) for m in uses):
                # every parameter has one use, scaled inside its own hook, whose output (linear in the
                # weight) was handed on corrected: the rest of the pass ran on the fixed model, so each
                # use's std after the fix is the one it measured times its factor, exactly as a
                # verifying pass (same dropout masks, same inputs) would measure it
                after = {k: [(r[0], r[1] * r[2], torch.ones_like(r[2]), r[3]) for r in recs] for k, recs in first.items()}
            elif verify:
                after = _run_with_hooks(name, work, uses, args, kwargs, scale=set(), progress=progress)
                passes += 1
        # one host transfer for every statistic of the pass
        keys = [k for k in first if k in after]
        flat = torch.stack([torch.stack([first[k][0][1], factors[k]]) for k in keys]).cpu().tolist() if keys else []
        per_use = {k: torch.stack([r[1] for r in after[k]]).cpu().tolist() for k in keys}
    scaled = []
    worst = 0.0
    for k, (std0, factor) in zip(keys, flat):
        stds = per_use[k]
        tgts = [r[3] for r in after[k]]
        worst = max([worst, *(abs(s / t - 1.0) for s, t in zip(stds, tgts) if t > 0)])
        scaled.append(Scaled(first[k][0][0], k, tgts[0], std0, stds[0] if verify else tgts[0], factor, tuple(stds)))
    return scaled, passes, worst


# modules whose hook reruns them with the scaled weight (their output is not linear in it): a pass
# that draws dropout masks inside the rerun consumes the RNG differently, so the verifying pass runs
_RERUN = (nn.RNNBase, nn.RNNCellBase)


def _uses(work: nn.Module, keep: dict[str, float], canonical: dict[str, str], target_std: float | None) -> dict[nn.Module, Use]:
    """Every module that uses a parameter the pass scales: the owner and each tied alias."""
    out: dict[nn.Module, Use] = {}
    for name, m in work.named_modules():
        if not scaled_here(m):
            continue
        q = f"{name}.{scaled_param(m)}" if name else scaled_param(m)
        key = canonical.get(q, q)
        if key not in keep or _weight_of(m) is None:
            continue  # not scaled here, or a parametrization (spectral_norm) fixes its scale
        # a tied alias used by another kind of module (an embedding as the output head): aim that
        # use at unit-variance outputs (LeCun), the owner's target being a lookup's
        out[m] = (key, keep[key] if q == key or target_std is not None else 1.0)
    return out


def _owner(module: nn.Module) -> tuple[nn.Module, str]:
    path, _, name = scaled_param(module).rpartition(".")
    return (module.get_submodule(path) if path else module), name


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """The tensor that carries the scaled weight's scale (weight_norm's g for a weight-normed one);
    None where a parametrization fixes the scale."""
    return scale_carrier(*_owner(module))


def _carrier(module: nn.Module) -> torch.Tensor:
    return _tensor(_weight_of(module))


def _effective(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with (a parametrized one recomputed from its originals)."""
    owner, name = _owner(module)
    return _tensor(getattr(owner, name))


def _tensor(value: object) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), type(value)
    return value


# the per-weight rules flag a variance more than 4x off its scheme's (a std 2x off): stay inside
BAND = 1.9


def _within_band(factor: torch.Tensor, weight: torch.Tensor, recommended: float) -> torch.Tensor:
    """`factor`, clamped so that the scaled weight's std stays within BAND of its scheme's."""
    std = weight.float().std().clamp_min(1e-30)
    return factor.clamp(recommended / BAND / std, recommended * BAND / std)


def _scale_param(weights: dict[nn.Module, torch.Tensor], uses: dict[nn.Module, Use], key: str, factor: torch.Tensor) -> None:
    done: set[int] = set()
    for m, (k, _) in uses.items():
        w = weights[m]
        if k == key and id(w) not in done:
            w.mul_(factor.to(w.dtype))
            done.add(id(w))


Record = tuple[str, torch.Tensor, torch.Tensor, float]  # (module name, std, factor applied, target)


def _compromise(records: list[Record]) -> torch.Tensor:
    """The factor that brings a weight's uses to the geometric mean of their targets' ratios. A
    module called n times on its own output (a recurrence) scales its k-th output like factor^k, so
    the step is divided by the mean degree (n+1)/2; tied uses by different modules have degree 1."""
    ratios = torch.stack([(r[1] * r[2]).clamp_min(1e-12) / max(r[3], 1e-12) for r in records])
    same_module = len({r[0] for r in records}) == 1
    degree = (len(records) + 1) / 2 if same_module else 1.0
    c = torch.exp(-torch.log(ratios).mean() / degree)
    return torch.where(torch.isfinite(c), c, torch.ones_like(c))


def _run_with_hooks(model_name: str, work: nn.Module, uses: dict[nn.Module, Use], args: tuple[Any, ...], kwargs: dict[str, Any],
                    scale: set[str], progress: Progress | None = None,
                    band: dict[str, float] | None = None) -> dict[str, list[Record]]:
    """One forward pass; in each use's hook measure its output (less its bias) and, at the first use
    of a parameter in `scale`, scale the weight to the target and hand on the corrected output.
    Run inside data_driven_pass's forked RNG: every pass draws the same dropout masks, so the
    verifying pass measures the forward the scaling pass aimed."""
    torch.manual_seed(PASS_SEED)
    seen: dict[str, list[Record]] = {}
    stage = "scaling" if scale else "verifying"
    total = len({k for k, _ in uses.values()})
    names = {m: n for n, m in work.named_modules() if m in uses}
    busy: set[nn.Module] = set()

    def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> Any:
        if module in busy:
            return None  # our own rerun of an RNN
        key, target = uses[module]
        if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            return _rnn(module, key, target, inputs)
        y, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        weight, bias = _weight_and_bias(module)
        b = _broadcast_bias(bias, module, y)
        core = y - b if b is not None else y
        factor = measure(module, key, core.float().std(), weight, target)
        if factor is None:
            return None
        # `core` is our own temporary when there is a bias: scaled in place, one tensor fewer
        new = core.mul_(factor.to(core.dtype)).add_(b) if b is not None else core * factor.to(core.dtype)
        return (new, *rest) if rest is not None else new

    def measure(module: nn.Module, key: str, std: torch.Tensor, weight: torch.Tensor, target: float) -> torch.Tensor | None:
        """Record a use's std; at a parameter's first use, when scaling, scale its weight to the
        target and return the factor. Everything stays on the device: no host sync."""
        recs = seen.setdefault(key, [])
        if key not in scale or recs:
            recs.append((names[module], std, torch.ones_like(std), target))
            if len(recs) == 1 and progress:
                progress(stage, len(seen), total)
            return None
        factor = target / std.clamp_min(1e-12)
        factor = torch.where(torch.isfinite(factor), factor, torch.ones_like(factor))
        if band and key in band:
            factor = _within_band(factor, _effective(module), band[key])
        weight.mul_(factor.to(weight.dtype))
        recs.append((names[module], std, factor, target))
        if progress:
            progress(stage, len(seen), total)
        return factor

    def _rnn(module: nn.Module, key: str, target: float, inputs: tuple[Any, ...]) -> Any:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            return None  # a PackedSequence: keep the static init
        w = _carrier(module)
        std = torch.nn.functional.linear(x, _effective(module)).float().std()
        if measure(module, key, std, w, target) is None:
            return None
        busy.add(module)
        try:
            return module(*inputs)  # the RNN's own output again, with the corrected weight
        finally:
            busy.discard(module)

    handles = [m.register_forward_hook(hook) for m in uses]
    try:
        run_forward(model_name, work, args, kwargs)
    finally:
        for h in handles:
            h.remove()
    if progress and len(seen) < total:
        progress(stage, total, total)  # layers the pass never called: nothing more to wait for
    return seen


def _weight_and_bias(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    owner = module.out_proj if isinstance(module, nn.MultiheadAttention) else module
    bias = getattr(owner, "bias", None)
    return _carrier(module), bias if isinstance(bias, torch.Tensor) else None


def _broadcast_bias(bias: torch.Tensor | None, module: nn.Module, y: torch.Tensor) -> torch.Tensor | None:
    if bias is None:
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        return bias.view(1, -1, *([1] * (y.dim() - 2)))
    return bias  # Linear, Bilinear, MHA (batch first or not), Embedding: the last dim


def rescale(model: nn.Module, analysis: Analysis, scaled: tuple[Scaled, ...], undo: bool) -> None:
    """Divide (undo) or multiply again each scaled parameter's carrier by the factor the pass
    applied to it: once per tensor, whichever tied alias reaches it."""
    factors = {s.param: s.factor for s in scaled}
    canonical = {a: lf.qualname for lf in analysis.layers for a in lf.aliases}
    done: set[int] = set()
    with torch.no_grad():
        for name, m in model.named_modules():
            if not scaled_here(m):
                continue
            q = f"{name}.{scaled_param(m)}" if name else scaled_param(m)
            key = canonical.get(q, q)
            carrier = _weight_of(m)
            if key not in factors or carrier is None or id(carrier) in done:
                continue
            done.add(id(carrier))
            carrier.div_(factors[key]) if undo else carrier.mul_(factors[key])
