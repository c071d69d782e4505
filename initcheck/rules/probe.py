"""IC3xx: measured on a real batch (initcheck --probe)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..facts import LayerFacts
from ..findings import Finding, Setting, Severity, rule
from ..ops.layers import WeightRole
from ..remedy import init_call
from .context import Context

DEAD_WARN = Setting("dead-warn", 0.5, "IC301/IC302: a warning when this fraction of the units is dead or saturated.")
DEAD_ERROR = Setting("dead-error", 0.9, "IC301/IC302: an error when this fraction of the units is dead or saturated.")
GRAD_SPREAD = Setting("gradient-spread", 1e4,
                      "IC303: the largest ratio of two trunk layers' relative gradients ||dL/dW||/||W||.")


def _fraction_severity(ctx: Context, fraction: float | None) -> Severity | None:
    """A measured fraction of bad units: a warning over dead-warn, an error over dead-error."""
    if fraction is None or fraction < ctx.threshold(DEAD_WARN.name):
        return None
    return Severity.ERROR if fraction >= ctx.threshold(DEAD_ERROR.name) else Severity.WARNING


def _probe_rows(ctx: Context) -> list[tuple[Any, LayerFacts | None]]:
    by_name = {lf.qualname: lf for lf in ctx.layers}
    return [(p, by_name.get(p.name)) for p in ctx.probe]


@rule("IC301", "dead-units", Severity.WARNING,
      "Measured: over half of a ReLU layer's units are never positive on the batch (error over 90%).",
      "A unit whose pre-activation is negative for every input passes no gradient and never "
      "recovers: a large negative bias or mean shift kills it before training starts.",
      example="nn.init.constant_(model.fc.bias, -5.0)  # fc is followed by a ReLU",
      fix="a zero bias and the recommended weight scheme",
      settings=(DEAD_WARN, DEAD_ERROR))
def dead_units(ctx: Context) -> Iterator[Finding]:
    for p, lf in _probe_rows(ctx):
        if sev := _fraction_severity(ctx, p.dead_fraction):
            yield Finding("IC301", sev, p.name, f"{p.name}: {p.dead_fraction:.0%} of the units are dead on this batch (never positive)",
                          init_call(lf) if lf else "")


@rule("IC302", "units-saturated", Severity.WARNING,
      "Measured: over half of a saturating layer's pre-activations are past the knee (error over 90%).",
      "Past |z| = 2.65 tanh's slope is under 2% of its peak: those units pass almost no gradient.",
      example="nn.init.normal_(model.fc.weight, std=1.0)  # fc has 784 inputs and a tanh after it",
      fix="Xavier with tanh's gain",
      settings=(DEAD_WARN, DEAD_ERROR))
def units_saturated(ctx: Context) -> Iterator[Finding]:
    for p, lf in _probe_rows(ctx):
        if sev := _fraction_severity(ctx, p.saturated_fraction):
            yield Finding("IC302", sev, p.name, f"{p.name}: {p.saturated_fraction:.0%} of the pre-activations saturate {p.activation} on this batch",
                          init_call(lf) if lf else "")


@rule("IC303", "gradient-spread", Severity.ERROR,
      "Measured: the relative gradient ||dL/dW||/||W|| of two trunk layers differs by over 10^4 (not counting "
      "embeddings, queries and keys, layers followed by a norm, residual branches).",
      "One learning rate cannot serve layers whose relative updates differ by four orders of "
      "magnitude: the small ones are frozen (vanishing) or the large ones diverge (exploding).",
      example="a 30-layer ReLU MLP at PyTorch's default init, probed on a batch",
      fix="initcheck.fix(model, example_inputs)",
      settings=(GRAD_SPREAD,))
def gradient_spread(ctx: Context) -> Iterator[Finding]:
    spread = ctx.threshold(GRAD_SPREAD.name)
    rows = [p for p, lf in _probe_rows(ctx) if p.grad_ratio > 0 and lf is not None and _on_the_trunk(lf)]
    if len(rows) >= 2:
        lo = min(rows, key=lambda p: p.grad_ratio)
        hi = max(rows, key=lambda p: p.grad_ratio)
        if hi.grad_ratio > spread * lo.grad_ratio:
            yield Finding("IC303", Severity.ERROR, lo.name, f"{lo.name}: relative gradient {lo.grad_ratio:.2g} is {hi.grad_ratio / lo.grad_ratio:.2g}x below {hi.name}'s {hi.grad_ratio:.2g} on this batch (over {spread:g}x)",
                          "initcheck.fix(model, example_inputs)")


def _on_the_trunk(lf: LayerFacts) -> bool:
    """Layers whose relative gradient says how the signal flows through the init. Left out: an
    embedding (its gradient counts the rows a batch looks up), a query or key (proportional to the
    other's scale, small at init by design), a layer followed by a normalization (its gradient
    scales as 1/||W||: its init scale does not reach the signal), and residual branches (layer
    scale, zero ends and gates shrink them on purpose; the static rules judge their weights)."""
    return not (lf.role is WeightRole.EMBEDDING or lf.attention_score or lf.normalized or lf.in_residual_branch
                or lf.residual_end)
