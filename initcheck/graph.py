"""The traced data-flow graph: the one shape both tracers produce and every later stage reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class OpKind(str, enum.Enum):
    """What an op of the graph is."""

    INPUT = "input"  # a model input
    PARAM = "param"  # a parameter read
    BUFFER = "buffer"  # a buffer read
    MODULE = "module"  # a call of a leaf module
    FUNCTION = "function"  # a function or tensor method
    OUTPUT = "output"  # the model's output

# Operator spellings that mean the same thing, whichever form reached the graph
# (operator.add, torch.add, Tensor.add, Tensor.__add__, Tensor.__iadd__, x.add_()).
_ALIASES = {
    "radd": "add", "iadd": "add", "rsub": "sub", "isub": "sub", "mul": "mul", "rmul": "mul",
    "imul": "mul", "multiply": "mul", "truediv": "div", "rtruediv": "div", "itruediv": "div",
    "true_divide": "div", "divide": "div", "matmul": "matmul", "rmatmul": "rmatmul", "mm": "matmul",
    "bmm": "matmul", "getitem": "getitem", "neg": "neg", "pow": "pow", "subtract": "sub",
}


# Functions returning (values, indices) along a dim: their second output is indices.
WITH_INDICES = frozenset({"topk", "sort", "max", "min", "kthvalue", "mode", "median"})


def canonical_name(raw: str) -> str:
    """`__iadd__` -> add, `relu_` -> relu, `sigmoid` -> sigmoid, `_VariableFunctionsClass.tanh` -> tanh."""
    name = raw.rsplit(".", 1)[-1]
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    elif name.endswith("_") and not name.startswith("_"):
        name = name[:-1]  # in-place variant
    return _ALIASES.get(name, name)


# Floating tensors made in forward from sizes alone (torch.zeros(batch, n)): the recorded pass keeps
# them as ops without operands, constants whose fill signal.handlers.FACTORIES knows
CREATED = frozenset({"zeros", "ones", "full", "empty"})


@dataclass(frozen=True)
class Op:
    """One operation in execution order.

    kind: see OpKind.
    target: the input's name, the parameter's qualified name, the module's class name, or the
    function's canonical name.
    operands: (argument key, op index) for each tensor argument; the key is the position ("0",
    "1", ...; "1.0" inside a list) or the keyword. scalars: the non-tensor arguments, keyed alike.
    shape, dtype: those of the op's output tensor (the first one when it returns several), where the
    tracer knows them: the recorded pass from its tensors, fx from shape propagation on meta
    tensors (only for graphs where a handler reads them: attention). Optional: every reader must
    work when they are None.
    """

    index: int
    kind: OpKind
    target: str
    module: str | None = None
    operands: tuple[tuple[str, int], ...] = ()
    scalars: tuple[tuple[str, Any], ...] = ()
    shape: tuple[int, ...] | None = None
    dtype: str | None = None

    def size(self, dim: int) -> int | None:
        """The output's size along `dim` (negative counts from the end); None when unknown."""
        if self.shape is None or not -len(self.shape) <= dim < len(self.shape):
            return None
        return self.shape[dim]

    @property
    def inputs(self) -> tuple[int, ...]:
        return tuple(i for _, i in self.operands)

    def operand(self, *keys: str) -> int | None:
        for key, idx in self.operands:
            if key in keys:
                return idx
        return None

    def scalar(self, *keys: str, default: Any = None) -> Any:
        for key, value in self.scalars:
            if key in keys:
                return value
        return default


@dataclass(frozen=True)
class Graph:
    tracer: str  # "fx" or "recorded"
    ops: tuple[Op, ...]
    consumers: tuple[tuple[int, ...], ...] = field(default=(), compare=False)
    guesses: int = 0  # data-dependent checks answered by default (meta-only models)

    @staticmethod
    def build(tracer: str, ops: list[Op]) -> "Graph":
        users: list[list[int]] = [[] for _ in ops]
        for op in ops:
            for i in dict.fromkeys(op.inputs):
                users[i].append(op.index)
        return Graph(tracer, tuple(ops), tuple(tuple(u) for u in users))

    def params_read(self) -> dict[str, int]:
        return {op.target: op.index for op in self.ops if op.kind is OpKind.PARAM}
