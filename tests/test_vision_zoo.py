"""The hand-written vision zoo (tests/vision_zoo.py) at its libraries' own init, no input given
(fx traces each): every parameter is reported, no error finding, warnings only where the physics
says the init under-scales the signal, and convention labels that the weights bear out.

Expected warnings, written from the physics before running:
- alexnet: PyTorch's default U(+-1/sqrt(fan_in)) gives 1/6 of He's variance before each ReLU and
  nothing renormalizes (no BatchNorm): IC103 on every conv and hidden Linear is a true statement.
- vgg, vgg_bn: the classifier's hidden Linears are N(0, 0.01) at fan_in 1024 and 256 before a ReLU
  (20x and 78x below He in variance) with no norm after them: IC103 on classifier.0 and .3.
- convnext: the 2x2 downsampling conv at N(0, .02) (fan_in 128, 13x below Xavier) writes the
  residual stream itself; every reader of the stream normalizes it, so the warning is noise, but a
  warning (not an error): listed here, to be silenced by the norm-aware IC103 (see the report).
Everything else (torchvision's fan_out He before BN, zero_init_residual, N(0, .02) transformers,
zero heads, SE gates, skip-init) is sound and gets nothing.
"""

import math
from fnmatch import fnmatch

import pytest
import vision_zoo

from initcheck import diagnose
from initcheck.findings import Severity

ALLOWED_WARNINGS = {
    "alexnet": {("IC103", "features.*.weight"), ("IC103", "classifier.[14].weight")},
    "vgg": {("IC103", "classifier.[03].weight")},
    "vgg_bn": {("IC103", "classifier.[03].weight")},
    "convnext": {("IC103", "down.1.weight")},
}

# Known gaps of the facts stage, not physics (none left: NF-Net's weight * gain is followed to its conv).
KNOWN_GAPS: dict[str, set[tuple[str, str]]] = {}


@pytest.fixture(scope="module")
def reports():
    return {name: diagnose(vision_zoo.build(name)) for name in vision_zoo.ZOO}


def test_the_zoo_has_at_least_fifteen_architectures():
    assert len(vision_zoo.ZOO) >= 15


@pytest.mark.parametrize("name", list(vision_zoo.ZOO))
def test_every_parameter_is_reported(name, reports):
    model = vision_zoo.build(name)
    assert {p.name for p in reports[name].params} == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name", list(vision_zoo.ZOO))
def test_no_error_finding(name, reports):
    r = reports[name]
    assert r.ok, [f.message for f in r.findings if f.severity == Severity.ERROR]
    assert r.tracer == "fx"


@pytest.mark.parametrize("name", list(vision_zoo.ZOO))
def test_warnings_only_where_the_physics_says_so(name, reports):
    allowed = ALLOWED_WARNINGS.get(name, set()) | KNOWN_GAPS.get(name, set())
    unexpected = [f.message for f in reports[name].findings
                  if f.severity >= Severity.WARNING and not any(f.code == c and fnmatch(f.layer, pat) for c, pat in allowed)]
    assert not unexpected, unexpected
    for code, pat in ALLOWED_WARNINGS.get(name, set()):  # the physics says these are there
        assert any(f.code == code and fnmatch(f.layer, pat) for f in reports[name].findings), (code, pat)


@pytest.mark.parametrize("name", list(vision_zoo.ZOO))
def test_convention_labels_follow_from_the_weights(name, reports):
    """A label names a distribution; the weight's std must be that distribution's: within 3% plus
    three standard errors of a std estimated from the tensor's count, 1/sqrt(2 count)."""
    for lr in reports[name].layers:
        label, std = lr.convention, lr.actual_std
        if not label or std is None:
            continue
        tol = 0.03 + 3.0 / math.sqrt(2.0 * math.prod(lr.shape))
        if "fan_out" in label:  # torch's fan_out: size(0) times the receptive field, groups or not
            fan_out = lr.shape[0] * math.prod(lr.shape[2:])
            assert std == pytest.approx(math.sqrt(2.0 / fan_out), rel=tol), (lr.qualname, label)
        elif "0.02" in label:
            assert std == pytest.approx(0.02, rel=tol), (lr.qualname, label)
        elif "zero-initialized" in label:
            assert std == 0.0, (lr.qualname, label)


def test_pytorch_default_layers_are_not_labelled_as_a_library_scheme(reports):
    """AlexNet and SqueezeNet convs are at PyTorch's default / kaiming_uniform: no fan_out or 0.02 label."""
    for name in ("alexnet", "squeezenet"):
        assert not [lr.convention for lr in reports[name].layers if lr.convention], name


def test_nfnet_gains_are_followed_to_their_conv(reports):
    """NF-Net rebuilds each conv's weight as weight * gain in forward and calls F.conv2d: the conv is
    judged by its base weight (He-like kaiming_normal(linear) at fan_in, before a gamma-scaled GELU),
    each gain [out, 1, 1, 1] = 1 is a scale parameter that is used, not an unused weight (no IC001)."""
    r = reports["nfnet"]
    model = vision_zoo.build("nfnet")
    gains = {n for n, _ in model.named_parameters() if n.endswith(".gain") and "skipinit" not in n}
    assert gains and not [f for f in r.findings if f.code == "IC001"]
    kinds = {p.name: p.kind for p in r.params}
    assert {kinds[g] for g in gains} == {"scale"}
    assert {g.replace(".gain", ".weight") for g in gains} <= {lr.qualname for lr in r.layers}


def test_the_rebuilt_weight_is_the_product_torch_computes():
    """follow.rebuilt_weight replays weight * gain on the parameters: with a gain of 3 its std is
    three times the base weight's, exactly what the conv receives."""
    import torch

    from initcheck.api import analyze
    from initcheck.facts.follow import rebuilt_weight

    torch.manual_seed(0)
    conv = vision_zoo.GainConv(8, 16, 3)
    with torch.no_grad():
        conv.gain.fill_(3.0)
    a = analyze(conv, torch.randn(2, 8, 6, 6))
    op = next(op for op in a.context.index.ops if op.target == "conv2d")
    w = rebuilt_weight(a.context.index, conv, op)
    assert w is not None and torch.equal(w, conv.weight.detach() * conv.gain.detach())
