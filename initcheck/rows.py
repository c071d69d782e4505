"""The report's rows from an analysis: one per weight tensor (layer_rows) and one per parameter
(param_rows), each with its verdict from the selected findings. No printing."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import nn

from . import facts as facts_mod
from . import signal
from .findings import Finding
from .frozen import built
from .records import LayerReport, ParamReport, site_of
from .rules import Context
from .rules.weights import VARIANCE_BAND, off_band, quiet
from .signal import Moment


def param_rows(ctx: Context, findings: list[Finding]) -> tuple[ParamReport, ...]:
    """One row per parameter (tied ones once): its kind, statistics, note and verdict."""
    worst: dict[str, list[Finding]] = {}
    for f in findings:
        worst.setdefault(f.layer, []).append(f)
    out = []
    for pf in ctx.params:
        mine = worst.get(pf.name, [])
        top = max(mine, key=lambda f: f.severity.rank, default=None)
        verdict = "ok" if top is None else f"{top.severity._value_} {','.join(sorted({f.code for f in mine}))}"
        s = pf.stats
        out.append(built(ParamReport, {"name": pf.name, "kind": pf.kind._value_, "shape": pf.shape, "std": None if s is None else s.std,
                                       "mean": None if s is None else s.mean, "max_abs": None if s is None else s.max_abs,
                                       "note": pf.note, "verdict": verdict}))  # frozen.py: a record per parameter
    return tuple(out)


def raw_rms(ctx: Context, lf: facts_mod.LayerFacts, preact: Moment | None, model: nn.Module,
         scratch: signal.Pass | None = None) -> float | None:
    """The predicted rms of the layer's raw output, bias aside and before any norm (what --probe
    measures); for RNNs and attention modules, whose output is not one weighted sum, the activation's
    input (an RNN's gates, W_ih x + W_hh h: their biases aside too)."""
    if ctx.actual is None:
        return None
    raw = signal.raw_rms(ctx.actual, ctx.index, lf, model, scratch=scratch)
    if raw is None and preact is not None:
        raw = math.sqrt(preact.within) if ctx.index.ops[lf.op].index in ctx.actual.gates else preact.rms
    return None if raw is None else _finite(raw)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def layer_rows(ctx: Context, findings: list[Finding], sources: Mapping[str, str],
                   model: nn.Module) -> tuple[LayerReport, ...]:
    """One row per weight tensor: its site, scheme, statistics, predicted and reference rms, and
    verdict (its worst finding, else "ok", with the convention it follows)."""
    by_layer: dict[str, list[Finding]] = {}
    for f in findings:
        by_layer.setdefault(f.layer, []).append(f)
    out = []
    scratch = signal.scratch(ctx.index, model)  # one for every layer's raw rms
    why, band = quiet(ctx), ctx.threshold(VARIANCE_BAND.name)
    for lf in ctx.layers:
        mine = by_layer.get(lf.qualname, [])
        worst = max(mine, key=lambda f: f.severity.rank, default=None)
        verdict = "ok" if worst is None else f"{worst.severity._value_} {','.join(sorted({f.code for f in mine}))}"
        if worst is None and lf.convention:
            verdict = f"ok: {lf.convention}"
        elif worst is None and off_band(lf, band) and (reason := why(lf)):
            verdict = f"ok: {reason}"  # IC103 is quiet by design here: say why
        m = ctx.actual.preact(lf.op, lf.preact_op) if ctx.actual else None
        ref = ctx.reference.preact(lf.op, lf.preact_op) if ctx.reference else None
        out.append(built(LayerReport, dict(  # frozen.py: a record per layer
            **site_of(lf), scheme=lf.scheme._value_, actual_std=lf.actual_std, actual_mean=lf.actual_mean,
            variance_ratio=lf.variance_ratio, predicted_rms=raw_rms(ctx, lf, m, model, scratch),
            aliases=lf.aliases, convention=lf.convention, verdict=verdict, source=sources.get(lf.qualname),
            driven_rms=_finite(math.sqrt(max(m.signal, 0.0))) if m is not None else None,
            reference_rms=_finite(ref.rms) if ref is not None else None,
            grad_rms=_finite(math.sqrt(max(ctx.actual.backward[lf.op], 0.0))) if ctx.actual else None,
            preact_rms=None if m is None else _finite(m.rms),
            reference_grad_rms=_finite(math.sqrt(max(ctx.reference.backward[lf.op], 0.0))) if ctx.reference else None,
        )))
    return tuple(out)

