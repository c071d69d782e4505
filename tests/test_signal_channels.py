"""Per-channel moments (signal/channels.py) against a measured forward: behind a narrow layer with
no norm the channels' means differ, and the particular draw of the weights decides the scale."""

import pytest
import torch
from torch import nn

from initcheck.api import analyze
from initcheck.signal import raw_rms


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)


def squeezenet() -> nn.Sequential:
    """SqueezeNet's pattern (8-channel squeezes, no norm) with torchvision's kaiming_uniform, bias 0."""
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), Fire(64, 8, 32), Fire(64, 8, 32),
                          nn.MaxPool2d(2), Fire(64, 8, 32), Fire(64, 8, 32))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def measured_rms(model: nn.Module, x: torch.Tensor, pick) -> dict[str, float]:
    """The rms of each picked module's output at its first call (the oracle; biases are 0 here)."""
    got: dict[str, float] = {}

    def hook_for(name: str):
        def hook(m: nn.Module, i: object, y: torch.Tensor) -> None:  # returns None: the output stays
            got.setdefault(name, float(y.pow(2).mean().sqrt()))
        return hook

    hooks = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if pick(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_narrow_layers_without_norm_follow_each_channels_mean(seed):
    torch.manual_seed(seed)
    model = squeezenet().train()
    x = torch.randn(32, 3, 24, 24)
    a = analyze(model, x)
    got = measured_rms(model, x, lambda m: isinstance(m, nn.Conv2d))
    for lf in a.layers:
        pred = raw_rms(a.context.actual, a.context.index, lf, model)
        # 3x3 zero padding on a 24x24 map loses ~8% of the taps at the border: within 1.25x
        assert pred == pytest.approx(got[lf.name], rel=0.25), lf.name


def test_a_weight_standardized_in_forward_is_followed_per_channel_as_the_conv_receives_it():
    # timm's ScaledStdConv2d with no norm after it (NF-Nets): w = gain * (W - mean) / std / sqrt(fan_in)
    # from a raw N(0, 1) parameter; relu between, so channel means matter. The per-channel model must
    # sum the standardized rows, not the raw ones (a merge had it read the raw parameter: NF-Net's
    # signal predicted 40x too small and a false IC202)
    import torch.nn.functional as F

    from initcheck.api import analyze
    from initcheck.signal import raw_rms

    class StdConv(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 3.0 + 0.5)
            self.gain = nn.Parameter(torch.full((cout, 1, 1, 1), 1.7))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fan_in = self.weight[0].numel()
            w = F.batch_norm(self.weight.reshape(1, self.weight.shape[0], -1), None, None,
                             weight=(self.gain * fan_in ** -0.5).view(-1), training=True, momentum=0.0, eps=1e-6)
            return F.conv2d(x, w.reshape_as(self.weight), padding=1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.c3 = StdConv(3, 16), StdConv(16, 16), StdConv(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c3(F.relu(self.c2(F.relu(self.c1(x))))).mean((2, 3))

    torch.manual_seed(0)
    model, x = Net(), torch.randn(16, 3, 16, 16)
    a = analyze(model, x)
    seen = measured_rms(model, x, lambda m: isinstance(m, StdConv))
    for lf in a.layers:
        predicted = raw_rms(a.context.actual, a.context.index, lf, model)
        name = lf.qualname.split(".")[0]
        assert predicted is not None and 1 / 1.5 < predicted / seen[name] < 1.5, (name, predicted, seen[name])
