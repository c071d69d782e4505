"""--max-memory: sizes as written, the activation estimate played on the meta device (closed forms
from each model's liveness), and the guard that refuses a probe or a data-driven fix before any
real forward runs."""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from initcheck import fix, probe
from initcheck.cli import main
from initcheck.configfile import Config
from initcheck.errors import ConfigError, InputTooLarge, UsageError
from initcheck.memory import Activity, activation_peak, estimate, guard, resolve_limit
from initcheck.options import settings_from
from initcheck.sizes import NO_LIMIT, parse_size

# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 * 10**9), ("512M", 512 * 10**6), ("2.5GB", 2_500_000_000), ("1GiB", 2**30), ("64kib", 65536),
    ("123", 123), (" 3 g ", 3 * 10**9), ("1.5t", 1_500_000_000_000), ("none", NO_LIMIT), ("0", NO_LIMIT),
    ("OFF", NO_LIMIT),
])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "4X", "-1", "1e9", "0.1", "4 G B", "1,5G", "nan", "inf", "9" * 30])
def test_bad_sizes_are_value_errors(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_max_memory_from_the_command_line_and_the_config():
    assert settings_from(cli={"max_memory": "2G"}).max_memory == 2 * 10**9
    assert settings_from(cli={"max_memory": "none"}).max_memory == NO_LIMIT
    assert settings_from().max_memory is None  # the default: half the available memory
    assert settings_from(Config("pyproject.toml", {"max-memory": 10**8})).max_memory == 10**8
    assert settings_from(Config("pyproject.toml", {"max-memory": "1.5GB"})).max_memory == 1_500_000_000
    with pytest.raises(UsageError, match=r"--max-memory 4Q: is not a size"):
        settings_from(cli={"max_memory": "4Q"})
    with pytest.raises(ConfigError, match='max-memory = "lots" is not a size'):
        settings_from(Config("pyproject.toml", {"max-memory": "lots"}))
    with pytest.raises(ConfigError, match="max-memory = true is not valid"):
        settings_from(Config("pyproject.toml", {"max-memory": True}))


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(["input", "input_shape", "max_memory", "input_dtype"]),
       st.lists(st.sampled_from([*"0123456789,x:=.-+ gGmMkKbBiI_aZ\n", "none", "int64", "×", "٣"]), max_size=16).map("".join)
       | st.text(max_size=24))
def test_fuzz_every_input_option_is_a_setting_or_one_usage_error(option, text):
    given_ = {"inputs": (text,)} if option == "input" else {option: text}
    try:
        resolved = settings_from(cli=given_)
    except UsageError as e:
        assert "\n" not in e.line() and e.line().startswith("--")
        return
    if option == "max_memory":
        assert resolved.max_memory is not None and resolved.max_memory >= 0


def test_a_limit_is_bytes_none_or_a_share_of_what_is_free():
    assert resolve_limit(10**6).bytes == 10**6
    assert resolve_limit(NO_LIMIT).bytes is None
    default = resolve_limit(None)
    assert default.why == "half the available memory" and default.bytes and default.bytes > 0


# --- the estimate, against each model's liveness written out --------------------------------------


def test_a_no_grad_chain_holds_two_activations_at_its_peak():
    n, a, b, c = 64, 32, 256, 16
    model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c))
    # relu runs while the Linear's output is alive: n*b + n*b floats; then n*b (relu) + n*c
    expected = 4 * max(2 * n * b, n * b + n * c)
    peak = activation_peak(model, ((torch.zeros(n, a),), {}), backward=False)
    assert expected <= peak <= expected * 1.05  # the estimate purges dead storages with 5% slack


def test_conv_activations_no_grad_and_with_the_probes_backward():
    side, ch = 64, 8
    model = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU())
    act = 4 * ch * side * side  # one activation: bytes
    x = torch.zeros(1, 3, side, side)
    no_grad = activation_peak(model, ((x,), {}), backward=False)
    assert 2 * act <= no_grad <= 2 * act * 1.05  # an op's input and output alive together, never more
    kept = activation_peak(model, ((x,), {}), backward=True)
    # autograd keeps both ReLU outputs (ReLU saves its result, the second conv its input) and the
    # backward adds the incoming gradient: at least three activations, never all six tensors plus grads
    assert 3 * act <= kept <= 8 * act


def test_the_estimate_counts_the_input_and_the_copies():
    model = nn.Linear(100, 10)
    params = 4 * (100 * 10 + 10)
    x = torch.zeros(8, 100)
    found = estimate(model, ((x,), {}), Activity.PROBE)
    assert found.inputs == 4 * 800 and found.params == params
    assert found.total == found.inputs + found.params + (found.activations or 0)


class Counting(nn.Module):
    """A model whose activations are 16x its input: the input check passes, the run would not fit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Linear(16, 2)

    real_calls = 0  # on the class: the probe's forward runs on a deep copy

    def forward(self, x):
        if isinstance(x, torch.Tensor) and not x.is_meta:
            type(self).real_calls += 1
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(autouse=True)
def _no_calls_yet():
    Counting.real_calls = 0
    yield
    Counting.real_calls = 0


BIG = (1, 3, 4000, 4000)  # 192 MB of float32 (zeros: pages the test never touches)
LIMIT = 500 * 10**6  # over the input, under its activations (16 channels: 1 GB each)


def test_probe_over_the_limit_is_refused_before_any_real_forward():
    model = Counting()
    with pytest.raises(InputTooLarge) as info:
        probe(model, torch.zeros(BIG), max_memory=LIMIT, target="net.py:Counting")
    assert model.real_calls == 0
    line = info.value.line()
    assert line.startswith("net.py:Counting: probing on 1x3x4000x4000 needs ~") and "over the --max-memory limit 500.0 MB" in line
    assert "\n" not in line


def test_a_data_driven_fix_over_the_limit_is_refused_and_changes_nothing():
    model = Counting()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputTooLarge, match="fixing on 1x3x4000x4000"):
        fix(model, torch.zeros(BIG), max_memory=LIMIT)
    assert model.real_calls == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_guessed_input_is_judged_too():
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 4, 1))
    model.img_size = 16  # the guess: the probe's batch of 32 images of 16x16 (98 KB), 2.1 MB per activation
    with pytest.raises(InputTooLarge, match=r"probing on 32x3x16x16 needs ~"):
        probe(model, max_memory=4 * 10**6)  # the input fits; the three activations a backward needs do not


class DeclaresHuge(Counting):
    """Declares a 100,000-pixel side (240 GB at batch 2) before a conv that takes any size."""

    img_size = 100_000


def test_a_guess_is_refused_before_the_forward_that_tries_it():
    model = Counting()
    model.img_size = 64  # the declared guess: fine as an input, its activations at batch 32 are not
    with pytest.raises(InputTooLarge, match=r"probing on 32x3x64x64 needs ~"):
        probe(model, max_memory=8 * 10**6)
    assert model.real_calls == 0  # judged before accepts() ran it
    data_driven = Counting()
    data_driven.img_size = 512
    before = {k: v.clone() for k, v in data_driven.state_dict().items()}
    with pytest.raises(InputTooLarge, match=r"fixing on 2x3x512x512 needs ~"):
        fix(data_driven, data_driven=True, max_memory=10**6)
    assert data_driven.real_calls == 0
    assert all(torch.equal(before[k], v) for k, v in data_driven.state_dict().items())


def test_a_declared_size_too_large_to_build_is_never_allocated_and_named():
    from initcheck.expected import proposals, too_large

    model = DeclaresHuge()
    found = proposals(model)
    declared = next(p for p in found if "img_size" in p.source)
    assert declared.inputs[0][0].is_meta and declared.inputs[0][0].shape == (2, 3, 100_000, 100_000)
    assert too_large(declared.inputs) == "needs about 240.0 GB, over half the available memory: not built"
    report = probe(model, max_memory=10**9)  # the next guess (the first conv's smallest input) is probed
    assert report.probe and model.real_calls >= 1


def test_under_the_limit_the_probe_runs():
    model = Counting()
    report = probe(model, torch.zeros(2, 3, 8, 8), max_memory=10**9)
    assert model.real_calls >= 1 and report.probe


class ReadsAValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum().item() > 1e9:  # data-dependent: no meta forward can answer it
            return x
        return self.fc(x)


def test_when_the_meta_forward_fails_only_the_input_is_judged():
    model = ReadsAValue()
    x = torch.zeros(2, 4)
    found = guard(model, x, activity=Activity.PROBE, max_memory=10**6)
    assert found is not None and found.activations is None and found.total == 4 * 8 + 4 * 20
    assert probe(model, x, max_memory=10**6).probe  # and the run goes on


def test_the_command_line_refuses_with_one_line(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, padding=1)
                self.head = nn.Linear(16, 2)

            def forward(self, x):
                return self.head(torch.relu(self.conv(x)).mean((2, 3)))
    """))
    r = CliRunner().invoke(main, [f"{path}:Net", "--probe", "--input", "1,3,4000,4000", "--max-memory", "500M"])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "probing on 1x3x4000x4000 needs ~" in lines[0]
    assert "over the --max-memory limit 500.0 MB" in lines[0] and "raise --max-memory" in lines[0]
    r = CliRunner().invoke(main, [f"{path}:Net", "--probe", "--max-memory", "lots"])
    assert r.exit_code == 2 and "--max-memory lots: is not a size" in r.stderr
