"""Recurrent layers (RNN, LSTM, GRU): the hidden state's and the gates' second moments from the
actual weights, by a fixed point over the recurrence."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch
from torch import nn

from ..facts import LayerFacts
from ..stats import TensorStats
from .moments import Moment, activation_moments, plus
from .passes import Pass


def _layers(mod: nn.RNNBase | nn.RNNCellBase) -> tuple[str, list[str]]:
    """(the recurrence's mode, the parameter suffix of each layer): an RNN's "_l0", "_l1", ...;
    a cell (LSTMCell, GRUCell, RNNCell: one step, called in a loop) is one layer with none."""
    if isinstance(mod, nn.RNNBase):
        return mod.mode, [f"_l{i}" for i in range(mod.num_layers)]
    mode = "LSTM" if isinstance(mod, nn.LSTMCell) else "GRU" if isinstance(mod, nn.GRUCell) else None
    return mode or ("RNN_RELU" if getattr(mod, "nonlinearity", "tanh") == "relu" else "RNN_TANH"), [""]


@functools.lru_cache(maxsize=64)
def reflected_walk(steps: int) -> float:
    """E[h_t^2], averaged over t = 1..T, of h_t = relu(h_(t-1) + u_t), h_0 = 0, u_t ~ N(0, 1):
    t / 2 at t = 1, toward t for large t (0.88 t at t = 50). Sampled once per T from a generator of
    its own (16384 paths: about 1% off), the user's RNG untouched; past 1000 steps, its asymptote
    (T + 1) / 2 - 0.573 sqrt(T) (E[h_t^2] ~ t - 0.86 sqrt(t), fitted on the sampled walk)."""
    if steps > 1000:
        return (steps + 1) / 2.0 - 0.573 * math.sqrt(steps)
    g = torch.Generator().manual_seed(0)
    h = torch.zeros(16384, dtype=torch.float64)
    total = 0.0
    for _ in range(steps):
        h = torch.relu(h + torch.randn(h.shape, generator=g, dtype=torch.float64))
        total += float(h.pow(2).mean())
    return total / max(steps, 1)


def _accumulating_steps(p: Pass, lf: LayerFacts, mod: nn.RNNBase | nn.RNNCellBase, layer: str,
                        hh: TensorStats) -> int | None:
    """The sequence length T when a ReLU RNN's recurrent matrix is the identity (IRNN, Le et al.
    2015: the mean-field fixed point, which halves a random matrix's output at each ReLU, does not
    hold: the state accumulates its inputs); None otherwise (a cell called in a loop: T unknown)."""
    if not isinstance(mod, nn.RNNBase):
        return None
    w = getattr(mod, f"weight_hh{layer}", None)
    if not isinstance(w, torch.Tensor) or w.is_meta or w.ndim != 2 or w.shape[0] != w.shape[1] or p.tensor(w) is not hh:
        return None  # another init than the module's own (a scheme's, in the reference sweep)
    with torch.no_grad():
        off = w.detach().float() - torch.eye(w.shape[0])
        if float(off.pow(2).sum()) > 0.01 * w.shape[0]:
            return None
    x = p.index.ops[lf.op].operands
    src = p.index.ops[x[0][1]] if x else None
    if src is None or src.shape is None or len(src.shape) != 3:
        return None
    return int(src.shape[1] if mod.batch_first else src.shape[0])


def through_rnn(p: Pass, mod: nn.RNNBase | nn.RNNCellBase, weights: Mapping[str, TensorStats], lf: LayerFacts,
                 x: Moment) -> tuple[Moment, Moment]:
    """(the hidden state, the gates' pre-activation) of an RNN/LSTM/GRU (or one of their cells,
    whose state, carried by the loop that calls it, settles at the same fixed point) from its
    actual weights.

    Per layer, the gate pre-activation sums I inputs, H recurrent terms and two biases:
    E[z^2] = I E[w_ih^2] E[x^2] + H E[w_hh^2] E[h^2] + E[(b_ih + b_hh)^2], and the state
    settles at E[h^2] = E[tanh(z)^2] (times E[sigmoid(z)^2] for an LSTM's output gate): solved
    by fixed-point iteration. Layer l+1 reads layer l's state. `weights` gives each matrix's
    statistics by name (actual, or a scheme's)."""
    prefix = lf.qualname[: -len(lf.param)]
    x2, signal = x.second, x.signal
    gate = Moment(0.0, 0.0, 0.0)
    h2 = 0.0
    mode, layers = _layers(mod)
    for layer in layers:
        ih = weights.get(f"{prefix}weight_ih{layer}") or p.tensor(getattr(mod, f"weight_ih{layer}", None))
        hh = weights.get(f"{prefix}weight_hh{layer}") or p.tensor(getattr(mod, f"weight_hh{layer}", None))
        if ih is None or hh is None:
            break
        n_in, n_h = getattr(mod, f"weight_ih{layer}").shape[1], mod.hidden_size
        # the two biases add unit by unit, independent draws but for their means (a constant fill of
        # both, b_ih = b_hh = 5, gives 10 on every unit: E[b^2] = 100, not 25 + 25); the gates' mean
        # and the spread of their per-unit means are theirs, so what the weights drive is `within`
        b_ih, b_hh = (Moment(s.mean, s.second) if (s := p.tensor(getattr(mod, f"{n}{layer}", None))) is not None
                      else Moment(0.0, 0.0) for n in ("bias_ih", "bias_hh"))
        b = plus(b_ih, b_hh)
        b2 = b.second
        act = "relu" if mode == "RNN_RELU" else "tanh"
        steps = _accumulating_steps(p, lf, mod, layer, hh) if act == "relu" else None
        if steps is not None:
            # h_t = relu(h_(t-1) + u_t) with h >= 0: nothing is lost, the state is a reflected random
            # walk whose E[h_t^2] grows like t E[u^2] (from E[u^2] / 2 at the first step)
            u2 = n_in * ih.second * x2 + b2
            walk = reflected_walk(steps)
            h2 = u2 * walk
            gate = Moment(b.mean, u2 + h2, n_in * ih.second * signal, b.var)
            signal = min(n_in * ih.second * signal * walk, h2)
            x2 = h2
            continue
        h2 = 0.0
        for _ in range(30):
            z2 = n_in * ih.second * x2 + n_h * hh.second * h2 + b2
            m = activation_moments(act, None, 0.0, z2)
            out_gate = activation_moments("sigmoid", None, 0.0, z2).second if mode == "LSTM" else 1.0
            new = m.second * out_gate
            if abs(new - h2) <= 1e-9 * max(new, 1e-30):
                break
            h2 = new
        z2 = n_in * ih.second * x2 + n_h * hh.second * h2 + b2
        m = activation_moments(act, None, 0.0, z2)
        gate = Moment(b.mean, z2, n_in * ih.second * signal, b.var)
        signal = min(m.slope2 * n_in * ih.second * signal, h2)
        x2 = h2
    return Moment(0.0, h2, signal), gate
