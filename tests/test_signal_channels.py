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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_narrow_layers_without_norm_follow_each_channels_mean(seed):
    torch.manual_seed(seed)
    model = squeezenet().train()
    x = torch.randn(32, 3, 24, 24)
    a = analyze(model, x)
    got: dict[str, float] = {}

    def hook_for(name: str):
        def hook(m: nn.Module, i: object, y: torch.Tensor) -> None:
            got.setdefault(name, float(y.pow(2).mean().sqrt()))  # bias is 0
        return hook

    hooks = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for lf in a.layers:
        pred = raw_rms(a.context.actual, a.context.index, lf, model)
        # 3x3 zero padding on a 24x24 map loses ~8% of the taps at the border: within 1.25x
        assert pred == pytest.approx(got[lf.name], rel=0.25), lf.name
