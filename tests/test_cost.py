"""What makes diagnose cheap must not change what it says: the tracer leaves no model copy in
reference cycles, the stages restore the garbage collector, and the fused weight read gives the same
numbers as the separate reads it replaces."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from initcheck import stats
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


def _rows_oracle(w: torch.Tensor, dim: int) -> torch.Tensor:
    """The separate read that signal/rows.py did before the fusion."""
    return w.sum(0, dtype=torch.float32) if dim == 1 else w.reshape(w.shape[0], -1).sum(1, dtype=torch.float32)


@pytest.mark.parametrize(("shape", "dim"), [((48, 32), 0), ((16, 8, 3, 3), 0), ((32, 48), 1)])
@pytest.mark.parametrize("chunk", [stats.CHUNK, 100])  # one chunk; blocks of a few rows
def test_the_fused_read_gives_the_separate_reads_numbers(monkeypatch, shape, dim, chunk):
    monkeypatch.setattr(stats, "CHUNK", chunk)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.05
    fused, alone = stats.tensor_stats(w, dim), stats.tensor_stats(w)
    assert fused is not None and alone is not None and fused.rows is not None
    assert fused.rows.dim == dim
    expected_rows = _rows_oracle(w, dim)
    if dim == 0 or chunk > 100:  # each row is summed alone, or by the very same call
        assert torch.equal(fused.rows.sums, expected_rows)
    else:  # per-column sums accumulated over blocks of rows: float32 rounding
        torch.testing.assert_close(fused.rows.sums, expected_rows, rtol=1e-6, atol=1e-6)
    assert (fused.count, fused.max_abs, fused.constant, fused.nonfinite) == (alone.count, alone.max_abs, alone.constant, 0)
    oracle = w.double()
    assert fused.mean == pytest.approx(float(oracle.mean()), rel=1e-6)
    assert fused.std == pytest.approx(float(oracle.std(correction=0)), rel=1e-6)
    assert fused.mean == pytest.approx(alone.mean, rel=1e-6) and fused.std == pytest.approx(alone.std, rel=1e-6)


def test_a_constant_weight_stays_exactly_constant_through_the_fused_read():
    s = stats.tensor_stats(torch.full((8, 5), 0.25), 0)
    assert s is not None and s.constant and s.std == 0.0 and s.mean == 0.25


def test_diagnose_says_the_same_with_the_fused_read_as_with_separate_reads(monkeypatch):
    import initcheck.facts as facts_mod
    from initcheck import api, diagnose
    from initcheck.signal import rows

    model = _mlp(6)  # ReLU: every later layer's input has a non-zero mean, so its row sums weigh in
    summed = []
    real_moments = rows._moments
    monkeypatch.setattr(rows, "_moments", lambda sums: summed.append(sums) or real_moments(sums))
    analysis = api.analyze(model)
    fused, fused_sums = analysis.report, list(summed)
    # taken from the statistics' own read, not summed again
    assert all(any(s is lf.stats.rows.sums for lf in analysis.layers if lf.stats.rows) for s in fused_sums)
    monkeypatch.setattr(facts_mod, "tensor_stats", lambda t, rows=None: stats.tensor_stats(t))  # no fusion
    summed.clear()
    separate = diagnose(model)
    # the same row sums, the fused ones taken from the statistics' read
    assert len(fused_sums) == len(summed) == 5 and all(torch.equal(a, b) for a, b in zip(fused_sums, summed))
    for a, b in zip(fused.layers, separate.layers):
        for key in ("actual_std", "actual_mean", "predicted_rms", "driven_rms", "reference_rms", "grad_rms"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-6), key
        assert a.verdict == b.verdict
    assert [f.code for f in fused.findings] == [f.code for f in separate.findings]


def test_a_record_built_from_its_fields_is_the_one_its_constructor_gives():
    import dataclasses

    from initcheck.findings import Finding, Severity
    from initcheck.frozen import built
    from initcheck.records import ParamReport

    # the constructor is the oracle: every field given, and some left to their defaults
    whole = {"name": "fc.weight", "kind": "weight", "shape": (4, 3), "std": 0.5, "mean": 0.0, "max_abs": 1.0,
             "note": "judged", "verdict": "ok"}
    assert built(ParamReport, whole) == ParamReport(**whole)
    assert repr(built(ParamReport, whole)) == repr(ParamReport(**whole))
    part = {"code": "IC103", "severity": Severity.WARNING, "layer": "fc.weight", "message": "m", "fix": "f"}
    made = built(Finding, part)
    assert made == Finding(**part) and made.source is None and hash(made) == hash(Finding(**part))
    with pytest.raises(dataclasses.FrozenInstanceError):  # still frozen
        made.code = "IC101"  # type: ignore[misc]
    with pytest.raises(TypeError, match="needs message"):
        built(Finding, {k: v for k, v in part.items() if k != "message"})
    with pytest.raises(TypeError, match="no field colour"):
        built(Finding, {**part, "colour": "red"})


def test_the_stages_build_their_records_as_their_constructors_would():
    import dataclasses

    from initcheck.api import analyze

    analysis = analyze(_mlp(3))
    for record in (*analysis.layers, *analysis.report.layers, *analysis.report.params, *analysis.report.findings):
        again = type(record)(**{f.name: getattr(record, f.name) for f in dataclasses.fields(record)})
        assert again == record and repr(again) == repr(record)
