import pytest
import torch

from initcheck import stats


def test_streamed_statistics_match_torch_across_chunks(monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 1000)
    w = torch.randn(123, 457) * 0.3 + 0.1
    s = stats.tensor_stats(w)
    assert s.count == w.numel()
    # float32 within a chunk, float64 across chunks: far finer than an init statistic needs
    assert s.mean == pytest.approx(float(w.double().mean()), abs=1e-7)
    assert s.std == pytest.approx(float(w.double().std(unbiased=False)), rel=1e-6)
    assert not s.constant


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights(dtype):
    w = (torch.randn(64, 64) * 0.02).to(dtype)
    s = stats.tensor_stats(w)
    assert s.std == pytest.approx(float(w.double().std(unbiased=False)), rel=1e-6)


def test_a_large_mean_over_a_tiny_spread_is_still_exact():
    w = 1.0 + 1e-5 * torch.randn(300, 300)
    s = stats.tensor_stats(w)
    assert s.std == pytest.approx(float(w.double().std(unbiased=False)), rel=1e-3)
    assert not s.constant


def test_float64_weights_keep_float64_precision():
    w = torch.randn(1000, 300, dtype=torch.float64) * 1e-3 + 5.0
    s = stats.tensor_stats(w)
    assert s.std == pytest.approx(float(w.std(unbiased=False)), rel=1e-9)


def test_cache_computes_each_tensor_once(monkeypatch):
    calls = []
    real = stats.tensor_stats
    monkeypatch.setattr(stats, "tensor_stats", lambda t: calls.append(1) or real(t))
    cache = stats.StatsCache()
    w = torch.randn(10, 10)
    assert cache(w) == cache(w) and len(calls) == 1


def test_constant_and_meta():
    assert stats.tensor_stats(torch.zeros(5, 5)).constant
    assert stats.tensor_stats(torch.empty(5, 5, device="meta")) is None


def test_shared_reads_a_tensor_once_and_again_after_a_write(monkeypatch):
    from initcheck import stats

    reads = []
    real = stats._compute
    monkeypatch.setattr(stats, "_compute", lambda t: reads.append(1) or real(t))
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    with stats.shared():
        first = stats.tensor_stats(w)
        assert stats.tensor_stats(w) is first and len(reads) == 1
        with torch.no_grad():
            w.mul_(3.0)  # written: its version counter moves, so it is read again
        again = stats.tensor_stats(w)
    assert len(reads) == 2
    assert again.std == pytest.approx(float(w.std(correction=0)), rel=1e-6)
    stats.tensor_stats(w)  # outside the block nothing is memoized
    assert len(reads) == 3


def test_a_cpu_weight_over_one_cache_sized_chunk_is_read_in_chunks_and_exact():
    """On the CPU a weight is reduced in L2-sized chunks (stats.CPU_CHUNK): sum, dot, amax, amin
    read a chunk while it is in cache. The merged numbers are the whole tensor's."""
    w = torch.randn(stats.CPU_CHUNK + 12345, generator=torch.Generator().manual_seed(3)) * 0.05 - 0.01
    w[1000] = -0.9  # the largest |x| sits in the first chunk, as a negative value
    assert stats.chunk_elements(w) == stats.CPU_CHUNK < w.numel()
    s = stats.tensor_stats(w)
    oracle = w.double()
    assert s.count == w.numel()
    assert s.mean == pytest.approx(float(oracle.mean()), rel=1e-6)
    assert s.std == pytest.approx(float(oracle.std(correction=0)), rel=1e-6)
    assert s.max_abs == float(w.abs().max())
