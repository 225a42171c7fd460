"""Source: lifan-yuan/OOD_NLP, src/analysis/delta-nlu.py (commit 974d49e00831c4220ff19065a8f4154ea7515374), main().

Adapter tuning of T5 for OOD analysis: train branch ``AdapterModel(backbone_model=plm, bottleneck_dim=parameter)``,
``freeze_module(exclude=["deltas", "layernorm_embedding"], set_state_dict=True)``, ``log()``, training,
``save_finetuned(ood_model_path)``; cache branch ``AutoDeltaModel.from_finetuned(ood_model_path, backbone_model=plm,
parameter=parameter)`` (an extra ``parameter`` keyword) and the same ``freeze_module``.
OpenDelta calls kept exactly as written; only model and data loading replaced (openprompt's load_plm("t5", ...) ->
tiny T5; PromptForClassification + PromptDataLoader -> 3 SGD steps on the T5 LM loss over random ids).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import files, ids, mask, num_trainable, same, tiny_t5, trainable_names  # noqa: E402

from opendelta import AutoDeltaModel, AdapterModel  # noqa: E402


def batch():
    return dict(input_ids=ids(), attention_mask=mask(), labels=ids(seq=3, seed=3))


def main(args, tmp_dir):
    task_name, dataset_name, model_name, scale = args.task_name, args.dataset_name, args.model_name, args.scale
    method, parameter, seed = args.method, args.parameter, args.seed
    ood_model_path = os.path.join(tmp_dir, f"model_cache/delta/{task_name}/{dataset_name}/{model_name}-{scale}/{method}-{parameter}/{seed}")
    obs = {}
    ################# load #################
    if os.path.exists(ood_model_path):
        print("Load plm from cache")
        plm = tiny_t5()  # was: load_plm(model_name.split("-")[0], model_path)
        delta_model = AutoDeltaModel.from_finetuned(ood_model_path, backbone_model=plm, parameter=parameter)
        delta_model.freeze_module(exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
    ################# train #################
    else:
        print("Train from scratch")
        plm = tiny_t5()  # was: load_plm(model_name, model_path)
        delta_model = AdapterModel(backbone_model=plm, bottleneck_dim=parameter)

        delta_model.freeze_module(exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
        delta_model.log()

        optimizer = torch.optim.SGD([p for p in plm.parameters() if p.requires_grad], lr=0.5)
        plm.eval()  # (dropout off so the glue is deterministic)
        losses = []
        for step in range(4):
            loss = plm(**batch()).loss
            loss.backward()
            losses.append(float(loss))
            optimizer.step()
            optimizer.zero_grad()
        obs["loss_decreased"] = bool(losses[-1] < losses[0])
        delta_model.save_finetuned(ood_model_path)
        print("save model")
        print("finish training")
        obs["saved_files"] = files(ood_model_path)
    obs["trainable_names"] = trainable_names(plm)
    obs["num_trainable"] = num_trainable(plm)
    obs["state_dict_keys"] = sorted(plm.state_dict().keys())
    plm.eval()
    with torch.no_grad():
        obs["_logits"] = plm(**batch()).logits
    return obs


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(repeats=1, model_name="t5", dataset_name="amazon", method="adapter", parameter=16,
                              scale="small", task_name="SentimentAnalysis", model_path="t5-small",
                              dataset_path="./datasets/process/SentimentAnalysis", num_classes=3, seed=0)
    trained = main(args, tmp_dir)       # first run: trains and saves
    cached = main(args, tmp_dir)        # second run: loads from the cache
    with torch.no_grad():
        plain = tiny_t5()(**batch()).logits
    return {
        "train": {k: v for k, v in trained.items() if not k.startswith("_")},
        "cache": {k: v for k, v in cached.items() if not k.startswith("_")},
        "trained_differs_from_plain": not same(trained["_logits"], plain),
        "cache_reproduces_trained": same(cached["_logits"], trained["_logits"], atol=1e-5),
    }
