"""modes.py: which forward a report judges. Training's by default (BatchNorm on each batch's
statistics), eval's on request; the model's own flags are never changed."""

import json
import math

import pytest
import torch
from torch import nn

from initcheck import diagnose, probe
from initcheck.modes import Mode, note

DEPTH = 6


def bn_stack(std_scale=2.0):
    """Linear(64, 64) at std 2/sqrt(64), BatchNorm1d, ReLU, DEPTH times. Each Linear's raw output has
    E[y^2] = 64 * (4/64) * E[x^2] = 4 E[x^2]. In training the BatchNorm brings every block back to
    unit variance, so E[x^2] = 1/2 after the ReLU and every Linear but the first outputs rms sqrt(2).
    In eval mode fresh running statistics (mean 0, var 1) make the BatchNorm the identity: block k
    outputs E[y^2] = 4 * 2^(k-1) (rms 2 * sqrt(2)^(k-1))."""
    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(DEPTH):
        lin = nn.Linear(64, 64, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0.0, std_scale / 8.0, generator=g)
        layers += [lin, nn.BatchNorm1d(64), nn.ReLU()]
    return nn.Sequential(*layers)


def raw(report):
    return [lr.predicted_rms for lr in report.layers]


def test_training_forward_by_default_whatever_the_models_flags():
    model = bn_stack().eval()
    flags = [m.training for m in model.modules()]
    report = diagnose(model, torch.randn(8, 64))
    assert report.mode == "train"
    assert [m.training for m in model.modules()] == flags  # the user's flags are untouched
    rms = raw(report)
    assert rms[0] == pytest.approx(2.0, rel=0.05)
    for r in rms[1:]:
        assert r == pytest.approx(math.sqrt(2.0), rel=0.1)
    assert any("the model is in eval mode" in n and "BatchNorm1d" in n for n in report.notes), report.notes
    assert not any(f.code == "IC201" for f in report.findings)


def test_eval_forward_on_request_reads_the_running_statistics():
    model = bn_stack().eval()
    report = diagnose(model, torch.randn(8, 64), mode="eval")
    assert report.mode == "eval"
    # one draw of the weights: the product of 6 random 64x64 matrices spreads the rms around its
    # mean over draws by ~sqrt(6 * 2 / 64) in log E[y^2]; training's forward would stay at sqrt(2)
    for k, r in enumerate(raw(report), start=1):
        assert r == pytest.approx(2.0 * math.sqrt(2.0) ** (k - 1), rel=0.25)
    assert not any("eval mode" in n for n in report.notes)  # the flags and the judged forward agree
    assert "judged in eval mode" in str(report).splitlines()[0]


def test_a_model_in_training_mode_judged_in_eval_mode_says_so():
    report = diagnose(bn_stack().train(), torch.randn(8, 64), mode=Mode.EVAL)
    assert any(n.startswith("judged in eval mode") for n in report.notes), report.notes


def test_no_note_without_modules_that_run_differently():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Dropout(0.0)).eval()
    assert note(model, Mode.TRAIN) is None
    assert note(nn.Sequential(nn.Dropout(0.1)).eval(), Mode.TRAIN) is not None


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_probe_measures_the_forward_that_was_predicted(mode):
    model = bn_stack().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = probe(model, torch.randn(256, 64), device="cpu", mode=mode)
    assert len(report.probe) == DEPTH
    for pl in report.probe:
        assert pl.measured_rms == pytest.approx(pl.predicted_rms, rel=0.15), (mode, pl.name)
    assert all(not m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # running stats too


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode 'inference'"):
        diagnose(bn_stack(), torch.randn(8, 64), mode="inference")


def test_json_carries_the_mode():
    d = json.loads(json.dumps(diagnose(bn_stack(), torch.randn(8, 64)).to_dict()))
    assert d["mode"] == "train"


def test_a_batch_of_one_for_trainings_batchnorm_is_one_line_with_the_way_out():
    from initcheck.errors import ForwardError

    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with pytest.raises(ForwardError, match="batch of 1.*--mode eval"):
        probe(model, torch.randn(1, 8), device="cpu")
    report = probe(model, torch.randn(1, 8), device="cpu", mode="eval")  # the eval forward takes it
    assert len(report.probe) == 2


class FunctionalDropout(nn.Module):
    """fc1 (no bias), tanh, F.dropout(p=0.75, self.training), fc2. tanh of a zero-mean symmetric
    signal has mean 0, so fc2's raw output has E[y^2] = sum_j w_j^2 E[x_j^2]; in training dropout
    keeps a quarter of the units scaled by 4, so E[x^2] into fc2 is 4x eval's and fc2's raw output
    rms exactly 2x eval's. fx reads `self.training` while it traces: the graph must be traced with
    the judged forward's flag, not the one the model had."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(128, 128, bias=False), nn.Linear(128, 128)

    def forward(self, x):
        return self.fc2(nn.functional.dropout(torch.tanh(self.fc1(x)), 0.75, self.training))


@pytest.mark.parametrize("flags", ["train", "eval"])
def test_functional_dropout_follows_the_judged_forward_not_the_flag_at_trace_time(flags):
    torch.manual_seed(0)
    model = FunctionalDropout()
    model.train(flags == "train")
    x = torch.randn(64, 128)
    trained, evaluated = diagnose(model, x), diagnose(model, x, mode="eval")
    assert model.training == (flags == "train")
    ratio = trained.layers[1].predicted_rms / evaluated.layers[1].predicted_rms
    assert ratio == pytest.approx(2.0, rel=1e-3)
    assert trained.layers[0].predicted_rms == pytest.approx(evaluated.layers[0].predicted_rms)
