"""IC1xx: one weight tensor judged against the scheme its use calls for."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

from .. import theory
from ..facts import LayerFacts
from ..findings import Finding, Setting, Severity, rule
from ..ops.layers import WeightRole
from ..remedy import init_call
from ..signal import temperature
from .context import Context, describe, finding, looks_like
from .gates import feeds_only, gating
from .paths import logit_only, normalized_away

VARIANCE_BAND = Setting(
    "variance-band", 4.0,
    "IC103 fires when Var(w) / Var(recommended) is above this or below its inverse. PyTorch's default "
    "before a ReLU is 6x below He's variance; MHA's packed Xavier 2x.")
NON_CENTERED = Setting(
    "non-centered", 0.5,
    "IC102 fires when |mean| exceeds this many stds (plus three standard errors, as Student's t counts them "
    "for the weight's size); uniform[0, 1) has 1.73.")


THREE_SIGMA = 0.9986501019683699  # P(Z < 3) for a standard normal Z


def student_t(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom: how many estimated standard
    errors a mean must reach to be as unlikely as 3 true ones. A weight of n values knows its std
    only from those n, so a 5-value Conv1d (ECA's gate) needs 6.6, not 3; past ~30 values it is
    3 again. Exact for 1 and 2 degrees of freedom, the Cornish-Fisher expansion in 1/dof after
    (Abramowitz & Stegun 26.7.5; within 3% at dof 3, 0.1% from dof 8)."""
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    n = float(dof)
    return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))


@rule("IC101", "constant-weights", Severity.ERROR,
      "Every element of a hidden weight is equal (all zeros, all ones): the units stay identical.",
      "Units that start equal receive equal gradients and stay equal forever (the symmetry "
      "problem): a 256-unit layer trains as one unit; all zeros also blocks the gradient below. "
      "Zeros are fine, and deliberate, at the end of a residual branch, in the output layer, and where "
      "the output gates or modulates another tensor (adaLN-Zero, zero gates) or steers a warp (a "
      "spatial transformer's theta, a flow field): each unit then has its own role and gets its own gradient.",
      example="nn.init.zeros_(model.hidden.weight)  # a hidden layer followed by a ReLU",
      fix="the recommended scheme for the activation that follows (the finding prints the exact call)")
def constant_weights(ctx: Context) -> Iterator[Finding]:
    for lf in ctx.layers:
        s = lf.stats
        if s is None or not s.constant or s.count < 2:
            continue
        if (lf.residual_end or lf.is_output) and s.mean == 0.0:
            continue
        if lf.gated and s.mean == 0.0:
            continue  # a zero gate or modulation: each unit meets its own channel and gets its own gradient
        yield finding("IC101", lf, f"{describe(lf)}: weight is constant ({s.mean:g} everywhere); its {lf.fan_out} units stay identical",
                      init_call(lf))


@rule("IC102", "non-centered-weights", Severity.ERROR,
      "The weight's mean is large against its spread (uniform [0, 1), all-positive inits).",
      "Non-centered weights add a common shift that grows with fan_in at every layer: the "
      "pre-activations move together (uniform[0,1) gives a mean of 0.5·fan_in times the input "
      "mean) and the units barely differ.",
      example="nn.init.uniform_(model.fc.weight, 0, 1)",
      fix="a zero-mean scheme: the finding prints the exact call",
      settings=(NON_CENTERED,))
def non_centered(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(NON_CENTERED.name)
    for lf in ctx.layers:
        s = lf.stats
        if s is None or s.constant or lf.normalized or lf.role is WeightRole.EMBEDDING:
            continue
        if s.count > 1 and abs(s.mean) > limit * s.std + student_t(THREE_SIGMA, s.count - 1) * s.std / math.sqrt(s.count):
            yield finding("IC102", lf, f"{describe(lf)}: weight mean {s.mean:.4g} is {abs(s.mean) / s.std:.2f}x its std {s.std:.4g}; weights should be centered on 0",
                          init_call(lf))


def _output_in_range(ctx: Context, lf: LayerFacts) -> bool:
    """An output layer whose predicted output rms is between vanish-rms and logit-rms: a head far
    from Xavier's variance (a 50k-word vocabulary makes Xavier's tiny) still gives sound logits."""
    m = ctx.actual.preact(lf.op, lf.preact_op) if ctx.actual else None
    return m is not None and ctx.threshold("vanish-rms") <= m.rms <= ctx.threshold("logit-rms")


def _gates_in_range(ctx: Context, lf: LayerFacts) -> bool:
    """An RNN whose weights drive its gates' pre-activation (biases aside) with an rms between
    vanish-rms and saturate-rms: its gates work whatever Xavier would say of each matrix alone. A
    bias that saturates the gates by itself is IC203's, not the weights'."""
    m = ctx.actual.preact(lf.op, lf.preact_op) if ctx.actual else None
    return m is not None and ctx.threshold("vanish-rms") <= math.sqrt(m.within) <= ctx.threshold("saturate-rms")


def _temperature_ops(ctx: Context) -> frozenset[int]:
    """The query/key projections and position-bias MLPs (their outputs meet only attention logits),
    when no attention of the model is saturated: their outputs are not a signal path, and T5 folds
    1/sqrt(d_head) into its q init."""
    qk = frozenset(lf.op for lf in ctx.layers if lf.attention_score) | logit_only(ctx)
    if not qk or ctx.actual is None:
        return frozenset()  # no attention: no walk of the graph for its blocks
    weight_ops = {lf.op for lf in ctx.layers}
    limit = ctx.threshold("attention-freeze")
    if any(temperature.saturated(ctx.index, ctx.actual.forward, temperature.in_proj_gains(ctx.layers), weight_ops, limit)):
        return frozenset()
    return qk


def _bias_free(ctx: Context) -> Callable[[int], bool]:
    """Whether the weight op at an index adds no bias (a module's bias None or all zero): its
    output then scales with its weight, and with its input. Zero biases are read off the parameter
    records (statistics already taken), not the tensors."""
    zero = {pf.name for pf in ctx.params if pf.stats is not None and pf.stats.max_abs == 0.0}

    def free(i: int) -> bool:
        op = ctx.index.ops[i]
        mod = ctx.index.module(op)
        if mod is None or not ctx.index.is_weight_op(op):
            return False
        return getattr(mod, "bias", None) is None or f"{op.module}.bias" in zero
    return free


@rule("IC103", "weight-variance-mismatch", Severity.WARNING,
      "The weight's variance is more than 4x off the scheme that fits its activation.",
      "Each layer multiplies the signal's variance by fan_in·Var(w)·E[f(z)²]; the recommended "
      "scheme makes that factor 1. PyTorch's default before a ReLU gives 1/6 per layer. Layers "
      "followed by a normalization (directly, or through positively homogeneous activations and "
      "bias-free layers, as DCGAN's first discriminator conv), output layers, and layers scaled down inside a residual "
      "branch or a modulation (Fixup, GPT-2's 0.02, zero branch ends, adaLN/FiLM scales and shifts) are "
      "exempt, and so are layers whose output reaches only attention logits (query/key "
      "projections, position-bias MLPs) while no attention saturates (their scale is the softmax's sharpness: T5 folds "
      "1/sqrt(d_head) into its q init), and the layers of a squeeze-excitation or other sigmoid gate "
      "drawn small (the gate then sits near sigmoid(bias), a fixed scale on its path); the IC2xx rules "
      "still judge what their scale does to the signal.",
      example="nn.init.normal_(model.fc1.weight, std=0.01)  # fc1 is followed by a tanh",
      fix="the scheme that fits the activation (He for the ReLU family, Xavier for tanh/sigmoid, LeCun for SELU)",
      settings=(VARIANCE_BAND,))
def variance_mismatch(ctx: Context) -> Iterator[Finding]:
    band = ctx.threshold(VARIANCE_BAND.name)
    why = quiet(ctx)
    for lf in ctx.layers:
        ratio = lf.variance_ratio
        if ratio is None or lf.stats is None or not off_band(lf, band) or why(lf) is not None:
            continue
        times = ratio if ratio > 1 else 1 / ratio
        # two digits, three where two would print the band itself ("4x below ...; allowed band 4x")
        digits = 3 if f"{times:.2g}" == f"{band:.2g}" else 2
        direction = f"{times:.{digits}g}x" if times < 100 else f"{times:.0f}x"
        direction += " above" if ratio > 1 else " below"
        like = looks_like(lf)
        like_text = f" ({like})" if like else ""
        title = theory.SCHEME_TITLE.get(lf.scheme, lf.scheme.value)
        basis = (f"fan_in {lf.fan_in}" if lf.scheme is not theory.Family.XAVIER
                 else f"fan_in + fan_out = {lf.fan_in} + {lf.fan_out}")
        yield finding("IC103", lf, f"{describe(lf)}: weight variance {lf.stats.second:.3g} (std {lf.stats.std:.4g}{like_text}) is {direction} "
                      f"the {lf.recommended_std ** 2:.3g} of {title} (std {lf.recommended_std:.4g}, {basis}); allowed band {band:g}x",
                      init_call(lf))


def _feeding_zero(ctx: Context) -> Callable[[LayerFacts], bool]:
    """Layers whose output meets, on every path, a weight layer whose weight is all zeros before
    anything else (LoRA's A feeds B = 0): at init nothing downstream depends on their scale, which
    only sets the zero layer's first gradient."""
    zeros = {lf.op for lf in ctx.layers if lf.stats is not None and lf.stats.max_abs == 0.0}
    if not zeros:
        return lambda lf: False
    by_op = {lf.op: lf for lf in ctx.layers}
    return lambda lf: lf.op not in zeros and feeds_only(ctx, lf.op, zeros, by_op)


def off_band(lf: LayerFacts, band: float) -> bool:
    """The weight's variance is more than `band` times off its scheme's, either way."""
    ratio = lf.variance_ratio
    return ratio is not None and not math.isnan(ratio) and (ratio > band or ratio < 1.0 / band)


def quiet(ctx: Context) -> Callable[[LayerFacts], str | None]:
    """Why IC103 says nothing of a layer whatever its variance: "" where the report already shows
    it (a norm follows, a convention, an embedding, a constant), else the words the report's verdict
    shows ("ok: small gate"); None where IC103 judges the layer. The graph walks run once, when a
    layer first needs them."""
    temper = functools.cache(lambda: _temperature_ops(ctx))
    gate = functools.cache(lambda: gating(ctx))
    bias_free = functools.cache(lambda: _bias_free(ctx))
    zero_fed = functools.cache(lambda: _feeding_zero(ctx))

    def why(lf: LayerFacts) -> str | None:
        ratio = lf.variance_ratio
        if lf.stats is None or lf.stats.constant or lf.normalized or lf.role is WeightRole.EMBEDDING or lf.convention:
            return ""
        if lf.frozen:  # not trained from this init: what it does to the signal, IC2xx judge
            return "frozen (requires_grad=False)"
        if lf.intentionally_small:  # deliberate: a zero or small classifier, a scaled-down branch end
            return "small output head" if lf.is_output else "scaled-down branch end"
        if (lf.in_residual_branch or lf.modulation) and ratio is not None and ratio < 1.0:
            return "small modulation" if lf.modulation else "scaled-down residual branch"
        if lf.op in temper():
            return "attention logits only, none saturated"  # its scale is the softmax's sharpness (IC207 judges it)
        if zero_fed()(lf):
            return "feeds a zero-initialized layer"  # nothing downstream sees its scale yet (LoRA's A before B = 0)
        if ratio is not None and ratio < 1.0 and gate()(lf):
            return "small gate"  # near sigmoid(bias): a fixed scale on its path, not a lost signal
        free = bias_free()
        if free(lf.op) and normalized_away(ctx, lf.op, free):
            return "scale removed by a later norm"  # through homogeneous ops only (DCGAN's first conv)
        if lf.is_output and _output_in_range(ctx, lf):
            return "output rms in range"  # a head's scheme matters through its logits' scale
        if lf.kind in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell") and _gates_in_range(ctx, lf):
            return "gates in range"  # PyTorch's U(±1/sqrt(H)) default gives a sound gate pre-activation
        return None

    return why
