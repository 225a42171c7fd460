"""The common-structure maps: for each supported model family, which raw module plays each common role.

A family's map says, relative to its base model (e.g. `BertModel`), which raw module plays each role:

    embeddings                      the token embedding layer (`get_input_embeddings()`; ViT: patches)
    encoder / decoder               a stack of blocks;  <stack>.block.<i> is one block
    block.<i>.attn                  the self-attention sub-block; .q .k .v .proj (output) .layer_norm
                                    (.qkv where one layer holds q, k and v; .core where the module that
                                    attends is a child of the sub-block, as in BERT's `attention.self`)
    block.<i>.crossattn             the decoder's cross-attention, same children
    block.<i>.ff                    the feed-forward sub-block (where one module holds it)
    block.<i>.ff.w1 / .w3 / .w2     input projection (through the activation) / its gated partner / output
    block.<i>.ff.layer_norm         the norm that belongs to the feed-forward sub-block
    <stack>.layer_norm              the stack's final norm
    lm_head                         the output head (`get_output_embeddings()`)

Encoder-decoder families put `embeddings` under each stack (`encoder.embeddings`). Pure data; resolving
names on a model is `structures.py`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Raw = str | tuple[str, ...]  # a raw name relative to the base model / block, or alternatives (first that exists)


@dataclass(frozen=True)
class Family:
    """The common-structure map of one model family.

    classes: base-model class names (a model, or a submodule, whose class or a parent class has one of
        these names is this family's base model).
    top: common name -> raw name relative to the base model ("" is the base model itself).
    stacks: common stack name -> (raw path of its ModuleList of blocks, common -> raw names inside a block).
    fused: common names inside a block that a fused layer holds -> the common name of that layer.
    """

    name: str
    classes: tuple[str, ...]
    top: Mapping[str, Raw]
    stacks: Mapping[str, tuple[str, Mapping[str, Raw]]]
    fused: Mapping[str, str] = field(default_factory=dict)


def _attn(kind: str, module: str, q: str, k: str, v: str, proj: str, norm: str) -> dict[str, Raw]:
    """The entries of one attention sub-block; q/k/v/proj are relative to `module`, the rest to the block."""
    return {
        kind: module,
        f"{kind}.q": f"{module}.{q}",
        f"{kind}.k": f"{module}.{k}",
        f"{kind}.v": f"{module}.{v}",
        f"{kind}.proj": f"{module}.{proj}",
        f"{kind}.layer_norm": norm,
    }


# ----- the maps (names checked against transformers 5.x modeling code) -----------------------------------


def _t5_block(ff: str, cross: bool) -> dict[str, Raw]:
    out = _attn("attn", "layer.0.SelfAttention", "q", "k", "v", "o", "layer.0.layer_norm")
    if cross:
        out |= _attn("crossattn", "layer.1.EncDecAttention", "q", "k", "v", "o", "layer.1.layer_norm")
    dense = f"{ff}.DenseReluDense"
    out |= {
        "ff": dense,
        "ff.w1": (f"{dense}.wi", f"{dense}.wi_0"),
        "ff.w3": f"{dense}.wi_1",
        "ff.w2": f"{dense}.wo",
        "ff.layer_norm": f"{ff}.layer_norm",
    }
    return out


T5 = Family(
    "t5",
    (
        "T5Model",
        "T5ForConditionalGeneration",
        "T5EncoderModel",
        "MT5Model",
        "MT5ForConditionalGeneration",
        "MT5EncoderModel",
    ),
    top={
        "encoder": "encoder",
        "encoder.embeddings": "encoder.embed_tokens",
        "encoder.layer_norm": "encoder.final_layer_norm",
        "decoder": "decoder",
        "decoder.embeddings": "decoder.embed_tokens",
        "decoder.layer_norm": "decoder.final_layer_norm",
    },
    stacks={
        "encoder": ("encoder.block", _t5_block("layer.1", cross=False)),
        "decoder": ("decoder.block", _t5_block("layer.2", cross=True)),
    },
)


def _bart_block(cross: bool) -> dict[str, Raw]:
    out = _attn("attn", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "self_attn_layer_norm")
    if cross:
        out |= _attn("crossattn", "encoder_attn", "q_proj", "k_proj", "v_proj", "out_proj", "encoder_attn_layer_norm")
    return out | {"ff.w1": "fc1", "ff.w2": "fc2", "ff.layer_norm": "final_layer_norm"}


BART = Family(
    "bart",
    ("BartModel", "MBartModel"),
    top={
        "encoder": "encoder",
        "encoder.embeddings": "encoder.embed_tokens",
        "encoder.layer_norm": "encoder.layer_norm",
        "decoder": "decoder",
        "decoder.embeddings": "decoder.embed_tokens",
        "decoder.layer_norm": "decoder.layer_norm",
    },
    stacks={
        "encoder": ("encoder.layers", _bart_block(cross=False)),
        "decoder": ("decoder.layers", _bart_block(cross=True)),
    },
)


def _bert_block(q: str = "query", k: str = "key", v: str = "value") -> dict[str, Raw]:
    out = _attn(
        "attn", "attention", f"self.{q}", f"self.{k}", f"self.{v}", "output.dense", "attention.output.LayerNorm"
    )
    return out | {
        "attn.core": "attention.self",
        "ff.w1": "intermediate.dense",
        "ff.w2": "output.dense",
        "ff.layer_norm": "output.LayerNorm",
    }


BERT = Family(
    "bert",
    ("BertModel", "RobertaModel", "XLMRobertaModel", "ElectraModel"),
    top={"embeddings": "embeddings.word_embeddings", "encoder": "encoder"},
    stacks={"encoder": ("encoder.layer", _bert_block())},
)

DEBERTA_V2 = Family(
    "deberta-v2",
    ("DebertaV2Model",),
    top={"embeddings": "embeddings.word_embeddings", "encoder": "encoder"},
    stacks={"encoder": ("encoder.layer", _bert_block("query_proj", "key_proj", "value_proj"))},
)

DISTILBERT = Family(
    "distilbert",
    ("DistilBertModel",),
    top={"embeddings": "embeddings.word_embeddings", "encoder": "transformer"},
    stacks={
        "encoder": (
            "transformer.layer",
            {
                **_attn("attn", "attention", "q_lin", "k_lin", "v_lin", "out_lin", "sa_layer_norm"),
                "ff": "ffn",
                "ff.w1": "ffn.lin1",
                "ff.w2": "ffn.lin2",
                "ff.layer_norm": "output_layer_norm",
            },
        )
    },
)

GPT2 = Family(
    "gpt2",
    ("GPT2Model",),
    top={"embeddings": "wte", "decoder": "", "decoder.layer_norm": "ln_f"},
    stacks={
        "decoder": (
            "h",
            {
                "attn": "attn",
                "attn.qkv": "attn.c_attn",
                "attn.proj": "attn.c_proj",
                "attn.layer_norm": "ln_1",
                "ff": "mlp",
                "ff.w1": "mlp.c_fc",
                "ff.w2": "mlp.c_proj",
                "ff.layer_norm": "ln_2",
            },
        )
    },
    fused={"attn.q": "attn.qkv", "attn.k": "attn.qkv", "attn.v": "attn.qkv"},
)

OPT = Family(
    "opt",
    ("OPTModel",),
    top={"embeddings": "decoder.embed_tokens", "decoder": "decoder", "decoder.layer_norm": "decoder.final_layer_norm"},
    stacks={"decoder": ("decoder.layers", _bart_block(cross=False))},
)


def _llama_block() -> dict[str, Raw]:
    out = _attn("attn", "self_attn", "q_proj", "k_proj", "v_proj", "o_proj", "input_layernorm")
    return out | {
        "ff": "mlp",
        "ff.w1": "mlp.gate_proj",
        "ff.w3": "mlp.up_proj",
        "ff.w2": "mlp.down_proj",
        "ff.layer_norm": "post_attention_layernorm",
    }


LLAMA = Family(
    "llama",
    ("LlamaModel", "MistralModel", "Qwen2Model", "GemmaModel"),
    top={"embeddings": "embed_tokens", "decoder": "", "decoder.layer_norm": "norm"},
    stacks={"decoder": ("layers", _llama_block())},
)

VIT = Family(
    "vit",
    ("ViTModel",),
    top={"embeddings": "embeddings.patch_embeddings", "encoder": "", "encoder.layer_norm": "layernorm"},
    stacks={
        "encoder": (
            "layers",
            {
                **_attn("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "layernorm_before"),
                "ff": "mlp",
                "ff.w1": "mlp.fc1",
                "ff.w2": "mlp.fc2",
                "ff.layer_norm": "layernorm_after",
            },
        )
    },
)

FAMILIES: list[Family] = [T5, BART, BERT, DEBERTA_V2, DISTILBERT, GPT2, OPT, LLAMA, VIT]
