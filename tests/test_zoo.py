"""Hugging Face models built offline from small configs, and torch's nn.Transformer: every weight
is in the report, the tracer is named, and the library's own init gives no error finding."""

import warnings

import pytest
import torch

from initcheck import diagnose, probe
from initcheck.trace import weight_params

T = pytest.importorskip("transformers")
pytestmark = pytest.mark.zoo

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
SEQ2SEQ = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
               encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000, pad_token_id=0, bos_token_id=1,
               eos_token_id=2, decoder_start_token_id=1)

ZOO = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64,
                                                   bos_token_id=0, eos_token_id=0)),
    "bert": lambda: T.BertModel(T.BertConfig(**SMALL, max_position_embeddings=64)),
    "roberta": lambda: T.RobertaModel(T.RobertaConfig(**SMALL, max_position_embeddings=66)),
    "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                                                          vocab_size=1000)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**SMALL, num_key_value_heads=2, max_position_embeddings=64)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**SMALL, num_key_value_heads=2, max_position_embeddings=64)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**SMALL, num_key_value_heads=2, max_position_embeddings=64)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**SMALL, num_key_value_heads=2, head_dim=16,
                                                      max_position_embeddings=64)),
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(**SMALL, num_key_value_heads=2, num_local_experts=4,
                                                            num_experts_per_tok=2, max_position_embeddings=64)),
    "vit": lambda: T.ViTModel(T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=128, image_size=32, patch_size=8)),
    "clip_vision": lambda: T.CLIPVisionModel(T.CLIPVisionConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                                intermediate_size=128, image_size=32, patch_size=8)),
    "whisper": lambda: T.WhisperModel(T.WhisperConfig(**SEQ2SEQ, num_mel_bins=16, max_source_positions=32,
                                                      max_target_positions=32)),
    "bart": lambda: T.BartModel(T.BartConfig(**SEQ2SEQ, max_position_embeddings=64)),
    # a raw waveform in (input_values): the input guess builds one long enough for the conv front end
    "wav2vec2": lambda: T.Wav2Vec2ForCTC(T.Wav2Vec2Config(**SMALL, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                                                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)),
}


def build(name):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ZOO[name]()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_hugging_face_model_gets_a_full_report_without_false_errors(name):
    model = build(name)
    report = diagnose(model)
    assert report.tracer in ("fx", "recorded")
    judged = {lr.qualname for lr in report.layers} | {a for lr in report.layers for a in lr.aliases}
    canonical = set(weight_params(model))
    unreached = {f.layer for f in report.findings if f.code == "IC001"}
    assert not unreached, unreached
    # every weight is judged, except tensors the model only adds (class tokens, position tables)
    assert canonical - judged <= {"embeddings.cls_token", "embeddings.position_embeddings"}, canonical - judged
    assert report.ok, [f.message for f in report.findings if f.severity == "error"]
    assert not [f for f in report.findings if f.severity == "warning"], [f.message for f in report.findings]


def test_nn_transformer_defaults():
    model = torch.nn.Transformer(d_model=64, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                 dim_feedforward=128, batch_first=True)
    report = diagnose(model, (torch.randn(2, 5, 64), torch.randn(2, 4, 64)))
    assert report.tracer == "recorded" and len(report.layers) == 20 and report.ok


def test_gpt2_conventions_and_transposed_conv1d():
    layers = {lr.qualname: lr for lr in diagnose(build("gpt2")).layers}
    c_attn = layers["transformer.h.0.attn.c_attn.weight"]
    assert (c_attn.fan_in, c_attn.fan_out) == (64, 192)  # Conv1D stores [in, out]
    assert "initializer_range" in c_attn.convention
    c_proj = layers["transformer.h.0.attn.c_proj.weight"]
    assert c_proj.residual_end and "scaled residual" in c_proj.convention
    assert layers["transformer.wte.weight"].aliases == ("lm_head.weight",)


def test_moe_experts_are_followed_from_the_parameter():
    layers = {lr.qualname: lr for lr in diagnose(build("mixtral")).layers}
    up = layers["model.layers.0.mlp.experts.gate_up_proj"]
    down = layers["model.layers.0.mlp.experts.down_proj"]
    assert (up.fan_in, up.fan_out, up.activation) == (64, 256, "silu")
    assert (down.fan_in, down.fan_out) == (128, 64)


def test_a_broken_hugging_face_init_is_caught():
    # a constant 0.5 gate: every unit computes the same 0.5 * sum(x), 24x Xavier's variance, not a
    # design; a zero gate_proj is one (silu(0) * up = 0: each unit's gradient runs through its own
    # up channel, so the units part after one step, and the MLP starts as the identity)
    model = build("llama")
    torch.nn.init.constant_(model.model.layers[0].mlp.gate_proj.weight, 0.5)
    torch.nn.init.zeros_(model.model.layers[1].mlp.gate_proj.weight)
    torch.nn.init.normal_(model.model.layers[1].mlp.up_proj.weight, 0, 1.0)
    codes = {(f.code, f.layer) for f in diagnose(model).findings}
    assert ("IC101", "model.layers.0.mlp.gate_proj.weight") in codes
    assert ("IC103", "model.layers.1.mlp.up_proj.weight") in codes
    assert not {c for c in codes if c[1] == "model.layers.1.mlp.gate_proj.weight"}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_probe_finds_no_error_in_the_libraries_own_init(name):
    # BERT's queries and keys get relative gradients ~1e4 below its token-type embedding's: by
    # design (a bilinear form at small init, two embedding rows), not a vanishing gradient
    report = probe(build(name), device="cpu")
    assert report.probe and report.ok, [f.message for f in report.findings]


def test_data_driven_fix_scales_gpt2s_conv1d_layers():
    from initcheck import fix

    model = build("gpt2")
    report = fix(model, data_driven=True, keep_intentional=False, target_std=1.0,
                 generator=torch.Generator().manual_seed(0))
    scaled = {layer.name for layer in report.fix.data_driven.layers}
    for part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert f"transformer.h.0.{part}" in scaled, scaled
    layers = report.fix.data_driven.layers
    # every untied weight meets its target at its one use; the tied wte (a lookup of std 1 and the
    # output head, whose logits are sqrt(d) larger) cannot meet both, and the worst error says so
    untied = [abs(u - 1.0) for layer in layers if len(layer.uses) == 1 for u in layer.uses]
    assert max(untied) < 0.05
    tied = next(layer for layer in layers if layer.param == "transformer.wte.weight")
    assert len(tied.uses) == 2
    assert report.fix.data_driven.worst_rel_error == pytest.approx(max(abs(u - 1.0) for u in tied.uses), rel=1e-6)


GRID = [(arch, d, layers) for arch in ("gpt2", "bert", "llama", "t5") for d in (64, 128) for layers in (4, 8)]
# factorized embeddings (embedding_size < hidden_size): the post-LN encoder's stream starts at
# sqrt(E * 0.02^2) (0.11 at E = 32) and its first attention reads a small context; real ELECTRA-small
# (E = 128, d = 256) does the same, and trains
GRID += [(arch, d, 2) for arch in ("electra", "albert") for d in (64, 256)]


def _sized(arch, d, layers):
    if arch == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_embd=d, n_layer=layers, n_head=4, vocab_size=1000, n_positions=64,
                                              bos_token_id=0, eos_token_id=0))
    if arch == "bert":
        return T.BertModel(T.BertConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=4,
                                        intermediate_size=4 * d, vocab_size=1000, max_position_embeddings=64))
    if arch in ("electra", "albert"):
        config = (T.ElectraConfig if arch == "electra" else T.AlbertConfig)(
            embedding_size=d // 2, hidden_size=d, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=4 * d,
            vocab_size=1000, max_position_embeddings=64)
        return (T.ElectraForPreTraining if arch == "electra" else T.AlbertForMaskedLM)(config)
    if arch == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(d_model=d, d_kv=d // 4, d_ff=4 * d, num_layers=layers, num_heads=4,
                                                       vocab_size=1000))
    return T.LlamaForCausalLM(T.LlamaConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=4,
                                            num_key_value_heads=4, intermediate_size=4 * d, vocab_size=1000,
                                            max_position_embeddings=64))


@pytest.mark.parametrize("arch,d,layers", GRID, ids=[f"{a}-{d}x{n}" for a, d, n in GRID])
def test_library_init_has_no_error_across_widths_and_depths(arch, d, layers):
    """The libraries' own init trains at every size: a threshold that holds at one config size must
    hold at the others (GPT-2 at n_embd 128, 4 layers once read as an exploding gradient)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = diagnose(_sized(arch, d, layers))
    assert report.ok, [f.message for f in report.findings if f.severity == "error"]
