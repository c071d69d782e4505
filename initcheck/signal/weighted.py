"""A weight layer's output channels from its input's, with the actual weight tensor (channels.py):
what the forward sweep carries on, and what the report's raw rms reads."""

from __future__ import annotations

import torch
from torch import nn

from ..facts import LayerFacts, received_weight
from ..graph import Op, OpKind
from ..ops.layers import RECURRENT, Layout, WeightRole, matrix_batch
from ..stats import TensorStats
from .channels import Channels, plain, through_weight, uniform
from .moments import Moment
from .passes import Pass


def layer_channels(p: Pass, lf: LayerFacts, w: TensorStats, x: Moment) -> Channels | None:
    """The layer's output channels, bias aside; None unless `w` is the actual weight's statistics
    (a scheme's weights have no rows to sum) of a conv or linear layer whose input width is known."""
    if w is not lf.stats or lf.layout not in (Layout.CONV, Layout.OUT_IN) or lf.role is WeightRole.EMBEDDING:
        return None
    if matrix_batch(lf.layout, len(lf.shape)):
        return None
    op = p.index.ops[lf.op]
    mod = p.index.module(op) if op.kind is OpKind.MODULE else None
    if isinstance(mod, (nn.MultiheadAttention, *RECURRENT)) or len(p.index.data_operands(op)) > 1 and lf.layout is Layout.OUT_IN \
            and op.target in ("matmul", "bmm"):
        return None
    try:
        # the tensor the op receives: a weight standardized in forward (timm's ScaledStdConv2d) as rebuilt
        t: torch.Tensor = received_weight(p.index, op, p.model.get_parameter(lf.qualname))
    except AttributeError:
        return None
    if t.ndim < 2 or not plain(t) or tuple(t.shape) != tuple(lf.shape):
        return None
    conv = lf.layout is Layout.CONV
    chan = x.chan
    if chan is not None and ((lf.normalized and chan.alike) or not bool(chan.mean.abs().max() > 0)):
        chan = None  # as good as the summary (below)
    if chan is None:
        # every channel alike (after a norm and its activation, or the model's input): one mean and
        # variance. The summary model with the actual row sums is then exact for this layer; the
        # vectors only matter downstream, and a norm right after resets them: not worth a read
        # centred inputs (tanh, the model's inputs) have no channel means to follow either. The
        # vectors index dim 1 (NCHW: what BatchNorm, concatenation and pooling read): a conv starts
        # them; a linear layer, whose features are the last dim, only carries them from a flattened map
        if x.between > 1e-9 * max(x.second, 1e-30) or lf.normalized or x.mean == 0.0 or not conv:
            return None
        groups = int(getattr(mod, "groups", 1) or 1) if conv else 1
        chan = uniform(int(t.shape[1]) * groups, x.mean, x.var)
    out = through_weight(t, chan, conv)
    f = padding_fraction(p, op) if out is not None and conv else 1.0
    if out is None or f == 1.0:
        return out
    # a border position sums a part of each row: its square is f of the whole's on average (a random
    # row's partial sums), while the mean over positions is f of it; the rest varies with the position
    return Channels(out.mean * f, out.var * f + out.mean * out.mean * (f - f * f))


def raw_second(p: Pass, lf: LayerFacts, w: TensorStats, x: Moment) -> float | None:
    """E[y^2] of the layer's raw output from its input's channels, or None without them."""
    if x.chan is None:
        return None
    c = layer_channels(p, lf, w, x)
    return None if c is None else c.second


def padding_fraction(p: Pass, op: Op) -> float:
    """The share of a zero-padded conv's taps that land inside its input, averaged over the output
    positions (1 without shapes, or without padding). A 7x7 depthwise conv on a 4x4 map sees 16 of
    its 49 taps at best: the rest read zeros, and E[y^2] falls by that share."""
    mod = p.index.module(op) if op.kind is OpKind.MODULE else None
    if not isinstance(mod, nn.modules.conv._ConvNd) or isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return 1.0
    data = p.index.data_operands(op)
    shape = p.index.ops[data[0]].shape if data else None
    dims = len(mod.kernel_size)
    if shape is None or len(shape) < dims or mod.padding_mode != "zeros":
        return 1.0
    if isinstance(mod.padding, str):
        pads = tuple((d * (k - 1)) // 2 for d, k in zip(mod.dilation, mod.kernel_size)) if mod.padding == "same" else (0,) * dims
    else:
        pads = tuple(int(v) for v in mod.padding)
    f = 1.0
    for size, k, s, pad, d in zip(shape[-dims:], mod.kernel_size, mod.stride, pads, mod.dilation):
        if pad == 0:
            continue
        outs = (size + 2 * pad - d * (k - 1) - 1) // s + 1
        if outs <= 0:
            return 1.0
        inside = sum(1 for o in range(outs) for t in range(k) if 0 <= o * s - pad + t * d < size)
        f *= inside / (outs * k)
    return f
