"""Example inputs named on the command line: `--input [name=]d0,d1,...[:dtype]` specs checked without
torch (options.py validates them before anything heavy is imported), and the tensors they describe
or the `--inputs file.py:fn` hook, built by inputs.py."""

from __future__ import annotations

import re
from typing import Any

DTYPE_NAMES = ("bfloat16", "float", "float16", "float32", "float64", "int32", "int64", "long")

_DIMS = re.compile(r"^[0-9]+(?:[,x][0-9]+)*$")


def parse_input(spec: str) -> tuple[str | None, tuple[int, ...], str | None]:
    """'[name=]d0,d1,...[:dtype]' -> (name, shape, dtype). A ValueError for `1,,3`, a zero or
    negative size, or an unknown dtype (inputs.parse_spec reads the same syntax into tensors' specs)."""
    text = spec.strip()
    name = None
    if "=" in text:
        name, _, text = text.partition("=")
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not an argument name")
    dims, _, dtype = text.partition(":")
    if dtype and dtype not in DTYPE_NAMES:
        raise ValueError(f"not a shape with a known dtype ({dtype!r}; one of {', '.join(DTYPE_NAMES)})")
    if not _DIMS.match(dims.replace(" ", "")):
        raise ValueError("not a shape (write it as 2,3,32,32: positive integers separated by commas)")
    shape = tuple(int(d) for d in re.split(r"[,x]", dims.replace(" ", "")))
    if any(d <= 0 for d in shape):
        raise ValueError("not a shape (every size must be a positive integer)")
    return name, shape, dtype or None


def example_inputs(inputs: tuple[str, ...], hook: str | None, dtype: str | None, model: Any,
                   max_memory: int | None = None) -> Any:
    """The example inputs the options describe: None (guessed from the model), or the positional
    and keyword tensors of the --input specs (inputs.build; each refused before allocation when
    over `max_memory` bytes: None is half the free memory, 0 no limit), or what the --inputs
    function returns (inputs.load_hook); both as inputs.ArgsKwargs, which every entry point accepts."""
    if hook:
        from .inputs import ArgsKwargs, load_hook

        return ArgsKwargs(*load_hook(hook, model))
    if not inputs:
        return None
    import torch

    from .inputs import DTYPES, ArgsKwargs, build, parse_specs

    return ArgsKwargs(*build(parse_specs(inputs, DTYPES.get(dtype or "float32", torch.float32)), model, max_memory))
