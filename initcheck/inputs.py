"""Example inputs: the user's, or read off the model (HF dummy inputs, the first layer)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .ops.layers import module_weights

Inputs = tuple[tuple, dict]

# Synthetic inputs come from their own generator with a seed of their own: drawn from seed 0, like
# a fix's weights with --seed 0, the first weight row would be a copy of the input.
INPUT_SEED = 0x1C0FFEE


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(INPUT_SEED)


def normalize(example_inputs: Any) -> Inputs | None:
    """A tensor, a tuple/list of positional inputs, or a dict of keyword inputs -> (args, kwargs)."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def from_shape(shape: tuple[int, ...], dtype: torch.dtype, model: nn.Module) -> torch.Tensor:
    """One input tensor of this shape: N(0, 1) values, or token ids below the first Embedding's size."""
    g = _generator()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    high = next((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), 2)
    return torch.randint(0, high, shape, generator=g, dtype=dtype)


def guess(model: nn.Module, first: str | None = None, batch: int = 2) -> Inputs:
    """Inputs that the model's first layer accepts; raise ValueError when none can be guessed.

    first: the qualified name of the weight module that runs first, when a trace told us; else
    the first one registered (try `candidates` for the others)."""
    for inputs in candidates(model, first, batch):
        return inputs
    raise ValueError("cannot guess an input from the model's first layer")


def candidates(model: nn.Module, first: str | None = None, batch: int = 2):
    """Plausible inputs, most likely first: HF's, then one per distinct first-layer shape."""
    g = _generator()
    hf = _hugging_face(model, g)
    if hf is not None:
        yield hf
        return
    modules = [(n, m) for n, m in model.named_modules() if module_weights(m)]
    if first is not None:
        modules.sort(key=lambda nm: nm[0] != first)
    seen = set()
    for _, m in modules:
        made = _for_layer(m, batch, g)
        if made is None:
            continue
        variants = [made]
        if isinstance(m, nn.MultiheadAttention):
            variants.insert(0, (made[0][:1], {}))  # a block that takes x and calls attn(x, x, x)
        for v in variants:
            key = tuple((tuple(t.shape), t.dtype) for t in v[0])
            if key not in seen:
                seen.add(key)
                yield v


def _for_layer(m: nn.Module, batch: int, g: torch.Generator) -> Inputs | None:
    if isinstance(m, nn.Linear):
        return (torch.randn(batch, m.in_features, generator=g),), {}
    if isinstance(m, nn.Bilinear):
        return (torch.randn(batch, m.in1_features, generator=g), torch.randn(batch, m.in2_features, generator=g)), {}
    if isinstance(m, nn.modules.conv._ConvNd):
        dims = m.weight.dim() - 2
        size = {1: 64, 2: 32, 3: 16}.get(dims, 16)
        return (torch.randn(batch, m.in_channels, *([size] * dims), generator=g),), {}
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return (torch.randint(0, m.num_embeddings, (batch, 8), generator=g),), {}
    if isinstance(m, nn.RNNBase):
        shape = (batch, 5, m.input_size) if m.batch_first else (5, batch, m.input_size)
        return (torch.randn(*shape, generator=g),), {}
    if isinstance(m, nn.MultiheadAttention):
        shape = (batch, 5, m.embed_dim) if m.batch_first else (5, batch, m.embed_dim)
        x = torch.randn(*shape, generator=g)
        return (x, x, x), {}
    if type(m).__name__ == "Conv1D":
        return (torch.randn(batch, 8, m.weight.shape[0], generator=g),), {}
    return None


def _hugging_face(model: nn.Module, g: torch.Generator) -> Inputs | None:
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "main_input_name"):
        return None
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {}
    name = model.main_input_name
    if name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else size[0]
        kwargs[name] = torch.randn(1, getattr(config, "num_channels", 3), size, size, generator=g)
    elif name == "input_features":
        frames = 2 * getattr(config, "max_source_positions", 1500)
        kwargs[name] = torch.randn(1, getattr(config, "num_mel_bins", 80), frames, generator=g)
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
