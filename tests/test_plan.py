"""plan(): a meta-device model's init plan, applied after to_empty(), draws through schemes.py."""

import pytest
import torch
from torch import nn

from initcheck import plan
from initcheck.schemes import Scheme


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(200, 48)
        self.lstm = nn.LSTM(48, 64, batch_first=True)
        self.fc = nn.Linear(64, 256)
        self.head = nn.Linear(256, 10)

    def forward(self, idx):
        x, _ = self.lstm(self.emb(idx))
        return self.head(torch.relu(self.fc(x[:, -1])))


def test_a_plan_applied_after_to_empty_gives_each_weight_its_schemes_std():
    with torch.device("meta"):
        model = Net()
    p = plan(model, torch.zeros(2, 5, dtype=torch.long, device="meta"))
    model.to_empty(device="cpu")
    p.apply(model, generator=torch.Generator().manual_seed(0))
    by_name = {e.param: e for e in p.entries}
    assert by_name["fc.weight"].scheme == Scheme.HE_NORMAL
    assert float(model.fc.weight.detach().std()) == pytest.approx((2 / 64) ** 0.5, rel=0.05)  # He, fan_in 64: closed form
    assert float(model.emb.weight.detach().std()) == pytest.approx(1.0, rel=0.05)  # nn.Embedding's N(0, 1)
    hh = by_name["lstm.weight_hh_l0"]
    assert hh.scheme == Scheme.ORTHOGONAL and hh.blocks == 4
    for block in model.lstm.weight_hh_l0.detach().chunk(4):  # each gate's recurrent matrix orthogonal
        assert torch.allclose(block @ block.T, torch.eye(64), atol=1e-4)
    assert torch.count_nonzero(model.fc.bias) == 0
