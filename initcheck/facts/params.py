"""Every parameter of the model, classified: weights (judged per layer), norm scales and shifts,
biases, tokens and position tables, scales, parametrization originals, others. Each gets its own
expectation, or says why it is not judged: nothing of the model goes unreported."""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..frozen import built
from ..ops.activations import is_norm_module
from ..ops.parametrized import is_original
from ..stats import TensorStats, tensor_stats
from . import LayerFacts, canonical


class ParamKind(str, enum.Enum):
    WEIGHT = "weight"  # a fan weight: judged in the layer table
    NORM_WEIGHT = "norm-weight"  # a normalization's scale: expected 1 (0 at a residual branch end)
    NORM_BIAS = "norm-bias"  # a normalization's shift: expected 0
    BIAS = "bias"  # a layer's bias: expected small
    TOKEN = "token"  # cls / distillation / mask / register tokens
    POSITION = "position"  # position embeddings and relative-position bias tables
    SCALE = "scale"  # layer scales, gains, temperatures, gates: a few values
    PARAMETRIZED = "parametrized"  # the original of a parametrization: judged through the effective weight
    UNUSED_WEIGHT = "unused-weight"  # a weight-shaped tensor no traced op read (IC001 says so)
    OTHER = "other"


@dataclass(frozen=True)
class ParamFacts:
    name: str  # canonical name, as named_parameters() lists it
    kind: ParamKind
    shape: tuple[int, ...]
    stats: TensorStats | None
    note: str  # how it is judged, or why it is not
    residual_norm: bool = False  # a norm scale that ends a residual branch (zero-γ is a convention there)
    # an embedding's padding_idx and the rms of that row (0 as nn.Embedding draws it); None: no padding row
    padding: tuple[int, float] | None = None

    @property
    def std(self) -> float | None:
        return None if self.stats is None else self.stats.std

    @property
    def mean(self) -> float | None:
        return None if self.stats is None else self.stats.mean


_RECURRENT_BIAS = re.compile(r"bias_(ih|hh)(_l\d+)?(_reverse)?")  # nn.LSTM/GRU/RNN and their cells
_TOKEN = re.compile(r"(^|[._])(cls|dist|mask|reg|register|query)?_?tokens?($|[._])")
_POSITION = re.compile(r"pos(ition)?(al)?_?(emb|embed|embedding|encoding|bias)|relative_position|rel_pos|absolute_pos")
_SCALE = re.compile(r"(^|[._])(gamma|ls\d?|layer_?scale|scale|alpha|gain|gate|temperature|logit_scale|beta|skipinit_gain)(\d*)($|[._])")


def classify(model: nn.Module, layers: tuple[LayerFacts, ...], unreached: tuple[str, ...] = (), *,
             named: Sequence[tuple[str, torch.Tensor]] | None = None,
             modules: Mapping[str, nn.Module] | None = None,
             learned: Collection[str] = ()) -> tuple[ParamFacts, ...]:
    """One ParamFacts per parameter tensor (tied ones once), in named_parameters() order. named,
    modules: the model's named_parameters(remove_duplicate=False) and a name -> module map, when
    the caller walked them already (api: one walk per analysis). learned: parameters the graph
    broadcasts over the batch (trace.learned_inputs): learned inputs, judged as tokens."""
    in_layers = {lf.qualname for lf in layers} | {a for lf in layers for a in lf.aliases}
    residual_norms = {lf.norm for lf in layers if lf.residual_end and lf.norm}
    unused = set(unreached)
    if modules is None:
        modules = dict(model.named_modules(remove_duplicate=False))  # one walk, not one per parameter
    out = []
    for name, p in (model.named_parameters() if named is None else canonical(named)):
        owner_name, _, attr = name.rpartition(".")
        owner = modules[owner_name] if owner_name in modules else model.get_submodule(owner_name)
        kind, note = _kind(name, attr, owner, p, in_layers, unused, learned)
        stats = tensor_stats(p) if not isinstance(p, nn.parameter.UninitializedParameter) else None
        shape = tuple(int(s) for s in p.shape) if not isinstance(p, nn.parameter.UninitializedParameter) else ()
        if kind is ParamKind.NORM_WEIGHT and stats is not None and stats.constant and stats.mean == 0.0 and _offset_scale(owner):
            kind, note = ParamKind.SCALE, "a norm that scales by (1 + weight) (Gemma): weight 0 is the identity"
        out.append(built(ParamFacts, {"name": name, "kind": kind, "shape": shape, "stats": stats, "note": note,  # frozen.py
                                      "residual_norm": kind is ParamKind.NORM_WEIGHT and owner_name in residual_norms,
                                      "padding": _padding_row(owner, attr, p)}))
    return tuple(out)


def _kind(name: str, attr: str, owner: nn.Module, p: torch.Tensor, in_layers: set[str],
          unused: set[str], learned: Collection[str] = ()) -> tuple[ParamKind, str]:
    if isinstance(p, nn.parameter.UninitializedParameter):
        return ParamKind.OTHER, "a lazy parameter with no shape yet: not judged (IC002)"
    if name in in_layers:
        return ParamKind.WEIGHT, "judged against the scheme its use calls for (layer table)"
    if isinstance(owner, torch.jit.ScriptModule):
        return ParamKind.OTHER, ("inside a TorchScript module: its ops are out of the trace's sight; checked to be "
                                 "finite and of a sane magnitude")
    if is_original(owner, attr):
        return ParamKind.PARAMETRIZED, "the original of a parametrization: judged through the effective weight"
    if name in learned and not is_norm_module(owner):
        return ParamKind.TOKEN, ("a learned input broadcast over the batch (latents, queries, a class token): "
                                 "checked to be finite and of a sane magnitude")
    if name in unused:
        return ParamKind.UNUSED_WEIGHT, "never read by the traced forward pass (IC001)"
    if is_norm_module(owner):
        if attr in ("weight", "scale", "gamma", "g"):
            return ParamKind.NORM_WEIGHT, "a normalization's scale: expected 1 (0 at a residual branch end)"
        if attr in ("bias", "beta", "shift"):
            return ParamKind.NORM_BIAS, "a normalization's shift: expected 0"
    if (attr.endswith("bias") or _RECURRENT_BIAS.fullmatch(attr)) and not _POSITION.search(name):
        return ParamKind.BIAS, "a bias: checked to be finite and of a sane magnitude"
    if _POSITION.search(name.lower()):
        return ParamKind.POSITION, "a position table: checked to be finite and of a sane magnitude"
    if _TOKEN.search(name.lower()):
        return ParamKind.TOKEN, "a learned token: checked to be finite and of a sane magnitude"
    if p.numel() <= 4096 and _SCALE.search(name.lower()):
        return ParamKind.SCALE, "a scale or gate: checked to be finite and of a sane magnitude"
    return ParamKind.OTHER, "no scale convention to compare with: checked to be finite and of a sane magnitude"


def padding_index(owner: nn.Module, attr: str) -> int | None:
    """The padding_idx of an embedding's table (`attr` its weight); None for anything else."""
    idx = getattr(owner, "padding_idx", None)
    return idx if attr == "weight" and isinstance(owner, (nn.Embedding, nn.EmbeddingBag)) and isinstance(idx, int) else None


def _padding_row(owner: nn.Module, attr: str, p: torch.Tensor) -> tuple[int, float] | None:
    """(padding_idx, rms of that row) of an embedding's weight; None where there is no padding row
    or its values cannot be read (meta, lazy)."""
    idx = padding_index(owner, attr)
    if idx is None or p.is_meta or p.ndim != 2 or not -p.shape[0] <= idx < p.shape[0]:
        return None
    with torch.no_grad():
        row = p[idx].float()
        return int(idx), float(row.pow(2).mean().sqrt())


def _offset_scale(norm: nn.Module) -> bool:
    """Whether a norm whose weight is all zero still passes the signal (its output depends on its
    input): it scales by (1 + weight), as Gemma's RMSNorm. Asked of a copy, in eval mode, on a small input from its own generator: the
    user's module, its running statistics and the global RNG are untouched."""
    import copy

    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.is_meta:
        return False
    twin = copy.deepcopy(norm).eval()
    g = torch.Generator().manual_seed(0)
    n = weight.numel()
    for shape in ((4, n), (4, n, 3, 3), (4, n, 3), (4, n, 2, 2, 2)):
        try:
            with torch.no_grad():
                y1 = twin(torch.randn(shape, generator=g, dtype=weight.dtype))
                y2 = twin(torch.randn(shape, generator=g, dtype=weight.dtype))
        except Exception:  # the norm wants another layout: try the next
            continue
        # a true zero scale outputs its shift whatever the input; (1 + w) passes the input on
        return isinstance(y1, torch.Tensor) and isinstance(y2, torch.Tensor) and not torch.equal(y1, y2)
    return False
