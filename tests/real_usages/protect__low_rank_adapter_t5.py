"""Source: fenffef/PROTECT, finetune/run.py (commit 878e37876639ab52dd52a13301c9a72a7e014ec0), module level
("load the pipeline model PromptForGeneration" block), run with ``--delta_type low_rank_adapter``.

PROTECT (parameter-efficient tuning for few-shot robust Chinese text correction) attaches the chosen delta to the
T5 that openprompt's load_plm returned (``LowRankAdapterModel(backbone_model=plm)`` with its default modified modules), then
``freeze_module(exclude=["deltas"], set_state_dict=True)`` and ``log()``.
OpenDelta calls kept exactly as written; only model and data loading replaced (load_plm("t5", model_name_or_path)
-> tiny T5; PromptForGeneration / PromptDataLoader -> the T5 LM loss on random ids).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, loss_decreases, mask, num_trainable, same, tiny_t5, trainable_names  # noqa: E402


def attach(args, plm):
    # load the pipeline model PromptForGeneration.
    if args.delta_type and not args.zero_shot:
        from opendelta import LoraModel, BitFitModel, BitFitModel, AdapterModel, CompacterModel, LowRankAdapterModel, ParallelAdapterModel

        if args.delta_type == "lora":
            delta_model = LoraModel(backbone_model=plm, modified_modules=["SelfAttention.q", "SelfAttention.v"])
        elif args.delta_type == "bitfit":
            delta_model = BitFitModel(backbone_model=plm, modified_modules=['SelfAttention'])
        elif args.delta_type == "adapter":
            delta_model = AdapterModel(backbone_model=plm, modified_modules=['SelfAttention'])
        elif args.delta_type == "compacter":
            delta_model = CompacterModel(backbone_model=plm)
        elif args.delta_type == "low_rank_adapter":
            delta_model = LowRankAdapterModel(backbone_model=plm)
        elif args.delta_type == "parallel_adapter":
            delta_model = ParallelAdapterModel(backbone_model=plm)

        delta_model.freeze_module(exclude=["deltas"], set_state_dict=True)
        delta_model.log()
    else:
        # Handle case where args.delta_type is empty
        pass  # Do nothing, simply skip the setting
    return plm


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(lr=5e-5, plm_eval_mode=False, model="t5",
                              model_name_or_path="/media/HD0/checkpoint/t5-robust-20221226/",
                              train_path="csc/14train.txt", test_path="csc/14test.txt", template="prefix",
                              batch_size=32, eval_steps=200, epoch=30, wandb=False, k_shot=512, zero_shot=False,
                              delta_type="low_rank_adapter", task="chaizi", output_dir="", prefix_length=5, seq_length=128,
                              seed=12)
    batch = dict(input_ids=ids(), attention_mask=mask(), labels=ids(seq=5, seed=3))
    with torch.no_grad():
        plain = tiny_t5()(**batch).logits
    plm = attach(args, tiny_t5())  # was: plm, tokenizer, model_config, WrapperClass = load_plm(args.model, ...)
    plm.eval()
    with torch.no_grad():
        out = plm(**batch).logits
    return {
        "trainable_names": trainable_names(plm),
        "num_trainable": num_trainable(plm),
        "state_dict_keys": sorted(plm.state_dict().keys()),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(plm, lambda: plm(**batch).loss),
    }
