"""Hugging Face architectures built from configs over a grid of widths, depths and vocabularies,
each at its library's own init, through diagnose() with no input: the error and warning codes per
size. The libraries' inits train, so any error here is a false one. Offline: configs only.

    python benchmarks/hf_grid.py [gpt2,bert,llama,t5,opt,neox,mistral,roberta,bart,vit,gemma,qwen2]
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from tabulate import tabulate

from initcheck import diagnose

SIZES = [(64, 2), (128, 4), (256, 12), (768, 12), (256, 48)]  # (width, layers)
VOCABS = (1000, 32000)


def builders() -> dict[str, Callable[[int, int, int, int], Any]]:
    import transformers as T

    T.logging.set_verbosity_error()
    return {
        "gpt2": lambda d, n, h, v: T.GPT2LMHeadModel(T.GPT2Config(n_embd=d, n_layer=n, n_head=h, vocab_size=v, n_positions=128)),
        "bert": lambda d, n, h, v: T.BertForMaskedLM(T.BertConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=4 * d, vocab_size=v,
            max_position_embeddings=128)),
        "llama": lambda d, n, h, v: T.LlamaForCausalLM(T.LlamaConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, num_key_value_heads=h, intermediate_size=4 * d,
            vocab_size=v, max_position_embeddings=128)),
        "t5": lambda d, n, h, v: T.T5ForConditionalGeneration(T.T5Config(
            d_model=d, d_kv=64, d_ff=4 * d, num_layers=n, num_heads=h, vocab_size=v)),
        "opt": lambda d, n, h, v: T.OPTForCausalLM(T.OPTConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, ffn_dim=4 * d, vocab_size=v,
            max_position_embeddings=128, word_embed_proj_dim=d)),
        "neox": lambda d, n, h, v: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=4 * d, vocab_size=v,
            max_position_embeddings=128)),
        "mistral": lambda d, n, h, v: T.MistralForCausalLM(T.MistralConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, num_key_value_heads=max(1, h // 2),
            intermediate_size=4 * d, vocab_size=v, max_position_embeddings=128)),
        "roberta": lambda d, n, h, v: T.RobertaForMaskedLM(T.RobertaConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=4 * d, vocab_size=v,
            max_position_embeddings=130)),
        "bart": lambda d, n, h, v: T.BartForConditionalGeneration(T.BartConfig(
            d_model=d, encoder_layers=n, decoder_layers=n, encoder_attention_heads=h, decoder_attention_heads=h,
            encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d, vocab_size=v, max_position_embeddings=128)),
        "vit": lambda d, n, h, v: T.ViTForImageClassification(T.ViTConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=4 * d, image_size=64, patch_size=8)),
        "gemma": lambda d, n, h, v: T.GemmaForCausalLM(T.GemmaConfig(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, num_key_value_heads=h, head_dim=64,
            intermediate_size=4 * d, vocab_size=v, max_position_embeddings=128)),
        "qwen2": lambda d, n, h, v: T.Qwen2ForCausalLM(T.Qwen2Config(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, num_key_value_heads=h, intermediate_size=4 * d,
            vocab_size=v, max_position_embeddings=128)),
    }


def main(argv: list[str]) -> None:
    build = builders()
    archs = argv[0].split(",") if argv else list(build)
    rows = []
    for arch in archs:
        for d, layers in SIZES:
            for vocab in VOCABS if layers < 48 else VOCABS[:1]:
                torch.manual_seed(0)
                t = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    report = diagnose(build[arch](d, layers, max(2, d // 64), vocab))
                codes = {s: sorted({f.code for f in report.findings if f.severity == s}) for s in ("error", "warning")}
                rows.append((arch, d, layers, vocab, report.tracer, ",".join(codes["error"]) or "none",
                             ",".join(codes["warning"]) or "none", f"{time.process_time() - t:.1f}"))
                print(*rows[-1], sep="\t", file=sys.stderr, flush=True)
    print(tabulate(rows, headers=("arch", "width", "layers", "vocab", "tracer", "errors", "warnings", "CPU s"),
                   tablefmt="github"))


if __name__ == "__main__":
    main(sys.argv[1:])
