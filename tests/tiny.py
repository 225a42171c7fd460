"""Tiny backbones of every family the tests use (hidden 32, 2 layers, 4 heads, fixed seed; no downloads), their
inputs, and the helpers every test module shares. A plain module: tests import it, pytest setup lives in conftest.

    build(family, seed=0) -> nn.Module     a fresh model in eval mode; the same seed gives the same weights, and the
                                           global torch RNG is left exactly as constructing the model leaves it
    inputs_for(family, batch=2, seq=7, seed=1) -> dict   keyword inputs (row 0 padded at the end; decoder ids for
                                           encoder-decoder families; pixel values for ViT; {"input": x} for the toy)
    run(model, family, inputs) -> Tensor   the output tensor (logits; the toy's plain output)
    loss_of(out) -> Tensor                 a scalar loss that every element of `out` reaches

    FAMILIES      every family `build` knows
    CORE          the families the shared property checks run on: t5, bert, gpt2, llama, toy
    MAPPED        the families with a common-structure map (tests/test_structures.py)
    SEQ2SEQ       the encoder-decoder families
    RAW           family -> block role -> raw module-name suffix, written by hand from each model's named_modules()
    HIDDEN, LAYERS, HEADS, VOCAB, FF   the tiny sizes
    bert_config(**changes)        the tiny BERT's config with changes (test_train saves one with its own vocabulary)

Families beyond the map: "roberta-cls" (a RoBERTa classifier, for prefix / soft-prompt tests) and "toy" (a plain
nn.Sequential). "bart" and "t5-v1_1" are set up for generate(): no forced BOS / EOS, and T5 v1.1 has
d_kv * num_heads (48) != d_model (32), as the real T5 v1.1 models do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import transformers as T
from torch import nn

HIDDEN, LAYERS, HEADS, VOCAB, FF = 32, 2, 4, 99, 64

_TOK = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
_ENC = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": FF,
    "max_position_embeddings": 70,
}
_DEC = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": 2,
    "intermediate_size": FF,
    "max_position_embeddings": 64,
    **_TOK,
}
_SEQ2SEQ = {
    "vocab_size": VOCAB,
    "d_model": HIDDEN,
    "encoder_layers": LAYERS,
    "decoder_layers": LAYERS,
    "encoder_attention_heads": HEADS,
    "decoder_attention_heads": HEADS,
    "encoder_ffn_dim": FF,
    "decoder_ffn_dim": FF,
    "max_position_embeddings": 64,
    "decoder_start_token_id": 2,
    **_TOK,
}
_T5 = {
    "vocab_size": VOCAB,
    "d_model": HIDDEN,
    "d_kv": HIDDEN // HEADS,
    "d_ff": FF,
    "num_layers": LAYERS,
    "num_decoder_layers": LAYERS,
    "num_heads": HEADS,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
}


class Toy(nn.Sequential):
    """Linear(8,16), ReLU, Linear(16,16), LayerNorm(16), Linear(16,4): "0" and "2" output 16 features."""

    def __init__(self):
        super().__init__(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))


def _t5() -> nn.Module:
    return T.T5ForConditionalGeneration(T.T5Config(**_T5))


def _t5_v1_1() -> nn.Module:
    cfg = T.T5Config(**{**_T5, "d_kv": 12}, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return T.T5ForConditionalGeneration(cfg)


def bert_config(**changes) -> T.BertConfig:
    """The tiny BERT's config (e.g. `vocab_size=` for a model saved next to its own tokenizer)."""
    return T.BertConfig(**{**_ENC, "max_position_embeddings": 64, **changes})


def _bert() -> nn.Module:
    return T.BertForSequenceClassification(bert_config())


def _gpt2() -> nn.Module:
    return T.GPT2LMHeadModel(
        T.GPT2Config(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    )


def _llama() -> nn.Module:
    return T.LlamaForCausalLM(T.LlamaConfig(**{**_DEC, "eos_token_id": 0}))


def _bart() -> nn.Module:
    cfg = T.BartConfig(
        **{**_SEQ2SEQ, "pad_token_id": 1, "eos_token_id": 2}, forced_eos_token_id=None, forced_bos_token_id=None
    )
    return T.BartForConditionalGeneration(cfg)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    # the core families (the shared property checks, golden files)
    "t5": _t5,
    "bert": _bert,
    "gpt2": _gpt2,
    "llama": _llama,
    "toy": Toy,
    # the other families with a common-structure map
    "t5-v1_1": _t5_v1_1,
    "mt5": lambda: T.MT5ForConditionalGeneration(T.MT5Config(**_T5)),
    "bart": _bart,
    "mbart": lambda: T.MBartForConditionalGeneration(T.MBartConfig(**_SEQ2SEQ)),
    "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(**_ENC, pad_token_id=1)),
    "xlm-roberta": lambda: T.XLMRobertaForSequenceClassification(T.XLMRobertaConfig(**_ENC, pad_token_id=1)),
    "distilbert": lambda: T.DistilBertForSequenceClassification(
        T.DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FF, max_position_embeddings=64
        )
    ),
    "deberta-v2": lambda: T.DebertaV2ForSequenceClassification(T.DebertaV2Config(**_ENC)),
    "electra": lambda: T.ElectraForSequenceClassification(T.ElectraConfig(**_ENC, embedding_size=HIDDEN)),
    "opt": lambda: T.OPTForCausalLM(
        T.OPTConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            ffn_dim=FF,
            max_position_embeddings=64,
            word_embed_proj_dim=HIDDEN,
            **_TOK,
        )
    ),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**_DEC)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_DEC)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**_DEC, head_dim=HIDDEN // HEADS)),
    "vit": lambda: T.ViTForImageClassification(
        T.ViTConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            image_size=16,
            patch_size=8,
            num_labels=3,
        )
    ),
    # a RoBERTa classifier (the mapped "roberta" is a masked LM)
    "roberta-cls": lambda: T.RobertaForSequenceClassification(
        T.RobertaConfig(**{**_ENC, "max_position_embeddings": 72}, pad_token_id=1)
    ),
}
FAMILIES = list(BUILDERS)
CORE = ["t5", "bert", "gpt2", "llama", "toy"]
MAPPED = [
    "t5",
    "t5-v1_1",
    "mt5",
    "bart",
    "mbart",
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "deberta-v2",
    "electra",
    "gpt2",
    "opt",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "vit",
]
SEQ2SEQ = {"t5", "t5-v1_1", "mt5", "bart", "mbart"}

_BERT_RAW = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "proj": "attention.output.dense",
    "w1": "intermediate.dense",
    "w2": "output.dense",
}
_LLAMA_RAW = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "proj": "self_attn.o_proj",
    "w1": "mlp.gate_proj",
    "w3": "mlp.up_proj",
    "w2": "mlp.down_proj",
    "ff": "mlp",
}
_BART_RAW = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "proj": "self_attn.out_proj",
    "w1": "fc1",
    "w2": "fc2",
}
_T5_RAW = {
    "q": "SelfAttention.q",
    "k": "SelfAttention.k",
    "v": "SelfAttention.v",
    "proj": "SelfAttention.o",
    "w1": "DenseReluDense.wi",
    "w2": "DenseReluDense.wo",
    "ff": "DenseReluDense",
}

#: family -> role -> raw module-name suffix (a role missing: the family has no such module)
RAW: dict[str, dict[str, str]] = {
    "t5": _T5_RAW,
    "t5-v1_1": {**_T5_RAW, "w1": "DenseReluDense.wi_0", "w3": "DenseReluDense.wi_1"},  # gated, like mT5
    "mt5": {**_T5_RAW, "w1": "DenseReluDense.wi_0", "w3": "DenseReluDense.wi_1"},
    "bart": _BART_RAW,
    "mbart": _BART_RAW,
    "opt": _BART_RAW,
    "bert": _BERT_RAW,
    "roberta": _BERT_RAW,
    "xlm-roberta": _BERT_RAW,
    "electra": _BERT_RAW,
    "deberta-v2": {
        **_BERT_RAW,
        "q": "attention.self.query_proj",
        "k": "attention.self.key_proj",
        "v": "attention.self.value_proj",
    },
    "distilbert": {
        "q": "attention.q_lin",
        "k": "attention.k_lin",
        "v": "attention.v_lin",
        "proj": "attention.out_lin",
        "w1": "ffn.lin1",
        "w2": "ffn.lin2",
        "ff": "ffn",
    },
    "gpt2": {"qkv": "attn.c_attn", "proj": "attn.c_proj", "w1": "mlp.c_fc", "w2": "mlp.c_proj", "ff": "mlp"},
    "llama": _LLAMA_RAW,
    "mistral": _LLAMA_RAW,
    "qwen2": _LLAMA_RAW,
    "gemma": _LLAMA_RAW,
    "vit": {
        "q": "attention.q_proj",
        "k": "attention.k_proj",
        "v": "attention.v_proj",
        "proj": "attention.o_proj",
        "w1": "mlp.fc1",
        "w2": "mlp.fc2",
        "ff": "mlp",
    },
}

# (family, seed) -> (model, global RNG state right after constructing it)
_BUILT: dict[tuple[str, int], tuple[nn.Module, torch.Tensor]] = {}


def build(family: str, seed: int = 0) -> nn.Module:
    """A fresh tiny model of `family` in eval mode, seeded with `seed`.

    Built once per (family, seed) on the CPU and deep-copied after that; the global torch RNG is then set to the
    state the construction left, so what a test draws afterwards (e.g. a delta's initialisation) does not depend on
    which tests ran before. Under another default device (e.g. `with torch.device("meta")`) it builds afresh there.
    """
    if torch.get_default_device().type != "cpu":
        torch.manual_seed(seed)
        return BUILDERS[family]().eval()
    if (family, seed) not in _BUILT:
        torch.manual_seed(seed)
        model = BUILDERS[family]().eval()
        _BUILT[family, seed] = model, torch.get_rng_state()
    model, rng = _BUILT[family, seed]
    torch.set_rng_state(rng)
    return copy.deepcopy(model)


def inputs_for(family: str, batch: int = 2, seq: int = 7, seed: int = 1) -> dict:
    """Seeded keyword inputs for `family`: ids in [2, VOCAB), row 0 padded at the end."""
    g = torch.Generator().manual_seed(seed)
    if family == "toy":
        return {"input": torch.randn(batch, 8, generator=g)}
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(2, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if family in SEQ2SEQ:
        out["decoder_input_ids"] = torch.randint(2, VOCAB, (batch, 5), generator=g)
    return out


def run(model: nn.Module, family: str, inputs: dict) -> torch.Tensor:
    """The model's output tensor on `inputs` (the logits; the toy's plain output)."""
    if family == "toy":
        return model(inputs["input"])
    return model(**inputs).logits


def loss_of(out: torch.Tensor) -> torch.Tensor:
    return (out.float() ** 2).mean()
