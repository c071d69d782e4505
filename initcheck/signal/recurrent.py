"""Recurrent layers (RNN, LSTM, GRU): the hidden state's and the gates' second moments from the
actual weights, by a fixed point over the recurrence."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..facts import LayerFacts
from ..stats import TensorStats
from .moments import Moment, activation_moments
from .passes import Pass


def _layers(mod: nn.RNNBase | nn.RNNCellBase) -> tuple[str, list[str]]:
    """(the recurrence's mode, the parameter suffix of each layer): an RNN's "_l0", "_l1", ...;
    a cell (LSTMCell, GRUCell, RNNCell: one step, called in a loop) is one layer with none."""
    if isinstance(mod, nn.RNNBase):
        return mod.mode, [f"_l{i}" for i in range(mod.num_layers)]
    mode = "LSTM" if isinstance(mod, nn.LSTMCell) else "GRU" if isinstance(mod, nn.GRUCell) else None
    return mode or ("RNN_RELU" if getattr(mod, "nonlinearity", "tanh") == "relu" else "RNN_TANH"), [""]


def through_rnn(p: Pass, mod: nn.RNNBase | nn.RNNCellBase, weights: Mapping[str, TensorStats], lf: LayerFacts,
                 x: Moment) -> tuple[Moment, Moment]:
    """(the hidden state, the gates' pre-activation) of an RNN/LSTM/GRU (or one of their cells,
    whose state, carried by the loop that calls it, settles at the same fixed point) from its
    actual weights.

    Per layer, the gate pre-activation sums I inputs, H recurrent terms and two biases:
    E[z^2] = I E[w_ih^2] E[x^2] + H E[w_hh^2] E[h^2] + E[b_ih^2] + E[b_hh^2], and the state
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
        b2 = sum(s.second for s in (p.tensor(getattr(mod, f"bias_ih{layer}", None)),
                                     p.tensor(getattr(mod, f"bias_hh{layer}", None))) if s is not None)
        act = "relu" if mode == "RNN_RELU" else "tanh"
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
        gate = Moment(0.0, z2, n_in * ih.second * signal)
        signal = min(m.slope2 * n_in * ih.second * signal, h2)
        x2 = h2
    return Moment(0.0, h2, signal), gate
