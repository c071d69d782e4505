"""Example inputs named on the command line: `--input [name=]d0,d1,...[:dtype]` specs (parsed and
checked without torch, for options.py) and the tensors they describe, or the `--inputs file.py:fn` hook.
A stand-in: the lead swaps in the inputs helper's parser at merge."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .options import Settings

DTYPE_NAMES = ("bfloat16", "float", "float16", "float32", "float64", "int32", "int64", "long")

_DIMS = re.compile(r"^[0-9]+(?:[,x][0-9]+)*$")


def parse_input(spec: str) -> tuple[str | None, tuple[int, ...], str | None]:
    """'[name=]d0,d1,...[:dtype]' -> (name, shape, dtype). A ValueError for `1,,3`, a zero or
    negative size, or an unknown dtype. (A stand-in: the lead swaps in the inputs helper's parser.)"""
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


def example_inputs(settings: Settings, model: Any) -> Any:
    """The example inputs the options describe: None (guessed from the model), one tensor, a tuple
    of positional ones or a dict of keyword ones, or what the --inputs function returns."""
    if settings.inputs_hook:
        return _call_hook(settings.inputs_hook, model)
    if not settings.inputs:
        return None
    import torch

    from .inputs import from_shape

    parsed = [parse_input(spec) for spec in settings.inputs]
    aliases = {"float": "float32", "long": "int64"}
    tensors = [(name, from_shape(shape, getattr(torch, aliases.get(d := dtype or settings.input_dtype, d)), model))
               for name, shape, dtype in parsed]
    named = [name is not None for name, _ in tensors]
    if any(named) and not all(named):
        raise UsageError("--input", "give every input a name (tokens=1,16) or none")
    if all(named):
        return {name: t for name, t in tensors}
    return tensors[0][1] if len(tensors) == 1 else tuple(t for _, t in tensors)


def _call_hook(spec: str, model: Any) -> Any:
    """--inputs file.py:function: the function is called with the model when it takes an argument."""
    import importlib.util
    import inspect

    path, _, name = spec.rpartition(":")
    if not os.path.isfile(path):
        raise UsageError(f"--inputs {spec}", f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(f"_initcheck_inputs_{abs(hash(path))}", path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"--inputs {spec}", "cannot import this file")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"--inputs {spec}", f"importing it raised {type(e).__name__}: {e}") from e
    fn: Callable[..., Any] | None = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"--inputs {spec}", f"{path} has no function {name!r}")
    return fn(model) if inspect.signature(fn).parameters else fn()
