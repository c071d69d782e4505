"""Example inputs: the user's (--input specs, a make_inputs hook, any structure passed to the API)
normalized to (args, kwargs), or read off the model (expected.py); and a memory check that refuses
an input too large before anything is allocated."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import InputSpecError, InputTooLarge, TargetSyntaxError, UsageError
from .expected import INPUT_SEED, Inputs, candidates, describe, first_accepted, generator, proposals, too_large
from .sizes import MAX_MEMORY_FRACTION, available_memory, human_bytes

__all__ = ["ArgsKwargs", "DTYPES", "INPUT_SEED", "InputSpec", "Inputs", "build", "candidates", "check_memory", "default_limit",
           "describe", "estimate_bytes", "first_accepted", "from_shape", "guess", "load_hook", "map_tensors",
           "normalize", "parse_spec", "parse_specs", "proposals", "too_large"]

DTYPES = {"float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
          "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
          "long": torch.int64, "int32": torch.int32, "int": torch.int32, "int16": torch.int16, "int8": torch.int8,
          "uint8": torch.uint8, "bool": torch.bool}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class InputSpec:
    """One --input: an optional keyword name, a shape of positive sizes, a dtype."""

    name: str | None
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def __str__(self) -> str:
        dtype = next(k for k, v in DTYPES.items() if v == self.dtype)
        return f"{self.name + '=' if self.name else ''}{','.join(map(str, self.shape))}:{dtype}"


def parse_spec(text: str, default_dtype: torch.dtype = torch.float32) -> InputSpec:
    """`1,80,3000`, `tokens=1,16:int64`, `2x3x32x32` -> InputSpec; anything else is one-line
    InputSpecError (a usage error: exit 2)."""
    where = f"--input {text!r}"
    body = text.strip()
    name: str | None = None
    if "=" in body:
        name, _, body = (part.strip() for part in body.partition("="))
        if not _NAME.match(name):
            raise InputSpecError(where, f"{name!r} is not a keyword name")
    body, colon, dtype_text = body.partition(":")
    dtype = default_dtype
    if colon:
        key = dtype_text.strip().lower().removeprefix("torch.")
        if key not in DTYPES:
            raise InputSpecError(where, f"unknown dtype {dtype_text.strip()!r}; one of {', '.join(sorted(DTYPES))}")
        dtype = DTYPES[key]
    parts = re.split(r"[,x×]", body)
    if not body.strip():
        raise InputSpecError(where, "has no shape")
    shape = []
    for i, part in enumerate(parts, 1):
        part = part.strip()
        if not part:
            raise InputSpecError(where, f"size {i} is empty")
        if not re.fullmatch(r"[+-]?\d+", part):
            raise InputSpecError(where, f"size {i} ({part!r}) is not an integer")
        size = int(part)
        if size <= 0:
            raise InputSpecError(where, f"size {i} ({size}) is not positive")
        shape.append(size)
    return InputSpec(name, tuple(shape), dtype)


def parse_specs(texts: Iterable[str], default_dtype: torch.dtype = torch.float32) -> tuple[InputSpec, ...]:
    """Every --input, in order; a keyword given twice is a usage error."""
    specs = tuple(parse_spec(t, default_dtype) for t in texts)
    names = [s.name for s in specs if s.name]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputSpecError("--input", f"{twice[0]!r} is given more than once")
    return specs


def build(specs: Sequence[InputSpec], model: nn.Module, limit: int | None = None) -> Inputs:
    """(args, kwargs) from the specs: positional ones in order, named ones as keywords; each input
    checked against `limit` bytes before it is allocated (from_shape)."""
    args = tuple(from_shape(s.shape, s.dtype, model, limit) for s in specs if s.name is None)
    kwargs = {s.name: from_shape(s.shape, s.dtype, model, limit) for s in specs if s.name is not None}
    return args, kwargs


def from_shape(shape: tuple[int, ...], dtype: torch.dtype, model: nn.Module, limit: int | None = None) -> torch.Tensor:
    """One input tensor of this shape: N(0, 1) values, or token ids below the first Embedding's size.
    Refused (InputTooLarge) before allocation when over `limit` bytes (None: half the free memory;
    0: no limit)."""
    check_memory([shape], [dtype], limit, what=f"the input ({', '.join(map(str, shape))}) {str(dtype).removeprefix('torch.')}")
    g = generator()
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)  # a mask: everything attended
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    high = next((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), 2)
    return torch.randint(0, high, shape, generator=g, dtype=dtype)


def guess(model: nn.Module, first: str | None = None, batch: int = 2) -> Inputs:
    """The most likely input for the model; raise ValueError when none can be guessed."""
    for inputs in candidates(model, first, batch):
        if too_large(inputs) is None:
            return inputs
    raise ValueError("cannot guess an input from the model's first layer")


@dataclass(frozen=True)
class ArgsKwargs:
    """Positional and keyword example inputs together (a model with `forward(mel, tokens=...)`)."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def normalize(example_inputs: Any, model: nn.Module | None = None) -> Inputs | None:
    """Whatever the user passes as example inputs -> (args, kwargs).

    A tensor is one input; a tuple/list is the positional inputs; a Mapping (a dict, a Hugging Face
    BatchEncoding) is keyword inputs. A namedtuple or a dataclass is keyword inputs when the model's
    forward takes its field names, else one structured positional input (a namedtuple without a
    model: its fields as positional inputs, as before)."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, ArgsKwargs):
        return tuple(example_inputs.args), dict(example_inputs.kwargs)
    if isinstance(example_inputs, Mapping):
        return (), {str(k): v for k, v in example_inputs.items()}
    fields = _fields(example_inputs)
    if fields is not None:
        if model is not None and _binds(model, (), fields):
            return (), fields
        if model is not None and _binds(model, (example_inputs,), {}):
            return (example_inputs,), {}
        if isinstance(example_inputs, tuple):
            return tuple(example_inputs), {}
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def _fields(x: Any) -> dict[str, Any] | None:
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return dict(zip(x._fields, x))
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    return None


def _binds(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    try:
        inspect.signature(model.forward).bind(*args, **kwargs)
        return True
    except (TypeError, ValueError):
        return False


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """`obj` with `fn` applied to every tensor inside (tuples, lists, Mappings, namedtuples,
    dataclasses kept as their types): moving inputs to a device, casting them."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, Mapping):
        items = {k: map_tensors(v, fn) for k, v in obj.items()}
        try:
            return type(obj)(items)  # type: ignore[call-arg]  # dict, OrderedDict, BatchEncoding take a dict
        except TypeError:
            return items
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn)
                                          for f in dataclasses.fields(obj) if f.init})
    return obj


def load_hook(text: str, model: nn.Module | None = None) -> Inputs:
    """`file.py:make_inputs` or `pkg.module:make_inputs` -> the (args, kwargs) it returns.

    The function is called with no arguments, or with the model when it takes one. It may return
    anything `normalize` takes, or an explicit pair (args tuple/list, kwargs Mapping)."""
    from .importer import import_target, target_context  # argv, stdout and packages as for a target

    module_text, sep, attr = text.partition(":")
    if not sep or not attr or not module_text:
        raise TargetSyntaxError(text, "an inputs hook is file.py:function or package.module:function")
    with target_context(module_text):
        module = import_target(text, module_text, None)
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise UsageError(text, f"{attr!r} is not a function of {os.path.basename(module_text)}")
        try:
            takes_model = len([p for p in inspect.signature(fn).parameters.values() if p.default is p.empty]) == 1
        except (TypeError, ValueError):
            takes_model = False
        try:
            made = fn(model) if takes_model else fn()
        except Exception as e:
            raise UsageError(text, f"calling {attr}() raised {type(e).__name__}: {e}") from e
    if (isinstance(made, tuple) and not hasattr(made, "_fields") and len(made) == 2
            and isinstance(made[0], (tuple, list)) and isinstance(made[1], Mapping)):
        return tuple(made[0]), dict(made[1])
    result = normalize(made, model)
    if result is None:
        raise UsageError(text, f"{attr}() returned None; return a tensor, a tuple, a dict or (args, kwargs)")
    return result


def estimate_bytes(shapes: Iterable[Sequence[int]], dtypes: Iterable[torch.dtype]) -> int:
    """Bytes the tensors of these shapes and dtypes take (computed, nothing allocated)."""
    return sum(math.prod(s) * torch.empty((), dtype=d).element_size() for s, d in zip(shapes, dtypes, strict=True))


def free_memory(device: str = "cpu") -> int | None:
    """Bytes available now on the device (free CUDA memory; for the CPU, Linux's MemAvailable or
    the free pages the OS reports), or None if unknown."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return available_memory()


def default_limit(device: str = "cpu") -> int | None:
    """The --max-memory default: a fraction (MAX_MEMORY_FRACTION) of what is free now."""
    free = free_memory(device)
    return int(free * MAX_MEMORY_FRACTION) if free is not None else None


def check_memory(shapes: Iterable[Sequence[int]], dtypes: Iterable[torch.dtype], limit: int | None = None, *,
                 factor: float = 1.0, what: str = "the example input", device: str = "cpu") -> int:
    """Refuse (InputTooLarge) tensors whose estimate × `factor` exceeds `limit` bytes (None: the
    default, `default_limit(device)`; NO_LIMIT (0): no check); return the estimate. What a run
    built on the input needs beyond it is memory.py's."""
    need = int(estimate_bytes(list(shapes), list(dtypes)) * factor)
    cap = default_limit(device) if limit is None else limit
    if cap and need > cap:
        raise InputTooLarge(what, f"needs about {human_bytes(need)}, over the limit of {human_bytes(cap)}"
                            + (" (half of the free memory)" if limit is None else ""))
    return need
