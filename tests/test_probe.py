import pytest
import seeds
import torch

from initcheck import probe


def test_probe_measures_what_the_static_model_predicts():
    r = probe(seeds.He(), torch.randn(512, 784))
    assert [p.name for p in r.probe] == ["net.0.weight", "net.2.weight", "net.4.weight"]
    for p in r.probe:
        assert p.measured_rms == pytest.approx(p.predicted_rms, rel=0.15)
        assert p.grad_norm > 0


def test_probe_flags_saturation_and_gradient_spread():
    r = probe(seeds.TanhNormal1(), torch.randn(128, 784))
    assert r.probe[0].saturated_fraction > 0.9
    assert "IC302" in {f.code for f in r.findings}
    deep = probe(seeds.DeepPyTorchDefault(), torch.randn(64, 784))
    assert "IC303" in {f.code for f in deep.findings}


def test_probe_reports_dead_units():
    model = seeds.He()
    torch.nn.init.constant_(model.net[0].bias, -100.0)
    r = probe(model, torch.randn(64, 784))
    assert r.probe[0].dead_fraction == 1.0
    assert ("IC301", "error") in {(f.code, f.severity) for f in r.findings}


def test_probe_leaves_the_model_alone():
    model = seeds.He()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe(model, torch.randn(8, 784))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_probe_on_cuda():
    r = probe(seeds.He(), torch.randn(512, 784), device="cuda")
    assert r.probe[0].measured_rms == pytest.approx(r.probe[0].predicted_rms, rel=0.15)


def test_dead_units_need_enough_samples_to_be_judged():
    model = seeds.He()
    few = probe(model, torch.randn(4, 784))  # 4 samples a unit: "never positive" means little
    assert few.probe[0].dead_fraction is None and "IC301" not in {f.code for f in few.findings}
    enough = probe(model, torch.randn(64, 784))
    assert enough.probe[0].dead_fraction is not None and enough.probe[0].dead_fraction < 0.05


def test_without_inputs_the_probe_builds_a_batch_large_enough_to_judge_dead_units():
    model = seeds.He()
    torch.nn.init.constant_(model.net[0].bias, -100.0)
    r = probe(model)
    assert r.probe[0].dead_fraction == 1.0 and "IC301" in {f.code for f in r.findings}
