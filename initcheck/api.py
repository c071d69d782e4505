"""Wires the stages: trace -> index -> facts -> conventions -> signal -> rules -> report. No maths,
no printing."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import conventions, modes, rows, signal, suppressions
from . import facts as facts_mod
from . import inputs as inputs_mod
from . import rules as rules_mod
from . import stats as stats_mod
from .compiled import original
from .errors import ForwardError, NotAModule
from .facts.params import ParamFacts, classify
from .findings import Finding, Selection, default_thresholds
from .graph import Graph, OpKind
from .modes import Mode
from .ops.layers import WeightRole
from .ops.parametrized import keeps_parametrizations
from .report import Report
from .rules import Context
from .stats import StatsCache
from .trace import TraceFailure, accepts, learned_inputs, trace
from .trace.index import GraphIndex, index_graph

if TYPE_CHECKING:
    from .options import Settings

def diagnose(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    target: str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
    sources: Mapping[str, str] | None = None,
    selection: Selection | None = None,
    thresholds: Mapping[str, float] | None = None,
    settings: Settings | None = None,
    mode: Mode | str = Mode.TRAIN,
) -> Report:
    """Judge the initialization of every weight of `model`, without training and without data.

    example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs, used only
    when torch.fx cannot trace the model; guessed from the model when None.
    select/ignore: finding codes or prefixes ("IC1", "IC203"), as in flake8.
    per_layer_ignore: (code prefix, fnmatch pattern of the layer's parameter name) pairs.
    sources: parameter name -> "path:line" where it was last written (`initcheck.provenance.recorded`
    while building the model gives it); findings and layers then carry it.
    selection: a findings.Selection (select, ignore, extend-select/ignore, per-layer ignores); it
    replaces select/ignore/per_layer_ignore when given. settings: an options.Settings (what the
    command line builds from the config and its flags): its selection and thresholds. thresholds: rule settings by name
    (findings.SETTINGS; `initcheck rule CODE` lists a rule's), defaults for the rest.
    mode: the forward judged, "train" (BatchNorm on each batch's statistics, dropout on: what the
    init starts) or "eval" (BatchNorm on its running statistics); the model's own flags are kept.

    The model is not changed: not its weights, mode, device, gradients, nor the global RNG.
    """
    return analyze(model, example_inputs, target=target, select=select, ignore=ignore,
                   per_layer_ignore=per_layer_ignore, sources=sources, selection=selection,
                   thresholds=thresholds, settings=settings, mode=mode).report


@dataclass(frozen=True)
class Analysis:
    """What fix and probe need beyond the report: the per-weight facts and the graph."""

    report: Report
    layers: tuple[facts_mod.LayerFacts, ...]
    context: Context
    model: nn.Module = field(repr=False, compare=False)
    # what `reanalyze` needs to rerun the stages after the trace without tracing again
    selection: Selection = field(default_factory=Selection, repr=False, compare=False)
    sources: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    notes: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the tracer's notes
    unreached: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def first_layer(self) -> str | None:
        """The weight module that reads a model input first, in execution order."""
        ops = self.context.graph.ops
        for lf in self.layers:
            if any(ops[i].kind is OpKind.INPUT for i in ops[lf.op].inputs):
                return lf.name
        return self.layers[0].name if self.layers else None

    def inputs(self, example_inputs: Any = None, batch: int = 2,
               admit: Callable[[tuple[Any, ...], dict[str, Any]], object] | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The user's inputs, else ones built for the layer that runs first (`batch` samples).
        admit: called on each guess before the forward that tries it (memory.guard); what it
        raises ends the search (a smaller guess would not be the input the model declares). A
        declared size too large to build at all (expected.too_large) is passed over."""
        given = inputs_mod.normalize(example_inputs)
        if given is not None:
            return given
        model = self.model
        for args, kwargs in inputs_mod.candidates(model, first=self.first_layer(), batch=batch):
            if inputs_mod.too_large((args, kwargs)) is not None:
                continue
            if admit is not None:
                admit(args, kwargs)
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
            if lf.role is WeightRole.EMBEDDING:
                out[lf.name] = lf.recommended_std  # a lookup: its rows are its output
            elif not math.isnan(lf.recommended_std):
                out[lf.name] = lf.recommended_std * math.sqrt(max(lf.fan_in, 1) * q_in)
        return out


def run_forward(target: str, model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The model's forward on the example inputs; a failure is the input's or the model's, said in
    one line (ForwardError), not ours."""
    try:
        return model(*args, **kwargs)
    except Exception as e:  # whatever the user's forward raises
        raise ForwardError(target, f"the forward pass failed on the example input: {type(e).__name__}: {e}") from e


@keeps_parametrizations
def analyze(
    model: nn.Module,
    example_inputs: Any = None,
    *,
    target: str | None = None,
    select: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    per_layer_ignore: tuple[tuple[str, str], ...] = (),
    probed: tuple[Any, ...] | None = None,
    sources: Mapping[str, str] | None = None,
    selection: Selection | None = None,
    thresholds: Mapping[str, float] | None = None,
    settings: Settings | None = None,
    mode: Mode | str = Mode.TRAIN,
) -> Analysis:
    """diagnose(), keeping the intermediate stages: trace -> index -> facts -> conventions ->
    signal -> rules -> report."""
    model = original(model)  # type: ignore[assignment]  # a torch.compile'd model: the module it wraps
    if not isinstance(model, nn.Module):
        raise NotAModule(target or type(model).__name__, f"got a {type(model).__name__}, not an nn.Module")
    if isinstance(model, torch.jit.ScriptModule):
        raise NotAModule(target or type(model).__name__, "is a TorchScript module (torch.jit.script / torch.jit.trace): "
                         "its ops run in TorchScript, out of any trace's sight",
                         "pass the nn.Module before scripting it")
    name = target or type(model).__name__
    mode = Mode.parse(mode)
    if settings is not None:  # the one validated object the command line builds (options.settings_from)
        selection, thresholds = selection or settings.selection, thresholds or settings.thresholds
    selection = selection or Selection(select, ignore, per_layer_ignore=per_layer_ignore)
    limits = {**default_thresholds(), **(thresholds or {})}
    named = tuple(model.named_parameters(remove_duplicate=False))  # one walk: the lazy check, every stage
    lazy = tuple(n for n, p in facts_mod.canonical(named) if facts_mod.is_lazy(p))
    if lazy:
        index = index_graph(Graph.build("none", []), model)
        ctx = Context(index, (), None, None, None, {}, lazy=lazy, thresholds=limits, params=classify(model, ()), mode=mode)
        return _finish(name, "none", ctx, selection, ("lazy modules are not materialized: nothing was traced",), sources, model)
    given = inputs_mod.normalize(example_inputs)

    def build() -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        return (c for c in inputs_mod.candidates(model) if inputs_mod.too_large(c) is None)  # lazily: the first that runs

    args, kwargs = given if given is not None else (None, None)
    try:
        traced = trace(model, args, kwargs, build_inputs=build, training=mode is Mode.TRAIN)
    except TraceFailure as e:
        raise ForwardError(name, str(e)) from e
    index = index_graph(traced.graph, model, traced.modules or None)
    return _stages(name, index, model, selection, limits, tuple(probed or ()), traced.notes, traced.unreached, sources, mode,
                   named)


def reanalyze(analysis: Analysis, *, probed: tuple[Any, ...] | None = None, selection: Selection | None = None,
              thresholds: Mapping[str, float] | None = None) -> Analysis:
    """The analysis again after the model's weights changed (a fix), on the same trace and index:
    facts, conventions, signal, rules and report are redone, the trace is not (the graph does not
    depend on the weights). `probed`: measured probe layers for the IC3xx rules; `selection` and
    `thresholds` replace the first analysis's."""
    ctx = analysis.context
    if not ctx.layers and ctx.lazy:
        return analyze(analysis.model, target=analysis.report.target, selection=selection or analysis.selection,
                       probed=probed, sources=analysis.sources, thresholds=thresholds, mode=ctx.mode)
    limits = {**default_thresholds(), **thresholds} if thresholds is not None else dict(ctx.thresholds)
    return _stages(analysis.report.target, ctx.index, analysis.model, selection or analysis.selection, limits,
                   tuple(probed if probed is not None else ctx.probe), analysis.notes, analysis.unreached, analysis.sources,
                   ctx.mode)


def with_probe(analysis: Analysis, probed: tuple[Any, ...]) -> Analysis:
    """The same analysis with measured probe layers: only the rules and the report are redone
    (the weights did not change, so neither did the facts nor the signal)."""
    ctx = replace(analysis.context, probe=tuple(probed))
    return _finish(analysis.report.target, analysis.report.tracer, ctx, analysis.selection, analysis.report.notes,
                   analysis.sources, analysis.model, analysis.notes, analysis.unreached)


def reselect(analysis: Analysis, selection: Selection) -> Analysis:
    """The same analysis under another selection: only the rules and the report are redone (the
    weights did not change, so neither did the facts nor the signal)."""
    return _finish(analysis.report.target, analysis.report.tracer, analysis.context, selection, analysis.report.notes,
                   analysis.sources, analysis.model, analysis.notes, analysis.unreached)


def _stages(name: str, index: GraphIndex, model: nn.Module, selection: Selection, limits: Mapping[str, float],
            probed: tuple[Any, ...], trace_notes: tuple[str, ...], unreached: tuple[str, ...],
            sources: Mapping[str, str] | None, mode: Mode,
            named: tuple[tuple[str, torch.Tensor], ...] | None = None) -> Analysis:
    """Everything after the trace: facts -> conventions -> signal -> rules -> report. named: the
    model's named_parameters(remove_duplicate=False) when just walked (walked here otherwise)."""
    named = named if named is not None else tuple(model.named_parameters(remove_duplicate=False))
    with _no_cycle_collection(), stats_mod.shared(), signal.shared_rows():  # each weight is read once
        return _stages_once(name, index, model, selection, limits, probed, trace_notes, unreached, sources, mode, named)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cycle collector paused, and restored as it was. The stages build a few small records per
    layer and leave no reference cycles; the collections their allocations trigger find nothing, yet
    a full one scans every object of the process (torch's own ~170k): 0.11 s at depth 1000, a
    quarter of the floor, and whether it runs depends on what the process allocated before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _quantized(modules: Mapping[str, nn.Module]) -> int:
    """How many modules hold quantized, packed weights (torch.ao.nn.quantized and its dynamic forms)."""
    return sum(1 for m in modules.values()
               if ".quantized" in type(m).__module__ and not type(m).__name__.endswith("PackedParams"))


def _stages_once(name: str, index: GraphIndex, model: nn.Module, selection: Selection, limits: Mapping[str, float],
                 probed: tuple[Any, ...], trace_notes: tuple[str, ...], unreached: tuple[str, ...],
                 sources: Mapping[str, str] | None, mode: Mode, named: tuple[tuple[str, torch.Tensor], ...]) -> Analysis:
    collected = facts_mod.collect(index, model, named)
    layers = conventions.apply(collected.layers, model, index.modules)
    stats_mod.prefetch((p, None) for _, p in named)  # biases, norms, scales: in batches
    params = classify(model, layers, unreached, named=named, modules=index.modules, learned=learned_inputs(index.graph))
    ctx = _context(index, model, layers, collected.tied_uses, params, probed, unreached, limits, mode)
    notes = trace_notes
    if mode_note := modes.note(model, mode):
        notes = (*notes, mode_note)
    if ctx.actual is not None and (note := signal.unhandled_note(ctx.actual, index, layers)):
        notes = (*notes, note)
    if not layers and (packed := _quantized(index.modules)):
        notes = (*notes, f"no float weight to judge: {packed} quantized module(s) (torch.ao) hold packed weights; "
                         "diagnose the float model before quantizing it")
    return _finish(name, index.graph.tracer, ctx, selection, notes, sources, model, trace_notes, unreached)


def _finish(name: str, tracer: str, ctx: Context, selection: Selection, notes: tuple[str, ...],
            sources: Mapping[str, str] | None, model: nn.Module, trace_notes: tuple[str, ...] = (),
            unreached: tuple[str, ...] = ()) -> Analysis:
    """Run the rules, keep the selected findings, attach their sources, order them and report."""
    found = rules_mod.run(ctx, selection)
    selected = {code: selection.selects(code) for code in {f.code for f in found}}  # once per code, not per finding
    findings = [f for f in found if selected[f.code] and (not selection.per_layer_ignore or selection.keeps(f))]
    suppressed: tuple[tuple[Finding, str], ...] = ()
    if sources:
        findings = [replace(f, source=sources.get(f.layer)) for f in findings]
        # `# initcheck: ignore[...]` on the line that wrote a weight; an unused comment is IC003
        result = suppressions.apply(findings, files=sorted(set(sources.values())))
        findings = list(result.kept) + [f for f in result.unused if selection.keeps(f)]
        suppressed = tuple((f, s.reason) for f, s in result.suppressed)
    order = {lf.qualname: i for i, lf in enumerate(ctx.layers)}
    findings.sort(key=lambda f: (-f.severity.rank, f.code, order.get(f.layer, len(order))))
    report = Report(name, tracer, rows.layer_rows(ctx, findings, sources or {}, model), tuple(findings), notes,
                    probe=ctx.probe, params=rows.param_rows(ctx, findings), suppressed=suppressed, mode=ctx.mode.value)
    return Analysis(report, ctx.layers, ctx, model, selection, sources, trace_notes, unreached)


def _context(index: GraphIndex, model: nn.Module, layers: tuple[facts_mod.LayerFacts, ...],
             tied: tuple[facts_mod.LayerFacts, ...], params: tuple[ParamFacts, ...], probed: tuple[Any, ...],
             unreached: tuple[str, ...], thresholds: Mapping[str, float], mode: Mode) -> Context:
    data_operand = {}
    for lf in layers + tied:
        data = index.data_operands(index.ops[lf.op])
        if data:
            data_operand[lf.op] = data[0]
    every = tuple(sorted(layers + tied, key=lambda lf: lf.op))
    measurable = layers and all(lf.stats is not None for lf in layers)
    if not measurable:
        return Context(index, layers, None, None, None, data_operand, probed, unreached, thresholds=thresholds,
                       params=params, tied_uses=tied, mode=mode)
    stats = StatsCache()
    effective_w = signal.effective_weights(every, thresholds)
    # The reference puts the trunk at its schemes but keeps residual branches at their own scale:
    # branches at full scale make a residual net's signal grow block by block, which is why
    # scaled-down branches exist; they are a design, not a deviation to measure against.
    reference_w = signal.scheme_weights(every)
    # An embedding at a recognized convention (HF's N(0, 0.02)) sets the stream's scale on purpose;
    # a LayerNorm then divides the gradient by that scale, so the reference keeps it too, or every
    # small-embedding transformer would read as an exploding gradient.
    reference_w.update({lf.qualname: effective_w[lf.qualname] for lf in every
                        if (lf.in_residual_branch or lf.residual_end or (lf.role is WeightRole.EMBEDDING and lf.convention))
                        and lf.qualname in effective_w})
    with torch.no_grad():
        # effective weights are the actual ones but at a few layers (constant, deliberately small,
        # normalized): the effective sweep starts from the actual one at the first that differs
        training = mode is Mode.TRAIN
        actual = signal.sweep(index, model, every, signal.actual_weights(every), stats, training=training)
        effective = signal.sweep(index, model, every, effective_w, stats, base=actual, training=training)
        reference = signal.sweep(index, model, every, reference_w, stats, base=effective, training=training)
    return Context(index, layers, actual.signal, effective.signal, reference.signal, data_operand, probed, unreached, thresholds=thresholds,
                   params=params, tied_uses=tied, mode=mode)
