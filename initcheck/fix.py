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

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from . import devices
from .api import Analysis, analyze, reanalyze, run_forward
from .facts import LayerFacts
from .facts.params import ParamKind
from .findings import Finding, Selection, Severity
from .ops.layers import is_hf_conv1d
from .remedy import for_layer
from .report import Report
from .rules import intentional_small, mis_scaled
from .schemes import Scheme, draw

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total), called as the work advances (stages: "reinitializing",
"scaling", "verifying"); the command line draws it as one bar per stage."""

# Layers whose scale the data-driven pass sets: the output less its bias for weight layers and
# embeddings (a lookup of weight rows); for RNNs the first layer's input-to-hidden pre-activation
# x W_ih^T (the recurrent matrix keeps its orthogonal init, the state is bounded by the gates).
SCALED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Embedding, nn.RNNBase)

# A stack is deep from this many weight layers on its longest path: below it Gaussian and orthogonal
# weights train alike, above it the Gaussian Jacobian's spectrum has widened (Pennington et al. 2017)
DEEP = 10
# Activations with a non-zero derivative at 0 and no kink, so that a stack of them is close to linear
# near the origin and orthogonal weights make it an isometry. sigmoid's slope at 0 is 1/4, but it is
# smooth and the data-driven pass scales its input; the ReLU family is zero on half its inputs.
NEAR_LINEAR = frozenset({"identity", "tanh", "sigmoid", "softsign", "hardtanh"})
COMPROMISE_PASSES = 2  # extra scaling passes when a weight is used several times


def scaled_here(module: nn.Module) -> bool:
    """Whether the data-driven pass sets this module's scale (output linear in its weight)."""
    return isinstance(module, SCALED) or is_hf_conv1d(module)


def scaled_param(module: nn.Module) -> str:
    """The parameter (path inside the module) whose scale the pass sets for this module."""
    if isinstance(module, nn.MultiheadAttention):
        return "out_proj.weight"
    if isinstance(module, nn.RNNBase):
        return "weight_ih_l0"
    return "weight"


@dataclass(frozen=True)
class DrawChoice:
    """How the static step draws the weights it replaces, and why."""

    scheme: Scheme | None  # None: each layer's recommended Gaussian/uniform scheme
    forced: bool
    depth: int  # weight layers on the longest path
    near_linear: bool  # the trunk's activations are near-linear at 0
    reason: str


@dataclass(frozen=True)
class Scaled:
    """One parameter of the data-driven pass: its target, its std at its first use before and
    after, the factor applied, and the std at every use after the fix (the verifying pass)."""

    name: str  # the module that uses it first
    param: str  # the parameter's qualified name
    target: float
    before: float
    after: float
    factor: float
    uses: tuple[float, ...] = field(default=())


def choose_draw(analysis: Analysis, scheme: Scheme | str | None = None) -> DrawChoice:
    """Orthogonal where the stack is deep and its activations near-linear at 0, else each layer's
    own scheme; `scheme` forces one."""
    depth = stack_depth(analysis)
    trunk = [lf for lf in analysis.layers if lf.role == "weight" and not lf.is_output]
    near = bool(trunk) and sum(lf.activation in NEAR_LINEAR for lf in trunk) * 2 > len(trunk)
    if scheme is not None:
        s = Scheme.parse(scheme)
        return DrawChoice(s, True, depth, near, f"{s.value}, as asked (scheme=)")
    if depth >= DEEP and near:
        acts = sorted({lf.activation for lf in trunk if lf.activation in NEAR_LINEAR})
        return DrawChoice(Scheme.ORTHOGONAL, False, depth, near,
                          f"orthogonal (delta-orthogonal for convolutions): {depth} weight layers deep with {'/'.join(acts)} "
                          f"activations, whose derivative at 0 is non-zero, so orthogonal weights keep the Jacobian an isometry")
    why = f"{depth} weight layers, under {DEEP}" if depth < DEEP else "ReLU-family activations cannot be isometric"
    return DrawChoice(None, False, depth, near, f"each layer's Gaussian/uniform scheme ({why})")


def stack_depth(analysis: Analysis) -> int:
    """Weight layers on the longest path of the graph (ops are recorded in execution order)."""
    ops = analysis.context.graph.ops
    weight_ops = {lf.op for lf in analysis.layers}
    depth = [0] * len(ops)
    for op in ops:
        d = max((depth[i] for i in op.inputs if i < len(depth)), default=0)
        depth[op.index] = d + (op.index in weight_ops)
    return max(depth, default=0)


def to_reinit(analysis: Analysis, keep_intentional: bool = True, kept: frozenset[str] = frozenset()) -> list[LayerFacts]:
    """The weights the static fix replaces: those a per-weight rule flags, and, when the signal
    rules fire, every mis-scaled layer they blame. keep_intentional=False also replaces the
    deliberate patterns (zero or scaled-down residual ends, a zero classifier). `kept`: weights
    whose findings the user's selection suppresses (never touched)."""
    # IC1xx judge the weight itself; IC206 a tied embedding whose output use gives huge logits
    flagged = {f.layer for f in analysis.report.findings if f.code.startswith("IC1") or f.code == "IC206"}
    signal_problem = any(f.code.startswith("IC2") for f in analysis.report.findings)

    def off(lf: LayerFacts) -> bool:
        if keep_intentional:
            return mis_scaled(lf)
        r = lf.variance_ratio
        return r is not None and not lf.normalized and lf.role != "embedding" and not 0.5 <= r <= 2.0

    return [lf for lf in analysis.layers if lf.stats is not None and lf.shape and lf.qualname not in kept
            and (lf.qualname in flagged or ((signal_problem or not keep_intentional) and off(lf)))]


def tied_scheme(lf: LayerFacts, analysis: Analysis) -> Scheme | None:
    """An embedding that IC206 flags (tied to the output head, logits too large) is drawn from
    N(0, 0.02), GPT-2's and BERT's choice for tied tables: N(0, 1) rows give logits of std sqrt(d)."""
    if lf.role == "embedding" and any(f.code == "IC206" and f.layer == lf.qualname for f in analysis.report.findings):
        return Scheme.EMBEDDING_SMALL
    return None


def layer_scheme(lf: LayerFacts, choice: DrawChoice) -> Scheme | None:
    """The scheme this layer is drawn from under `choice` (None: its recommended one)."""
    if choice.scheme is None or lf.role in ("embedding", "recurrent") or lf.layout == "packed":
        return None
    if choice.scheme in (Scheme.ORTHOGONAL, Scheme.DELTA_ORTHOGONAL):
        if not choice.forced and lf.activation not in NEAR_LINEAR:
            return None
        conv = lf.layout == "conv" and len(lf.shape) > 2 and all(k % 2 == 1 for k in lf.shape[2:])
        return Scheme.DELTA_ORTHOGONAL if conv else Scheme.ORTHOGONAL
    return choice.scheme


def reinit_(weight: torch.Tensor, lf: LayerFacts, generator: torch.Generator | None = None,
            scheme: Scheme | None = None) -> None:
    """Draw `weight` afresh from the layer's recommended scheme (or `scheme`)."""
    chosen, init = for_layer(lf, scheme)
    draw(chosen, weight.data, init, generator)


def reinit_layer(model: nn.Module, lf: LayerFacts, generator: torch.Generator | None = None,
                 scheme: Scheme | None = None) -> None:
    """Redraw a layer's weight in the model. A parametrized weight (weight_norm, spectral_norm) is
    computed from its originals at each access: draw the effective weight and assign it, so that the
    parametrization's right_inverse sets the originals."""
    owner, _, pname = lf.qualname.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    if is_parametrized(module, pname):
        new = torch.empty_like(getattr(module, pname).detach())
        reinit_(new, lf, generator, scheme)
        with torch.no_grad():
            setattr(module, pname, new)
        return
    reinit_(model.get_parameter(lf.qualname), lf, generator, scheme)


def residual_pass(model: nn.Module, analysis: Analysis, kept: frozenset[str] = frozenset()) -> list[str]:
    """When the signal explodes (IC201) through a norm-free residual stack, scale each branch's
    last layer by 1/sqrt(2N) for N branch ends (GPT-2's scaled projections, Fixup's idea): with
    He branches each block doubles the stream's variance, 2^N in all; scaled ones add 1/(2N) of it
    per block, e^(1/2) in all. Branch ends already scaled down or zero are left as they are."""
    if not any(f.code == "IC201" for f in analysis.report.findings):
        return []
    ends = [lf for lf in analysis.layers if lf.residual_end and not lf.normalized and lf.role == "weight"
            and lf.variance_ratio is not None and lf.variance_ratio > 0.5]  # not scaled down already
    if not ends:
        return []
    factor = 1.0 / math.sqrt(2 * len(ends))
    done = []
    for lf in ends:
        if lf.qualname in kept:
            continue
        with torch.no_grad():
            model.get_parameter(lf.qualname).mul_(factor)
        done.append(lf.qualname)
    return done


# Parameter findings the static fix acts on by giving the parameter its kind's neutral value
# (non-finite, absurd or zero norm scales, absurd shifts and biases); weights are redrawn instead.
PARAM_CODES = frozenset({"IC104", "IC105", "IC106", "IC107"})


def param_pass(model: nn.Module, analysis: Analysis, kept: frozenset[str] = frozenset()) -> list[str]:
    """Reset the non-weight parameters a parameter rule flags: a norm's scale to 1, a norm's shift
    and a bias to 0 (the rules leave deliberate zeros, such as a zero scale ending a residual
    branch, alone). Their names."""
    flagged = {f.layer for f in analysis.report.findings if f.code in PARAM_CODES and f.layer not in kept}
    done = []
    for pf in analysis.context.params:
        if pf.name not in flagged or pf.kind not in (ParamKind.NORM_WEIGHT, ParamKind.NORM_BIAS, ParamKind.BIAS):
            continue
        p = model.get_parameter(pf.name)
        with torch.no_grad():
            p.fill_(1.0) if pf.kind is ParamKind.NORM_WEIGHT else p.zero_()
        done.append(pf.name)
    return done


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
    """
    sel = selection or Selection(select=tuple(select), ignore=tuple(ignore), per_layer_ignore=tuple(per_layer_ignore))
    if analysis is not None and analysis.model is not model:
        raise ValueError("analysis= must be an analysis of the model being fixed")
    before = reanalyze(analysis, selection=Selection()) if analysis is not None else analyze(model, example_inputs, target=target)
    kept = suppressed(before.report.findings, sel)
    choice = choose_draw(before, scheme)
    dynamic = bool(data_driven or (data_driven is None and example_inputs is not None))
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
    return Report(after.target, after.tracer, after.layers, after.findings, notes, after.probe, extra)


def unit_targets(analysis: Analysis, choice: DrawChoice) -> frozenset[str]:
    """The layers the data-driven pass aims at unit pre-activation std instead of their scheme's
    target: under the orthogonal choice, every near-linear layer, so that tanh/sigmoid work in their
    near-linear range at every depth (the gain's slight excess, compounded over a deep stack, drives
    tanh into its chaotic phase; LSUV's std 1 is the same choice)."""
    if choice.forced or choice.scheme != Scheme.ORTHOGONAL:
        return frozenset()
    return frozenset(lf.qualname for lf in analysis.layers if lf.role == "weight" and lf.activation in NEAR_LINEAR)


def suppressed(findings: tuple[Finding, ...], selection: Selection) -> frozenset[str]:
    """Weights with a finding the selection drops: the user asked to leave them alone."""
    return frozenset(f.layer for f in findings if not selection.keeps(f))


def static_pass(model: nn.Module, analysis: Analysis, generator: torch.Generator | None = None,
                keep_intentional: bool = True, progress: Progress | None = None, *,
                choice: DrawChoice | None = None, kept: frozenset[str] = frozenset()) -> list[str]:
    """Redraw the weights `to_reinit` picks (under `choice`, by default `choose_draw`'s), zero
    their biases; their names."""
    choice = choice or choose_draw(analysis)
    chosen = to_reinit(analysis, keep_intentional, kept)
    if choice.forced:  # a forced scheme redraws every weight layer the fix may touch
        names = {lf.qualname for lf in chosen}
        chosen += [lf for lf in analysis.layers if lf.qualname not in names and lf.qualname not in kept and lf.shape
                   and lf.role == "weight" and _scalable(lf, keep_intentional)]
    for i, lf in enumerate(chosen, 1):
        reinit_layer(model, lf, generator, tied_scheme(lf, analysis) or layer_scheme(lf, choice))
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
    keep = {lf.qualname: (target_std if target_std is not None else 1.0 if lf.qualname in unit else goal.get(lf.qualname, 1.0))
            for lf in analysis.layers if lf.qualname not in kept and _scalable(lf, keep_intentional)}
    canonical = {a: lf.qualname for lf in analysis.layers for a in lf.aliases}
    # aiming at the schemes' own targets, a weight stays within the band the per-weight rules accept
    band = {} if target_std is not None else {lf.qualname: lf.recommended_std for lf in analysis.layers
                                              if lf.qualname in keep and math.isfinite(lf.recommended_std)}
    with devices.working_copy(model, dev, write_back=True) as work:
        uses = _uses(work, keep, canonical, target_std)
        weights = {m: _weight_of(m) for m in uses}
        args, kwargs = devices.move(args, dev), devices.move(kwargs, dev)
        name = analysis.report.target
        with torch.no_grad(), devices.eval_mode(work):
            first = _run_with_hooks(name, work, uses, args, kwargs, scale=set(keep), progress=progress, band=band)
            passes = 1
            factors = {k: recs[0][2] for k, recs in first.items()}
            shared = {k for k, recs in first.items() if len(recs) > 1}
            last = first
            for extra_pass in range(COMPROMISE_PASSES + 1 if shared else 1):
                if extra_pass:  # the single-use layers follow the compromise upstream of them
                    last = _run_with_hooks(name, work, uses, args, kwargs, scale=set(keep) - shared, progress=progress, band=band)
                    passes += 1
                    for k in set(keep) - shared:
                        if k in last:
                            factors[k] = factors[k] * last[k][0][2]
                for k in shared:
                    c = _compromise(last[k])
                    if k in band:
                        c = _within_band(c, _param_of(weights, uses, k), band[k])
                    _scale_param(weights, uses, k, c)
                    factors[k] = factors[k] * c
            after = first
            if verify:
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


def _uses(work: nn.Module, keep: dict[str, float], canonical: dict[str, str], target_std: float | None) -> dict[nn.Module, Use]:
    """Every module that uses a parameter the pass scales: the owner and each tied alias."""
    out: dict[nn.Module, Use] = {}
    for name, m in work.named_modules():
        if not scaled_here(m):
            continue
        q = f"{name}.{scaled_param(m)}" if name else scaled_param(m)
        key = canonical.get(q, q)
        if key not in keep:
            continue
        # a tied alias used by another kind of module (an embedding as the output head): aim that
        # use at unit-variance outputs (LeCun), the owner's target being a lookup's
        out[m] = (key, keep[key] if q == key or target_std is not None else 1.0)
    return out


def _weight_of(module: nn.Module) -> torch.Tensor:
    return _tensor(module.get_parameter(scaled_param(module)))


def _tensor(value: object) -> torch.Tensor:
    assert isinstance(value, torch.Tensor), type(value)
    return value


def _param_of(weights: dict[nn.Module, torch.Tensor], uses: dict[nn.Module, Use], key: str) -> torch.Tensor:
    return next(weights[m] for m, (k, _) in uses.items() if k == key)


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


def _scalable(lf: LayerFacts, keep_intentional: bool = True) -> bool:
    if lf.stats is None or lf.normalized or lf.param not in ("weight", "out_proj.weight", "weight_ih_l0"):
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


def _run_with_hooks(model_name: str, work: nn.Module, uses: dict[nn.Module, Use], args: tuple[Any, ...], kwargs: dict[str, Any],
                    scale: set[str], progress: Progress | None = None,
                    band: dict[str, float] | None = None) -> dict[str, list[Record]]:
    """One forward pass; in each use's hook measure its output (less its bias) and, at the first use
    of a parameter in `scale`, scale the weight to the target and hand on the corrected output."""
    seen: dict[str, list[Record]] = {}
    stage = "scaling" if scale else "verifying"
    total = len({k for k, _ in uses.values()})
    names = {m: n for n, m in work.named_modules() if m in uses}
    busy: set[nn.Module] = set()

    def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> Any:
        if module in busy:
            return None  # our own rerun of an RNN
        key, target = uses[module]
        if isinstance(module, nn.RNNBase):
            return _rnn(module, key, target, inputs)
        y, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        weight, bias = _weight_and_bias(module)
        b = _broadcast_bias(bias, module, y)
        core = y - b if b is not None else y
        factor = measure(module, key, core.float().std(), weight, target)
        if factor is None:
            return None
        new = core * factor.to(core.dtype) + (b if b is not None else 0)
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
            factor = _within_band(factor, weight, band[key])
        weight.mul_(factor.to(weight.dtype))
        recs.append((names[module], std, factor, target))
        if progress:
            progress(stage, len(seen), total)
        return factor

    def _rnn(module: nn.Module, key: str, target: float, inputs: tuple[Any, ...]) -> Any:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            return None  # a PackedSequence: keep the static init
        w = _weight_of(module)
        std = torch.nn.functional.linear(x, w).float().std()
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
    return _weight_of(module), bias if isinstance(bias, torch.Tensor) else None


def _broadcast_bias(bias: torch.Tensor | None, module: nn.Module, y: torch.Tensor) -> torch.Tensor | None:
    if bias is None:
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        return bias.view(1, -1, *([1] * (y.dim() - 2)))
    return bias  # Linear, Bilinear, MHA (batch first or not), Embedding: the last dim
