"""The AutoDelta flow end to end on a tiny T5 built from a config (no downloads).

Attach LoRA by module name, show the folded structure, train a few steps, save the delta, reload it onto a
fresh backbone with the hash check, and compare outputs.
"""

from __future__ import annotations

import logging
import tempfile
import time

import torch
import transformers

from opendelta import AutoDeltaConfig, AutoDeltaModel, Visualization


def tiny_t5(seed: int = 0) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        vocab_size=128,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return transformers.T5ForConditionalGeneration(cfg)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    t5 = tiny_t5()
    cfg = AutoDeltaConfig.from_dict(
        {
            "delta_type": "lora",
            "modified_modules": ["SelfAttention.q", "SelfAttention.v", "SelfAttention.o"],
            "lora_r": 4,
        }
    )
    delta = AutoDeltaModel.from_config(cfg, backbone_model=t5)
    Visualization(t5).structure_graph()
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    delta.log()

    # a toy copy task: the labels are the inputs
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 128, (16, 8), generator=g)
    opt = torch.optim.AdamW([p for p in t5.parameters() if p.requires_grad], lr=1e-2)
    t5.train()
    for step in range(30):
        loss = t5(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == 29:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    t5.eval()

    with tempfile.TemporaryDirectory() as tmp:
        path = delta.save_finetuned(f"{tmp}/ckpt")
        size = sum(p.stat().st_size for p in path.iterdir())
        fresh = tiny_t5().eval()
        start = time.perf_counter()
        AutoDeltaModel.from_finetuned(path, backbone_model=fresh)  # hash-checked
        load_s = time.perf_counter() - start
        with torch.no_grad():
            same = torch.equal(t5(input_ids=ids, labels=ids).logits, fresh(input_ids=ids, labels=ids).logits)
    backbone_bytes = sum(p.numel() * p.element_size() for n, p in t5.named_parameters() if ".lora." not in n)
    print(
        f"checkpoint {size / 1024:.1f} KiB vs backbone {backbone_bytes / 1024:.1f} KiB; "
        f"reload + hash check {load_s * 1000:.1f} ms; outputs identical after reload: {same}"
    )


if __name__ == "__main__":
    main()
