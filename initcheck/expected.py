"""The input a model expects, read off the model itself when the user gave none: what it declares
(timm's pretrained_cfg, torchvision's documented sizes, image_size attributes, a Hugging Face or
whisper-style config, a position table beside a patch projection: patchgrid.py), then one input
per first layer, no smaller than the model's downsampling needs. Each proposal says where it came from, so a failure can name every shape tried."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ForwardError
from .ops.layers import module_weights
from .patchgrid import patch_grids
from .sizes import MAX_MEMORY_FRACTION, available_memory, human_bytes

Inputs = tuple[tuple[Any, ...], dict[str, Any]]

# Synthetic inputs come from their own generator with a seed of their own: drawn from seed 0, like
# a fix's weights with --seed 0, the first weight row would be a copy of the input.
INPUT_SEED = 0x1C0FFEE

# torchvision's documented input sizes where the model does not carry one (class name -> H = W).
DOCUMENTED_SIZES = {"Inception3": 299, "GoogLeNet": 224, "AlexNet": 224, "VGG": 224, "SqueezeNet": 224}
# (not `input_size`: an RNN's or an MLP's input_size is a feature count, not an image side)
SIZE_ATTRIBUTES = ("img_size", "image_size", "input_resolution")
CONFIG_ATTRIBUTES = ("config", "dims", "cfg", "args", "hparams")
FALLBACK_IMAGE = 224  # ImageNet's: what a vision model that declares nothing most often takes


def _randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """N(0, 1) values of this shape; a size the model declares can be anything (an image side of
    100,000), so a tensor over the default memory limit is not built: a meta placeholder of its
    shape stands in, which `too_large` names and no forward is run on."""
    free = available_memory()
    need = 4 * math.prod(shape)
    if free is not None and need > free * MAX_MEMORY_FRACTION:
        return torch.empty(shape, device="meta")
    return torch.randn(*shape, generator=generator)


def too_large(inputs: Inputs) -> str | None:
    """Why a proposal was not built (its placeholder's size), or None when it holds real tensors."""
    args, kwargs = inputs
    big = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.is_meta]
    if not big:
        return None
    need = sum(t.numel() * t.element_size() for t in big)
    return f"needs about {human_bytes(need)}, over half the available memory: not built"


@dataclass(frozen=True)
class Proposal:
    inputs: Inputs
    source: str  # "timm pretrained_cfg", "first layer conv1", ...


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(INPUT_SEED)


def candidates(model: nn.Module, first: str | None = None, batch: int = 2) -> Iterator[Inputs]:
    """Plausible inputs, most likely first (see `proposals`)."""
    for p in iter_proposals(model, first, batch):
        yield p.inputs


def proposals(model: nn.Module, first: str | None = None, batch: int = 2) -> list[Proposal]:
    """What the model declares first, then one input per distinct first-layer shape; duplicates
    left out. first: the qualified name of the weight module that runs first, when known."""
    return list(iter_proposals(model, first, batch))


def iter_proposals(model: nn.Module, first: str | None = None, batch: int = 2) -> Iterator[Proposal]:
    """`proposals`, each built only when asked for: a search stops at the first input that runs,
    and a DenseNet-169 has 120 distinct first-layer shapes (22 s of randn drawn up front)."""
    g = generator()
    hf = _hugging_face(model, g)
    if hf is not None:
        yield Proposal(_in_dtype(hf, _float_dtype(model)), "Hugging Face config")
        return
    yield from _unique(_proposed(model, first, batch, g))


def _proposed(model: nn.Module, first: str | None, batch: int, g: torch.Generator) -> Iterator[Proposal]:
    model_dtype = _float_dtype(model)
    for p in _declared(model, batch, g):
        yield Proposal(_in_dtype(p.inputs, model_dtype), p.source)
    modules = [(n, m) for n, m in model.named_modules() if module_weights(m)]
    if first is not None:
        modules.sort(key=lambda nm: nm[0] != first)
    drawn: dict[tuple[int, ...], torch.Tensor] = {}
    for name, m in modules:
        for made in _for_layer(model, m, batch, g, drawn):
            yield Proposal(_in_dtype(made, _float_dtype(m)), f"first layer {name or type(m).__name__}")


def _float_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the module's first floating-point parameter: what its inputs must be (a model
    cast to bfloat16 or float16 takes no float32 input)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _in_dtype(inputs: Inputs, dtype: torch.dtype | None) -> Inputs:
    """The proposal with its floating-point tensors in `dtype` (indices and masks as they are)."""
    if dtype is None or dtype == torch.float32:
        return inputs

    def cast(x: Any) -> Any:
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    args, kwargs = inputs
    return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}


def describe(inputs: Inputs) -> str:
    """`(2, 3, 32, 32) float32, mask=(2, 5) bool`: what a proposal was, for messages."""
    def one(x: Any) -> str:
        return f"({', '.join(map(str, x.shape))}) {str(x.dtype).removeprefix('torch.')}" if isinstance(x, torch.Tensor) else type(x).__name__
    args, kwargs = inputs
    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]) or "no input"


def first_accepted(target: str, model: nn.Module, tried: list[Proposal], run: Callable[[Inputs], Any]) -> Inputs:
    """The first proposal `run` accepts; else one ForwardError naming each shape and its error."""
    failures = []
    for p in tried:
        if (why := too_large(p.inputs)) is not None:
            failures.append(f"{describe(p.inputs)} [{p.source}]: {why}")
            continue
        try:
            run(p.inputs)
            return p.inputs
        except Exception as e:  # whatever the user's forward raises on a wrong guess
            failures.append(f"{describe(p.inputs)} [{p.source}]: {type(e).__name__}: {_line(e)}")
    if not failures:
        raise ForwardError(target, "cannot guess an input: the model declares no input size and has no first layer to read")
    raise ForwardError(target, "cannot guess an input; tried " + "; ".join(failures))


def min_spatial_size(model: nn.Module, dims: int = 2) -> tuple[int, int | None]:
    """(smallest input size the model's convs and pools accept, the exact size a Linear after
    them fixes or None), walking the spatial layers backwards in registration order."""
    spatial = [m for m in model.modules() if _spatial(m, dims)]
    if not spatial:
        return 1, None
    exact = _exact_end(model, spatial, dims)
    return _need(spatial, 1), (_need(spatial, exact) if exact else None)


def _need(spatial: list[nn.Module], end: int) -> int:
    need = end
    for m in reversed(spatial):
        if isinstance(m, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
            need = 1  # any size >= 1 reaches an adaptive pool's fixed output
            continue
        k, s, p, d = (_first(getattr(m, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation"))
        if isinstance(p, str):
            p = 0 if p == "valid" else (d * (k - 1)) // 2  # "same"
        need = max((need - 1) * s + d * (k - 1) + 1 - 2 * p, 1)
    return need


def _exact_end(model: nn.Module, spatial: list[nn.Module], dims: int) -> int | None:
    """A Linear right after the last conv (a flatten between them) fixes the final spatial size."""
    modules = list(model.modules())
    last = spatial[-1]
    if isinstance(last, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return None
    convs = [m for m in spatial if isinstance(m, nn.modules.conv._ConvNd)]
    after = [m for m in modules[modules.index(last) + 1:] if isinstance(m, nn.Linear)]
    if not convs or not after:
        return None
    q, rem = divmod(after[0].in_features, convs[-1].out_channels)
    side = round(q ** (1 / dims)) if q > 0 else 0
    return side if rem == 0 and side > 0 and side**dims == q else None


def _spatial(m: nn.Module, dims: int) -> bool:
    kinds = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
    if not isinstance(m, kinds) or isinstance(m, nn.modules.conv._ConvTransposeNd):
        return False
    return type(m).__name__.endswith(f"{dims}d")


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (tuple, list)) else v


def _channels(model: nn.Module, default: int = 3) -> int:
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    for attr in ("in_chans", "in_channels", "num_channels", "channels"):
        v = getattr(model, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


def _size_pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int) and v > 0:
        return v, v
    if isinstance(v, (tuple, list)) and len(v) >= 2 and all(isinstance(x, int) and x > 0 for x in v[-2:]):
        return int(v[-2]), int(v[-1])
    return None


def _declared(model: nn.Module, batch: int, g: torch.Generator) -> Iterator[Proposal]:
    """Inputs the model states it takes: timm's cfg, torchvision's docs, size attributes, configs."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)) and len(size) == 3:
            yield Proposal(((_randn(batch, *map(int, size), generator=g),), {}), f"timm {attr}['input_size']")
    name = type(model).__name__
    if name in DOCUMENTED_SIZES:
        s = DOCUMENTED_SIZES[name]
        yield Proposal(((_randn(batch, _channels(model), s, s, generator=g),), {}), f"torchvision's documented size for {name}")
    for owner_name, owner in [("", model), *model.named_modules()][:50]:  # timm: patch_embed.img_size
        for attr in SIZE_ATTRIBUTES:
            hw = _size_pair(getattr(owner, attr, None))
            if hw is not None:
                where = f"{owner_name}.{attr}" if owner_name else attr
                yield Proposal(((_randn(batch, _channels(model), *hw, generator=g),), {}), f"attribute {where}")
    for attr in CONFIG_ATTRIBUTES:
        cfg = getattr(model, attr, None)
        if cfg is not None and not isinstance(cfg, (nn.Module, torch.Tensor)):
            yield from _from_config(model, cfg, attr, batch, g)
    for grid in patch_grids(model, (_channels(model), 3, 1)):  # vit-pytorch: no size stored, only its weights
        yield Proposal(((_randn(batch, grid.channels, grid.side, grid.side, generator=g),), {}), grid.source())


def _get(cfg: Any, *names: str) -> Any:
    for n in names:
        v = cfg.get(n) if isinstance(cfg, dict) else getattr(cfg, n, None)
        if v is not None:
            return v
    return None


def _from_config(model: nn.Module, cfg: Any, attr: str, batch: int, g: torch.Generator) -> Iterator[Proposal]:
    vocab = _get(cfg, "vocab_size", "n_vocab")
    context = _get(cfg, "block_size", "n_ctx", "n_text_ctx", "max_position_embeddings", "seq_len")
    length = min(context, 8) if isinstance(context, int) and context > 0 else 8
    mels = _get(cfg, "num_mel_bins", "n_mels")
    frames = _get(cfg, "max_source_positions", "n_audio_ctx")
    image = _size_pair(_get(cfg, "image_size", "img_size"))
    tokens = torch.randint(0, min(vocab, 1000), (batch, length), generator=g) if isinstance(vocab, int) and vocab > 0 else None
    mel = (_randn(batch, mels, 2 * frames if isinstance(frames, int) else 3000, generator=g)
           if isinstance(mels, int) and mels > 0 else None)
    if mel is not None and tokens is not None:
        yield Proposal(((mel, tokens), {}), f"{attr}: mel bins and vocabulary (whisper-style)")
    if mel is not None:
        yield Proposal(((mel,), {}), f"{attr}: mel bins")
    if image is not None:
        channels = _get(cfg, "num_channels", "in_chans", "channels")
        c = channels if isinstance(channels, int) and channels > 0 else _channels(model)
        yield Proposal(((_randn(batch, c, *image, generator=g),), {}), f"{attr}: image size")
    if tokens is not None:
        yield Proposal(((tokens,), {}), f"{attr}: vocabulary size")


def _for_layer(model: nn.Module, m: nn.Module, batch: int, g: torch.Generator,
               drawn: dict[tuple[int, ...], torch.Tensor] | None = None) -> list[Inputs]:
    """The inputs `m` would take as the model's first layer. drawn: tensors already drawn this search,
    by shape: a model of 150 weight layers asks for a few distinct shapes, each drawn once (a MaxViT
    asked for 212 tensors up to 2x256x224x224, 90 s of randn, for 24 distinct proposals)."""
    def randn(*shape: int, generator: torch.Generator) -> torch.Tensor:
        if drawn is None:
            return _randn(*shape, generator=generator)
        if shape not in drawn:
            drawn[shape] = _randn(*shape, generator=generator)
        return drawn[shape]

    if isinstance(m, nn.Linear):
        return [((randn(batch, m.in_features, generator=g),), {})]
    if isinstance(m, nn.Bilinear):
        return [((randn(batch, m.in1_features, generator=g), randn(batch, m.in2_features, generator=g)), {})]
    if isinstance(m, nn.modules.conv._ConvNd):
        dims = m.weight.dim() - 2
        least, exact = min_spatial_size(model, dims)
        default = {1: 64, 2: 32, 3: 16}.get(dims, 16)
        sizes = [exact] if exact else []
        sizes += [max(default, least)] + ([FALLBACK_IMAGE] if dims == 2 and least <= FALLBACK_IMAGE else [])
        return [((randn(batch, m.in_channels, *([s] * dims), generator=g),), {}) for s in dict.fromkeys(sizes)]
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return [((torch.randint(0, m.num_embeddings, (batch, 8), generator=g),), {})]
    if isinstance(m, nn.RNNBase):
        shape = (batch, 5, m.input_size) if m.batch_first else (5, batch, m.input_size)
        return [((randn(*shape, generator=g),), {})]
    if isinstance(m, nn.RNNCellBase):  # one step, or a loop over a sequence's steps
        return [((randn(batch, m.input_size, generator=g),), {}), ((randn(batch, 5, m.input_size, generator=g),), {})]
    if isinstance(m, nn.MultiheadAttention):
        shape = (batch, 5, m.embed_dim) if m.batch_first else (5, batch, m.embed_dim)
        x = randn(*shape, generator=g)
        return [((x,), {}), ((x, x, x), {})]  # a block that takes x and calls attn(x, x, x); the layer itself
    if type(m).__name__ == "Conv1D":
        weight = m.weight
        assert isinstance(weight, torch.Tensor)
        width = int(weight.shape[0])  # HF's Conv1D stores [in, out]
        return [((randn(batch, 8, width, generator=g),), {})]
    return []


def _unique(found: Iterable[Proposal]) -> Iterator[Proposal]:
    seen: set[Any] = set()
    for p in found:
        args, kwargs = p.inputs
        key = (tuple((tuple(t.shape), t.dtype) for t in args if isinstance(t, torch.Tensor)),
               tuple((k, tuple(v.shape), v.dtype) for k, v in kwargs.items() if isinstance(v, torch.Tensor)))
        if key not in seen:
            seen.add(key)
            yield p


def _hugging_face(model: nn.Module, g: torch.Generator) -> Inputs | None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "main_input_name"):
        return None
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {}
    name = str(model.main_input_name)
    if name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else size[0]
        kwargs[name] = _randn(1, getattr(config, "num_channels", 3), size, size, generator=g)
    elif name == "input_features":
        frames = 2 * getattr(config, "max_source_positions", 1500)
        kwargs[name] = _randn(1, getattr(config, "num_mel_bins", 80), frames, generator=g)
    elif name == "input_values":  # a raw waveform (wav2vec 2.0, HuBERT): 20 frames of the conv front end
        strides = getattr(config, "conv_stride", None) or (320,)
        kernels = getattr(config, "conv_kernel", None) or (400,)
        kwargs[name] = _randn(1, 20 * math.prod(strides) + sum(kernels) * math.prod(strides), generator=g)
    else:
        vocab = getattr(config, "vocab_size", 100) or 100
        kwargs["input_ids"] = torch.randint(0, min(vocab, 1000), (1, 8), generator=g)
    if "attention_mask" in params and "input_ids" in kwargs:
        # an explicit mask keeps HF off its data-dependent packed-sequence check (.all() on meta)
        kwargs["attention_mask"] = torch.ones_like(kwargs["input_ids"])
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
        vocab = getattr(config, "vocab_size", 100) or 100
        kwargs["decoder_input_ids"] = torch.randint(0, min(vocab, 1000), (1, 4), generator=g)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    return (), kwargs


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else "(no message)"

