"""Source: OpenBMB/CPM-Bee, src/text_generation.py (commit 95cc575e956cc25115bf40e645bd082997462109).

Inference with a LoRA delta trained by finetune_cpm_bee.py: LoraModel (backend "hf") is attached to the plain-torch
CPMBeeTorch, then the LoRA-only checkpoint and the base checkpoint are loaded with ``load_state_dict(strict=False)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (CPMBeeTorch(config) -> a tiny module
with cpm_live's layout and its native Linear; the two checkpoints are written by the glue: the delta file carries the
key names a 0.3.x LoRA checkpoint of this model has, ``...project_q.lora.lora_A`` / ``lora_B``).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import LAYERS, HIDDEN, ids, same, tiny_cpmbee, trainable_names  # noqa: E402

from opendelta import LoraModel  # noqa: E402


def _write_checkpoints(tmp_dir):
    """glue: the files text_generation.py reads (--delta, and ckpt_path)."""
    g = torch.Generator().manual_seed(5)
    delta = {}
    for i in range(LAYERS):
        for proj in ("project_q", "project_v"):
            key = f"encoder.layers.{i}.self_att.self_attention.{proj}.lora"
            delta[key + ".lora_A"] = torch.randn(8, HIDDEN, generator=g) * 0.3
            delta[key + ".lora_B"] = torch.randn(HIDDEN, 8, generator=g) * 0.3
    delta_path = os.path.join(tmp_dir, "cpm-bee-lora.pt")
    torch.save(delta, delta_path)
    ckpt_path = os.path.join(tmp_dir, "cpm-bee-10b.pt")
    torch.save(tiny_cpmbee().state_dict(), ckpt_path)
    return delta_path, ckpt_path


def main(args, ckpt_path):
    model = tiny_cpmbee()  # was: CPMBeeTorch(config=CPMBeeConfig.from_json_file("config/cpm-bee-10b.json"))

    loads = {}
    if args.delta is not None:
        delta_model = LoraModel(backbone_model=model, modified_modules=["project_q", "project_v"], backend="hf")
        loads["delta"] = model.load_state_dict(torch.load(args.delta), strict=False)

    loads["ckpt"] = model.load_state_dict(torch.load(ckpt_path), strict=False)

    if args.device == "cpu":
        model = model.float()
    return model, loads


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    delta_path, ckpt_path = _write_checkpoints(tmp_dir)
    args = argparse.Namespace(use_bminf=False, memory_limit=20, delta=delta_path, device="cpu")
    x, length = ids(), torch.tensor([7, 5])
    with torch.no_grad():
        plain = tiny_cpmbee()(x, length)[0]
    model, loads = main(args, ckpt_path)
    model.eval()
    with torch.no_grad():
        out = model(x, length)[0]
    return {
        "delta_load_unexpected_keys": sorted(loads["delta"].unexpected_keys),
        "delta_load_num_missing_keys": len(loads["delta"].missing_keys),
        "ckpt_load_unexpected_keys": sorted(loads["ckpt"].unexpected_keys),
        "ckpt_load_missing_keys": sorted(loads["ckpt"].missing_keys),
        "trainable_names": trainable_names(model),
        "output_shape": list(out.shape),
        "output_changed_by_delta": not same(out, plain),
    }
