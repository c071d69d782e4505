"""The checks. Each rule keeps its code, name, severity and documentation beside its check;
docs/rules.md is generated from this registry (python -m initcheck.docs), so they cannot drift.

Codes are stable and never reused: IC1xx judge one weight tensor, IC2xx the signal that flows
through the graph (signal.py), IC0xx what could not be judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

from . import theory
from .facts import LayerFacts
from .graph import Graph
from .remedy import init_call
from .signal import Signal
from .findings import RULES, Finding, Severity, rule
from .stats import TensorStats

# Thresholds, with the cases that set them (docs/theory.md derives each).
VARIANCE_BAND = 4.0  # IC103: PyTorch's default before a ReLU is 6x below He; MHA's packed Xavier 2x
NON_CENTERED = 0.5  # IC102: |mean| > 0.5 std (+ 3 standard errors); uniform[0,1) has 1.73
EXPLODE_RMS = 10.0  # IC201: truncated normal 0.1 on 784-256-128 peaks at 3.2; uniform[-1,1) gives 16
VANISH_RMS = 1e-2  # IC202: on the input-driven part alone; U(-0.001, 0.001) leaves 1e-4 after two layers
SATURATE_RMS = 3.0  # IC203: Xavier(tanh) on raw 784-d inputs gives 2.0; N(0,1) gives 28
GRADIENT_BAND = 1e3  # IC204/205: 10+ layers at 1/6 of He's variance fall below 1e-3


@dataclass(frozen=True)
class Context:
    """What every check reads: the facts, and the signal under the actual, effective and
    recommended weights (effective: the actual ones, with layers that other rules already blame or
    that are deliberately small replaced by their scheme, so that one cause gives one finding)."""

    graph: Graph
    layers: tuple[LayerFacts, ...]
    actual: Signal | None
    effective: Signal | None
    reference: Signal | None
    data_operand: dict[int, int]  # weight op -> op feeding its data input
    probe: tuple = ()  # probe.ProbeLayer records when a real batch was run


def _f(code: str, lf: LayerFacts | None, message: str, fix: str, severity: Severity | None = None) -> Finding:
    return Finding(code, severity or RULES[code].severity, lf.qualname if lf else "", message, fix)


def describe(lf: LayerFacts) -> str:
    """'encoder.0 (Linear 784→256, then relu)'."""
    what = f"{lf.kind} {lf.fan_in}→{lf.fan_out}" if lf.layout in ("out_in", "in_out") else f"{lf.kind} {'x'.join(map(str, lf.shape))}"
    where = lf.qualname if lf.param != "weight" else (lf.name or lf.qualname)
    return f"{where} ({what}, then {lf.activation})"


def looks_like(lf: LayerFacts) -> str | None:
    """The common init the weight's std matches within 5%, if any."""
    s = lf.stats
    if s is None or s.std == 0 or lf.fan_in == 0:
        return None
    candidates = {
        "PyTorch default": theory.torch_default_std(lf.fan_in),
        "He": math.sqrt(2.0 / lf.fan_in),
        "Xavier": math.sqrt(2.0 / (lf.fan_in + lf.fan_out)),
        "LeCun": 1.0 / math.sqrt(lf.fan_in),
        "N(0, 0.02)": 0.02,
        "N(0, 1)": 1.0,
    }
    for name, std in candidates.items():
        if abs(s.std / std - 1.0) < 0.05:
            return name
    return None


def intentional_small(lf: LayerFacts) -> bool:
    """A deliberately small or zero layer: the last layer of a residual branch (GPT-2's c_proj,
    Fixup, zero_init_residual) or the model's output layer (a zero-initialized classifier)."""
    ratio = lf.variance_ratio
    return (lf.residual_end or lf.is_output) and ratio is not None and ratio <= 1.0


# --- IC0xx: what could not be judged -----------------------------------------------------------

@rule("IC001", "weight-not-reached", Severity.WARNING,
      "A weight parameter was never used by the traced forward pass, so it was not judged.",
      "A module that the example input never runs (an auxiliary head in eval mode, a branch that "
      "depends on the data) cannot be placed in the graph: its activation is unknown.")
def _unreached(ctx: Context) -> Iterator[Finding]:
    return iter(())  # emitted by api.py, which knows what the tracer missed


@rule("IC002", "lazy-module-uninitialized", Severity.WARNING,
      "A lazy module's parameters are not materialized yet: run one forward pass first.",
      "nn.LazyLinear and friends have no shape until their first call, so neither fans nor "
      "statistics exist.")
def _lazy(ctx: Context) -> Iterator[Finding]:
    return iter(())  # emitted by api.py before tracing: a lazy model cannot be traced


# --- IC1xx: one weight tensor ------------------------------------------------------------------

@rule("IC101", "constant-weights", Severity.ERROR,
      "Every element of a hidden weight is equal (all zeros, all ones): the units stay identical.",
      "Units that start equal receive equal gradients and stay equal forever (the symmetry "
      "problem): a 256-unit layer trains as one unit; all zeros also blocks the gradient below. "
      "Zeros are fine, and deliberate, at the end of a residual branch and in the output layer.")
def constant_weights(ctx: Context) -> Iterator[Finding]:
    for lf in ctx.layers:
        s = lf.stats
        if s is None or not s.constant or s.count < 2:
            continue
        if (lf.residual_end or lf.is_output) and s.mean == 0.0:
            continue
        yield _f("IC101", lf, f"{describe(lf)}: weight is constant ({s.mean:g} everywhere); its {lf.fan_out} units stay identical",
                 init_call(lf))


@rule("IC102", "non-centered-weights", Severity.ERROR,
      "The weight's mean is large against its spread (uniform [0, 1), all-positive inits).",
      "Non-centered weights add a common shift that grows with fan_in at every layer: the "
      "pre-activations move together (uniform[0,1) gives a mean of 0.5·fan_in times the input "
      "mean) and the units barely differ.")
def non_centered(ctx: Context) -> Iterator[Finding]:
    for lf in ctx.layers:
        s = lf.stats
        if s is None or s.constant or lf.normalized or lf.role == "embedding":
            continue
        if abs(s.mean) > NON_CENTERED * s.std + 3.0 * s.std / math.sqrt(s.count):
            yield _f("IC102", lf, f"{describe(lf)}: weight mean {s.mean:.4g} is {abs(s.mean) / s.std:.2f}x its std {s.std:.4g}; weights should be centered on 0",
                     init_call(lf))


@rule("IC103", "weight-variance-mismatch", Severity.WARNING,
      "The weight's variance is more than 4x off the scheme that fits its activation.",
      "Each layer multiplies the signal's variance by fan_in·Var(w)·E[f(z)²]; the recommended "
      "scheme makes that factor 1. PyTorch's default before a ReLU gives 1/6 per layer. Layers "
      "followed by a normalization, output layers, and layers scaled down inside a residual "
      "branch (Fixup, GPT-2's 0.02, zero branch ends) are exempt; the IC2xx rules still judge "
      "what their scale does to the signal.")
def variance_mismatch(ctx: Context) -> Iterator[Finding]:
    for lf in ctx.layers:
        ratio = lf.variance_ratio
        if ratio is None or lf.stats.constant or lf.normalized or lf.role == "embedding" or math.isnan(ratio):
            continue
        if intentional_small(lf) or (lf.in_residual_branch and ratio < 1.0) or lf.convention:
            continue  # scaled-down branches and library conventions are deliberate; IC2xx still judge them
        if ratio > VARIANCE_BAND or ratio < 1.0 / VARIANCE_BAND:
            factor = math.sqrt(ratio)
            direction = f"{factor:.2g}x above" if factor > 1 else f"{1 / factor:.2g}x below"
            like = looks_like(lf)
            like = f" ({like})" if like else ""
            title = theory.SCHEME_TITLE.get(lf.scheme, lf.scheme)
            yield _f("IC103", lf, f"{describe(lf)}: weight std {lf.stats.std:.4g}{like} is {direction} {lf.recommended_std:.4g} ({title}, fan_in {lf.fan_in})",
                     init_call(lf))


# --- IC2xx: the signal through the graph -------------------------------------------------------

def mis_scaled(lf: LayerFacts) -> bool:
    """More than 2x off its scheme's variance, and not one of the deliberate patterns: the layers
    a signal finding blames, and that fix() reinitializes."""
    ratio = lf.variance_ratio
    if ratio is None or lf.normalized or lf.role == "embedding" or intentional_small(lf):
        return False
    if lf.in_residual_branch and ratio < 1.0:
        return False
    return not 0.5 <= ratio <= 2.0


def _culprits(ctx: Context, upto: LayerFacts) -> str:
    """The init calls for the mis-scaled layers up to `upto`, the likely causes."""
    bad = [lf for lf in ctx.layers if lf.op <= upto.op and mis_scaled(lf)]
    if not bad:
        bad = [upto]
    calls = [init_call(lf) for lf in bad[:3]]
    if len(bad) > 3:
        calls.append(f"... {len(bad) - 3} more: initcheck.fix(model)")
    return "; ".join(calls)


def _first(ctx: Context, test) -> tuple[LayerFacts, float, int] | None:
    hits = [(lf, v) for lf in ctx.layers if (v := test(lf)) is not None]
    return (hits[0][0], hits[0][1], len(hits) - 1) if hits else None


# The signal rules blame the init only where it, not the architecture, makes the difference:
# the prediction must also be CAUSED_BY times off the one under the recommended schemes (a deep
# sigmoid net with torch's Xavier gain 1 fades by itself, and the fix cannot be "use Xavier").
CAUSED_BY = 3.0


def _preact(ctx: Context, lf: LayerFacts, signal=None) -> float | None:
    sig = signal or ctx.effective
    m = sig.forward[lf.preact_op] if sig else None
    return None if m is None else m.rms


def _input_signal(ctx: Context, lf: LayerFacts, signal=None) -> float | None:
    sig = signal or ctx.effective
    src = ctx.data_operand.get(lf.op)
    m = sig.forward[src] if sig and src is not None else None
    return None if m is None else math.sqrt(m.signal)


def _above(value: float | None, limit: float, ref: float | None) -> bool:
    return value is not None and value > limit and (ref is None or value > CAUSED_BY * ref)


def _below(value: float | None, limit: float, ref: float | None) -> bool:
    return value is not None and value < limit and (ref is None or value * CAUSED_BY < ref)


def _more(n: int) -> str:
    return f"; {n} later layer{'s' if n > 1 else ''} too" if n else ""


@rule("IC201", "signal-explodes", Severity.ERROR,
      "Predicted from unit-variance inputs, a layer's pre-activation rms exceeds 10.",
      "Too large a weight variance compounds layer after layer: with uniform[-1, 1) a "
      "784-256-128-10 ReLU net reaches rms 16, 105 and 490. Losses overflow and the first "
      "updates are huge.")
def signal_explodes(ctx: Context) -> Iterator[Finding]:
    hit = _first(ctx, lambda lf: v if (not lf.normalized and lf.activation not in theory.SATURATING and _above(
        v := _preact(ctx, lf), EXPLODE_RMS, _preact(ctx, lf, ctx.reference))) else None)
    if hit:
        lf, v, more = hit
        yield _f("IC201", lf, f"{describe(lf)}: predicted pre-activation rms {v:.3g} for unit-variance inputs (over {EXPLODE_RMS:g}){_more(more)}",
                 _culprits(ctx, lf))


@rule("IC202", "signal-vanishes", Severity.ERROR,
      "Predicted from unit-variance inputs, the input-driven part of the signal reaching a layer has rms below 0.01.",
      "Too small a weight variance shrinks the signal geometrically: with N(0, 0.01) a tanh net "
      "loses a factor ~10 per layer; deeper layers then see only their biases (which the signal "
      "model counts apart) and the output stops depending on the input.")
def signal_vanishes(ctx: Context) -> Iterator[Finding]:
    hit = _first(ctx, lambda lf: v if (lf.role != "embedding" and _below(
        v := _input_signal(ctx, lf), VANISH_RMS, _input_signal(ctx, lf, ctx.reference))) else None)
    if hit:
        lf, v, more = hit
        yield _f("IC202", lf, f"{describe(lf)}: predicted input signal rms {v:.3g} for unit-variance model inputs (under {VANISH_RMS:g}){_more(more)}",
                 _culprits(ctx, lf))


@rule("IC203", "activation-saturates", Severity.ERROR,
      "A saturating activation (tanh, sigmoid, ...) receives pre-activations with rms over 3.",
      "tanh(3) = 0.995: past that the unit is a sign function with zero gradient. N(0, 1) weights "
      "on a 784-input tanh layer give rms 28.")
def activation_saturates(ctx: Context) -> Iterator[Finding]:
    hit = _first(ctx, lambda lf: v if (lf.activation in theory.SATURATING and _above(
        v := _preact(ctx, lf), SATURATE_RMS, _preact(ctx, lf, ctx.reference))) else None)
    if hit:
        lf, v, more = hit
        yield _f("IC203", lf, f"{describe(lf)}: predicted pre-activation rms {v:.3g} saturates {lf.activation} (over {SATURATE_RMS:g}){_more(more)}",
                 _culprits(ctx, lf))


def _gradient_ratio(ctx: Context, lf: LayerFacts) -> float | None:
    if ctx.effective is None or ctx.reference is None:
        return None
    ref = ctx.reference.backward[lf.op]
    if ref <= 0:
        return None
    return math.sqrt(max(ctx.effective.backward[lf.op], 0.0) / ref)


@rule("IC204", "gradient-vanishes", Severity.ERROR,
      "The gradient reaching a layer is over 1000x smaller than under the recommended schemes.",
      "Backpropagation multiplies by fan_out·Var(w)·E[f'(z)²] per layer: at 1/6 of He's variance "
      "(PyTorch's default before ReLU) 20 layers lose 15 orders of magnitude, and the first layers "
      "never train. A bias keeps the forward signal alive; nothing keeps the gradient.")
def gradient_vanishes(ctx: Context) -> Iterator[Finding]:
    hit = _first(ctx, lambda lf: v if ((v := _gradient_ratio(ctx, lf)) is not None and v < 1.0 / GRADIENT_BAND) else None)
    if hit:
        lf, v, more = hit
        yield _f("IC204", lf, f"{describe(lf)}: predicted gradient is {v:.2g}x what the recommended schemes give (under 1/{GRADIENT_BAND:g}){_more(more)}",
                 _culprits(ctx, ctx.layers[-1]))


@rule("IC205", "gradient-explodes", Severity.ERROR,
      "The gradient reaching a layer is over 1000x larger than under the recommended schemes.",
      "The mirror image of IC204: too large weights downstream amplify the gradient geometrically.")
def gradient_explodes(ctx: Context) -> Iterator[Finding]:
    hit = _first(ctx, lambda lf: v if ((v := _gradient_ratio(ctx, lf)) is not None and v > GRADIENT_BAND) else None)
    if hit:
        lf, v, more = hit
        yield _f("IC205", lf, f"{describe(lf)}: predicted gradient is {v:.3g}x what the recommended schemes give (over {GRADIENT_BAND:g}){_more(more)}",
                 _culprits(ctx, ctx.layers[-1]))


# --- IC3xx: measured on a real batch (initcheck --probe) ---------------------------------------

DEAD_WARN, DEAD_ERROR = 0.5, 0.9
GRAD_SPREAD = 1e4


def _fraction_severity(fraction: float | None) -> Severity | None:
    """A measured fraction of bad units: a warning over half, an error over 90%."""
    if fraction is None or fraction < DEAD_WARN:
        return None
    return Severity.ERROR if fraction >= DEAD_ERROR else Severity.WARNING


def _probe_rows(ctx: Context):
    by_name = {lf.qualname: lf for lf in ctx.layers}
    return [(p, by_name.get(p.name)) for p in ctx.probe]


@rule("IC301", "dead-units", Severity.WARNING,
      "Measured: over half of a ReLU layer's units are never positive on the batch (error over 90%).",
      "A unit whose pre-activation is negative for every input passes no gradient and never "
      "recovers: a large negative bias or mean shift kills it before training starts.")
def dead_units(ctx: Context) -> Iterator[Finding]:
    for p, lf in _probe_rows(ctx):
        if sev := _fraction_severity(p.dead_fraction):
            yield Finding("IC301", sev, p.name, f"{p.name}: {p.dead_fraction:.0%} of the units are dead on this batch (never positive)",
                          init_call(lf) if lf else "")


@rule("IC302", "units-saturated", Severity.WARNING,
      "Measured: over half of a saturating layer's pre-activations are past the knee (error over 90%).",
      "Past |z| = 2.65 tanh's slope is under 2% of its peak: those units pass almost no gradient.")
def units_saturated(ctx: Context) -> Iterator[Finding]:
    for p, lf in _probe_rows(ctx):
        if sev := _fraction_severity(p.saturated_fraction):
            yield Finding("IC302", sev, p.name, f"{p.name}: {p.saturated_fraction:.0%} of the pre-activations saturate {p.activation} on this batch",
                          init_call(lf) if lf else "")


@rule("IC303", "gradient-spread", Severity.ERROR,
      "Measured: the relative gradient ||dL/dW||/||W|| of two trunk layers differs by over 10^4 (not counting embeddings, queries and keys, layers followed by a norm, residual branches).",
      "One learning rate cannot serve layers whose relative updates differ by four orders of "
      "magnitude: the small ones are frozen (vanishing) or the large ones diverge (exploding).")
def gradient_spread(ctx: Context) -> Iterator[Finding]:
    rows = [p for p, lf in _probe_rows(ctx) if p.grad_ratio > 0 and lf is not None and _on_the_trunk(lf)]
    if len(rows) >= 2:
        lo = min(rows, key=lambda p: p.grad_ratio)
        hi = max(rows, key=lambda p: p.grad_ratio)
        if hi.grad_ratio > GRAD_SPREAD * lo.grad_ratio:
            yield Finding("IC303", Severity.ERROR, lo.name, f"{lo.name}: relative gradient {lo.grad_ratio:.2g} is {hi.grad_ratio / lo.grad_ratio:.2g}x below {hi.name}'s {hi.grad_ratio:.2g} on this batch",
                          "initcheck.fix(model, example_inputs)")


def _on_the_trunk(lf: LayerFacts) -> bool:
    """Layers whose relative gradient says how the signal flows through the init. Left out: an
    embedding (its gradient counts the rows a batch looks up), a query or key (proportional to the
    other's scale, small at init by design), a layer followed by a normalization (its gradient
    scales as 1/||W||: its init scale does not reach the signal), and residual branches (layer
    scale, zero ends and gates shrink them on purpose; the static rules judge their weights)."""
    return not (lf.role == "embedding" or lf.attention_score or lf.normalized or lf.in_residual_branch
                or lf.residual_end)


def effective_weights(layers: tuple[LayerFacts, ...]) -> dict[int, TensorStats]:
    """Actual statistics, except constant layers (IC101 blames them), deliberately small ones and
    layers followed by a normalization (their scale is normalized away), which take their
    scheme's: the signal rules then judge everything else."""
    out: dict[int, TensorStats] = {}
    for lf in layers:
        if lf.stats is None:
            continue
        if (lf.stats.constant or intentional_small(lf) or lf.normalized) and not math.isnan(lf.recommended_std):
            out[lf.op] = TensorStats(1, 0.0, lf.recommended_std, False)
        else:
            out[lf.op] = lf.stats
    return out


def selected(code: str, select: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """flake8's prefix matching: the longest matching prefix wins, and ignore wins a tie."""
    sel = max((len(p) for p in select if code.startswith(p)), default=-1) if select else 0
    ign = max((len(p) for p in ignore if code.startswith(p)), default=-1)
    return sel > ign


def run(ctx: Context, select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> tuple[Finding, ...]:
    out: list[Finding] = []
    for code, r in RULES.items():
        if selected(code, select, ignore):
            out.extend(r.check(ctx))
    return tuple(out)
