"""plots: the signal picture's numbers against torch, the probe's histograms against physics, the
figures' structure (axes, labels, panels), files."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

from initcheck import plots, probe
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


def tanh_net(std: float, width: int = 64) -> nn.Sequential:
    """Linear(width, width) -> tanh -> Linear(width, 4), first weight N(0, std), no biases."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width, bias=False), nn.Tanh(), nn.Linear(width, 4, bias=False))
    with torch.no_grad():
        model[0].weight.normal_(0.0, std)
    return model


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def saturated(ax) -> float:
    (note,) = [t.get_text() for t in ax.texts if "saturated" in t.get_text()]
    return float(note.split("saturated ")[1].split("%")[0]) / 100


def test_a_probed_report_draws_its_histograms():
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
    report = probe(tanh_net(1 / 8), x)
    fig = report.plot()
    shown = panels(fig)
    assert len(shown) == 2 * 2  # activations and gradients, one panel a layer
    assert [ax.get_title() for ax in shown] == ["0 (tanh)", "2 (identity)"] * 2
    assert shown[0].get_ylabel() == "activations" and shown[2].get_ylabel() == "log10 |gradient|"
    assert shown[0].get_xlim() == shown[1].get_xlim() and shown[0].get_ylim() == shown[1].get_ylim()  # shared
    assert shown[2].get_xlim() == shown[3].get_xlim()
    for ax in shown[:2]:
        (bars,) = ax.patches  # one filled outline a panel
        assert sum(bars.get_data().values) == pytest.approx(1.0)  # every activation is in a bar
    for ax, p in zip(shown[2:], report.probe):
        (bars,) = ax.patches
        g = p.gradients
        assert sum(bars.get_data().values) == pytest.approx(1 - (g.zeros + g.below) / g.total)  # counted apart


def test_saturated_tanh_shows_on_its_panel():
    # physics: unit inputs through N(0, s) weights of fan_in 64 give z ~ N(0, 64 s^2); tanh is past
    # its knee (|z| > 2.65) with probability 2 (1 - Phi(2.65 / (8 s))): 0.74 for s = 1, 0.008 for
    # Xavier (s = sqrt(2 / 128) = 1/8)
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(1))
    tail = lambda z_std: math.erfc(2.65 / z_std / math.sqrt(2))  # noqa: E731
    normal1, xavier = probe(tanh_net(1.0), x), probe(tanh_net(1 / 8), x)
    sat1, satx = saturated(panels(normal1.plot())[0]), saturated(panels(xavier.plot())[0])
    assert sat1 == pytest.approx(tail(8.0), abs=0.05)
    assert satx == pytest.approx(tail(1.0), abs=0.01)
    assert sat1 > 0.5 > 0.05 > satx
    # the saturated layer's histogram piles its mass in its two edge bins, at tanh's ±1
    h = normal1.probe[0].activations
    assert (h.counts[0] + h.counts[-1]) / h.total > 0.5 and h.high == pytest.approx(1.0, abs=1e-3)


def test_kind_overrides_and_an_unprobed_report_draws_the_signal():
    model = tanh_net(1 / 8)
    plain = diagnose(model)
    assert all(ax.get_yscale() == "log" for ax in plain.plot().axes)  # the signal picture
    probed = probe(model, torch.randn(64, 64))
    assert all(ax.get_yscale() == "log" for ax in probed.plot(kind="signal").axes)
    assert len(panels(probed.plot(kind="histograms"))) == 4
    with pytest.raises(ValueError, match="not probed"):
        plain.plot(kind="histograms")
    with pytest.raises(ValueError, match="unknown kind"):
        plain.plot(kind="hist")


def test_before_and_after_on_the_same_axes():
    bad, good = tanh_net(1.0), tanh_net(1 / 8)
    x = torch.randn(64, 64)
    fig = plots.compare(probe(bad, x), probe(good, x), labels=("N(0, 1)", "Xavier"))
    shown = panels(fig)
    assert len(shown) == 4 * 2
    assert shown[0].get_ylabel() == "N(0, 1):\nactivations" and shown[4].get_ylabel() == "Xavier:\nactivations"
    assert shown[0].get_xlim() == shown[4].get_xlim()
    fig2 = plots.probe_histograms(bad, x, after=good)  # the one-call form: probes both
    assert [ax.get_ylabel() for ax in panels(fig2)[::2]] == [ax.get_ylabel() for ax in panels(plots.compare(
        probe(bad, x), probe(good, x)))[::2]]


def test_rebinning_keeps_a_uniform_histogram_uniform():
    # closed form: values uniform on [-0.63, 0.63] give a drawn bin of width 2/33 inside that span
    # the share (2/33) / 1.26; assigning whole probed bins by their centers would give a comb of
    # 3 and 4 probed bins per drawn bin (heights 4:3)
    from initcheck.histogram import Histogram, Scale
    from initcheck.plots.histograms import rebin

    h = Histogram(Scale.LINEAR, -0.63, 0.63, (100,) * 33)
    edges = [-1 + 2 * i / 33 for i in range(34)]
    bars = rebin(h, edges)
    assert sum(bars) == pytest.approx(1.0)
    inside = [b for b, lo, hi in zip(bars, edges, edges[1:]) if lo > -0.63 and hi < 0.63]
    assert len(inside) >= 15 and inside == pytest.approx([(2 / 33) / 1.26] * len(inside), rel=1e-9)


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_histogram_files_are_the_same_bytes_from_two_probes(tmp_path, ext, magic):
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    a, b = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    probe(tanh_net(1.0), x).plot(a)
    probe(tanh_net(1.0), x).plot(b)
    assert a.read_bytes().startswith(magic) and a.read_bytes() == b.read_bytes()


def test_cli_probe_plot_draws_the_histograms(tmp_path):
    from click.testing import CliRunner

    from initcheck.cli import main

    (tmp_path / "net.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self):\n"
        "        super().__init__(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 2))\n")
    out = tmp_path / "hist.svg"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["net.py:Net", "--probe", "--device", "cpu", "--plot", str(out)])
    finally:
        os.chdir(cwd)
    assert r.exit_code in (0, 1), r.output
    svg = out.read_text()
    assert "<!-- log10 |gradient| -->" in svg and "<!-- activations -->" in svg  # the histograms, not the signal


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


def test_missing_matplotlib_on_the_command_line_is_one_line_naming_initcheck_once(monkeypatch, tmp_path):
    import sys

    from click.testing import CliRunner

    from initcheck.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "net.py"
    path.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.fc = nn.Linear(4, 2)\n    def forward(self, x):\n        return self.fc(x)\n")
    r = CliRunner().invoke(main, [f"{path}:Net", "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 2
    assert r.output.splitlines() == ["initcheck: matplotlib is not installed: pip install initcheck[plot]"]
