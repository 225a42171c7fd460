"""Source: OpenBMB/CPM-Bee, src/text_generation_hf.py (commit 95cc575e956cc25115bf40e645bd082997462109).

Inference with the Hugging Face port of CPM-Bee (trust_remote_code CpmBeeForCausalLM): LoraModel (backend "hf") on
``project_q``/``project_v``, then a LoRA checkpoint trained on the cpm_live model is renamed (``encoder.`` ->
``cpmbee.encoder.``) and loaded with ``load_state_dict(strict=False)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForCausalLM
"openbmb/cpm-bee-10b" -> a tiny module with the same layout; the delta file is written by the glue with the key names
a 0.3.x LoRA checkpoint of the cpm_live model has).
"""
import argparse
import os
import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import LAYERS, HIDDEN, ids, same, tiny_cpmbee_hf, trainable_names  # noqa: E402


def load_delta(delta_path):
    delta_dict = torch.load(delta_path)
    delta_with_prefix = dict()  # collections.OrderedDict() in the source
    for k, v in delta_dict.items():
        # CpmBeeModel -> CpmBeeForCasualLM
        if k.startswith("encoder.") or k.startswith("input_embedding.") or k.startswith("position_bias."):
            delta_with_prefix["cpmbee."+k] = v
        else:
            delta_with_prefix[k] = v
    del delta_dict
    return delta_with_prefix


def main(args):
    model = tiny_cpmbee_hf()  # was: AutoModelForCausalLM.from_pretrained("openbmb/cpm-bee-10b", trust_remote_code=True)

    result = None
    if args.delta is not None:
        from opendelta import LoraModel
        delta_model = LoraModel(backbone_model=model, modified_modules=["project_q", "project_v"], backend="hf")
        result = model.load_state_dict(load_delta(args.delta), strict=False)
    return model, result


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    delta = {}
    for i in range(LAYERS):  # glue: the file finetune_cpm_bee.py saved (LoRA-only state dict of the cpm_live model)
        for proj in ("project_q", "project_v"):
            key = f"encoder.layers.{i}.self_att.self_attention.{proj}.lora"
            delta[key + ".lora_A"] = torch.randn(8, HIDDEN, generator=g) * 0.3
            delta[key + ".lora_B"] = torch.randn(HIDDEN, 8, generator=g) * 0.3
    delta_path = os.path.join(tmp_dir, "cpm-bee-delta-best.pt")
    torch.save(delta, delta_path)
    args = argparse.Namespace(multi_gpu=False, device_map=None, delta=delta_path)
    x, length = ids(), torch.tensor([7, 5])
    with torch.no_grad():
        plain = tiny_cpmbee_hf()(x, length)
    model, result = main(args)
    model.eval()
    with torch.no_grad():
        out = model(x, length)
    return {
        "unexpected_keys": sorted(result.unexpected_keys),
        "num_missing_keys": len(result.missing_keys),
        "missing_lora_keys": sorted(k for k in result.missing_keys if "lora" in k),
        "trainable_names_contain_lora": any("lora" in n for n in trainable_names(model)),
        "output_shape": list(out.shape),
        "output_changed_by_delta": not same(out, plain),
    }
