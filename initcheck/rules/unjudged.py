"""IC0xx: what could not be judged. A linter that skips something says so."""

from __future__ import annotations

from collections.abc import Iterator

from ..findings import Finding, Severity, rule
from ..graph import OpKind
from ..ops.activations import RoleKind
from .context import Context


@rule("IC001", "weight-not-reached", Severity.WARNING,
      "A weight parameter was never used by the traced forward pass, so it was not judged.",
      "A module that the example input never runs (an auxiliary head in eval mode, a branch that "
      "depends on the data) cannot be placed in the graph: its activation is unknown.",
      example="an aux classifier that forward() calls only in training mode, checked in eval mode",
      fix="give an example input that runs it (--input-shape / example_inputs=), or check the model in the "
          "mode that uses it")
def weight_not_reached(ctx: Context) -> Iterator[Finding]:
    readers = _readers(ctx) if ctx.unreached else {}  # a walk of the graph only when there is one to explain
    for name in ctx.unreached:
        ops = readers.get(name)
        if ops:  # read, but by ops whose fans initcheck cannot tell: saying "never used" would be false
            yield Finding("IC001", Severity.WARNING, name,
                          f"{name} is read by the traced forward pass only through {', '.join(ops)}, which initcheck "
                          "does not read as a weight op (no fans): not judged",
                          "apply it with F.linear, matmul, einsum or a conv, or check its init by hand")
            continue
        yield Finding("IC001", Severity.WARNING, name, f"{name} was never used by the traced forward pass: not judged",
                      "give an example input that runs it (--input-shape / example_inputs=)")


def _readers(ctx: Context) -> dict[str, list[str]]:
    """Parameter name -> the ops that read it, seen through views (each named once)."""
    index = ctx.index
    out: dict[str, list[str]] = {}
    for op in index.ops:
        if op.kind is not OpKind.PARAM:
            continue
        names: list[str] = []
        stack, seen = list(index.users(op.index)), set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            user = index.ops[u]
            if index.role(user).kind is RoleKind.TRANSPARENT and user.kind is not OpKind.OUTPUT:
                stack.extend(index.users(u))
            elif str(user.target) not in names:
                names.append(str(user.target))
        if names:
            out[str(op.target)] = names
    return out


@rule("IC002", "lazy-module-uninitialized", Severity.WARNING,
      "A lazy module's parameters are not materialized yet: run one forward pass first.",
      "nn.LazyLinear and friends have no shape until their first call, so neither fans nor "
      "statistics exist.",
      example="nn.Sequential(nn.LazyLinear(128), nn.ReLU(), nn.LazyLinear(10))",
      fix="run model(example_input) once (then your own init code) before checking")
def lazy_module(ctx: Context) -> Iterator[Finding]:
    for name in ctx.lazy:
        yield Finding("IC002", Severity.WARNING, name,
                      f"{name} is an uninitialized lazy parameter: it has no shape yet, so the model was not judged",
                      "run model(example_input) once (then your own init code) before checking")
