"""Recurrent layers (RNN, LSTM, GRU): the hidden state's and the gates' second moments from the
actual weights, by a fixed point over the recurrence."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..facts import LayerFacts
from ..stats import TensorStats
from .moments import Moment, activation_moments
from .passes import Pass


def through_rnn(p: Pass, mod: nn.RNNBase, weights: Mapping[str, TensorStats], lf: LayerFacts,
                 x: Moment) -> tuple[Moment, Moment]:
    """(the hidden state, the gates' pre-activation) of an RNN/LSTM/GRU from its actual weights.

    Per layer, the gate pre-activation sums I inputs, H recurrent terms and two biases:
    E[z^2] = I E[w_ih^2] E[x^2] + H E[w_hh^2] E[h^2] + E[b_ih^2] + E[b_hh^2], and the state
    settles at E[h^2] = E[tanh(z)^2] (times E[sigmoid(z)^2] for an LSTM's output gate): solved
    by fixed-point iteration. Layer l+1 reads layer l's state. `weights` gives each matrix's
    statistics by name (actual, or a scheme's)."""
    prefix = lf.qualname[: -len(lf.param)]
    x2, signal = x.second, x.signal
    gate = Moment(0.0, 0.0, 0.0)
    h2 = 0.0
    for layer in range(mod.num_layers):
        ih = weights.get(f"{prefix}weight_ih_l{layer}") or p.tensor(getattr(mod, f"weight_ih_l{layer}", None))
        hh = weights.get(f"{prefix}weight_hh_l{layer}") or p.tensor(getattr(mod, f"weight_hh_l{layer}", None))
        if ih is None or hh is None:
            break
        n_in, n_h = getattr(mod, f"weight_ih_l{layer}").shape[1], mod.hidden_size
        b2 = sum(s.second for s in (p.tensor(getattr(mod, f"bias_ih_l{layer}", None)),
                                     p.tensor(getattr(mod, f"bias_hh_l{layer}", None))) if s is not None)
        act = "relu" if mod.mode == "RNN_RELU" else "tanh"
        h2 = 0.0
        for _ in range(30):
            z2 = n_in * ih.second * x2 + n_h * hh.second * h2 + b2
            m = activation_moments(act, None, 0.0, z2)
            out_gate = activation_moments("sigmoid", None, 0.0, z2).second if mod.mode == "LSTM" else 1.0
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
