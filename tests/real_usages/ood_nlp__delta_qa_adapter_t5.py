"""Source: lifan-yuan/OOD_NLP, src/analysis/delta-qa.py (commit 974d49e00831c4220ff19065a8f4154ea7515374), main().

Adapter tuning of T5ForConditionalGeneration for extractive-QA-as-generation: ``AdapterModel(backbone_model=
prompt_model, bottleneck_dim=parameter)``, ``freeze_module(exclude=["deltas", "layernorm_embedding"],
set_state_dict=True)``, ``log()``, training with the model's own loss, ``save_finetuned``; the cache branch reloads
with ``AutoDeltaModel.from_finetuned(ood_model_path, backbone_model=prompt_model, parameter=parameter)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (T5ForConditionalGeneration
.from_pretrained(model_path / ood_model_path) -> tiny T5; the QA DataLoader -> random ids; 3 SGD steps; .cuda() and
parallelize() dropped).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import files, ids, mask, num_trainable, same, tiny_t5, trainable_names  # noqa: E402

from opendelta import AutoDeltaModel, AdapterModel, SoftPromptModel  # noqa: E402


def inputs():
    return dict(input_ids=ids(seq=9, seed=4), attention_mask=mask(seq=9), labels=ids(seq=4, seed=5))


def main(args, tmp_dir):
    dataset_name, model_name, scale = args.dataset_name, args.model_name, args.scale
    method, parameter, seed = args.method, args.parameter, args.seed
    ood_model_path = os.path.join(tmp_dir, f"model_cache/delta/QuestionAnswering/{dataset_name}/{model_name}-{scale}/{method}-{parameter}/{seed}")
    obs = {}
    ################# load #################
    if os.path.exists(ood_model_path):
        print("Load plm from cache")
        prompt_model = tiny_t5()  # was: T5ForConditionalGeneration.from_pretrained(ood_model_path)
        delta_model = AutoDeltaModel.from_finetuned(ood_model_path, backbone_model=prompt_model, parameter=parameter)
        delta_model.freeze_module(exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
    ################# train #################
    else:
        prompt_model = tiny_t5()  # was: T5ForConditionalGeneration.from_pretrained(model_path)

        #########################################################
        delta_model = AdapterModel(backbone_model=prompt_model, bottleneck_dim=parameter)
        delta_model.freeze_module(exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
        delta_model.log()
        #########################################################

        optimizer = torch.optim.SGD([p for p in prompt_model.parameters() if p.requires_grad], lr=0.5)
        prompt_model.eval()  # (dropout off so the glue is deterministic)
        losses = []
        for step in range(4):
            loss = prompt_model(**inputs()).loss
            optimizer.zero_grad()
            loss.backward()
            losses.append(float(loss))
            optimizer.step()
        obs["loss_decreased"] = bool(losses[-1] < losses[0])
        delta_model.save_finetuned(ood_model_path)
        print("save model")
        print("finish training")
        obs["saved_files"] = files(ood_model_path)
    obs["trainable_names"] = trainable_names(prompt_model)
    obs["num_trainable"] = num_trainable(prompt_model)
    prompt_model.eval()
    with torch.no_grad():
        obs["_logits"] = prompt_model(**inputs()).logits
    return obs


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(model_name="t5", model_path="t5-small", dataset_name="SQuAD",
                              dataset_path="./datasets/process/QuestionAnswering", method="adapter", parameter=4,
                              scale="small", seed=0, repeats=1)
    trained = main(args, tmp_dir)
    cached = main(args, tmp_dir)
    with torch.no_grad():
        plain = tiny_t5()(**inputs()).logits
    return {
        "train": {k: v for k, v in trained.items() if not k.startswith("_")},
        "cache": {k: v for k, v in cached.items() if not k.startswith("_")},
        "trained_differs_from_plain": not same(trained["_logits"], plain),
        "cache_reproduces_trained": same(cached["_logits"], trained["_logits"], atol=1e-5),
    }
