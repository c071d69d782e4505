"""IC104-IC108: every parameter, fan weight or not: finite, of a sane magnitude, and norm layers at
their identity (scale 1, shift 0) unless a convention says otherwise."""

from __future__ import annotations

from collections.abc import Iterator

from ..facts.params import ParamFacts, ParamKind
from ..findings import Finding, Setting, Severity, rule
from ..remedy import accessor
from .context import Context

ABSURD_VALUE = Setting(
    "absurd-value", 1e6,
    "IC105: the largest |value| any parameter may hold. Uninitialized memory (torch.empty, to_empty() "
    "without an init) shows as 1e18-1e38; no init scheme gives |w| over 1e6 (N(0, 1) stays under 6).")
NORM_SCALE_BAND = Setting(
    "norm-scale-band", 10.0,
    "IC106: a norm's scale rms outside [1/band, band] of 1 is a warning (exactly 0 outside a residual "
    "branch end is an error: the layer outputs its shift alone).")
NORM_SHIFT = Setting("norm-shift", 1.0, "IC107: a norm's shift with rms over this moves every normalized unit by more than its std.")

_UNINITIALIZED = ("uninitialized memory? torch.empty and module.to_empty() leave whatever bytes were there: "
                  "run the model's init after to_empty() (reset_parameters(), model.apply(init_fn), or initcheck.plan)")


def _fill(pf: ParamFacts) -> str:
    """The init call that puts this parameter at its convention."""
    w = accessor(pf.name)
    if pf.kind is ParamKind.NORM_WEIGHT:
        return f"nn.init.ones_({w})"
    if pf.kind in (ParamKind.NORM_BIAS, ParamKind.BIAS):
        return f"nn.init.zeros_({w})"
    if pf.kind in (ParamKind.TOKEN, ParamKind.POSITION):
        return f"nn.init.trunc_normal_({w}, std=0.02)"
    return f"reinitialize {w} (its module's reset_parameters(), or your init function)"


def _weight_fix(ctx: Context, pf: ParamFacts) -> str:
    from ..remedy import init_call

    lf = next((lf for lf in ctx.layers if lf.qualname == pf.name or pf.name in lf.aliases), None)
    return init_call(lf) if lf is not None else _fill(pf)


@rule("IC104", "non-finite-parameter", Severity.ERROR,
      "A parameter holds NaN or infinite values.",
      "One NaN in any parameter makes every output and every gradient NaN at the first step. It "
      "comes from uninitialized memory (torch.empty, to_empty() after building on the meta device "
      "with no init), a division by zero in custom init code, or a corrupted checkpoint.",
      example="model = Net().to_empty(device='cpu')  # built under torch.device('meta'), never initialized",
      fix="run the model's init after to_empty() (reset_parameters() or your init function)")
def non_finite(ctx: Context) -> Iterator[Finding]:
    for pf in ctx.params:
        s = pf.stats
        if s is not None and not s.finite:
            yield Finding("IC104", Severity.ERROR, pf.name,
                          f"{pf.name} ({pf.kind.value}, {'x'.join(map(str, pf.shape)) or 'scalar'}): {s.nonfinite} of {s.count} "
                          f"values are NaN or infinite; {_UNINITIALIZED}",
                          _weight_fix(ctx, pf) if pf.kind is ParamKind.WEIGHT else _fill(pf))


@rule("IC105", "absurd-magnitude", Severity.ERROR,
      "A parameter holds values of absurd magnitude (over 1e6 by default).",
      "Values like 1e18 are not an init, they are uninitialized memory or an overflowed computation; "
      "the first forward pass overflows.",
      example="w = torch.empty(256, 256)  # never filled",
      fix="initialize it: the finding prints the call",
      settings=(ABSURD_VALUE,))
def absurd(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(ABSURD_VALUE.name)
    for pf in ctx.params:
        s = pf.stats
        if s is not None and s.finite and s.max_abs > limit:
            yield Finding("IC105", Severity.ERROR, pf.name,
                          f"{pf.name} ({pf.kind.value}): its largest |value| is {s.max_abs:.3g} (over {limit:g}); {_UNINITIALIZED}",
                          _weight_fix(ctx, pf) if pf.kind is ParamKind.WEIGHT else _fill(pf))


@rule("IC106", "norm-scale-off", Severity.WARNING,
      "A normalization's scale (γ) is far from 1 or drawn around 0: exactly 0 is an error outside a residual branch end.",
      "A norm layer's output is γ·x̂ + β: with γ = 0 every unit outputs its shift alone, the signal and "
      "its gradient stop there (a LayerNorm weight and bias swapped by a load do exactly this). A zero "
      "γ that ends a residual branch is the deliberate zero_init_residual (Goyal et al. 2017). A γ "
      "drawn centred on 0 (|mean| under half its std: normal_(m.weight) in a loop over every module) "
      "starts each channel at a random gain and sign; DCGAN's N(1, 0.02) and RepVGG's N(0.1, 0.1) are "
      "not flagged.",
      example="nn.init.zeros_(model.ln.weight)  # a LayerNorm in the trunk",
      fix="nn.init.ones_(norm.weight)",
      settings=(NORM_SCALE_BAND,))
def norm_scale(ctx: Context) -> Iterator[Finding]:
    band = ctx.threshold(NORM_SCALE_BAND.name)
    for pf in ctx.params:
        s = pf.stats
        if pf.kind is not ParamKind.NORM_WEIGHT or s is None or not s.finite:
            continue
        rms = s.second ** 0.5
        if rms == 0.0:
            if not pf.residual_norm:
                yield Finding("IC106", Severity.ERROR, pf.name,
                              f"{pf.name}: the norm's scale is 0 everywhere and it does not end a residual branch: "
                              f"its output is the shift alone, the signal stops here", _fill(pf))
        elif rms > band or rms < 1.0 / band:
            yield Finding("IC106", Severity.WARNING, pf.name,
                          f"{pf.name}: the norm's scale has rms {rms:.3g}, outside [{1 / band:g}, {band:g}] around 1", _fill(pf))
        elif abs(s.mean) < 0.5 * s.std:
            # a draw centred on 0 (normal_(bn.weight) in a loop over every module): each channel starts
            # at a random gain and sign, some near 0; a draw around 1 (DCGAN's N(1, 0.02)) or a small
            # positive one (timm's RepVGG: N(0.1, 0.1), its three branches summed) is not this
            yield Finding("IC106", Severity.WARNING, pf.name,
                          f"{pf.name}: the norm's scale is drawn around 0 (mean {s.mean:.3g}, std {s.std:.3g}), not set "
                          f"to 1: each channel starts at a random gain and sign", _fill(pf))


@rule("IC108", "padding-row-set", Severity.WARNING,
      "An embedding's padding row (padding_idx) is not zero.",
      "nn.Embedding gives the padding token a zero row and never a gradient: whatever the row holds "
      "at init is added, unchanged, at every padded position for the whole of training. A custom init "
      "drawn over the whole table (normal_(emb.weight, std=0.02)) overwrites the zeros; Hugging Face's "
      "_init_weights zeroes the row again after its draw for this reason.",
      example="nn.init.normal_(model.emb.weight, std=0.02)  # nn.Embedding(..., padding_idx=0)",
      fix="zero the row after the draw: emb.weight.data[emb.padding_idx].zero_()")
def padding_row(ctx: Context) -> Iterator[Finding]:
    for pf in ctx.params:
        if pf.padding is not None and pf.padding[1] > 0.0 and pf.stats is not None and pf.stats.finite:
            idx, rms = pf.padding
            yield Finding("IC108", Severity.WARNING, pf.name,
                          f"{pf.name}: row {idx} (padding_idx) has rms {rms:.3g}, not 0: the padding token gets no "
                          f"gradient, so this vector is added unchanged at every padded position",
                          f"with torch.no_grad(): {accessor(pf.name)}[{idx}].zero_()")


@rule("IC107", "norm-shift-off", Severity.WARNING,
      "A normalization's shift (β) has rms over 1.",
      "After a norm each unit has unit variance; a shift larger than that moves the units off the "
      "activation's useful range (all positive into a ReLU, saturated into a tanh).",
      example="nn.init.ones_(model.ln.bias)",
      fix="nn.init.zeros_(norm.bias)",
      settings=(NORM_SHIFT,))
def norm_shift(ctx: Context) -> Iterator[Finding]:
    limit = ctx.threshold(NORM_SHIFT.name)
    for pf in ctx.params:
        s = pf.stats
        if pf.kind is ParamKind.NORM_BIAS and s is not None and s.finite and s.second ** 0.5 > limit:
            yield Finding("IC107", Severity.WARNING, pf.name,
                          f"{pf.name}: the norm's shift has rms {s.second ** 0.5:.3g} (over {limit:g})", _fill(pf))
