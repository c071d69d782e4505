"""inputs and expected: every way to give an input, and the input read off the model."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from initcheck.errors import ForwardError, InputSpecError, InputTooLarge, UsageError
from initcheck.expected import first_accepted, min_spatial_size, proposals
from initcheck.inputs import (
    DTYPES,
    InputSpec,
    build,
    check_memory,
    estimate_bytes,
    load_hook,
    map_tensors,
    normalize,
    parse_spec,
    parse_specs,
)

# --- specs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1,80,3000", InputSpec(None, (1, 80, 3000), torch.float32)),
    ("tokens=1,16:int64", InputSpec("tokens", (1, 16), torch.int64)),
    ("2x3x32x32", InputSpec(None, (2, 3, 32, 32), torch.float32)),
    (" mask = 2 , 5 : bool ", InputSpec("mask", (2, 5), torch.bool)),
    ("7:torch.float16", InputSpec(None, (7,), torch.float16)),
])
def test_specs_parse(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text, detail", [
    ("1,,3", "size 2 is empty"),
    ("1,3,", "size 3 is empty"),
    ("0,3", "size 1 (0) is not positive"),
    ("2,-1", "size 2 (-1) is not positive"),
    ("2,a", "size 2 ('a') is not an integer"),
    ("2.5", "size 1 ('2.5') is not an integer"),
    ("", "has no shape"),
    ("x=:int64", "has no shape"),
    ("1,2:float99", "unknown dtype 'float99'"),
    ("9lives=1,2", "'9lives' is not a keyword name"),
])
def test_bad_specs_are_one_line_usage_errors(text, detail):
    with pytest.raises(InputSpecError) as info:
        parse_spec(text)
    assert isinstance(info.value, UsageError)
    assert info.value.detail.startswith(detail)
    assert "\n" not in info.value.line()


def test_a_keyword_given_twice_is_refused():
    with pytest.raises(InputSpecError, match="'a' is given more than once"):
        parse_specs(["1,2", "a=3", "a=4"])


def test_build_positional_and_keyword_inputs():
    model = nn.Embedding(7, 3)
    args, kwargs = build(parse_specs(["2,3", "tokens=2,5:int64"]), model)
    assert [a.shape for a in args] == [torch.Size([2, 3])] and args[0].dtype == torch.float32
    assert kwargs["tokens"].shape == (2, 5) and kwargs["tokens"].dtype == torch.int64
    assert kwargs["tokens"].min() >= 0 and kwargs["tokens"].max() < 7  # valid rows of the embedding


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from([*"0123456789,x:=-+ ._aZ\n\t", "int64", "bool", "×", "٣"]), max_size=20).map("".join)
       | st.text(max_size=30))
def test_fuzz_any_text_is_a_spec_or_one_usage_error(text):
    try:
        spec = parse_spec(text)
    except InputSpecError as e:
        assert "\n" not in e.line()
        return
    assert spec.shape and all(s > 0 for s in spec.shape)
    assert parse_spec(str(spec)) == spec  # what it prints is what it parsed


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(1, 10**9), min_size=1, max_size=6),
       st.none() | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
       st.sampled_from(sorted(DTYPES)), st.sampled_from([",", "x", ", "]))
def test_fuzz_every_valid_spec_parses_to_itself(sizes, name, dtype, sep):
    text = f"{name + '=' if name else ''}{sep.join(map(str, sizes))}:{dtype}"
    assert parse_spec(text) == InputSpec(name, tuple(sizes), DTYPES[dtype])


# --- structured inputs ---------------------------------------------------------------------------


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x, mask):
        return self.fc(x) * mask


class OneBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, batch):
        return self.fc(batch.x) * batch.mask


Pair = namedtuple("Pair", ["x", "mask"])


@dataclasses.dataclass
class PairDC:
    x: torch.Tensor
    mask: torch.Tensor


@pytest.mark.parametrize("make", [lambda x, m: Pair(x, m), lambda x, m: PairDC(x, m)])
def test_namedtuples_and_dataclasses_follow_the_forward(make):
    x, m = torch.randn(2, 3), torch.ones(2, 3)
    structured = make(x, m)
    for model in (TwoInputs(), OneBatch()):
        args, kwargs = normalize(structured, model)
        expected = model.fc(x) * m
        assert torch.equal(model(*args, **kwargs), expected)  # the forward accepts what normalize made


def test_mappings_are_keyword_inputs():
    x, m = torch.randn(2, 3), torch.ones(2, 3)
    assert normalize({"x": x, "mask": m}) == ((), {"x": x, "mask": m})
    assert normalize(x) == ((x,), {})
    assert normalize([x, m]) == ((x, m), {})
    assert normalize(None) is None


def test_a_batch_encoding_is_keyword_inputs():
    transformers = pytest.importorskip("transformers")
    enc = transformers.BatchEncoding({"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4)})
    args, kwargs = normalize(enc)
    assert args == () and set(kwargs) == {"input_ids", "attention_mask"}


def test_map_tensors_keeps_the_structure():
    x = torch.zeros(2)
    out = map_tensors({"a": Pair(x, [x]), "b": PairDC(x, x), "n": 3}, lambda t: t.double())
    assert isinstance(out["a"], Pair) and out["a"].x.dtype == torch.float64 and out["a"].mask[0].dtype == torch.float64
    assert isinstance(out["b"], PairDC) and out["b"].mask.dtype == torch.float64
    assert out["n"] == 3


def test_a_make_inputs_hook(tmp_path, capsys):
    hook = tmp_path / "hooks.py"
    hook.write_text(
        "import torch\n"
        "print('making inputs')\n"
        "def make_inputs():\n"
        "    return (torch.zeros(2, 3),), {'mask': torch.ones(2, 3)}\n"
        "def for_model(model):\n"
        "    return torch.zeros(4, model.fc.in_features)\n"
        "def broken():\n"
        "    raise KeyError('data')\n")
    args, kwargs = load_hook(f"{hook}:make_inputs")
    assert args[0].shape == (2, 3) and kwargs["mask"].shape == (2, 3)
    model = TwoInputs()
    (x,), kw = load_hook(f"{hook}:for_model", model)
    assert x.shape == (4, 3) and kw == {}
    with pytest.raises(UsageError, match="calling broken\\(\\) raised KeyError"):
        load_hook(f"{hook}:broken")
    with pytest.raises(UsageError, match="'missing' is not a function"):
        load_hook(f"{hook}:missing")
    assert capsys.readouterr().out == ""  # the hook's print went to stderr


# --- memory ------------------------------------------------------------------------------------


def test_estimates_are_elements_times_bytes():
    assert estimate_bytes([(1, 16), (2, 3, 4)], [torch.int64, torch.float16]) == 16 * 8 + 24 * 2


def test_an_input_too_large_is_refused_before_allocation():
    with pytest.raises(InputTooLarge) as info:
        check_memory([(1, 3, 100000, 100000)], [torch.float32], limit=10**9)
    # 3e10 float32 values are 1.2e11 bytes
    assert info.value.detail == "needs about 120.0 GB, over the limit of 1.0 GB"
    with pytest.raises(InputTooLarge, match="half of the free memory"):
        check_memory([(1, 3, 10**6, 10**6)], [torch.float32])  # 12 TB: over any machine's free memory
    assert check_memory([(10, 10)], [torch.float32], limit=400) == 400  # at the limit is allowed


def test_a_factor_covers_what_a_probe_keeps():
    assert check_memory([(1000,)], [torch.float32], limit=10_000) == 4000
    with pytest.raises(InputTooLarge):
        check_memory([(1000,)], [torch.float32], limit=10_000, factor=3)


# --- the input read off the model ----------------------------------------------------------------


def dcgan_discriminator():
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 1, 4, 1, 0), nn.Sigmoid())


def test_dcgans_discriminator_gets_its_64_pixels():
    model = dcgan_discriminator()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 32, 32))  # the old guess: four halvings leave 2x2 for a 4x4 kernel
    assert min_spatial_size(model) == (64, None)
    args, _ = first_accepted("d", model, proposals(model), lambda i: model(*i[0], **i[1]))
    assert args[0].shape == (2, 3, 64, 64)
    assert model(*args).shape == (2, 1, 1, 1)


def test_lenet_gets_the_size_its_linear_fixes():
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16 * 5 * 5, 10))
    assert min_spatial_size(model) == (16, 32)  # LeNet-5 reads 32x32 images
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    assert proposals(model)[0].inputs[0][0].shape == (2, 1, 32, 32)


def test_alexnets_downsampling_needs_63_pixels():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 11, 4, 2), nn.MaxPool2d(3, 2), nn.Conv2d(4, 4, 5, padding=2), nn.MaxPool2d(3, 2),
        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.MaxPool2d(3, 2), nn.AdaptiveAvgPool2d(6),
        nn.Flatten(), nn.Linear(4 * 36, 10))
    model(torch.randn(1, 3, 63, 63))  # torch is the oracle: 63 runs, 62 does not
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 62, 62))
    assert min_spatial_size(model) == (63, None)


class Declares(nn.Module):
    def __init__(self, side=40):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2 * side * side, 2)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_timms_pretrained_cfg_comes_first():
    model = Declares(40)
    model.pretrained_cfg = {"input_size": (3, 40, 40)}
    first = proposals(model)[0]
    assert first.source == "timm pretrained_cfg['input_size']" and first.inputs[0][0].shape == (2, 3, 40, 40)


def test_an_img_size_on_a_submodule_is_read():
    model = Declares(48)
    model.conv.img_size = (48, 48)  # timm keeps it on patch_embed
    first = proposals(model)[0]
    assert first.source == "attribute conv.img_size" and first.inputs[0][0].shape == (2, 3, 48, 48)


def test_torchvisions_documented_size_for_inception():
    class Inception3(Declares):
        pass

    assert proposals(Inception3())[0].inputs[0][0].shape == (2, 3, 299, 299)


def test_a_config_gives_token_ids_or_whisper_inputs():
    lm = nn.Sequential(nn.Embedding(50, 4))
    lm.config = SimpleNamespace(vocab_size=50, block_size=16)
    (tokens,), _ = proposals(lm)[0].inputs
    assert tokens.shape == (2, 8) and tokens.dtype == torch.int64 and tokens.max() < 50
    whisper = nn.Sequential(nn.Conv1d(80, 4, 3))
    whisper.dims = SimpleNamespace(n_mels=80, n_audio_ctx=1500, n_vocab=51865, n_text_ctx=448)
    (mel, toks), _ = proposals(whisper)[0].inputs
    assert mel.shape == (2, 80, 3000) and toks.shape == (2, 8)  # whisper's 30 s: 2 x 1500 frames


def test_when_guessing_fails_every_shape_and_its_error_is_named():
    class Picky(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise ValueError(f"not {tuple(x.shape)}")

    model = Picky()
    tried = proposals(model)
    with pytest.raises(ForwardError) as info:
        first_accepted("picky.py:Picky", model, tried, lambda i: model(*i[0], **i[1]))
    line = info.value.line()
    assert len(tried) == 2  # 32 (the default, over the 3 pixels needed) and ImageNet's 224
    for side in (32, 224):
        assert f"(2, 3, {side}, {side}) float32 [first layer conv]: ValueError: not (2, 3, {side}, {side})" in line


# --- a patch-embedding model that stores no image size (vit-pytorch) ------------------------------

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _vit_pytorch():
    spec = importlib.util.spec_from_file_location("vit_pytorch_fixture", os.path.join(FIXTURES, "vit_pytorch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("image, patch, channels", [(48, 8, 3), (32, 4, 1), (64, 16, 3)])
def test_vit_pytorch_reads_its_image_from_the_position_table_and_the_patch_projection(image, patch, channels):
    model = _vit_pytorch().ViT(image_size=image, patch_size=patch, channels=channels)
    first = proposals(model)[0]
    assert first.inputs[0][0].shape == (2, channels, image, image)
    assert first.source.startswith("position table pos_embedding")
    assert model(*first.inputs[0]).shape == (2, 10)  # torch is the oracle: the model takes it


class NoClassToken(nn.Module):
    """Another spelling of the same idea: a Conv-free patch projection, a (N, D) table, no class token."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4 * 4 * 3, 32)
        self.position_embeddings = nn.Parameter(torch.zeros(25, 32))
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 48)
        return self.head((self.proj(x) + self.position_embeddings).mean(1))


def test_a_table_without_a_class_token_and_another_name():
    model = NoClassToken()
    first = proposals(model)[0]
    assert first.inputs[0][0].shape == (2, 3, 20, 20)  # 25 = 5x5 patches of 4 pixels
    assert model(*first.inputs[0]).shape == (2, 2)


def test_a_token_model_with_a_position_table_is_not_read_as_an_image():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(100, 48)
            self.pos_embedding = nn.Parameter(torch.zeros(1, 17, 48))
            self.fc = nn.Linear(48, 48)  # 48 = 4x4x3, and 17 = 16 + 1: an image reading would fit

        def forward(self, ids):
            return self.fc(self.tok(ids) + self.pos_embedding[:, : ids.shape[1]])

    assert not any(p.source.startswith("position table") for p in proposals(Tokens()))


@pytest.mark.slow
def test_vit_pytorch_probes_end_to_end():
    from click.testing import CliRunner

    from initcheck.cli import main

    r = CliRunner().invoke(main, [os.path.join(FIXTURES, "vit_pytorch.py") + ":ViT", "--probe", "-q"])
    assert r.exit_code in (0, 1), r.output


def test_proposals_are_built_only_as_the_search_reaches_them(monkeypatch):
    # a DenseNet has ~120 distinct first-layer shapes: drawing each up front took 22 s of randn
    from initcheck import expected

    drawn = []
    real = expected._randn
    monkeypatch.setattr(expected, "_randn", lambda *shape, generator: drawn.append(shape) or real(*shape, generator=generator))
    model = nn.Sequential(*[nn.Conv2d(c, c + 1, 1) for c in range(3, 40)])
    first = next(expected.iter_proposals(model))
    assert first.inputs[0][0].shape[1] == 3
    assert len(drawn) <= 3  # the first layer's sizes, not every layer's
    assert len(expected.proposals(model)) > 30  # the whole list is still there when asked for


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_guessed_input_takes_the_models_dtype(dtype):
    """A model cast to bfloat16/float16 takes no float32 input: the probe and the data-driven fix,
    which run the model on a guessed input, failed with 'mat1 and mat2 must have the same dtype'."""
    import seeds

    from initcheck import fix, probe
    from initcheck.expected import candidates

    model = seeds.He().to(dtype)
    (args, _), *_ = candidates(model)
    assert args[0].dtype == dtype
    assert len(probe(model).probe) == 3
    assert fix(seeds.Uniform01().to(dtype), data_driven=True).fix.data_driven.forward_passes >= 1
