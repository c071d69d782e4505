"""provenance: the line that last wrote each parameter while the model was built."""

import os

import pytest
import torch
from torch import nn

from initcheck import diagnose
from initcheck.provenance import recorded


def line_of(marker: str) -> str:
    with open(__file__) as f:
        for number, text in enumerate(f, 1):
            if text.rstrip().endswith(f"# <- {marker}"):
                return f"{os.path.relpath(__file__)}:{number}" if __file__.startswith(os.getcwd()) else f"{__file__}:{number}"
    raise AssertionError(marker)


class Written(nn.Module):
    def __init__(self):
        super().__init__()
        self.default = nn.Linear(8, 8)  # <- default
        self.explicit = nn.Linear(8, 8)
        nn.init.uniform_(self.explicit.weight, 0.0, 1.0)  # <- explicit
        self.via_data = nn.Linear(8, 8)
        self.via_data.weight.data.normal_(0.0, 0.02)  # <- data
        self.assigned = nn.Linear(8, 8)
        self.assigned.weight.data = torch.zeros(8, 8)  # <- assigned
        self.sliced = nn.Linear(8, 8)
        with torch.no_grad():
            self.sliced.weight[0] = 1.0  # <- setitem
            self.sliced.bias *= 0.5  # <- imul
        self.raw = nn.Parameter(torch.randn(8, 8) * 0.1)  # <- raw
        self.orth = nn.Linear(8, 8)
        nn.init.orthogonal_(self.orth.weight)  # <- orthogonal

    def forward(self, x):
        return self.orth(self.sliced(self.assigned(self.via_data(self.explicit(self.default(x))))) @ self.raw)


def test_each_parameter_points_at_the_line_that_last_wrote_it():
    with recorded() as sites:
        model = Written()
    got = sites.for_model(model)
    assert got["default.weight"] == got["default.bias"] == line_of("default")
    assert got["explicit.weight"] == line_of("explicit")
    assert got["via_data.weight"] == line_of("data")
    assert got["assigned.weight"] == line_of("assigned")
    assert got["sliced.weight"] == line_of("setitem")
    assert got["sliced.bias"] == line_of("imul")
    assert got["raw"] == line_of("raw")
    assert got["orth.weight"] == line_of("orthogonal")


def test_recording_changes_nothing_and_ends_with_the_block():
    torch.manual_seed(0)
    plain = Written()
    torch.manual_seed(0)
    with recorded():
        watched = Written()
    for (k, v), w in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(v, w), k
    with recorded() as sites:
        pass
    later = Written()  # built after the block: nothing is recorded
    assert sites.for_model(later) == {}
    assert not torch._C._is_torch_function_mode_enabled()


def test_findings_carry_the_line_and_the_text_leads_with_it():
    with recorded() as sites:
        model = Written()
    report = diagnose(model, torch.randn(4, 8), sources=sites.for_model(model))
    mean = [f for f in report.findings if f.code == "IC102" and f.layer == "explicit.weight"]
    assert mean and mean[0].source == line_of("explicit")
    assert f"{line_of('explicit')}: IC102 [error] explicit" in str(report)
    assert {lr.qualname: lr.source for lr in report.layers}["default.weight"] == line_of("default")
    assert report.to_dict()["findings"][0]["source"] is not None


@pytest.mark.parametrize("sources", [None, {}])
def test_without_sources_the_target_heads_each_finding(sources):
    report = diagnose(Written(), torch.randn(4, 8), sources=sources, target="m.py:Written")
    assert all(f.source is None for f in report.findings)
    assert "m.py:Written: IC102 [error]" in str(report)
