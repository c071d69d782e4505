"""The static step of the fix: which weights are redrawn, with which scheme (orthogonal for deep
near-linear stacks), parameters reset to their convention, residual branches scaled by depth."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..api import Analysis
from ..facts import LayerFacts, received_weight
from ..facts.params import ParamKind, padding_index
from ..findings import Selection
from ..graph import OpKind
from ..ops.layers import is_hf_conv1d
from ..ops.parametrized import assign, computed
from ..records import FixDraw
from ..remedy import for_layer
from ..report import Report
from ..rules.signal import saturating_biases
from ..schemes import BATCHED, Scheme, draw, draw_batch

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total), called as the work advances (stages: "reinitializing",
"scaling", "verifying"); the command line draws it as one bar per stage."""

# Layers whose scale the data-driven pass sets: the output less its bias for weight layers and
# embeddings (a lookup of weight rows); for RNNs the first layer's input-to-hidden pre-activation
# x W_ih^T (the recurrent matrix keeps its orthogonal init, the state is bounded by the gates).
SCALED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Embedding, nn.RNNBase,
          nn.RNNCellBase)

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
    if isinstance(module, nn.RNNCellBase):
        return "weight_ih"
    return "weight"


@dataclass(frozen=True)
class DrawChoice:
    """How the static step draws the weights it replaces, and why."""

    scheme: Scheme | None  # None: each layer's recommended Gaussian/uniform scheme
    forced: bool
    depth: int  # weight layers on the longest path
    near_linear: bool  # the trunk's activations are near-linear at 0
    reason: str

    def record(self) -> FixDraw:
        """The plain record the report carries."""
        return FixDraw(None if self.scheme is None else self.scheme.value, self.forced, self.depth, self.near_linear,
                       self.reason)


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
    # IC1xx judge the weight itself; IC206 a tied embedding whose output use gives huge logits; a
    # padding row (IC108) is zeroed alone (param_pass), the table's draw is kept
    flagged = {f.layer for f in analysis.report.findings
               if (f.code.startswith("IC1") and f.code != "IC108") or f.code == "IC206"}
    signal_problem = any(f.code.startswith("IC2") for f in analysis.report.findings)

    def off(lf: LayerFacts) -> bool:
        if keep_intentional:
            return lf.mis_scaled
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
    if computed(module, pname):
        new = torch.empty_like(getattr(module, pname).detach())
        reinit_(new, lf, generator, scheme)
        assign(module, pname, new)
        return
    reinit_(model.get_parameter(lf.qualname), lf, generator, scheme)
    _zero_padding_row(module, pname)


def _zero_padding_row(module: nn.Module, pname: str) -> None:
    """An embedding's padding row back to zero after a draw over the whole table (nn.Embedding's
    own convention: the row gets no gradient, IC108)."""
    idx = padding_index(module, pname)
    if idx is not None:
        with torch.no_grad():
            module.get_parameter(pname)[idx].zero_()


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
PARAM_CODES = frozenset({"IC104", "IC105", "IC106", "IC107", "IC108"})


def param_pass(model: nn.Module, analysis: Analysis, kept: frozenset[str] = frozenset()) -> list[str]:
    """Reset the non-weight parameters a parameter rule flags: a norm's scale to 1, a norm's shift
    and a bias to 0 (the rules leave deliberate zeros, such as a zero scale ending a residual
    branch, alone), an embedding's padding row to 0, and the part of a bias that saturates its
    tanh by itself (IC203 on a bias) to 0. Their names."""
    flagged = {f.layer for f in analysis.report.findings if f.code in PARAM_CODES and f.layer not in kept}
    padded = {f.layer for f in analysis.report.findings if f.code == "IC108" and f.layer not in kept}
    saturating = {f.layer for f in analysis.report.findings if f.code == "IC203" and f.layer not in kept}
    done = []
    for lf in analysis.layers:  # a bias that saturates its tanh by itself: that part to 0
        for name, _, _, spans in saturating_biases(analysis.context, lf):
            if name in saturating:
                with torch.no_grad():
                    for pname, start, stop in spans:
                        if pname not in kept:
                            model.get_parameter(pname)[start:stop].zero_()
                            done.append(pname)
    for pf in analysis.context.params:
        if pf.name in padded:  # only the padding row: the table is the layer's
            owner, _, attr = pf.name.rpartition(".")
            _zero_padding_row(model.get_submodule(owner) if owner else model, attr)
            done.append(pf.name)
            continue
        if pf.name not in flagged or pf.kind not in (ParamKind.NORM_WEIGHT, ParamKind.NORM_BIAS, ParamKind.BIAS):
            continue
        p = model.get_parameter(pf.name)
        with torch.no_grad():
            p.fill_(1.0) if pf.kind is ParamKind.NORM_WEIGHT else p.zero_()
        done.append(pf.name)
    return done


def unit_targets(analysis: Analysis, choice: DrawChoice) -> frozenset[str]:
    """The layers the data-driven pass aims at unit pre-activation std instead of their scheme's
    target: under the orthogonal choice, every near-linear layer, so that tanh/sigmoid work in their
    near-linear range at every depth (the gain's slight excess, compounded over a deep stack, drives
    tanh into its chaotic phase; LSUV's std 1 is the same choice)."""
    if choice.forced or choice.scheme != Scheme.ORTHOGONAL:
        return frozenset()
    return frozenset(lf.qualname for lf in analysis.layers if lf.role == "weight" and lf.activation in NEAR_LINEAR)


def suppressed(report: Report, selection: Selection) -> frozenset[str]:
    """Weights with a finding the selection drops or an inline `# initcheck: ignore[...]` comment
    suppresses (the report keeps those apart): the user asked to leave them alone."""
    dropped = (f.layer for f in report.findings if not selection.keeps(f))
    commented = (f.layer for f, _ in report.suppressed)
    return frozenset(layer for layer in (*dropped, *commented) if layer)


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
    schemes = [tied_scheme(lf, analysis) or layer_scheme(lf, choice) for lf in chosen]
    batched = _draw_orthogonal_batches(model, chosen, schemes, generator)
    for i, (lf, scheme) in enumerate(zip(chosen, schemes), 1):
        if lf.qualname not in batched:
            reinit_layer(model, lf, generator, scheme)
        _through_rebuild(model, analysis, lf)
        _zero_bias(model, lf)
        if progress:
            progress("reinitializing", i, len(chosen))
    return [lf.qualname for lf in chosen]


def _through_rebuild(model: nn.Module, analysis: Analysis, lf: LayerFacts) -> None:
    """A weight that forward rebuilds before its op reads it (StyleGAN's equalized learning rate,
    w * lr_mul / sqrt(fan_in)) was judged on what the op receives; drawn at that std, the parameter
    is then divided by the rebuild's factor so that the op receives the scheme's std. A rebuild that
    removes the scale (w / ||w||, weight standardization) has no factor to undo: left as drawn."""
    op = analysis.context.index.ops[lf.op]
    if op.kind is not OpKind.FUNCTION or not lf.recommended_std > 0:
        return
    p = model.get_parameter(lf.qualname)
    received = received_weight(analysis.context.index, op, p)
    if received is p:
        return
    with torch.no_grad():
        got = float(received.float().pow(2).mean().sqrt())
        if not got > 0 or not math.isfinite(got):
            return
        factor = got / float(p.float().pow(2).mean().sqrt())
        p.div_(factor)
        again = float(received_weight(analysis.context.index, op, p).float().pow(2).mean().sqrt())
        if not math.isclose(again, got / factor, rel_tol=1e-3):
            p.mul_(factor)  # the rebuild normalizes the scale away: dividing changed nothing it passes on


def _draw_orthogonal_batches(model: nn.Module, chosen: list[LayerFacts], schemes: list[Scheme | None],
                             generator: torch.Generator | None) -> set[str]:
    """Draw the orthogonal weights (unpacked, not parametrized) shape by shape, each shape in one
    batch (schemes.draw_batch: no QR factorization, one draw from the generator); their names."""
    groups: dict[tuple[Scheme, tuple[int, ...], float, torch.dtype, torch.device], list[tuple[str, torch.Tensor]]] = {}
    for lf, scheme in zip(chosen, schemes):
        drawn, init = for_layer(lf, scheme)
        owner, _, pname = lf.qualname.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if drawn not in BATCHED or init.blocks > 1 or computed(module, pname):
            continue
        w = model.get_parameter(lf.qualname)
        if not w.dtype.is_floating_point or w.is_meta:
            continue
        key = (drawn, tuple(w.shape), init.gain, w.dtype, w.device)
        groups.setdefault(key, []).append((lf.qualname, w))
    done: set[str] = set()
    for (drawn, _, gain, _, _), members in groups.items():  # in first-use order: deterministic for a seed
        draw_batch(drawn, [w.data for _, w in members], gain, generator)
        done.update(name for name, _ in members)
    return done


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


def _scalable(lf: LayerFacts, keep_intentional: bool = True) -> bool:
    if lf.stats is None or lf.normalized or lf.param not in ("weight", "out_proj.weight", "weight_ih_l0", "weight_ih"):
        return False
    if keep_intentional and lf.convention and not lf.convention.startswith("zero"):
        return False  # a recognized library convention (HF's 0.02 embeddings) is kept
    if not keep_intentional:
        return not (lf.stats.constant and lf.stats.mean == 0.0)  # nothing to scale in a zero
    if lf.stats.constant and lf.stats.mean == 0.0:
        return False  # a deliberate zero (fix would have replaced any other constant)
    # a scaled-down residual end (GPT-2's c_proj, Fixup) is a design; a small but nonzero
    # classifier is a default, not a design: scale it
    return not (lf.residual_end and lf.intentionally_small)
