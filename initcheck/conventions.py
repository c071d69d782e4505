"""Library conventions that are deliberate, recognized by the numbers and named in the report.

Each recognizer gets a layer's facts and the model, and returns a short label or None. A layer with a
recognized convention is exempt from IC103 (variance mismatch); the signal rules still judge it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import torch
from torch import nn

from .facts import LayerFacts
from .frozen import built
from .ops.layers import Layout, WeightRole
from .ops.parametrized import fixed_scale

CLOSE = 0.03  # std within 3% of the convention's (truncation, uniform vs normal), plus sampling error


def _close(a: float, b: float, n: int = 1 << 30) -> bool:
    """Within 3%, plus three standard errors of a std measured on n values (small tensors)."""
    return b > 0 and abs(a / b - 1.0) < CLOSE + 3.0 / math.sqrt(2.0 * n)


def _config_value(model: nn.Module, keys: tuple[str, ...], integer: bool) -> float | None:
    """The first of `keys` that the model's Hugging Face config sets to a positive number (an int
    when `integer`, a float otherwise)."""
    config = getattr(model, "config", None)
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int if integer else float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _config_std(model: nn.Module) -> float | None:
    """Hugging Face's `initializer_range` (BERT, GPT-2, LLaMA, ...) or `init_std` (BART, Whisper)."""
    return _config_value(model, ("initializer_range", "init_std", "initializer_factor"), integer=False)


def _n_layer(model: nn.Module) -> int | None:
    n = _config_value(model, ("n_layer", "num_hidden_layers", "num_layers"), integer=True)
    return None if n is None else int(n)


@dataclass(frozen=True)
class _ModelFacts:
    """What the recognizers read of the model as a whole, looked up once per stage rather than per
    layer (on a model without a Hugging Face config each lookup raises and catches inside torch)."""

    hf_std: float | None  # the config's initializer_range / init_std
    n_layer: int | None
    module_path: str  # the module defining the model's class: timm's, torchvision's
    parametrized: bool  # some module has parametrizations or forward pre-hooks (weight_norm, spectral_norm)


def _model_facts(model: nn.Module, modules: Iterable[nn.Module]) -> _ModelFacts:
    hooked = any(m._forward_pre_hooks or "parametrizations" in m._modules for m in modules)
    return _ModelFacts(_config_std(model), _n_layer(model), type(model).__module__, hooked)


def apply(layers: tuple[LayerFacts, ...], model: nn.Module,
          modules: Mapping[str, nn.Module] | None = None) -> tuple[LayerFacts, ...]:
    """The conventions stage: each layer with the deliberate init it follows, if one is recognized.
    modules: dict(model.named_modules()) when the caller has it."""
    facts = _model_facts(model, (modules or dict(model.named_modules())).values())
    out = []
    for lf in layers:
        label = recognize(lf, model, facts)
        out.append(lf if label == lf.convention else _labelled(lf, label))  # most layers: none to add
    return tuple(out)


def _labelled(lf: LayerFacts, label: str | None) -> LayerFacts:
    """replace(lf, convention=label), built from the fields (frozen.py): a transformer labels every layer."""
    values = {name: getattr(lf, name) for name in _FIELDS}
    values["convention"] = label
    return built(LayerFacts, values)


_FIELDS = tuple(f.name for f in fields(LayerFacts))


def recognize(lf: LayerFacts, model: nn.Module, facts: _ModelFacts | None = None) -> str | None:
    s = lf.stats
    if s is None or lf.fan_in == 0:
        return None
    facts = facts or _model_facts(model, model.modules())
    fixed = _parametrized_scale(lf, model) if facts.parametrized else None
    if fixed:
        return fixed
    if s.constant and s.mean == 0.0:
        if lf.residual_end:
            return "zero residual end (Fixup / SkipInit / ReZero / LoRA's B)"
        if lf.is_output:
            return "zero-initialized classifier"
        if lf.gated:
            return "zero gate / modulation (adaLN-Zero, SkipInit-style gate)"
        return None
    if lf.residual_end and lf.norm:
        gamma = getattr(model.get_submodule(lf.norm), "weight", None)
        if isinstance(gamma, torch.Tensor) and not gamma.is_meta and not bool(gamma.detach().any()):
            return "zero_init_residual (the norm after it starts at scale 0)"
    std = s.std
    if lf.activation in ("sin", "cos"):
        siren = _siren(lf, std, s.count)
        if siren:
            return siren
    hf = facts.hf_std
    if hf is not None:
        n = facts.n_layer
        if lf.residual_end and n and _close(std, hf / math.sqrt(2 * n), s.count):
            return f"GPT-2 scaled residual projection (initializer_range/sqrt(2*{n}))"
        if _close(std, hf, s.count):
            return f"Hugging Face normal(initializer_range={hf:g})"
    module_path = facts.module_path
    if module_path.startswith("timm") and _close(std, 0.02, s.count):
        return "timm trunc_normal(std=.02)"
    if lf.layout is Layout.CONV and len(lf.shape) > 2:
        # He in fan_out mode preserves the backward signal (He et al. 2015 show both modes work):
        # torchvision's fan_out counts out*k*k, Google's (timm's EfficientNets) divides by the groups
        fan_out_torch = lf.shape[0] * math.prod(lf.shape[2:])
        # where several candidates fit a small tensor, the label goes to the closest: a fan_in He
        # or PyTorch default that happens to be near fan_out He is not fan_out He
        fan_in_torch = math.prod(lf.shape[1:])
        rivals = (math.sqrt(2.0 / fan_in_torch), 1.0 / math.sqrt(3.0 * fan_in_torch))
        for fan in {fan_out_torch, lf.fan_out}:
            if fan != lf.fan_out and not lf.normalized:
                # torch's fan_out of a grouped/depthwise conv counts every group's outputs: C times
                # too small a variance for what each output sums. Harmless only when a norm follows.
                continue
            if not _close(std, math.sqrt(2.0 / fan), s.count):
                continue
            mine = abs(math.log(std / math.sqrt(2.0 / fan)))
            if all(abs(math.log(std / r)) >= mine for r in rivals if not _close(math.sqrt(2.0 / fan), r)):
                lib = "torchvision " if module_path.startswith("torchvision") else ""
                return f"{lib}kaiming_normal(mode='fan_out')"
    if _close(std, 0.02, s.count) and (lf.in_residual_branch or lf.role is WeightRole.EMBEDDING):
        return "normal(0, 0.02) transformer init"
    return None


def _parametrized_scale(lf: LayerFacts, model: nn.Module) -> str | None:
    """A weight whose scale a parametrization sets (spectral_norm: largest singular value 1;
    orthogonal): no init changes it, so its variance is not an init's to judge."""
    owner, _, name = lf.qualname.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return None
    kind = fixed_scale(module, name)
    if kind == "spectral_norm":
        return "spectral_norm sets its scale (largest singular value 1)"
    if kind == "orthogonal":
        return "orthogonal parametrization sets its scale"
    return None


def _siren(lf: LayerFacts, std: float, n: int) -> str | None:
    """SIREN (Sitzmann et al. 2020): sin(w0·(Wx + b)); first layer U(-1/fan_in, 1/fan_in), later
    layers U(-sqrt(6/fan_in)/w0, sqrt(6/fan_in)/w0). A uniform U(-a, a) has std a/sqrt(3)."""
    w0 = lf.pre_scale
    if lf.reads_input and _close(std, 1.0 / (lf.fan_in * math.sqrt(3.0)), n):
        return "SIREN first layer U(-1/fan_in, 1/fan_in)"
    if _close(std, math.sqrt(6.0 / lf.fan_in) / w0 / math.sqrt(3.0), n):
        return f"SIREN hidden layer U(±sqrt(6/fan_in)/{w0:g})"
    return None
