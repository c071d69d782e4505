"""Graph + model -> one frozen record per weight tensor: fans, the activation that follows it,
normalization, residual ends, the recommended scheme and the weight's actual statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .. import theory
from ..frozen import built
from ..graph import Op, OpKind
from ..ops.layers import Layout, WeightRole, WeightUse, function_weight, get_path, matrix_batch
from ..ops.parametrized import trainable
from ..records import WeightSite
from ..stats import TensorStats, prefetch, tensor_stats
from ..theory import Family
from ..trace.index import GraphIndex
from .follow import Follow, feeds_attention_scores, follow, meets_another_tensor, rebuilt_weight

__all__ = ["LayerFacts", "canonical", "collect", "is_lazy", "received_weight", "row_dim"]


def row_dim(layout: Layout, ndim: int) -> int | None:
    """Which sums give a weight's output units (stats.RowSums.dim): along every dim but 0 (0), along
    dim 0 of a 2-D (in, out) weight (1); None where the signal model uses no row sums."""
    if layout not in (Layout.OUT_IN, Layout.CONV, Layout.IN_OUT) or ndim < 2:
        return None
    if matrix_batch(layout, ndim):
        return None
    return 1 if layout is Layout.IN_OUT and ndim == 2 else 0


@dataclass(frozen=True)
class LayerFacts(WeightSite):
    """One use of a weight tensor: its site (records.WeightSite: name, fans, activation, norm and
    residual flags, gain, recommended std) and what the later stages need besides."""

    layout: Layout
    role: WeightRole
    in_residual_branch: bool  # on the branch side of a residual add (Fixup, GPT-2 blocks, ReZero)
    scheme: Family
    stats: TensorStats | None
    aliases: tuple[str, ...]
    op: int  # graph op that reads the weight
    preact_op: int  # graph op whose output the activation receives
    norm: str | None = None  # the normalization module that directly follows, if a module
    convention: str | None = None  # a recognized deliberate init (conventions.py)
    attention_score: bool = False  # a query or key projection: its output meets only q·kᵀ
    pre_scale: float = 1.0  # |c| of a scalar multiplication before the activation (SIREN's w0): the
    # recommended std is divided by it
    gated: bool = False  # the output gates or modulates another tensor (adaLN, SE, GLU)
    modulation: bool = False  # a FiLM/adaLN scale or shift: multiplies and shifts another tensor, no activation of its own
    reads_input: bool = False  # its data operand is a model input (the first layer)
    # requires_grad=False: not trained from this init (a pretrained backbone, LoRA's base weight): its
    # scale is judged only through the signal it gives, and no fix touches it
    frozen: bool = False

    @property
    def actual_std(self) -> float | None:
        return None if self.stats is None else self.stats.std

    @property
    def actual_mean(self) -> float | None:
        return None if self.stats is None else self.stats.mean

    @property
    def variance_ratio(self) -> float | None:
        if self.stats is None or self.recommended_std == 0:
            return None
        return self.stats.second / (self.recommended_std ** 2)

    @property
    def intentionally_small(self) -> bool:
        """A deliberately small or zero layer: the last layer of a residual branch (GPT-2's c_proj,
        Fixup, zero_init_residual) or the model's output layer (a zero-initialized classifier)."""
        ratio = self.variance_ratio
        return (self.residual_end or self.is_output) and ratio is not None and ratio <= 1.0

    @property
    def mis_scaled(self) -> bool:
        """More than 2x off its scheme's variance, and not one of the deliberate patterns: the layers
        a signal finding blames, and that fix() reinitializes."""
        ratio = self.variance_ratio
        if ratio is None or self.normalized or self.role is WeightRole.EMBEDDING or self.intentionally_small or self.frozen:
            return False
        if self.in_residual_branch and ratio < 1.0:
            return False
        return not 0.5 <= ratio <= 2.0


@dataclass(frozen=True)
class Collected:
    layers: tuple[LayerFacts, ...]  # one per weight tensor, at its first use
    tied_uses: tuple[LayerFacts, ...]  # every later use of the same tensor (tied heads, shared layers)


def collect(index: GraphIndex, model: nn.Module,
            named: Sequence[tuple[str, torch.Tensor]] | None = None) -> Collected:
    """One LayerFacts per weight tensor the graph reads, in execution order, tied weights once;
    and one per later use of a tensor already seen, so that each use is modelled and judged.
    Conventions (conventions.py) are a later stage. named: the model's
    `named_parameters(remove_duplicate=False)`, when the caller walked it already."""
    graph = index.graph
    view = index
    aliases = _aliases(model.named_parameters(remove_duplicate=False) if named is None else named)
    # each use of a weight: (op, owner, use, the tensor, kind), in execution order
    uses: list[tuple[Op, str, WeightUse, torch.Tensor, str]] = []
    for op in graph.ops:
        if op.kind is OpKind.MODULE:
            held = view.uses.get(op.index)  # the index read each module's weights once
            mod = view.module(op) if held else None
            if mod is None or held is None:
                continue
            for use in held:
                p = get_path(mod, use.param)
                if isinstance(p, torch.Tensor):
                    uses.append((op, op.module or "", use, p, type(mod).__name__))
        elif op.kind is OpKind.FUNCTION:
            hit = function_weight(op, view.views)
            if hit is None:
                continue
            pname = graph.ops[hit[0]].target
            owner, _, attr = pname.rpartition(".")
            uses.append((op, owner, _with_param(hit[1], attr), model.get_parameter(pname), op.target))
    # the weights' statistics with their row sums, small ones read in batches (one question per tensor)
    prefetch((p, row_dim(use.layout, p.ndim)) for _, _, use, p, _ in uses if not is_lazy(p))
    out: list[LayerFacts] = []
    tied: list[LayerFacts] = []
    judged: set[int] = set()
    for op, owner, use, p, kind in uses:
        first = id(p) not in judged
        judged.add(id(p))
        (out if first else tied).append(_facts(view, op, owner, use, p, kind, aliases))
    return Collected(tuple(out), tuple(tied))


def is_lazy(p: torch.Tensor) -> bool:
    """An uninitialized (lazy) parameter. Its mixin is a plain class: isinstance on it skips the
    Parameter metaclass's Python-level check, a microsecond per parameter of a deep model."""
    return isinstance(p, _LAZY)


_LAZY: type = nn.parameter.UninitializedTensorMixin  # type: ignore[attr-defined]  # (not in torch's stub)


def canonical(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """named_parameters() from named_parameters(remove_duplicate=False): each tensor under its first
    name (both walk the modules in the same order)."""
    seen: set[int] = set()
    out = []
    for name, p in named:
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def _trains(view: GraphIndex, owner: str, param: str, p: torch.Tensor) -> bool:
    module = view.modules.get(owner)
    if module is None or "." in param:
        return p.requires_grad
    return trainable(module, param, p)


def _with_param(use: WeightUse, attr: str) -> WeightUse:
    return WeightUse(attr, use.layout, use.role, use.groups, use.stride, use.blocks, use.activation, use.stacked)


def _facts(view: GraphIndex, op: Op, owner: str, use: WeightUse, p: torch.Tensor, kind: str,
           aliases: dict[int, tuple[str, ...]]) -> LayerFacts:
    shape = tuple(int(s) for s in p.shape) if not isinstance(p, nn.parameter.UninitializedParameter) else ()
    # one expert's slice, or one matrix of a batch: its last two dims
    fan_shape = shape[-2:] if use.stacked or matrix_batch(use.layout, len(shape)) else shape
    fan = theory.fans(use.layout, fan_shape, groups=use.groups, stride=use.stride, blocks=use.blocks) if shape else theory.Fans(0, 0)
    if use.activation is not None and use.role is not WeightRole.EMBEDDING:
        # The layer applies its own activation (RNN gates) or feeds attention's softmax.
        after = follow(view, op.index) if use.param.startswith("out_proj") or use.param.startswith("weight_hr") else None
        f = after or Follow(use.activation, None, False, False, False, op.index)
    else:
        f = follow(view, op.index)
    activation = f.activation
    if use.role is WeightRole.EMBEDDING:
        rec = theory.recommend("identity", None, fan, role=WeightRole.EMBEDDING)
    elif fan.fan_in == 0:
        rec = theory.Recommendation(Family.UNKNOWN, 1.0, math.nan)
    else:
        rec = theory.recommend(activation, f.param, fan, role=use.role, custom_gain=f.custom_gain)
        if f.pre_scale != 1.0 and activation != "identity":
            rec = theory.Recommendation(rec.scheme, rec.gain, rec.std / f.pre_scale)
    qual = f"{owner}.{use.param}" if owner else use.param
    # the record built straight from its fields (frozen.py): its generated __init__ costs more than the facts
    return built(LayerFacts, {
        "name": owner,
        "param": use.param,
        "kind": kind,
        "shape": shape,
        "layout": use.layout,
        "role": use.role,
        "fan_in": fan.fan_in,
        "fan_out": fan.fan_out,
        "activation": activation,
        "activation_param": f.param,
        "normalized": f.normalized,
        "residual_end": f.residual_end,
        "is_output": f.is_output,
        "in_residual_branch": op.index in view.branch_ops,
        "scheme": rec.scheme,
        "gain": rec.gain,
        "recommended_std": rec.std,
        "stats": tensor_stats(received_weight(view, op, p), row_dim(use.layout, len(shape))),  # with its row sums: one read for both
        "aliases": tuple(a for a in aliases.get(id(p), ()) if a != qual),
        "op": op.index,
        "preact_op": f.preact_op,
        "norm": f.norm,
        "convention": None,  # conventions.py's stage
        "attention_score": use.role is not WeightRole.EMBEDDING and feeds_attention_scores(view, op.index),
        "pre_scale": f.pre_scale,
        "gated": f.gated or meets_another_tensor(view, op.index),
        "modulation": f.modulation,
        "reads_input": any(view.ops[i].kind is OpKind.INPUT for i in view.data_operands(op)),
        "frozen": not _trains(view, owner, use.param, p),
    })


def received_weight(view: GraphIndex, op: Op, p: torch.Tensor) -> torch.Tensor:
    """The weight the op really receives: a functional conv/linear whose forward rebuilds it from
    parameters (timm's ScaledStdConv2d: standardized, times gain * gamma / sqrt(fan_in)) is judged on
    the rebuilt tensor, whose scale is the one the signal meets; the parameter itself otherwise."""
    if op.kind is not OpKind.FUNCTION or "" not in view.modules:
        return p
    w = rebuilt_weight(view, view.modules[""], op)
    return w if w is not None and w.shape == p.shape else p


def _aliases(named: Iterable[tuple[str, torch.Tensor]]) -> dict[int, tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    for name, p in named:
        names.setdefault(id(p), []).append(name)
    return {k: tuple(v) for k, v in names.items()}
