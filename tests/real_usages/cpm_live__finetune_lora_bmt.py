"""Source: OpenBMB/CPM-Live, cpm-live/finetune_cpm_bee.py (commit 8ad7aa69143fbb41753013aac98744bf87abe0b1).

LoRA on the attention projections of CPM-Bee with the BMTrain backend, frozen with ``set_state_dict=True`` so that
the LoRA-only ``model.state_dict()`` is what the fine-tuning loop saves (``torch.save(state_dict, ...-delta-best.pt)``).
OpenDelta calls kept exactly as written; only model and data loading replaced (CPMBee(config) + bmt.load / bmt.init
-> a tiny module with cpm_live's layout).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import num_trainable, same, tiny_cpmbee, trainable_names, ids, loss_decreases  # noqa: E402

from opendelta import LoraModel  # noqa: E402


def get_model(args):
    model = tiny_cpmbee()  # was: CPMBee(CPMBeeConfig.from_json_file(args.model_config)); bmt.load / bmt.init_parameters
    # insert LoRA
    if args.use_delta:
        delta_model = LoraModel(
            backbone_model=model, modified_modules=["project_q", "project_v"], backend="bmt"
        )
        delta_model.freeze_module(exclude=["deltas"], set_state_dict=True)
        delta_model.log()
    return model


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(use_delta=True, model_config="config/cpm-bee-10b.json", load=None, lr=1e-4,
                              weight_decay=0.01, batch_size=2, max_length=7, save=tmp_dir, save_name="cpm_bee_finetune",
                              epoch=1, inspect_iters=100, eval_interval=50, early_stop_patience=5, lr_decay_iters=None)
    x, length = ids(), torch.tensor([7, 5])
    with torch.no_grad():
        plain = tiny_cpmbee()(x, length)[0]
    model = get_model(args)
    model.eval()
    with torch.no_grad():
        out = model(x, length)[0]
    state_dict = model.state_dict()
    torch.save(state_dict, os.path.join(args.save, args.save_name + "-delta-best.pt"))
    return {
        "trainable_names": trainable_names(model),
        "num_trainable": num_trainable(model),
        "state_dict_keys": sorted(state_dict.keys()),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model, lambda: model(x, length)[0].pow(2).mean()),
    }
