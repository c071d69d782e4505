"""Small tensors read ahead in batches (stats.prefetch) give the very numbers each tensor's own read
gives, and the batched read never answers a question it was not asked."""

from __future__ import annotations

import pytest
import torch

from initcheck import stats


def _tensors(shape: tuple[int, ...], dtype: torch.dtype, k: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(len(shape) * 7 + k)
    return [(torch.randn(shape, generator=g) * (0.1 + i) + 0.02 * i).to(dtype) for i in range(k)]


def _same(a: stats.TensorStats | None, b: stats.TensorStats | None) -> None:
    assert a is not None and b is not None
    key = (a.count, a.mean, a.std, a.constant, a.max_abs, a.nonfinite)
    assert [str(v) for v in key] == [str(v) for v in (b.count, b.mean, b.std, b.constant, b.max_abs, b.nonfinite)]  # nan too
    assert (a.rows is None) == (b.rows is None)
    if a.rows is not None and b.rows is not None:
        assert a.rows.dim == b.rows.dim
        torch.testing.assert_close(a.rows.sums, b.rows.sums, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "rows"), [((64, 64), 0), ((10, 64), None), ((64,), None), ((7,), None),
                                             ((16, 8, 3, 3), 0), ((33, 17), 1), ((5, 3, 4), 1), ((3, 5), 0)])
def test_a_batched_read_gives_each_tensors_own_numbers_bit_for_bit(shape, rows, dtype):
    ts = _tensors(shape, dtype)
    alone = [stats._compute(t, rows) if rows is not None else stats._compute(t) for t in ts]
    with stats.shared():
        stats.prefetch((t, rows) for t in ts)
        assert len(stats._AHEAD[-1]) == len(ts)  # read ahead, all of them
        batched = [stats.tensor_stats(t, rows) for t in ts]
        assert not stats._AHEAD[-1]  # each answered from the batch
        for a in batched:  # the row sums' variance and mean, reduced with the batch: what they give alone
            if a is not None and a.rows is not None:
                var, mean = torch.var_mean(a.rows.sums.double(), correction=0)
                assert stats.row_var_mean(a.rows.sums) == (float(var), float(mean))
    assert stats.row_var_mean(ts[0]) is None  # outside the analysis, and for any other tensor
    for a, b, t in zip(batched, alone, ts):
        _same(a, b)
        oracle = t.double()
        assert a is not None and a.mean == pytest.approx(float(oracle.mean()), rel=1e-5, abs=1e-9)
        assert a.std == pytest.approx(float(oracle.std(correction=0)), rel=1e-5)
        assert a.max_abs == float(oracle.abs().max())


def test_constant_and_non_finite_tensors_are_left_to_their_own_read():
    ts = [torch.full((4, 4), 0.25), torch.zeros(4, 4), torch.tensor([[1.0, float("nan")], [0.0, 1.0]]).repeat(2, 2),
          torch.randn(4, 4)]
    with stats.shared():
        stats.prefetch((t, 0) for t in ts)
        got = [stats.tensor_stats(t, 0) for t in ts]
    assert got[0] is not None and got[0].constant and got[0].std == 0.0 and got[0].mean == 0.25
    assert got[1] is not None and got[1].constant and got[1].mean == 0.0
    assert got[2] is not None and got[2].nonfinite == 4 and not got[2].finite
    for g, t in zip(got, ts):
        _same(g, stats._compute(t, 0))


def test_a_read_ahead_answers_only_the_question_asked_and_only_before_a_write():
    ts = _tensors((8, 8), torch.float32)
    with stats.shared():
        stats.prefetch((t, 0) for t in ts)
        flat = stats.tensor_stats(ts[0])  # asked without row sums: not the batch's answer
        assert flat is not None and flat.rows is None
        with torch.no_grad():
            ts[1].mul_(3.0)  # written after the read ahead: read again
        again = stats.tensor_stats(ts[1], 0)
        assert again is not None and again.std == pytest.approx(float(ts[1].double().std(correction=0)), rel=1e-6)
    assert not stats._AHEAD and not stats._ACTIVE


def test_prefetch_outside_an_analysis_reads_nothing_and_odd_tensors_are_skipped():
    ts = _tensors((4, 4), torch.float32)
    stats.prefetch((t, 0) for t in ts)  # no shared() block: nothing to keep the results in
    with stats.shared():
        odd = [torch.randn(4, 4).t(), torch.randn(4, 4).half(), torch.empty(4, 4, device="meta"), torch.randn(1 << 17)]
        stats.prefetch([(t, None) for t in odd] * 2)
        assert not stats._AHEAD[-1]
