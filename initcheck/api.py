"""Wires the stages: trace -> facts -> signal -> rules -> report. No maths, no printing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from . import facts as facts_mod
from . import inputs as inputs_mod
from . import rules as rules_mod
from . import signal
from .errors import ForwardError, NotAModule
from .report import LayerReport, Report
from .findings import Finding, Severity
from .rules import Context
from .stats import StatsCache
from .trace import TraceFailure, accepts, trace


def diagnose(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    target: str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
    sources: dict[str, str] | None = None,
) -> Report:
    """Judge the initialization of every weight of `model`, without training and without data.

    example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs, used only
    when torch.fx cannot trace the model; guessed from the model when None.
    select/ignore: finding codes or prefixes ("IC1", "IC203"), as in flake8.
    per_layer_ignore: (code prefix, fnmatch pattern of the layer's parameter name) pairs.
    sources: parameter name -> "path:line" where it was last written (`initcheck.provenance.recorded`
    while building the model gives it); findings and layers then carry it.

    The model is not changed: not its weights, mode, device, gradients, nor the global RNG.
    """
    return analyze(model, example_inputs, target=target, select=select, ignore=ignore,
                   per_layer_ignore=per_layer_ignore, sources=sources).report


@dataclass(frozen=True)
class Analysis:
    """What fix and probe need beyond the report: the per-weight facts and the graph."""

    report: Report
    layers: tuple[facts_mod.LayerFacts, ...]
    context: Context
    model: nn.Module = field(repr=False, compare=False)

    def first_layer(self) -> str | None:
        """The weight module that reads a model input first, in execution order."""
        ops = self.context.graph.ops
        for lf in self.layers:
            if any(ops[i].kind == "input" for i in ops[lf.op].inputs):
                return lf.name
        return self.layers[0].name if self.layers else None

    def inputs(self, example_inputs: Any = None, batch: int = 2) -> tuple[tuple, dict]:
        """The user's inputs, else ones built for the layer that runs first (`batch` samples)."""
        given = inputs_mod.normalize(example_inputs)
        if given is not None:
            return given
        model = self.model
        for args, kwargs in inputs_mod.candidates(model, first=self.first_layer(), batch=batch):
            if accepts(model, args, kwargs):
                return args, kwargs
        raise ForwardError(self.report.target, "cannot guess an input the model accepts")

    def target_stds(self) -> dict[str, float]:
        """Per layer, the pre-activation std (bias aside) that the recommended schemes give on
        unit-variance model inputs: what the data-driven fix aims at."""
        ref = self.context.reference
        out = {}
        for lf in self.layers:
            src = self.context.data_operand.get(lf.op)
            m = ref.forward[src] if ref is not None and src is not None else None
            q_in = m.second if m is not None else 1.0
            if lf.role == "embedding":
                out[lf.name] = lf.recommended_std  # a lookup: its rows are its output
            elif not math.isnan(lf.recommended_std):
                out[lf.name] = lf.recommended_std * math.sqrt(max(lf.fan_in, 1) * q_in)
        return out


def run_forward(target: str, model: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The model's forward on the example inputs; a failure is the input's or the model's, said in
    one line (ForwardError), not ours."""
    try:
        return model(*args, **kwargs)
    except Exception as e:  # whatever the user's forward raises
        raise ForwardError(target, f"the forward pass failed on the example input: {type(e).__name__}: {e}") from e


def analyze(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    target: str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
    probed: tuple | None = None,
    sources: dict[str, str] | None = None,
) -> Analysis:
    """diagnose(), keeping the intermediate stages."""
    if not isinstance(model, nn.Module):
        raise NotAModule(target or type(model).__name__, f"got a {type(model).__name__}, not an nn.Module")
    name = target or type(model).__name__
    lazy = [n for n, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
    if lazy:
        return _lazy_report(name, lazy, model)
    given = inputs_mod.normalize(example_inputs)

    def build():
        return list(inputs_mod.candidates(model))

    try:
        traced = trace(model, *(given or (None, None)), build_inputs=build)
    except TraceFailure as e:
        raise ForwardError(name, str(e)) from e
    layers = facts_mod.collect(traced.graph, model)
    ctx = _context(traced.graph, model, layers, probed)
    findings = list(rules_mod.run(ctx, select, ignore))
    if rules_mod.selected("IC001", select, ignore):
        findings.extend(
            Finding("IC001", Severity.WARNING, p, f"{p} was never used by the traced forward pass: not judged",
                    "give an example input that runs it (--input-shape / example_inputs=)")
            for p in traced.unreached
        )
    findings = [f for f in findings if not _ignored(f, per_layer_ignore)]
    if sources:
        findings = [replace(f, source=sources.get(f.layer)) for f in findings]
    findings.sort(key=lambda f: (-f.severity.rank, f.code, _order(layers, f.layer)))
    report = Report(name, traced.graph.tracer, _layer_reports(ctx, findings, sources or {}), tuple(findings), traced.notes,
                    probe=tuple(probed or ()))
    return Analysis(report, layers, ctx, model)


def _lazy_report(name: str, lazy: list[str], model: nn.Module) -> Analysis:
    """Lazy modules have no shapes until their first call: nothing can be traced or judged."""
    from .graph import Graph

    findings = tuple(
        Finding("IC002", Severity.WARNING, n, f"{n} is an uninitialized lazy parameter: it has no shape yet, so the model was not judged",
                "run model(example_input) once (then your own init code) before checking")
        for n in lazy)
    report = Report(name, "none", (), findings, ("lazy modules are not materialized: nothing was traced",))
    return Analysis(report, (), Context(Graph.build("none", []), (), None, None, None, {}), model)


def _context(graph, model, layers, probed=None) -> Context:
    view = facts_mod._View(graph, model)
    data_operand = {}
    for lf in layers:
        data = view.data_operands(graph.ops[lf.op])
        if data:
            data_operand[lf.op] = data[0]
    measurable = layers and all(lf.stats is not None for lf in layers)
    if not measurable:
        return Context(graph, layers, None, None, None, data_operand, tuple(probed or ()))
    stats = StatsCache()
    effective_w = rules_mod.effective_weights(layers)
    # The reference puts the trunk at its schemes but keeps residual branches at their own scale:
    # branches at full scale make a residual net's signal grow block by block, which is why
    # scaled-down branches exist; they are a design, not a deviation to measure against.
    reference_w = signal.scheme_weights(layers)
    reference_w.update({lf.op: effective_w[lf.op] for lf in layers
                        if (lf.in_residual_branch or lf.residual_end) and lf.op in effective_w})
    with torch.no_grad():
        actual = signal.propagate(graph, model, layers, signal.actual_weights(layers), stats)
        effective = signal.propagate(graph, model, layers, effective_w, stats)
        reference = signal.propagate(graph, model, layers, reference_w, stats)
    return Context(graph, layers, actual, effective, reference, data_operand, tuple(probed or ()))


def _ignored(f: Finding, per_layer: tuple[tuple[str, str], ...]) -> bool:
    from fnmatch import fnmatchcase

    return any(f.code.startswith(code) and fnmatchcase(f.layer, pattern) for code, pattern in per_layer)


def _order(layers, qualname: str) -> int:
    for i, lf in enumerate(layers):
        if lf.qualname == qualname:
            return i
    return len(layers)


def _layer_reports(ctx: Context, findings: list[Finding], sources: dict[str, str]) -> tuple[LayerReport, ...]:
    out = []
    for lf in ctx.layers:
        mine = [f for f in findings if f.layer == lf.qualname]
        worst = max(mine, key=lambda f: f.severity.rank, default=None)
        verdict = "ok" if worst is None else f"{worst.severity} {','.join(sorted({f.code for f in mine}))}"
        if worst is None and lf.convention:
            verdict = f"ok: {lf.convention}"
        m = ctx.actual.forward[lf.preact_op] if ctx.actual else None
        out.append(LayerReport(
            name=lf.name, param=lf.param, kind=lf.kind, shape=lf.shape, fan_in=lf.fan_in, fan_out=lf.fan_out,
            activation=lf.activation, activation_param=lf.activation_param, normalized=lf.normalized,
            residual_end=lf.residual_end, is_output=lf.is_output, scheme=lf.scheme, gain=lf.gain,
            recommended_std=lf.recommended_std, actual_std=lf.actual_std, actual_mean=lf.actual_mean,
            variance_ratio=lf.variance_ratio, predicted_rms=None if m is None or math.isnan(m.rms) else m.rms,
            aliases=lf.aliases, convention=lf.convention, verdict=verdict, source=sources.get(lf.qualname),
        ))
    return tuple(out)
