"""What an unmerged LoRA adds to a forward pass, two ways, in one process.

    python benchmarks/lora_hook_overhead.py            # this checkout (PYTHONPATH=<other>/src to compare code)

1. per modified module: a 6-layer hidden-32 BERT, batch 1, one thread, LoRA r=8 on the 12 query / value
   projections; the extra time per module (hook dispatch dominates), median of 10 detach / attach alternations;
2. at MiniLM size: a 6-layer hidden-384 BERT, batch 32 x 128, two threads; unmerged / base, median of 12 ABBA
   rounds (memory traffic of the extra pass over each projection's output dominates).
"""

from __future__ import annotations

import statistics
import time

import torch
import transformers

from opendelta import AutoDeltaModel

LORA = {"delta_type": "lora", "modified_modules": ["query", "value"], "lora_r": 8}


def _timer(model, inputs, n):
    def run():
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(n):
                model(**inputs)
            return (time.perf_counter() - start) / n

    return run


def per_module_us() -> float:
    torch.set_num_threads(1)
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64, vocab_size=100
    )
    model = transformers.BertModel(cfg).eval()
    t = _timer(model, {"input_ids": torch.randint(0, 100, (1, 8))}, 50)
    for _ in range(3):
        t()
    delta = AutoDeltaModel.from_config(LORA, backbone_model=model)
    diffs = []
    for _ in range(10):
        delta.detach()
        base = t()
        delta.attach()
        diffs.append((t() - base) * 1e6 / len(delta.sites))
    return statistics.median(diffs)


def minilm_ratio() -> float:
    torch.set_num_threads(2)
    cfg = transformers.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    t = _timer(model, {"input_ids": torch.randint(0, 30000, (32, 128))}, 1)
    for _ in range(3):
        t()
    delta = AutoDeltaModel.from_config(LORA, backbone_model=model)
    ratios = []
    for _ in range(12):
        delta.detach()
        a1 = t()
        delta.attach()
        b1, b2 = t(), t()
        delta.detach()
        a2 = t()
        delta.attach()
        ratios.append((b1 + b2) / (a1 + a2))
    return statistics.median(ratios)


if __name__ == "__main__":
    print(f"extra time per LoRA module (tiny BERT, batch 1): {per_module_us():.1f} us")
    print(f"unmerged / base (MiniLM-sized BERT, batch 32 x 128): {minilm_ratio():.3f}")
