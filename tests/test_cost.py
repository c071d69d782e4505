"""What makes diagnose cheap must not change what it says: the tracer leaves no model copy in
reference cycles, the stages restore the garbage collector, and the fused weight read gives the same
numbers as the separate reads it replaces."""

from __future__ import annotations

import gc

from torch import nn

from initcheck.trace import trace_fx


def _mlp(depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(8, 8), nn.ReLU()]
    return nn.Sequential(*layers)


def _cyclic_garbage(fn) -> list[object]:  # type: ignore[no-untyped-def]
    """The objects that only the cycle collector frees after fn() (gc state restored)."""
    was_enabled, flags = gc.isenabled(), gc.get_debug()
    gc.collect()
    gc.disable()
    try:
        fn()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
    return found


def test_fx_tracing_leaves_no_copy_of_the_model_in_reference_cycles():
    model = _mlp(20)
    garbage = _cyclic_garbage(lambda: trace_fx(model))
    # before: fx's tracer (in cycles through its own closures) held the meta copy, and a recursive
    # closure per op was one more cycle; both waited for a full collection
    assert not [o for o in garbage if isinstance(o, nn.Module)]
    assert not [o for o in garbage if type(o).__name__ == "function" and o.__qualname__.endswith("visit")]


def test_diagnose_restores_the_garbage_collector_as_it_found_it():
    from initcheck import diagnose

    was = gc.isenabled()
    try:
        gc.enable()
        diagnose(_mlp(3))
        assert gc.isenabled()
        gc.disable()
        diagnose(_mlp(3))
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_the_stages_leave_no_cyclic_garbage_while_the_collector_is_paused():
    from initcheck import diagnose

    model = _mlp(20)
    diagnose(model)  # warm: lazily built tables are not garbage
    base = len(_cyclic_garbage(lambda: trace_fx(model)))
    # the whole of diagnose (trace and stages) leaves what the trace alone leaves (fx's own graph)
    assert len(_cyclic_garbage(lambda: diagnose(model))) <= base
