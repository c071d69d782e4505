"""Forward and backward statistics on a real batch, beside the static prediction.

Runs on a copy of the model (on CUDA when there is one), so the user's model, its gradients and
its batch-norm statistics stay as they were. Every statistic is reduced on the device; the host
receives one small tensor at the end, not an activation per layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import devices, theory
from . import histogram as hist
from .api import Analysis, analyze, run_forward, with_probe
from .compiled import original
from .errors import ForwardError
from .inputs import ArgsKwargs
from .memory import Activity, guard
from .modes import Mode
from .ops.layers import RECURRENT, module_weights
from .records import ProbeLayer
from .report import Report
from .trace import tensors_in

# |pre-activation| beyond which a saturating unit's slope is under 2% of its peak
SATURATION = {"tanh": 2.65, "sigmoid": 4.6, "softsign": 6.0, "hardtanh": 1.0, "hardsigmoid": 3.0}
DEAD_BELOW = {"relu": 0.0, "relu6": 0.0}
# "never positive" needs enough samples per unit: a live unit with a centered pre-activation is
# negative on all of n samples with probability 2^-n (a squeeze-excitation layer on a batch of 2
# sees 2 samples per unit, and half its units would look dead)
DEAD_MIN_SAMPLES = 32
PROBE_BATCH = 32  # the synthetic batch, when no example inputs are given


def _forward(first: Analysis, work: nn.Module, args: Any, kwargs: Any) -> Any:
    """The copy's forward; a batch too small for training's BatchNorm is said as such."""
    try:
        return run_forward(first.report.target, work, args, kwargs)
    except ForwardError as e:
        if first.context.mode is Mode.TRAIN and "more than 1 value per channel when training" in str(e.__cause__):
            raise ForwardError(first.report.target, "training's forward needs more than one value per BatchNorm channel "
                               "and the example input has a batch of 1",
                               "pass a batch of 2 or more, or --mode eval (mode='eval') to probe the eval forward") from e
        raise


def probe(model: nn.Module, example_inputs: Any = None, *, device: str = "auto", target: str | None = None,
          max_memory: int | None = None, **rule_options: Any) -> Report:
    """diagnose() plus measured statistics and the probe findings (IC3xx).

    rule_options: select, ignore, per_layer_ignore, selection, thresholds, sources and mode, as for
    diagnose(); the forward runs in that mode (train by default), on the copy. The pipeline runs once; the probe's forward runs on a copy of the model, and the
    model itself comes out bit for bit as it went in (preserve.py), whatever its forward writes.
    max_memory: bytes the probe may take (None: half the available memory, 0: no limit); a run
    estimated over it is refused before anything is allocated (memory.py)."""
    model = original(model)  # type: ignore[assignment]  # a torch.compile'd model: the module it wraps
    guard(model, example_inputs, activity=Activity.PROBE, max_memory=max_memory, device=device, target=target)
    first = analyze(model, example_inputs, target=target, **rule_options)
    # a guessed input is judged before the forward that tries it
    args, kwargs = first.inputs(example_inputs, batch=PROBE_BATCH, admit=lambda a, k: guard(
        model, ArgsKwargs(a, k), activity=Activity.PROBE, max_memory=max_memory, device=device, target=target))
    dev = devices.resolve(device)
    predicted = {lr.qualname: lr.predicted_rms for lr in first.report.layers}
    acts = {lf.qualname: lf.activation for lf in first.layers}
    act_fns = {lf.qualname: theory.activation_fn(lf.activation, lf.activation_param) for lf in first.layers}
    work = devices.full_copy(model).to(dev)
    work.train(first.context.mode is Mode.TRAIN)  # the forward the prediction judged (on the copy)
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(True)
    watched = {name: m for name, m in work.named_modules() if module_weights(m)}
    weights = {lf.qualname: (lf.name, _trained(work, lf.qualname)) for lf in first.layers
               if lf.name in watched and lf.param == module_weights(watched[lf.name])[0].param}
    records: dict[str, torch.Tensor] = {}
    grad_rows: dict[str, torch.Tensor] = {}  # the gradient reaching each layer's output, binned
    # a cell (LSTMCell, ...) is called once per step and predicted at its state's fixed point: its
    # gates' pre-activation is measured over every step, (sum of squares, count)
    steps: dict[str, tuple[torch.Tensor, int]] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        y = out[0] if isinstance(out, tuple) else out
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            return
        name = names[module]
        if isinstance(module, nn.RNNCellBase) and (z := _recurrent_preact(module, inputs, out)) is not None:
            total, count = steps.get(name, (torch.zeros((), device=z.device, dtype=torch.float64), 0))
            steps[name] = (total + z.double().pow(2).sum(), count + z.numel())
        if name in records:
            return
        z = y.detach().float()
        act = acts.get(name, "identity")
        flat = z.reshape(-1, z.shape[-1]) if z.dim() > 1 else z.reshape(-1, 1)
        if isinstance(module, nn.modules.conv._ConvNd):
            flat = z.transpose(0, 1).reshape(z.shape[1], -1).T
        judged = act in DEAD_BELOW and flat.shape[0] >= DEAD_MIN_SAMPLES
        dead = (flat <= DEAD_BELOW[act]).all(0).float().mean() if judged else torch.tensor(float("nan"), device=z.device)
        knee = SATURATION.get(act)
        sat = (z.abs() > knee).float().mean() if knee else torch.tensor(float("nan"), device=z.device)
        raw = _recurrent_preact(module, inputs, out) if isinstance(module, RECURRENT) else _without_bias(module, z)
        fn = act_fns.get(name)
        kept = hist.sample(z)  # the activation is elementwise: f of a sample is a sample of f(z)
        shown = hist.linear_row(fn(kept) if fn is not None else kept)
        raw_rms = raw.pow(2).mean().sqrt() if raw is not None else torch.tensor(float("nan"), device=z.device)
        records[name] = torch.cat([torch.stack([z.mean(), z.std(), dead, sat, raw_rms]).double(), shown])
        if y.requires_grad:
            def keep(g: torch.Tensor) -> None:
                grad_rows.setdefault(name, hist.log_row(hist.sample(g)))  # a shared layer: its first call's

            y.register_hook(keep)  # type: ignore[no-untyped-call]

    names = {}
    handles = []
    for qual, (mname, _) in weights.items():
        m = watched[mname]
        names[m] = qual
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            out = _forward(first, work, devices.move(args, dev), devices.move(kwargs, dev))
            loss = sum(t.float().pow(2).mean() for t in tensors_in(out) if t.is_floating_point())
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                torch.autograd.backward(loss)
    finally:
        for h in handles:
            h.remove()
    for q, (total, count) in steps.items():
        records[q][4] = (total / max(count, 1)).sqrt()
    order = [q for q in weights if q in records]
    rows = []
    for q in order:
        w = weights[q][1]
        g = w.grad if w.grad is not None else torch.zeros_like(w)
        norms = torch.stack([g.float().norm(), w.detach().float().norm()]).double()
        rows.append(torch.cat([norms, records[q], grad_rows.get(q, hist.missing(hist.Scale.LOG10_ABS, g.device))]))
    values = torch.stack(rows).cpu().tolist() if rows else []  # the one host transfer
    layers = tuple(_layer(q, acts.get(q, "identity"), predicted.get(q), v) for q, v in zip(order, values))
    # the pipeline ran once: the probe's measurements only add the IC3xx rules' input
    return with_probe(first, layers).report


def _layer(name: str, activation: str, predicted: float | None, row: list[float]) -> ProbeLayer:
    """A ProbeLayer from its row: [||grad||, ||W||, mean, std, dead, saturated, raw rms, the
    activations' histogram, the gradients' histogram]."""
    grad, weight, mean, std, dead, sat, raw_rms = row[:7]
    raw = None if math.isnan(raw_rms) else raw_rms
    split = 7 + hist.width(hist.Scale.LINEAR)
    acts, grads = row[7:split], row[split:]
    return ProbeLayer(name, activation, mean, std, predicted, _nan(dead), _nan(sat), grad,
                      grad / weight if weight > 0 else 0.0, raw, hist.from_row(hist.Scale.LINEAR, acts),
                      hist.from_row(hist.Scale.LOG10_ABS, grads))


def _nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def _trained(model: nn.Module, qualname: str) -> torch.Tensor:
    """The parameter that training updates for a weight: itself, or for a parametrized weight
    (weight_norm, spectral_norm: recomputed at each access, wav2vec 2.0's positional conv) the
    original its gradient reaches; for their older hook forms, the `weight_v` / `weight_orig` that
    the hook recomputes `weight` from before each forward."""
    try:
        return model.get_parameter(qualname)
    except AttributeError:
        owner, _, name = qualname.rpartition(".")
        plist = getattr(getattr(model.get_submodule(owner) if owner else model, "parametrizations", None), name, None)
        for attr in ("original", "original1", "original0"):  # weight_norm's v (original1) carries the direction
            found = getattr(plist, attr, None)
            if isinstance(found, nn.Parameter):
                return found
        module = model.get_submodule(owner) if owner else model
        for suffix in ("_v", "_orig"):  # torch.nn.utils.weight_norm / spectral_norm (hooks)
            found = module._parameters.get(name + suffix)
            if isinstance(found, nn.Parameter):
                return found
        raise


def _recurrent_preact(module: nn.Module, inputs: tuple[Any, ...], out: Any) -> torch.Tensor | None:
    """The gates' pre-activation (biases aside) that the static prediction of a recurrent layer
    describes, W_ih x_t + W_hh h_(t-1): rebuilt from a cell's input and state, or from a one-layer,
    one-direction RNN's input and output sequence (the states it went through). None where the
    module does not show it (stacked or bidirectional RNNs, packed sequences)."""
    with torch.no_grad():
        if isinstance(module, nn.RNNCellBase):
            x = inputs[0] if inputs else None
            state = inputs[1] if len(inputs) > 1 else None
            h = state[0] if isinstance(state, tuple) else state
            if not isinstance(x, torch.Tensor):
                return None
            z = nn.functional.linear(x, module.weight_ih)
            return z + nn.functional.linear(h, module.weight_hh) if isinstance(h, torch.Tensor) else z
        if not isinstance(module, nn.RNNBase) or module.num_layers != 1 or module.bidirectional or module.proj_size:
            return None
        x, y = (inputs[0] if inputs else None), (out[0] if isinstance(out, tuple) else out)
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() != 3:
            return None
        t = 1 if module.batch_first else 0
        given = inputs[1] if len(inputs) > 1 else None
        h0 = given[0] if isinstance(given, tuple) else given
        first = h0[0].unsqueeze(t) if isinstance(h0, torch.Tensor) else torch.zeros_like(y.narrow(t, 0, 1))
        previous = torch.cat([first, y.narrow(t, 0, y.shape[t] - 1)], t)
        return (nn.functional.linear(x, module.get_parameter("weight_ih_l0"))
                + nn.functional.linear(previous, module.get_parameter("weight_hh_l0")))


def _without_bias(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The layer's output less its bias (on the channel dimension for convolutions, the last for
    the rest): the raw weighted sum that the static prediction describes."""
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or z.dim() < 1:
        return z
    b = bias.detach().float()
    if isinstance(module, nn.modules.conv._ConvNd) and z.dim() >= 2 and z.shape[1] == b.numel():
        return z - b.reshape(1, -1, *([1] * (z.dim() - 2)))
    if z.shape[-1] == b.numel():
        return z - b
    return z
