"""Wires the stages: trace -> facts -> signal -> rules -> report. No maths, no printing."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import facts as facts_mod
from . import inputs as inputs_mod
from . import rules as rules_mod
from . import signal
from .errors import ForwardError, NotAModule
from .report import LayerReport, Report
from .rules import Context, Finding
from .trace import TraceFailure, trace


def diagnose(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    target: str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
) -> Report:
    """Judge the initialization of every weight of `model`, without training and without data.

    example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs, used only
    when torch.fx cannot trace the model; guessed from the model when None.
    select/ignore: finding codes or prefixes ("IC1", "IC203"), as in flake8.
    per_layer_ignore: (code prefix, fnmatch pattern of the layer's parameter name) pairs.

    The model is not changed: not its weights, mode, device, gradients, nor the global RNG.
    """
    if not isinstance(model, nn.Module):
        raise NotAModule(target or type(model).__name__, f"got a {type(model).__name__}, not an nn.Module")
    name = target or type(model).__name__
    given = inputs_mod.normalize(example_inputs)

    def build():
        try:
            return inputs_mod.guess(model)
        except ValueError as e:
            raise ForwardError(name, str(e)) from e

    try:
        traced = trace(model, *(given or (None, None)), build_inputs=build)
    except TraceFailure as e:
        raise ForwardError(name, str(e)) from e
    layers = facts_mod.collect(traced.graph, model)
    ctx = _context(traced.graph, model, layers)
    findings = list(rules_mod.run(ctx, select, ignore))
    if rules_mod.selected("IC001", select, ignore):
        findings.extend(
            Finding("IC001", "warning", p, f"{p} was never used by the traced forward pass: not judged",
                    "give an example input that runs it (--input-shape / example_inputs=)")
            for p in traced.unreached
        )
    findings = [f for f in findings if not _ignored(f, per_layer_ignore)]
    findings.sort(key=lambda f: (-rules_mod.SEVERITIES.index(f.severity), _order(layers, f.layer), f.code))
    return Report(name, traced.graph.tracer, _layer_reports(ctx, findings), tuple(findings), traced.notes)


def _context(graph, model, layers) -> Context:
    view = facts_mod._View(graph, model)
    data_operand = {}
    for lf in layers:
        data = view.data_operands(graph.ops[lf.op])
        if data:
            data_operand[lf.op] = data[0]
    measurable = layers and all(lf.stats is not None for lf in layers)
    if not measurable:
        return Context(graph, layers, None, None, None, data_operand)
    with torch.no_grad():
        actual = signal.propagate(graph, model, layers, signal.actual_weights(layers))
        effective = signal.propagate(graph, model, layers, rules_mod.effective_weights(layers))
        reference = signal.propagate(graph, model, layers, signal.scheme_weights(layers))
    return Context(graph, layers, actual, effective, reference, data_operand)


def _ignored(f: Finding, per_layer: tuple[tuple[str, str], ...]) -> bool:
    from fnmatch import fnmatchcase

    return any(f.code.startswith(code) and fnmatchcase(f.layer, pattern) for code, pattern in per_layer)


def _order(layers, qualname: str) -> int:
    for i, lf in enumerate(layers):
        if lf.qualname == qualname:
            return i
    return len(layers)


def _layer_reports(ctx: Context, findings: list[Finding]) -> tuple[LayerReport, ...]:
    out = []
    for lf in ctx.layers:
        mine = [f for f in findings if f.layer == lf.qualname]
        worst = max(mine, key=lambda f: rules_mod.SEVERITIES.index(f.severity), default=None)
        verdict = "ok" if worst is None else f"{worst.severity} {','.join(sorted({f.code for f in mine}))}"
        m = ctx.actual.forward[lf.preact_op] if ctx.actual else None
        out.append(LayerReport(
            name=lf.name, param=lf.param, kind=lf.kind, shape=lf.shape, fan_in=lf.fan_in, fan_out=lf.fan_out,
            activation=lf.activation, activation_param=lf.activation_param, normalized=lf.normalized,
            residual_end=lf.residual_end, is_output=lf.is_output, scheme=lf.scheme, gain=lf.gain,
            recommended_std=lf.recommended_std, actual_std=lf.actual_std, actual_mean=lf.actual_mean,
            variance_ratio=lf.variance_ratio, predicted_rms=None if m is None or math.isnan(m.rms) else m.rms,
            aliases=lf.aliases, verdict=verdict,
        ))
    return tuple(out)
