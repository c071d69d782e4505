import json

import seeds

from initcheck import diagnose
from initcheck.formats.json_report import to_json

# The JSON contract, written out: a field added or dropped must show up here (and in the README).
LAYER_FIELDS = {"name", "param", "kind", "shape", "fan_in", "fan_out", "activation", "activation_param",
                "normalized", "residual_end", "is_output", "scheme", "gain", "recommended_std", "actual_std",
                "actual_mean", "variance_ratio", "predicted_rms", "aliases", "convention", "verdict", "source",
                "driven_rms", "reference_rms", "grad_rms", "reference_grad_rms", "preact_rms"}
FINDING_FIELDS = {"code", "name", "severity", "layer", "message", "fix", "source", "path", "line", "url"}
PARAM_FIELDS = {"name", "kind", "shape", "std", "mean", "max_abs", "note", "verdict"}
PROBE_FIELDS = {"name", "activation", "mean", "std", "predicted_rms", "dead_fraction", "saturated_fraction",
                "grad_norm", "grad_ratio", "measured_rms", "activations", "gradients"}
HISTOGRAM_FIELDS = {"scale", "low", "high", "counts", "zeros", "below", "nonfinite"}


def test_json_has_the_documented_fields():
    data = json.loads(to_json([diagnose(seeds.Uniform01(), target="m.py:Uniform01")]))
    assert data["version"] == 1
    model = data["models"][0]
    assert model["target"] == "m.py:Uniform01" and model["tracer"] == "fx"
    assert len(model["layers"]) == 3
    for layer in model["layers"]:
        assert set(layer) == LAYER_FIELDS
    assert model["layers"][0]["name"] == "net.0" and model["layers"][0]["param"] == "weight"
    assert model["layers"][0]["shape"] == [256, 784]
    assert model["findings"]
    for f in model["findings"]:
        assert set(f) == FINDING_FIELDS
    assert {p["name"] for p in model["params"]} == {f"net.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    for p in model["params"]:
        assert set(p) == PARAM_FIELDS


def test_json_probe_entries_carry_their_histograms():
    import torch

    from initcheck import probe

    data = json.loads(to_json([probe(seeds.He(), torch.randn(8, 784))]))
    entries = data["models"][0]["probe"]
    assert len(entries) == 3
    for entry in entries:
        assert set(entry) == PROBE_FIELDS
        assert set(entry["activations"]) == set(entry["gradients"]) == HISTOGRAM_FIELDS
        assert (entry["activations"]["scale"], entry["gradients"]["scale"]) == ("linear", "log10_abs")
    assert sum(entries[0]["activations"]["counts"]) == 8 * 256  # every value of the first layer, binned


def test_report_api():
    r = diagnose(seeds.Zeros())
    assert not r.ok
    assert r.layers[0].fan_in == 784 and r.findings[0].code == "IC101"
    assert r.to_dict()["layers"][0]["scheme"] == "he"
    text = str(r)
    assert "fan_in" in text and "IC101" in text and "fix: nn.init.kaiming_normal_" in text


def test_long_runs_of_one_code_are_collapsed_in_text_only():
    r = diagnose(seeds.DeepPyTorchDefault())
    text = str(r)
    assert "more like it" in text
    assert sum(f.code == "IC103" for f in r.findings) == 19
