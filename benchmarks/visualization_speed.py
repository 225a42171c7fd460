"""How long the folded structure graph takes on big models built on the meta device (no weight memory).

    python benchmarks/visualization_speed.py [--repeats 5]

Prints one row per case: the model, its parameter count, module count, lines in the folded tree and the
median time of each output (plain text, text with counts, SVG) and of `opendelta.inspect`. Building the
model on the meta device is timed separately: it is transformers' work, not ours.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from opendelta import LoraModel, Visualization, inspect
from opendelta.app.models import llama_1b_config


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cases() -> list[tuple[str, Callable[[], torch.nn.Module]]]:
    def llama_1b() -> torch.nn.Module:
        with torch.device("meta"):
            return transformers.LlamaForCausalLM(llama_1b_config())

    def llama_1b_lora() -> torch.nn.Module:
        model = llama_1b()
        LoraModel(model, modified_modules=["q_proj", "v_proj"], lora_r=8).freeze_module()
        return model

    def t5_base() -> torch.nn.Module:  # encoder/decoder blocks differ (relative bias): less folding
        config = transformers.T5Config(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
        with torch.device("meta"):
            return transformers.T5ForConditionalGeneration(config)

    def llama_8b() -> torch.nn.Module:  # Llama-3-8B shapes
        config = transformers.LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
        with torch.device("meta"):
            return transformers.LlamaForCausalLM(config)

    return [
        ("Llama 1B (meta)", llama_1b),
        ("Llama 1B + LoRA q,v r=8 (meta)", llama_1b_lora),
        ("Llama 8B (meta)", llama_8b),
        ("T5-base (meta)", t5_base),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()

    header = ("case", "params", "modules", "lines", "build s", "text s", "counts s", "svg s", "inspect s")
    rows = []
    for name, make in _cases():
        start = time.perf_counter()
        model = make()
        build = time.perf_counter() - start
        viz = Visualization(model)
        text = viz.to_text()
        rows.append(
            (
                name,
                f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B",
                str(sum(1 for _ in model.modules())),
                str(text.count("\n")),
                f"{build:.2f}",
                f"{_median_seconds(viz.to_text, args.repeats):.4f}",
                f"{_median_seconds(lambda viz=viz: viz.to_text(show_counts=True), args.repeats):.4f}",
                f"{_median_seconds(lambda viz=viz: _svg(viz), args.repeats):.4f}",
                f"{_median_seconds(lambda model=model: inspect(model, log=False), args.repeats):.4f}",
            )
        )
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; median of {args.repeats} runs")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def _svg(viz: Visualization) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        viz.structure_graph(printTree=False, save=Path(tmp) / "graph.svg")


if __name__ == "__main__":
    main()
