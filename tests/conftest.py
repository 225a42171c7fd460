"""Tiny backbones built from transformers configs (no downloads) and shared helpers."""

from __future__ import annotations

import os

import pytest
import torch
import transformers
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HIDDEN, LAYERS, HEADS, VOCAB = 32, 2, 4, 99

# Tiny models gain nothing from intra-op threads, and on a busy CPU the thread pool makes every op far slower
# (measured: the six zoo types on GPT-2 take 1.9 s with 1 thread, 29 s with 2 under load).
torch.set_num_threads(1)


def tiny_t5():
    cfg = transformers.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=64,
                                num_layers=LAYERS, num_decoder_layers=LAYERS, num_heads=HEADS,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return transformers.T5ForConditionalGeneration(cfg)


def tiny_bert():
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=64, max_position_embeddings=64)
    return transformers.BertForSequenceClassification(cfg)


def tiny_gpt2():
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=64,
                                   max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


class Toy(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def tiny_toy():
    return Toy()


BUILDERS = {"t5": tiny_t5, "bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama, "toy": tiny_toy}


def build(family: str, seed: int = 0) -> nn.Module:
    """A freshly initialised tiny model; the same seed gives identical weights."""
    torch.manual_seed(seed)
    model = BUILDERS[family]()
    model.eval()
    return model


def inputs_for(family: str, batch: int = 2, seq: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    if family == "toy":
        return {"input": torch.randn(batch, 8, generator=g)}
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if family == "t5":
        out["decoder_input_ids"] = torch.randint(2, VOCAB, (batch, 5), generator=g)
    return out


def run(model: nn.Module, family: str, inputs: dict) -> torch.Tensor:
    if family == "toy":
        return model(inputs["input"])
    return model(**inputs).logits


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return (out.float() ** 2).mean()


@pytest.fixture
def tmp_ckpt(tmp_path):
    return tmp_path / "ckpt"
