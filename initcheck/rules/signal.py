"""IC2xx: the signal that flows through the graph, predicted from unit-variance inputs (signal/)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .. import theory
from ..facts import LayerFacts
from ..findings import RULES, Finding, Setting, Severity, rule
from ..ops.layers import WeightRole
from ..remedy import accessor, init_call
from ..signal import Signal, attention, temperature
from .context import Context, describe, finding
from .gates import gating

EXPLODE_RMS = Setting("explode-rms", 10.0,
                      "IC201: truncated normal 0.1 on 784-256-128 peaks at 3.2; uniform[-1, 1) gives 16.")
VANISH_RMS = Setting("vanish-rms", 1e-2,
                     "IC202: on the input-driven part alone; U(-0.001, 0.001) leaves 1e-4 after two layers.")
SATURATE_RMS = Setting("saturate-rms", 3.0, "IC203: Xavier(tanh) on raw 784-d inputs gives 2.0; N(0, 1) gives 28.")
GRADIENT_BAND = Setting("gradient-band", 1e3, "IC204/IC205: 10+ layers at 1/6 of He's variance fall below 1e-3.")
OUT_OF_RANGE_RMS = Setting(
    "out-of-range-rms", 1e2,
    "IC201 fires above this rms whatever the recommended schemes give: no init that trains gives a "
    "pre-activation rms of 100 (a norm-free residual stack with unscaled branches doubles its variance per "
    "block and reaches it in ~14 blocks).")
LOGIT_RMS = Setting(
    "logit-rms", 5.0,
    "IC206: logits of rms 5 over a vocabulary put almost all of the softmax's mass on a few entries at "
    "init and the first loss far above ln(vocab); N(0, 1) embeddings tied to the head (d = 384) give 20, "
    "GPT-2's N(0, 0.02) with d = 768 gives 0.55.")
CAUSED_BY = Setting(
    "caused-by", 3.0,
    "IC201-IC203 blame the init only where the prediction is also this many times off the one under the "
    "recommended schemes (a deep sigmoid net with torch's Xavier gain 1 fades by itself).")


def _culprits(ctx: Context, upto: LayerFacts) -> str:
    """The init calls for the mis-scaled layers up to `upto`, the likely causes."""
    bad = [lf for lf in ctx.layers if lf.op <= upto.op and lf.mis_scaled] or [upto]
    calls = [init_call(lf) for lf in bad[:3]]
    if len(bad) > 3:
        calls.append(f"... {len(bad) - 3} more: initcheck.fix(model)")
    return "; ".join(calls)


def _first(ctx: Context, test: Callable[[LayerFacts], float | None],
           among: tuple[LayerFacts, ...] | None = None) -> tuple[LayerFacts, float, int] | None:
    hits = [(lf, v) for lf in (ctx.layers if among is None else among) if (v := test(lf)) is not None]
    return (hits[0][0], hits[0][1], len(hits) - 1) if hits else None


def _preact(ctx: Context, lf: LayerFacts, signal: Signal | None = None) -> float | None:
    sig = signal or ctx.effective
    m = sig.preact(lf.op, lf.preact_op) if sig else None
    return None if m is None else m.rms


def _input_signal(ctx: Context, lf: LayerFacts, signal: Signal | None = None) -> float | None:
    sig = signal or ctx.effective
    src = ctx.data_operand.get(lf.op)
    m = sig.forward[src] if sig and src is not None else None
    return None if m is None else math.sqrt(m.signal)


def _above(ctx: Context, value: float | None, limit: float, ref: float | None) -> bool:
    return value is not None and value > limit and (ref is None or value > ctx.threshold(CAUSED_BY.name) * ref)


def _out_of_range(ctx: Context, value: float | None) -> bool:
    return value is not None and value > ctx.threshold(OUT_OF_RANGE_RMS.name)


def _uses(ctx: Context) -> tuple[LayerFacts, ...]:
    """Every use of every weight in execution order: a shared layer's later calls are judged too
    (a tied embedding's head use is IC206's)."""
    shared = tuple(u for u in ctx.tied_uses if primary(ctx, u).role is not WeightRole.EMBEDDING)
    return tuple(sorted(ctx.layers + shared, key=lambda lf: lf.op))


def primary(ctx: Context, use: LayerFacts) -> LayerFacts:
    """The first use of the tensor that `use` reads (the row the report shows for it)."""
    for lf in ctx.layers:
        if lf.qualname == use.qualname or use.qualname in lf.aliases:
            return lf
    return use


def _residual_fix(ctx: Context, upto: LayerFacts) -> str | None:
    """When the stream that explodes is a norm-free residual stack, the fix is depth-scaled branches."""
    ends = [lf for lf in ctx.layers if lf.residual_end and lf.op <= upto.op and not lf.normalized]
    if len(ends) < 2:
        return None
    n = len(ends)
    return (f"scale each residual branch's last layer by 1/sqrt(2*{n}) = {1 / math.sqrt(2 * n):.3g} after its init "
            f"(GPT-2 / Fixup style: e.g. with torch.no_grad(): {init_call(ends[0]).split('(')[0]}(...); "
            f"branch_end.weight.mul_({1 / math.sqrt(2 * n):.3g})), or zero-init each branch's last layer "
            f"(SkipInit / ReZero): {n} branch ends up to {upto.qualname}")


def _below(ctx: Context, value: float | None, limit: float, ref: float | None) -> bool:
    return value is not None and value < limit and (ref is None or value * ctx.threshold(CAUSED_BY.name) < ref)


def _more(n: int) -> str:
    return f"; {n} later layer{'s' if n > 1 else ''} too" if n else ""


@rule("IC201", "signal-explodes", Severity.ERROR,
      "Predicted from unit-variance inputs, a layer's pre-activation rms exceeds 10.",
      "Too large a weight variance compounds layer after layer: with uniform[-1, 1) a "
      "784-256-128-10 ReLU net reaches rms 16, 105 and 490. Losses overflow and the first "
      "updates are huge.",
      example="for m in model.modules(): nn.init.uniform_(m.weight, -1, 1)  # a 784-256-128-10 ReLU net",
      fix="the recommended scheme on the mis-scaled layers the finding names; for a norm-free residual stack, "
          "depth-scaled branches (1/sqrt(2L), GPT-2 / Fixup) or zero-initialized branch ends",
      settings=(EXPLODE_RMS, OUT_OF_RANGE_RMS, CAUSED_BY))
def signal_explodes(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(EXPLODE_RMS.name)

    def explodes(lf: LayerFacts) -> float | None:
        if lf.normalized or lf.activation in theory.BOUNDED:
            return None
        v = _preact(ctx, lf)
        return v if _above(ctx, v, limit, _preact(ctx, lf, ctx.reference)) or _out_of_range(ctx, v) else None

    hit = _first(ctx, explodes, _uses(ctx))
    if hit:
        lf, v, more = hit
        yield finding("IC201", lf, f"{describe(lf)}: predicted pre-activation rms {v:.3g} for unit-variance inputs (over {limit:g}){_more(more)}",
                      _residual_fix(ctx, lf) or _culprits(ctx, lf))


@rule("IC202", "signal-vanishes", Severity.ERROR,
      "Predicted from unit-variance inputs, the input-driven part of the signal reaching a layer has rms below 0.01.",
      "Too small a weight variance shrinks the signal geometrically: with N(0, 0.01) a tanh net "
      "loses a factor ~10 per layer; deeper layers then see only their biases (which the signal "
      "model counts apart) and the output stops depending on the input. Layers inside a residual "
      "branch are not judged: the skip around them carries the input on.",
      example="nn.init.normal_(layer.weight, std=0.01)  # every layer of a 5-layer tanh net",
      fix="the recommended scheme on the mis-scaled layers the finding names",
      settings=(VANISH_RMS, CAUSED_BY))
def signal_vanishes(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(VANISH_RMS.name)
    gate = gating(ctx)
    # a layer inside a residual branch is skipped: the stream around it carries the input on (a
    # post-LN encoder's first attention block after a factorized embedding, ELECTRA's and ALBERT's,
    # reads a small context and trains), and a stream that fades reaches a layer outside the branches
    hit = _first(ctx, lambda lf: v if (lf.role is not WeightRole.EMBEDDING and not gate(lf) and not lf.in_residual_branch
                                       and _below(ctx, v := _input_signal(ctx, lf), limit,
                                                  _input_signal(ctx, lf, ctx.reference))) else None)
    if hit:
        lf, v, more = hit
        yield finding("IC202", lf, f"{describe(lf)}: predicted input signal rms {v:.3g} for unit-variance model inputs (under {limit:g}){_more(more)}",
                      _culprits(ctx, lf))


@rule("IC203", "activation-saturates", Severity.ERROR,
      "A saturating activation (tanh, sigmoid, ...) receives pre-activations with rms over 3, from its weights or its bias alone.",
      "tanh(3) = 0.995: past that the unit is a sign function with zero gradient. N(0, 1) weights "
      "on a 784-input tanh layer give rms 28. A bias does it alone whatever the weights (a blanket "
      "constant_(bias, 5) on an LSTM puts its cell candidate at tanh(10)); a sigmoid's bias may set an "
      "opening on purpose (an LSTM's forget gate at 1, chrono init, a highway gate at -2, RetinaNet's "
      "prior at -4.6), so only biases before a tanh are judged.",
      example="nn.init.normal_(layer.weight, std=1.0)  # a tanh layer with 784 inputs",
      fix="Xavier with tanh's gain on the layers the finding names",
      settings=(SATURATE_RMS, CAUSED_BY))
def activation_saturates(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(SATURATE_RMS.name)
    hit = _first(ctx, lambda lf: v if (lf.activation in theory.SATURATING and _above(
        ctx, v := _preact(ctx, lf), limit, _preact(ctx, lf, ctx.reference))) else None)
    if hit:
        lf, v, more = hit
        yield finding("IC203", lf, f"{describe(lf)}: predicted pre-activation rms {v:.3g} saturates {lf.activation} (over {limit:g}){_more(more)}",
                      _culprits(ctx, lf))
    # a bias that saturates by itself, whatever the weights: the recommended schemes keep the biases,
    # so the comparison above cannot blame it
    for lf in ctx.layers:
        if hit and lf is hit[0]:
            continue
        for name, rms, what, spans in saturating_biases(ctx, lf):
            if rms > limit:
                yield Finding("IC203", Severity.ERROR, name,
                              f"{name}: {what} has rms {rms:.3g} by itself (over {limit:g}): its units saturate whatever "
                              f"the input, with no gradient through them", _zero_fix(spans))


Span = tuple[str, int, int]  # (parameter, start, stop): a slice of a bias

# Saturating functions whose bias sets no opening: a sigmoid's does (a highway net's carry gate at
# -2, RetinaNet's prior at -4.6, a hand-written LSTM's forget gate), so only these are judged
_SYMMETRIC = frozenset({"tanh", "softsign", "hardtanh"})


def saturating_biases(ctx: Context, lf: LayerFacts) -> Iterator[tuple[str, float, str, tuple[Span, ...]]]:
    """(bias name, rms of the part of it a saturating function receives, what that part is, the
    slices of the biases that make it: what the fix zeroes) for a
    layer followed by tanh (not sigmoid: its bias may set a gate's opening or a prior on purpose),
    and for the tanh inside a recurrent layer: an LSTM's cell
    candidate and a GRU's new gate (their sigmoid gates may start open or shut by design: a forget
    gate bias of 1, chrono init's log-spaced ones), a tanh RNN's whole state. Recurrent layers add
    their two biases (b_ih + b_hh) unit by unit."""
    owner_name = lf.qualname[: -len(lf.param) - 1] if lf.qualname.endswith("." + lf.param) else ""
    mod = ctx.index.modules.get(owner_name)
    if mod is None:
        return
    prefix = f"{owner_name}." if owner_name else ""
    if isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell)):
        if lf.param not in ("weight_ih_l0", "weight_ih"):
            return  # one check per recurrent module, at its first weight
        h = mod.hidden_size
        lstm, gru = isinstance(mod, (nn.LSTM, nn.LSTMCell)), isinstance(mod, (nn.GRU, nn.GRUCell))
        if not (lstm or gru) and getattr(mod, "nonlinearity", "tanh") != "tanh":
            return
        part, what = ((2 * h, 3 * h), "the cell candidate's bias (tanh)") if lstm else \
            ((2 * h, 3 * h), "the new gate's bias (tanh)") if gru else ((0, h), "the bias (tanh)")
        suffixes = [f"_l{i}" for i in range(mod.num_layers)] if isinstance(mod, nn.RNNBase) else [""]
        for s in suffixes:
            named = [(f"{prefix}{n}{s}", b) for n in ("bias_ih", "bias_hh")
                     if isinstance(b := getattr(mod, f"{n}{s}", None), torch.Tensor) and not b.is_meta]
            if named:
                total = sum(t.detach()[part[0]:part[1]].float() for _, t in named)
                assert isinstance(total, torch.Tensor)
                yield named[0][0], float(total.pow(2).mean().sqrt()), what + (" (b_ih + b_hh)" if len(named) > 1 else ""), \
                    tuple((n, part[0], part[1]) for n, _ in named)
        return
    bias = getattr(mod, "bias", None)
    if lf.activation in _SYMMETRIC and lf.param == "weight" and isinstance(bias, torch.Tensor) \
            and not bias.is_meta and bias.numel():
        yield f"{prefix}bias", float(bias.detach().float().pow(2).mean().sqrt()), f"the bias before {lf.activation}", \
            ((f"{prefix}bias", 0, bias.numel()),)


def _zero_fix(spans: tuple[Span, ...]) -> str:
    """nn.init.zeros_ of a whole bias; the slices of a recurrent layer's gate otherwise."""
    if len(spans) == 1 and spans[0][1] == 0:
        return f"nn.init.zeros_({accessor(spans[0][0])})"
    return "with torch.no_grad(): " + "; ".join(f"{accessor(n)}[{a}:{b}].zero_()" for n, a, b in spans)


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
      "never train. A bias keeps the forward signal alive; nothing keeps the gradient.",
      example="a 20-layer ReLU MLP left at PyTorch's default init",
      fix="He init on the ReLU layers (initcheck.fix(model) applies it)",
      settings=(GRADIENT_BAND,))
def gradient_vanishes(ctx: Context) -> Iterator[Finding]:
    band = ctx.threshold(GRADIENT_BAND.name)
    gate = gating(ctx)
    hit = _first(ctx, lambda lf: v if (not gate(lf) and (v := _gradient_ratio(ctx, lf)) is not None and v < 1.0 / band)
                 else None)
    if hit:
        lf, v, more = hit
        yield finding("IC204", lf, f"{describe(lf)}: predicted gradient is {v:.2g}x what the recommended schemes give (under 1/{band:g}){_more(more)}",
                      _culprits(ctx, ctx.layers[-1]))


@rule("IC205", "gradient-explodes", Severity.ERROR,
      "The gradient reaching a layer is over 1000x larger than under the recommended schemes.",
      "The mirror image of IC204: too large weights downstream amplify the gradient geometrically.",
      example="nn.init.normal_(layer.weight, std=1.0)  # every layer of a 10-layer ReLU MLP of width 256",
      fix="the recommended scheme on the layers downstream (initcheck.fix(model) applies it)",
      settings=(GRADIENT_BAND,))
def gradient_explodes(ctx: Context) -> Iterator[Finding]:
    band = ctx.threshold(GRADIENT_BAND.name)
    hit = _first(ctx, lambda lf: v if ((v := _gradient_ratio(ctx, lf)) is not None and v > band) else None)
    if hit:
        lf, v, more = hit
        yield finding("IC205", lf, f"{describe(lf)}: predicted gradient is {v:.3g}x what the recommended schemes give (over {band:g}){_more(more)}",
                      _culprits(ctx, ctx.layers[-1]))


@rule("IC206", "tied-output-too-large", Severity.ERROR,
      "A weight tied between an embedding and the output head gives logits with rms over 5 at its output use.",
      "A table W of shape (vocab, d) used as a lookup gives rows of std σ; used as the output projection "
      "x @ Wᵀ it gives logits of std σ·sqrt(d)·rms(x). An embedding at N(0, 1) tied to the head (whisper's "
      "default, d = 384) gives logits of std ~20: the softmax is one-hot at init and the first loss is far "
      "above ln(vocab). Judged at every use: an embedding convention is not a head convention.",
      example="self.head.weight = self.tok_emb.weight; nn.init.normal_(self.tok_emb.weight, std=1.0)",
      fix="nn.init.normal_(embedding.weight, std=0.02) (or d**-0.5), or scale the logits by d**-0.5 in forward",
      settings=(LOGIT_RMS,))
def tied_output(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(LOGIT_RMS.name)
    for use in ctx.tied_uses:
        lf = primary(ctx, use)
        if use.role is WeightRole.EMBEDDING or lf.role is not WeightRole.EMBEDDING or not use.is_output:
            continue
        v = _preact(ctx, use, ctx.actual)
        if v is None or v <= limit:
            continue
        std = lf.stats.std if lf.stats else float("nan")
        d = use.fan_in
        yield finding("IC206", lf, f"{lf.qualname} (std {std:.3g}) is also the output projection ({use.kind} {use.fan_in}→{use.fan_out}): "
                      f"predicted logit rms {v:.3g} ≈ std·sqrt({d})·rms(input) (over {limit:g}); the softmax is near one-hot at init",
                      f"nn.init.normal_({accessor(lf.qualname)}, std={min(0.02, 1 / math.sqrt(max(d, 1))):.3g})")


FREEZE = Setting(
    "attention-freeze", 1.0,
    "IC207 fires when an attention's logit std exceeds this multiple of sqrt(2 ln n), n keys: the point "
    "where the softmax's entropy ln n - s^2/2 reaches zero (a missing 1/sqrt(d_head) with Xavier q/k at "
    "d_head 64 gives s = 4, over 2.9 at 64 keys; nn.MultiheadAttention's default gives 0.5).")


@rule("IC207", "attention-saturates", Severity.WARNING,
      "An attention's logits spread so widely at init that its softmax puts nearly all weight on a few keys.",
      "With n keys whose logits q·k·scale spread with std s, the softmax's entropy is about ln n - s^2/2 "
      "(the annealed value): it reaches zero at s = sqrt(2 ln n), where the weights condense onto O(1) keys "
      "(the random-energy model's freezing point). Past it each query copies one key, and the softmax's "
      "gradient p(1 - p) is near zero for every other key, so the block barely learns at first. The std is "
      "predicted per attention as sqrt(d_head E[q^2] E[k^2]) * scale, from the q and k projections' weights "
      "and the number of keys from the traced shapes; a missing 1/sqrt(d_head), q/k weights at N(0, 1), or "
      "inputs of rms sqrt(d) (embeddings scaled up) all put it there.",
      example="scores = q @ k.transpose(-2, -1)  # no / sqrt(d_head), with xavier_uniform_ q/k projections",
      fix="scale the logits by d_head**-0.5 and initialize the q/k projections with variance 1/fan_in "
          "(nn.init.xavier_uniform_, or normal_(std=0.02) as GPT-2 does); or fold the missing factor into "
          "the q projection's init as T5 does (initcheck.fix scales it by 1/s, s the predicted logit std)",
      settings=(FREEZE,))
def attention_saturates(ctx: Context) -> Iterator[Finding]:
    if ctx.actual is None:
        return
    by_op = {lf.op: lf for lf in ctx.layers}
    found = temperature.saturated(ctx.index, ctx.actual.forward, temperature.in_proj_gains(ctx.layers), set(by_op),
                                  ctx.threshold(FREEZE.name))
    for sat in found:
        b, limit = sat.block, sat.limit
        lf = by_op.get(sat.query) if sat.query is not None else None
        where = lf.qualname if lf is not None else f"the attention at op {b.op}"
        share = attention.participation(b.keys, b.logit_std)
        yield finding("IC207", lf, f"{where}: the attention over {b.keys} keys has predicted logit std {b.logit_std:.3g} "
                      f"(over sqrt(2 ln {b.keys}) = {limit:.3g}): its softmax weights about {1 / share:.2g} key(s) per query at init",
                      RULES["IC207"].fix)
