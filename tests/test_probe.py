import math

import pytest
import seeds
import torch

from initcheck import histogram as hist
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


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the old weight_norm is deprecated, still used
def test_probe_runs_on_models_whose_hooks_keep_a_computed_weight():
    """The old torch.nn.utils.weight_norm / spectral_norm keep `weight` on the module as a tensor
    computed from weight_g and weight_v (a non-leaf, which deepcopy refuses): the probe's copy must
    still run, measure each layer and leave the model's values as they were."""
    from torch import nn

    model = nn.Sequential(nn.utils.weight_norm(nn.Linear(64, 128)), nn.ReLU(),
                          nn.utils.spectral_norm(nn.Linear(128, 128)), nn.ReLU(), nn.Linear(128, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = probe(model, torch.randn(64, 64))
    assert [r.name for r in report.probe] == ["0.weight", "2.weight", "4.weight"]
    assert all(r.grad_norm > 0 for r in report.probe)  # read off weight_v / weight_orig, which training updates
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


# --- the histograms the probe keeps (the picture's data) ------------------------------------


def test_histograms_count_every_value_measured_against_torch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    x = torch.randn(50, 32)
    r = probe(model, x)
    first, head = r.probe
    assert first.activations.total == 50 * 64 and first.gradients.total == 50 * 64
    assert head.activations.total == 50 * 4 and head.gradients.total == 50 * 4
    # torch as the oracle: tanh of the first layer's output, over the histogram's own edges
    z = model[0](x)
    a = torch.tanh(z).detach().double()
    top = float(a.abs().max())
    assert (first.activations.low, first.activations.high) == pytest.approx((-top, top))
    want = torch.histc(a, bins=len(first.activations.counts), min=-top, max=top)
    assert sum(abs(int(w) - c) for w, c in zip(want, first.activations.counts)) <= 2  # edge rounding only
    # the gradient of the probe's loss (the mean of squared outputs) reaching z
    z.retain_grad()
    y = model[2](torch.tanh(z))
    y.pow(2).mean().backward()
    g = z.grad.double()
    h = first.gradients
    assert h.zeros == int((g == 0).sum())
    logs = g[g != 0].abs().log10()
    assert h.below == int((logs < h.low).sum())  # under the window: apart, not a false peak in its first bin
    want = torch.histc(logs[logs >= h.low], bins=len(h.counts), min=h.low, max=h.high)
    assert sum(abs(int(w) - c) for w, c in zip(want, h.counts)) <= 2
    assert h.high == math.ceil(math.log10(float(g.abs().max())))  # the window ends at the decade above


def test_histogram_rows_keep_zeros_and_nonfinite_apart():
    x = torch.tensor([0.0, 0.0, 1e-3, -2.0, 1e-9, float("inf"), float("nan")])
    lin = hist.from_row(hist.Scale.LINEAR, hist.linear_row(x).tolist())
    assert (lin.low, lin.high) == (-2.0, 2.0) and lin.nonfinite == 2 and lin.total == 7
    assert lin.counts[len(lin.counts) // 2] == 4  # 0, 0, 1e-3, 1e-9 share the middle bin (odd bins: 0 is a center)
    log = hist.from_row(hist.Scale.LOG10_ABS, hist.linear_row(x).tolist())
    assert log is None  # a row of the other scale is not read as this one
    log = hist.from_row(hist.Scale.LOG10_ABS, hist.log_row(x).tolist())
    assert (log.low, log.high) == (1.0 - hist.DECADES, 1.0) and log.zeros == 2 and log.nonfinite == 2
    assert log.below == 1  # 1e-9: 9.3 decades under |-2|, past the 8-decade window
    assert sum(log.counts) == 2 and log.total == 7
    assert log.counts[-3] == 1  # |-2|: log10 2 = 0.30, in [0.25, 0.5), the third quarter decade below 1
    empty = hist.from_row(hist.Scale.LINEAR, hist.linear_row(torch.zeros(5)).tolist())
    assert (empty.low, empty.high, empty.total) == (-1.0, 1.0, 5)


def test_a_large_layer_is_histogrammed_from_a_fair_sample():
    # 64 x 2048 = 131,072 values, twice the sample: the histogram holds SAMPLE of them, drawn
    # without favouring any unit, so its edge share matches the whole layer's within sampling error
    # (binomial sd sqrt(p (1 - p) / 65536) < 0.002)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.Tanh(), torch.nn.Linear(2048, 2))
    with torch.no_grad():
        model[0].weight.normal_(0.0, 0.25)  # z std 2: a fair part of tanh's outputs near ±1
    x = torch.randn(64, 64)
    r = probe(model, x)
    h = r.probe[0].activations
    assert h.total == hist.SAMPLE < 64 * 2048
    edge = (h.high - h.low) / len(h.counts)
    a = torch.tanh(model[0](x)).detach()
    whole = float(((a <= h.low + edge) | (a >= h.high - edge)).float().mean())
    assert (h.counts[0] + h.counts[-1]) / h.total == pytest.approx(whole, abs=0.01)
    assert probe(model, x).probe[0].activations == h  # the same draw every time
    assert r.probe[0].saturated_fraction == pytest.approx(float((model[0](x).abs() > 2.65).float().mean()))  # all values


def test_a_recurrent_layers_measurement_is_its_gates_pre_activation():
    """A recurrent row's prediction is its gates' pre-activation (W_ih x + W_hh h, biases aside),
    which no hook sees: the probe rebuilds it from an LSTM's input and output sequence and from a
    cell's input and state (over every step of its loop), instead of printing the hidden state's
    rms beside it. PyTorch's default LSTM on a unit embedding: about 0.59 both."""
    import cases as C

    torch.manual_seed(0)
    for model, x, name in ((C.LSTMCellDecoder(), torch.randint(0, 100, (64, 6)), "cell.weight_ih"),
                           (torch.nn.Sequential(torch.nn.Embedding(100, 128), torch.nn.LSTM(128, 128, batch_first=True)),
                            torch.randint(0, 100, (32, 12)), "1.weight_ih_l0")):
        row = next(p for p in probe(model, x).probe if p.name == name)
        assert row.measured_rms == pytest.approx(row.predicted_rms, rel=0.15)


@pytest.mark.parametrize("kwargs", [{}, {"forget_one": True}, {"chrono": True}], ids=["bias_5", "forget_1", "chrono"])
def test_a_recurrent_prediction_leaves_the_biases_aside_as_the_measurement_does(kwargs):
    """An LSTM whose biases are a constant 5 (b_ih + b_hh = 10 on every gate), a forget bias of 1,
    or chrono init: the gates' pre-activation the probe measures is W_ih x + W_hh h, so the
    prediction leaves the biases out too (it printed 10 beside a measured 0.67: the biases' offset).
    Within 1.5x on each."""
    from test_bug_reproductions_more import BiasedLSTM

    torch.manual_seed(0)
    row = next(p for p in probe(BiasedLSTM(**kwargs), torch.randint(0, 100, (64, 20))).probe if p.name == "lstm.weight_ih_l0")
    assert row.predicted_rms == pytest.approx(row.measured_rms, rel=0.5)


def test_a_parametrized_weight_is_probed_through_its_original():
    """weight_norm's weight is recomputed at each access, no Parameter: the probe read it with
    get_parameter and failed (wav2vec 2.0's positional conv); its gradient is on the originals."""
    import cases as C

    rows = {p.name: p for p in probe(C.WeightNormed(), torch.randn(16, 32)).probe}
    assert rows["fc1.weight"].measured_rms is not None and rows["fc1.weight"].grad_norm > 0
