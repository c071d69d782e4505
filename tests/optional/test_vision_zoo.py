"""Optional suite: torchvision and timm architectures (they need torch 2.14.1 + torchvision 0.29.1,
a 5.5 GB CUDA build, so they stay out of default CI). Run by hand:

    python3 -m venv /tmp/vz && . /tmp/vz/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 timm && pip install -e . pytest
    python -m pytest -q tests/optional

The result is recorded in docs/zoo.md.
"""

import warnings

import pytest
import torch

from initcheck import diagnose

tv = pytest.importorskip("torchvision")

TORCHVISION = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "densenet121",
               "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x0_5",
               "squeezenet1_0", "mnasnet0_5", "googlenet", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t",
               "alexnet", "inception_v3"]
TIMM = ["resnet18", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "convnext_atto", "efficientnet_b0",
        "mobilenetv3_small_050", "regnetx_002", "levit_128s", "swin_tiny_patch4_window7_224", "mixer_b16_224",
        "poolformer_s12", "coat_tiny", "cait_xxs24_224", "beit_base_patch16_224", "edgenext_xx_small", "nfnet_l0"]


def check(model, inputs):
    """A model handed over in eval mode (as a script that evaluates it first would): judged as
    training runs it (modes.py), with a note saying so, and its flags left as they were."""
    model.eval()
    report = diagnose(model, inputs)
    assert all(not m.training for m in model.modules())
    differs = any((isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats)
                  or (isinstance(m, torch.nn.Dropout) and m.p > 0) for m in model.modules())
    assert differs == any("the model is in eval mode" in n for n in report.notes), report.notes
    missing = {f.layer for f in report.findings if f.code == "IC001"}
    errors = [f.message for f in report.findings if f.severity == "error"]
    return report, missing, errors


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        model = getattr(tv.models, name)(weights=None, **kw)
    size = 299 if name == "inception_v3" else 224
    report, missing, errors = check(model, torch.randn(1, 3, size, size))
    assert not missing, missing
    assert not errors, errors


@pytest.mark.parametrize("name", TIMM)
def test_timm(name):
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False)
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    report, missing, errors = check(model, torch.randn(1, *size))
    assert not missing, missing
    assert not errors, errors


class DeformableBlock(torch.nn.Module):
    """DCNv1 as detection code writes it: an offset conv zero-initialized (the sampling starts on the
    regular grid) feeding torchvision's DeformConv2d. Its weight is a conv's (fans 8 x 3 x 3 in); with
    zero offsets it is a plain conv, so its raw output is predicted like one; the zero offset conv is
    a warp's coordinates, not symmetric units."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import DeformConv2d

        self.enc = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.off = torch.nn.Conv2d(8, 18, 3, padding=1)
        torch.nn.init.zeros_(self.off.weight)
        torch.nn.init.zeros_(self.off.bias)
        self.dcn = DeformConv2d(8, 16, 3, padding=1)
        torch.nn.init.kaiming_normal_(self.dcn.weight, nonlinearity="relu")
        self.head = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = torch.relu(self.enc(x))
        return self.head(torch.relu(self.dcn(h, self.off(h))))


def test_a_deformable_conv_is_a_judged_conv_and_its_offsets_are_not_symmetric():
    from initcheck.api import analyze
    from initcheck.signal import raw_rms

    torch.manual_seed(0)
    model, x = DeformableBlock(), torch.randn(16, 8, 32, 32)
    a = analyze(model, x)
    dcn = next(lf for lf in a.layers if lf.qualname == "dcn.weight")
    assert (dcn.fan_in, dcn.activation) == (72, "relu")
    assert not [f for f in a.report.findings if f.layer in ("dcn.weight", "off.weight")], a.report.findings
    got = []
    h = model.dcn.register_forward_hook(lambda m, i, y: got.append(float((y - m.bias.view(1, -1, 1, 1)).pow(2).mean().sqrt())))
    with torch.no_grad():
        model(x)
    h.remove()
    assert raw_rms(a.context.actual, a.context.index, dcn, model) == pytest.approx(got[0], rel=0.15)
