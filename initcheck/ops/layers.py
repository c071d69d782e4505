"""Which parameters are weights, and how each is laid out: the registry of weight-bearing ops."""

from __future__ import annotations

import enum
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..graph import Op, OpKind


class Layout(str, enum.Enum):
    """How a weight tensor is laid out for the op that reads it (theory.fans counts fans from it)."""

    OUT_IN = "out_in"  # nn.Linear, F.linear: [out, in]
    IN_OUT = "in_out"  # x @ W, Hugging Face Conv1D: [in, out]
    CONV = "conv"  # [out, in/groups, *k]
    CONV_TRANSPOSE = "conv_transpose"  # [in, out/groups, *k]
    BILINEAR = "bilinear"  # [out, in1, in2]
    EMBEDDING = "embedding"  # [num, dim]: a lookup
    PACKED = "packed"  # [blocks*out, in]: q/k/v or RNN gates


def matrix_batch(layout: Layout, ndim: int) -> bool:
    """A matrix weight of more than two dims: a batch of [out, in] (or [in, out]) matrices in its
    last two, as a matmul broadcasts them (CapsNet's W @ u); its rows are along no one dim."""
    return layout in (Layout.OUT_IN, Layout.IN_OUT) and ndim > 2


class WeightRole(str, enum.Enum):
    """What a weight does: a plain weight, an RNN's hidden-to-hidden matrix, or a lookup table."""

    WEIGHT = "weight"
    RECURRENT = "recurrent"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class WeightUse:
    """How a layer uses one weight tensor.

    param: attribute path relative to the module ("weight", "out_proj.weight", "weight_hh_l0");
    layout: see theory.fans; role: "weight", "recurrent" or "embedding"; blocks: packed blocks
    (3 for q/k/v, 4 for LSTM gates); activation: the activation applied inside the layer, where the
    layer has one of its own (RNN gates).
    """

    param: str
    layout: Layout
    role: WeightRole = WeightRole.WEIGHT
    groups: int = 1
    stride: tuple[int, ...] = ()
    blocks: int = 1
    activation: str | None = None
    stacked: bool = False  # one slice of a stacked [n, out, in] parameter (HF MoE experts)


_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def module_weights(module: nn.Module) -> tuple[WeightUse, ...]:
    """The weights of a leaf module, with their layouts; () for modules that hold none."""
    if isinstance(module, (nn.Linear,)) or type(module).__name__ == "NonDynamicallyQuantizableLinear":
        return (WeightUse("weight", Layout.OUT_IN),)
    if isinstance(module, nn.Bilinear):
        return (WeightUse("weight", Layout.BILINEAR),)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return (WeightUse("weight", Layout.CONV_TRANSPOSE, groups=module.groups, stride=tuple(module.stride)),)
    if isinstance(module, nn.modules.conv._ConvNd):
        return (WeightUse("weight", Layout.CONV, groups=module.groups),)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return (WeightUse("weight", Layout.EMBEDDING, role=WeightRole.EMBEDDING),)
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            uses = [WeightUse("in_proj_weight", Layout.PACKED, blocks=3, activation="identity")]
        else:
            uses = [WeightUse(f"{p}_proj_weight", Layout.OUT_IN, activation="identity") for p in "qkv"]
        return (*uses, WeightUse("out_proj.weight", Layout.OUT_IN))
    if isinstance(module, nn.RNNBase):
        gates = _RNN_GATES.get(module.mode.split("_")[0], 1)
        act = "relu" if module.mode == "RNN_RELU" else "tanh"
        uses = []
        for name, _ in module.named_parameters(recurse=False):
            if re.match(r"weight_ih_l\d+", name):
                uses.append(WeightUse(name, Layout.PACKED, blocks=gates, activation=act))
            elif re.match(r"weight_hh_l\d+", name):
                uses.append(WeightUse(name, Layout.PACKED, role=WeightRole.RECURRENT, blocks=gates, activation=act))
            elif re.match(r"weight_hr_l\d+", name):
                uses.append(WeightUse(name, Layout.OUT_IN, activation="identity"))
        return tuple(uses)
    if isinstance(module, nn.RNNCellBase):  # one step of an LSTM/GRU/RNN, called in a loop
        gates = {nn.LSTMCell: 4, nn.GRUCell: 3}.get(type(module), 1)
        act = "relu" if getattr(module, "nonlinearity", "tanh") == "relu" else "tanh"
        return (WeightUse("weight_ih", Layout.PACKED, blocks=gates, activation=act),
                WeightUse("weight_hh", Layout.PACKED, role=WeightRole.RECURRENT, blocks=gates, activation=act))
    if is_hf_conv1d(module):
        return (WeightUse("weight", Layout.IN_OUT),)  # Hugging Face GPT-2's transposed Linear
    return ()


RECURRENT = (nn.RNNBase, nn.RNNCellBase)  # modules whose weights the signal model runs as a recurrence


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's Conv1D (GPT-2): a Linear whose weight is stored [in, out]; recognized
    without importing transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def is_leaf(module: nn.Module) -> bool:
    """Leaf modules are traced as one op: torch.nn's childless modules, weight layers, norms, and
    parameter-free library activations. Everything else is traced through."""
    if module_weights(module):
        # a torch.nn layer subclassed to rebuild its weight in forward (NF-Net's weight * gain) with
        # parameters of its own: traced through, so that those parameters are followed to the weight
        return not _rebuilds_weight(module)
    from .activations import is_norm_module

    if is_norm_module(module):
        return True
    children = next(module.children(), None) is not None
    if children:
        return False
    if type(module).__module__.startswith("torch.nn"):
        return True
    # A childless, parameter-free module (HF's GELUActivation, a user's Swish) stays one op so that
    # it can be identified numerically; one with parameters is traced through to its F.* calls, and
    # so is one that is not elementwise (wav2vec 2.0's SamePadLayer slices: its ops are seen).
    if next(module.parameters(recurse=False), None) is not None or next(module.buffers(recurse=False), None) is not None:
        return False
    known = _ELEMENTWISE.get(module)
    if known is None:
        from .activations import match_elementwise

        known = _ELEMENTWISE[module] = match_elementwise(module) is not None
    return known


_ELEMENTWISE: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _rebuilds_weight(module: nn.Module) -> bool:
    base = next((c for c in type(module).__mro__ if c.__module__.startswith("torch.nn")), nn.Module)
    if base is nn.Module or getattr(type(module), "forward", None) is getattr(base, "forward", None):
        return False
    own = {u.param for u in module_weights(module)} | {"bias"}
    return any(name not in own for name, _ in module.named_parameters(recurse=False))


# Function ops that read a weight parameter: canonical name -> (weight argument keys, layout,
# groups keys, stride keys, stacked: the weight holds one matrix per group, as HF MoE experts).
FUNCTION_WEIGHTS: dict[str, tuple[tuple[str, ...], Layout, tuple[str, ...], tuple[str, ...], bool]] = {
    "linear": (("1", "weight"), Layout.OUT_IN, (), (), False),
    "conv1d": (("1", "weight"), Layout.CONV, ("6", "groups"), (), False),
    "conv2d": (("1", "weight"), Layout.CONV, ("6", "groups"), (), False),
    "conv3d": (("1", "weight"), Layout.CONV, ("6", "groups"), (), False),
    "conv_transpose1d": (("1", "weight"), Layout.CONV_TRANSPOSE, ("6", "groups"), ("3", "stride"), False),
    "conv_transpose2d": (("1", "weight"), Layout.CONV_TRANSPOSE, ("6", "groups"), ("3", "stride"), False),
    "conv_transpose3d": (("1", "weight"), Layout.CONV_TRANSPOSE, ("6", "groups"), ("3", "stride"), False),
    "bilinear": (("2", "weight"), Layout.BILINEAR, (), (), False),
    # torchvision's deformable conv (DeformConv2d is traced through to it): (input, weight, offset,
    # mask, bias, stride, padding, dilation, weight groups, ...), a conv read at shifted taps
    "deform_conv2d": (("1", "weight"), Layout.CONV, ("11", "n_weight_grps"), (), False),
    "embedding": (("1", "weight"), Layout.EMBEDDING, (), (), False),
    "addmm": (("2", "mat2"), Layout.IN_OUT, (), (), False),
    "matmul": (("1", "other"), Layout.IN_OUT, (), (), False),
    "rmatmul": (("0",), Layout.IN_OUT, (), (), False),
    "_grouped_mm": (("1", "mat_b"), Layout.IN_OUT, (), (), True),  # HF MoE experts: x @ W[e] per expert
    "grouped_mm": (("1", "mat_b"), Layout.IN_OUT, (), (), True),
}

# Ops through which a weight reaches its consumer: slices of a stacked parameter (W[expert]) and
# transposes (W.t(), W.transpose(-2, -1)), which swap its layout.
# the weight's own values seen another way: a view, a copy, a change of dtype (EDM2's w.float())
_VIEWS = frozenset({"getitem", "select", "transpose", "t", "T", "mT", "contiguous", "to", "detach", "clone", "float",
                    "double", "half", "bfloat16"})
_FLIPS = frozenset({"transpose", "t", "T", "mT"})
_SLICES = frozenset({"getitem", "select"})
_SWAP = {Layout.OUT_IN: Layout.IN_OUT, Layout.IN_OUT: Layout.OUT_IN}


# Elementwise ops that rebuild a weight from parameters inside forward (NF-Net's weight * gain,
# weight standardization's (w - mean) / std, EDM2's w / ||w||, F.normalize(w)): the result is read
# as its base weight.
_REBUILDS = frozenset({"mul", "div", "add", "sub", "neg", "normalize"})
# Weight standardization written as a norm over the weight itself (timm's ScaledStdConv2d:
# batch_norm(w.reshape(1, out, -1), weight=gain * scale).reshape_as(w)): followed only where the
# shapes are known, and a step whose shape is not the weight's own is a view no layout reads.
_RESHAPED_REBUILDS = frozenset({"reshape", "view", "reshape_as", "view_as", "flatten", "batch_norm", "layer_norm",
                                "group_norm", "instance_norm"})


def weight_views(ops: Sequence[Op], param_ops: set[int]) -> dict[int, tuple[int, bool, bool]]:
    """op index -> (param op index, transposed, sliced) for parameters, their views, and weights
    rebuilt from parameters alone by elementwise ops (followed back to their base weight)."""
    views = {i: (i, False, False) for i in param_ops}
    derived = set(param_ops)  # computed from parameters (and constants) alone
    for op in ops:
        if op.kind is not OpKind.FUNCTION or not op.inputs:
            continue
        if op.target in _VIEWS and op.inputs[0] in views:
            p, flipped, sliced = views[op.inputs[0]]
            views[op.index] = (p, flipped ^ (op.target in _FLIPS), sliced or op.target in _SLICES)
        elif op.target in _REBUILDS and all(i in derived for i in op.inputs):
            base = _base_weight(ops, op, [i for i in op.inputs if i in views])
            if base is not None:
                views[op.index] = views[base]
        elif op.target in _RESHAPED_REBUILDS and op.shape is not None and all(i in derived for i in op.inputs):
            base = _base_weight(ops, op, [i for i in op.inputs if i in views])
            if base is not None:
                p, flipped, sliced = views[base]
                views[op.index] = (p, flipped, sliced or op.shape != ops[p].shape)
        if all(i in derived for i in op.inputs):
            derived.add(op.index)
    return views


def _base_weight(ops: Sequence[Op], op: Op, candidates: list[int]) -> int | None:
    """Which operand of a rebuild is the weight: the one of the result's shape (a gain
    [out, 1, 1, 1] broadcasts), else the one named weight, else the first."""
    if not candidates:
        return None
    same = [i for i in candidates if op.shape is not None and ops[i].shape == op.shape]
    named = [i for i in candidates if ops[i].target.endswith("weight")]
    return (same or named or candidates)[0]


def function_weight(op: Op, views: Mapping[int, tuple[int, bool, bool]]) -> tuple[int, WeightUse] | None:
    """(param op index, use) when `op` is a function that reads a weight parameter, directly or
    through a view of it (see weight_views)."""
    entry = FUNCTION_WEIGHTS.get(op.target)
    if entry is not None:
        keys, layout, group_keys, stride_keys, stacked = entry
        idx = op.operand(*keys)
        if idx is not None and idx in views:
            param, flipped, sliced = views[idx]
            if (flipped or sliced) and layout not in _SWAP:
                return None  # a conv or embedding weight seen through a view: not a layout we know
            if flipped:
                layout = _SWAP[layout]
            groups = op.scalar(*group_keys, default=1) if group_keys else 1
            stride = op.scalar(*stride_keys, default=1) if stride_keys else 1
            stride = tuple(stride) if isinstance(stride, (tuple, list)) else (int(stride),)
            role = WeightRole.EMBEDDING if layout is Layout.EMBEDDING else WeightRole.WEIGHT
            return param, WeightUse("", layout, role=role, groups=int(groups), stride=stride, stacked=stacked or sliced)
    if op.target == "einsum":
        return _einsum_weight(op, views)
    if op.target == "matmul":
        # W @ x with the weight first: [out, in] applied from the left.
        idx = op.operand("0", "input")
        if idx is not None and idx in views:
            param, flipped, sliced = views[idx]
            return param, WeightUse("", Layout.IN_OUT if flipped else Layout.OUT_IN, stacked=sliced)
    return None


def _einsum_weight(op: Op, views: Mapping[int, tuple[int, bool, bool]]) -> tuple[int, WeightUse] | None:
    """The weight an einsum contracts with the signal, when its subscripts say a layout: two
    letters, one summed against the other operands ("in") and one kept in the output ("out"), after
    an optional leading letter shared by all (a stack: per-head or per-expert matrices)."""
    eq = op.scalar("0", "equation")
    if not isinstance(eq, str) or "->" not in eq or "." in eq:
        return None
    lhs, out = eq.replace(" ", "").split("->")
    subs = lhs.split(",")
    for k, letters in enumerate(subs):
        idx = op.operand(str(k + 1))
        if idx is None or idx not in views:
            continue
        others = set("".join(subs[:k] + subs[k + 1:]))
        stacked = len(letters) == 3 and letters[0] in others and letters[0] in out
        pair = letters[1:] if stacked else letters
        if len(pair) != 2 or len(others) == 0:
            return None
        summed = [c in others and c not in out for c in pair]
        kept = [c in out and c not in others for c in pair]
        if summed == [True, False] and kept == [False, True]:
            layout = Layout.IN_OUT
        elif summed == [False, True] and kept == [True, False]:
            layout = Layout.OUT_IN
        else:
            return None
        param, flipped, sliced = views[idx]
        if flipped:
            layout = _SWAP[layout]
        return param, WeightUse("", layout, stacked=stacked or sliced)
    return None


def get_path(module: nn.Module, path: str) -> Any:
    """The attribute at a dotted path inside a module ("out_proj.weight"), or None."""
    obj: Any = module
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj
