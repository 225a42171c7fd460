"""Tiny backbones of every family that has a common-structure map (hidden 32, 2 layers, 4 heads; no downloads).

`build(family)` gives a fresh model (fixed seed), `inputs_for(family)` matching inputs, `run(model, family,
inputs)` the output tensor. RAW holds, written by hand from each model's `named_modules()`, the raw name
suffix of every role in a block; the tests compare the common-structure maps against it.
"""

from __future__ import annotations

import copy
import os

import torch
import transformers as T
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

H, L, NH, V, FF = 32, 2, 4, 99, 64
_TOK = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
_ENC = {"vocab_size": V, "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
        "intermediate_size": FF, "max_position_embeddings": 70}
_DEC = {"vocab_size": V, "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": NH,
        "num_key_value_heads": 2, "intermediate_size": FF, "max_position_embeddings": 64, **_TOK}
_SEQ2SEQ = {"vocab_size": V, "d_model": H, "encoder_layers": L, "decoder_layers": L, "encoder_attention_heads": NH,
            "decoder_attention_heads": NH, "encoder_ffn_dim": FF, "decoder_ffn_dim": FF,
            "max_position_embeddings": 64, "decoder_start_token_id": 2, **_TOK}
_T5 = {"vocab_size": V, "d_model": H, "d_kv": H // NH, "d_ff": FF, "num_layers": L, "num_heads": NH,
       "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}

CONFIGS = {
    "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(**_T5)),
    "t5-v1_1": lambda: T.T5ForConditionalGeneration(T.T5Config(**_T5, feed_forward_proj="gated-gelu",
                                                                tie_word_embeddings=False)),
    "mt5": lambda: T.MT5ForConditionalGeneration(T.MT5Config(**_T5)),
    "bart": lambda: T.BartForConditionalGeneration(T.BartConfig(**_SEQ2SEQ)),
    "mbart": lambda: T.MBartForConditionalGeneration(T.MBartConfig(**_SEQ2SEQ)),
    "bert": lambda: T.BertForSequenceClassification(T.BertConfig(**_ENC)),
    "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**_ENC, pad_token_id=1)),
    "xlm-roberta": lambda: T.XLMRobertaForSequenceClassification(T.XLMRobertaConfig(**_ENC, pad_token_id=1)),
    "distilbert": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
        vocab_size=V, dim=H, n_layers=L, n_heads=NH, hidden_dim=FF, max_position_embeddings=64)),
    "deberta-v2": lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(**_ENC)),
    "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(**_ENC, embedding_size=H)),
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=NH, n_positions=64,
                                                   **_TOK)),
    "opt": lambda: T.OPTForCausalLM(T.OPTConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
                                                num_attention_heads=NH, ffn_dim=FF, max_position_embeddings=64,
                                                word_embed_proj_dim=H, **_TOK)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**_DEC)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**_DEC)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_DEC)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**_DEC, head_dim=H // NH)),
    "vit": lambda: T.ViTForImageClassification(T.ViTConfig(hidden_size=H, num_hidden_layers=L,
                                                           num_attention_heads=NH, intermediate_size=FF,
                                                           image_size=16, patch_size=8, num_labels=3)),
}
FAMILIES = list(CONFIGS)
SEQ2SEQ = {"t5", "t5-v1_1", "mt5", "bart", "mbart"}

_BERT_RAW = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "proj": "attention.output.dense", "w1": "intermediate.dense", "w2": "output.dense"}
_LLAMA_RAW = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "proj": "self_attn.o_proj",
              "w1": "mlp.gate_proj", "w3": "mlp.up_proj", "w2": "mlp.down_proj", "ff": "mlp"}
_BART_RAW = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "proj": "self_attn.out_proj", "w1": "fc1", "w2": "fc2"}
_T5_RAW = {"q": "SelfAttention.q", "k": "SelfAttention.k", "v": "SelfAttention.v", "proj": "SelfAttention.o",
           "w1": "DenseReluDense.wi", "w2": "DenseReluDense.wo", "ff": "DenseReluDense"}

#: family -> role -> raw module-name suffix (None: the family has no such module)
RAW: dict[str, dict[str, str]] = {
    "t5": _T5_RAW,
    "t5-v1_1": {**_T5_RAW, "w1": "DenseReluDense.wi_0", "w3": "DenseReluDense.wi_1"},  # gated, like mT5
    "mt5": {**_T5_RAW, "w1": "DenseReluDense.wi_0", "w3": "DenseReluDense.wi_1"},
    "bart": _BART_RAW, "mbart": _BART_RAW, "opt": _BART_RAW,
    "bert": _BERT_RAW, "roberta": _BERT_RAW, "xlm-roberta": _BERT_RAW, "electra": _BERT_RAW,
    "deberta-v2": {**_BERT_RAW, "q": "attention.self.query_proj", "k": "attention.self.key_proj",
                   "v": "attention.self.value_proj"},
    "distilbert": {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                   "proj": "attention.out_lin", "w1": "ffn.lin1", "w2": "ffn.lin2", "ff": "ffn"},
    "gpt2": {"qkv": "attn.c_attn", "proj": "attn.c_proj", "w1": "mlp.c_fc", "w2": "mlp.c_proj", "ff": "mlp"},
    "llama": _LLAMA_RAW, "mistral": _LLAMA_RAW, "qwen2": _LLAMA_RAW, "gemma": _LLAMA_RAW,
    "vit": {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "proj": "attention.o_proj",
            "w1": "mlp.fc1", "w2": "mlp.fc2", "ff": "mlp"},
}


_BUILT: dict[tuple[str, int], nn.Module] = {}


def build(family: str, seed: int = 0) -> nn.Module:
    """A fresh tiny model of `family` (a copy of one built once per seed); the same seed gives the same weights."""
    if (family, seed) not in _BUILT:
        torch.manual_seed(seed)
        _BUILT[family, seed] = CONFIGS[family]().eval()
    return copy.deepcopy(_BUILT[family, seed])


def inputs_for(family: str, batch: int = 2, seq: int = 7, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(3, V, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if family in SEQ2SEQ:
        out["decoder_input_ids"] = torch.randint(3, V, (batch, 5), generator=g)
    return out


def run(model: nn.Module, family: str, inputs: dict) -> torch.Tensor:
    return model(**inputs).logits
