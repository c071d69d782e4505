import pytest
import torch

from initcheck import stats


def test_streamed_statistics_match_torch_across_chunks(monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 1000)
    w = torch.randn(123, 457) * 0.3 + 0.1
    s = stats.tensor_stats(w)
    assert s.count == w.numel()
    assert s.mean == pytest.approx(float(w.double().mean()), abs=1e-12)
    assert s.std == pytest.approx(float(w.double().std(unbiased=False)), rel=1e-10)
    assert not s.constant


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights(dtype):
    w = (torch.randn(64, 64) * 0.02).to(dtype)
    s = stats.tensor_stats(w)
    assert s.std == pytest.approx(float(w.double().std(unbiased=False)), rel=1e-6)


def test_constant_and_meta():
    assert stats.tensor_stats(torch.zeros(5, 5)).constant
    assert stats.tensor_stats(torch.empty(5, 5, device="meta")) is None
