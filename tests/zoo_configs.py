"""Explicit configs of the zoo delta types (adapter, low_rank_adapter, compacter, parallel_adapter, bitfit, ia3)
per core tiny family, for the shared property checks and the math tests. A plain module.

    ZOO[delta_type][family] -> config dict (with explicit modified_modules)
"""

from __future__ import annotations

FF = r"[r]layer\.\d+\.output\.dense"  # BERT's second feed-forward projection (not attention.output.dense)

# Explicit modified_modules per (delta type, family). Blocks that return tuples (T5 / GPT-2 / Llama attention)
# and blocks whose size is read from their inner layers are included on purpose.
AFTER = {
    "t5": ["SelfAttention", "DenseReluDense"],
    "bert": ["output"],
    "gpt2": ["attn", "mlp"],
    "llama": ["self_attn", "mlp"],
    "toy": ["0", "2", "3"],
}
ZOO: dict[str, dict[str, dict]] = {
    "adapter": {f: {"modified_modules": m, "bottleneck_dim": 4} for f, m in AFTER.items()},
    "low_rank_adapter": {
        f: {"modified_modules": m, "reduction_factor": 8, "low_rank_rank": 2} for f, m in AFTER.items()
    },
    "compacter": {
        f: {"modified_modules": m, "reduction_factor": 8, "hypercomplex_division": 2 if f == "toy" else 4}
        for f, m in AFTER.items()
    },
    "parallel_adapter": {
        "t5": {"modified_modules": ["DenseReluDense", "SelfAttention"], "bottleneck_dim": 4},
        "bert": {"modified_modules": ["intermediate"], "output_module": "output.dense", "bottleneck_dim": 4},
        "gpt2": {"modified_modules": ["attn", "mlp"], "bottleneck_dim": 4, "scaled": 2.0},
        "llama": {"modified_modules": ["self_attn", "mlp"], "bottleneck_dim": 4},
        "toy": {"modified_modules": ["0"], "output_module": "2", "bottleneck_dim": 4},
    },
    "bitfit": {
        "t5": {"modified_modules": ["q", "o", "layer_norm"]},  # bias-free linears and T5LayerNorm
        "bert": {"modified_modules": ["query", "LayerNorm"]},
        "gpt2": {"modified_modules": ["c_attn", "ln_1"]},
        "llama": {"modified_modules": ["q_proj", "input_layernorm"]},  # LlamaRMSNorm
        "toy": {"modified_modules": ["0", "3"]},
    },
    "ia3": {
        "t5": {"modified_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]},
        "bert": {"modified_modules": ["key", "value", FF], "feedforward_modules": [FF]},
        "gpt2": {"modified_modules": ["c_attn", "mlp.c_proj"], "feedforward_modules": ["mlp.c_proj"]},
        "llama": {"modified_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
        "toy": {"modified_modules": ["0", "2"], "feedforward_modules": ["2"]},
    },
}
