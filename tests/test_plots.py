"""plots: the signal picture's numbers against torch, its structure (axes, labels, panels), files."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

from initcheck import plots
from initcheck.api import analyze, diagnose
from initcheck.errors import UsageError
from initcheck.integrations import MissingExtra


def chain(std: float, act: type[nn.Module] = nn.Identity, depth: int = 4, width: int = 128) -> nn.Sequential:
    """Bias-free Linear layers with N(0, std) weights: the closed form is a product per layer."""
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(width, width, bias=False)
        nn.init.normal_(lin.weight, 0.0, std)
        layers.append(lin)
        if i < depth - 1:
            layers.append(act())
    return nn.Sequential(*layers)


def measured(model: nn.Sequential, n: int = 4096) -> tuple[list[float], list[float]]:
    """torch as the oracle: rms of each Linear's output on N(0, 1) inputs, and of the gradient
    reaching it when the output receives a unit-variance gradient."""
    outs: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
        out.retain_grad()
        outs.append(out)

    hooks = [m.register_forward_hook(keep) for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(n, model[0].in_features)
    y = model(x)
    y.backward(torch.randn_like(y))
    for h in hooks:
        h.remove()
    return [float(o.detach().pow(2).mean().sqrt()) for o in outs], [float(o.grad.pow(2).mean().sqrt()) for o in outs]


def test_series_match_torch_on_a_linear_chain():
    model = chain(0.05)
    s = plots.signal_series(analyze(model))
    fwd, bwd = measured(model)
    assert s.names == tuple(f"{i}.weight" for i in range(0, 8, 2))
    for got, want in zip(s.rms, fwd):
        assert got == pytest.approx(want, rel=0.1)
    for got, want in zip(s.grad, bwd):
        assert got == pytest.approx(want, rel=0.1)
    # closed form: each layer multiplies the rms by sqrt(fan_in) * std = sqrt(128) * 0.05
    assert s.rms[3] / s.rms[0] == pytest.approx((math.sqrt(128) * 0.05) ** 3, rel=0.1)


def test_reference_curve_is_the_recommended_scheme():
    he = chain(math.sqrt(2 / 128), nn.ReLU)
    small = chain(0.01, nn.ReLU)
    s_he, s_small = plots.signal_series(analyze(he)), plots.signal_series(analyze(small))
    # He's own curve is the reference; a small init keeps the same reference but a falling actual curve
    for a, r in zip(s_he.rms[:-1], s_he.reference_rms[:-1]):  # the output layer's scheme is not He
        assert a == pytest.approx(r, rel=0.15)
    assert s_small.reference_rms == pytest.approx(s_he.reference_rms, rel=0.05)
    assert s_small.rms[-1] < 1e-3 * s_small.reference_rms[-1]


def test_signal_plot_structure():
    analysis = analyze(chain(0.01, nn.Tanh))
    fig = plots.signal_plot(analysis)
    fwd, bwd = fig.axes
    assert fwd.get_yscale() == bwd.get_yscale() == "log"
    assert fwd.get_ylabel() == "pre-activation rms" and "gradient" in bwd.get_ylabel()
    assert [t.get_text() for t in bwd.get_xticklabels()] == ["0", "2", "4", "6"]
    labels = fwd.get_legend_handles_labels()[1]
    assert {"actual init", "recommended schemes", "vanishing (< 0.01)", "exploding (> 10)"} <= set(labels)
    found = {f.layer for f in analysis.report.findings if f.severity == "error"}
    assert found, "the fixture must have an error finding to mark"
    assert "error finding" in labels
    codes = {t.get_text() for t in fwd.texts}
    for layer in found:
        mine = ",".join(sorted({f.code for f in analysis.report.findings if f.layer == layer}))
        assert mine in codes


def test_a_report_alone_draws_both_curves_from_its_layers():
    report = diagnose(chain(0.05))
    fig = plots.signal_plot(report)
    assert len(fig.axes) == 2  # the report carries the forward and backward series
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([lr.predicted_rms for lr in report.layers])
    grads = fig.axes[1].get_lines()[0]
    assert list(grads.get_ydata()) == pytest.approx([lr.grad_rms for lr in report.layers])


def test_report_plot_delegates(tmp_path):
    report = diagnose(chain(0.05))
    fig = report.plot(tmp_path / "s.svg")
    assert (tmp_path / "s.svg").exists() and fig.axes


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_files_by_extension_are_deterministic(tmp_path, ext, magic):
    analysis = analyze(chain(0.05))
    a, b = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    plots.signal_plot(analysis, a)
    plots.signal_plot(analysis, b)
    data = a.read_bytes()
    assert data.startswith(magic)
    assert data == b.read_bytes()
    if ext == ".svg":
        assert b"<dc:date>" not in data and b"Matplotlib v" not in data


def test_unknown_extension_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"\.png, \.svg or \.pdf"):
        plots.signal_plot(chain(0.05), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_missing_matplotlib_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingExtra) as err:
        plots.signal_plot(chain(0.05))
    assert str(err.value) == "initcheck: matplotlib is not installed: pip install initcheck[plot]"
    assert "\n" not in str(err.value)


# --- histograms -----------------------------------------------------------------------------


def test_measure_against_torch():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    with torch.no_grad():
        model[0].weight.normal_(0, 1.0)  # saturates tanh
        model[2].bias.fill_(-100.0)  # every ReLU unit dead
    x = torch.randn(64, 32)
    samples = plots.measure(model, x)
    assert [s.name for s in samples] == ["0.weight", "2.weight", "4.weight"]
    assert [s.activation for s in samples] == ["tanh", "relu", "identity"]
    z0 = model[0](x)
    assert samples[0].saturated == pytest.approx(float((z0.abs() > 2.65).float().mean()), abs=1e-6)
    assert float(samples[0].values.std()) == pytest.approx(float(torch.tanh(z0).std()), rel=1e-4)
    assert samples[1].dead == 1.0
    assert samples[2].dead is None and samples[2].saturated is None


def test_measure_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(40, 8)
    rng = torch.get_rng_state()
    plots.measure(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert torch.equal(rng, torch.get_rng_state())


def test_probe_histograms_panels():
    bad = chain(0.01, nn.Tanh, depth=2, width=64)
    good = chain(math.sqrt(1 / 64), nn.Tanh, depth=2, width=64)
    x = torch.randn(64, 64)
    before = plots.measure(bad, x)
    fig = plots.histogram_figure([("before", before)])
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 * 2  # activations and gradients, one per layer
    assert [ax.get_title() for ax in panels[:2]] == ["0 (tanh)", "2 (identity)"]
    assert "saturated" in panels[0].texts[0].get_text()
    assert panels[0].get_xlim() == panels[1].get_xlim()  # shared axes along a row
    assert panels[0].get_ylabel().startswith("activations") and panels[2].get_ylabel().startswith("log10 |gradient|")
    fig2 = plots.probe_histograms(bad, x, after=good)
    panels2 = [ax for ax in fig2.axes if ax.get_visible()]
    assert len(panels2) == 4 * 2
    assert panels2[0].get_ylabel().startswith("before:\nactivations")
    assert panels2[4].get_ylabel().startswith("after:\nactivations")


@pytest.mark.slow
def test_readme_pictures_script_writes_small_pngs(tmp_path):
    import make_pictures  # examples/ is on the path (conftest)

    argv = sys.argv
    sys.argv = ["make_pictures.py", "--out", str(tmp_path)]
    try:
        make_pictures.main()
    finally:
        sys.argv = argv
    for name in ("signal.png", "probe_hist.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 100_000
