"""Source: lifan-yuan/OOD_NLP, src/analysis/delta-ner.py (commit 974d49e00831c4220ff19065a8f4154ea7515374), main()
(scripts/run_peft.sh runs it with --model_name deberta --dataset_name fewnerd --method adapter).

Adapter tuning of a token classifier where the delta goes on ``model.base_model`` only: ``AdapterModel(
backbone_model=model.base_model, bottleneck_dim=parameter)``, ``freeze_module(module=model.base_model, exclude=[...],
set_state_dict=True)`` (the classifier head stays trainable and is saved separately with torch.save), ``log()``,
training, ``save_finetuned``; the cache branch reloads the head, then ``AutoDeltaModel.from_finetuned(ood_model_path,
backbone_model=model.base_model, parameter=parameter)`` and the same ``freeze_module(module=...)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForTokenClassification
.from_pretrained(deberta-v3-small, num_labels) -> tiny DeBERTa-v2 token classifier; the NER DataLoader -> random ids
and tags; 3 SGD steps; .cuda() dropped).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import files, ids, labels, mask, num_trainable, same, tiny_deberta_v2_tok, trainable_names  # noqa: E402

from opendelta import AutoDeltaModel, AdapterModel  # noqa: E402


def batch():
    return dict(input_ids=ids(), attention_mask=mask(), labels=labels(n=5, shape=(2, 7)))


def main(args, tmp_dir):
    task_name, dataset_name, model_name, scale = args.task_name, args.dataset_name, args.model_name, args.scale
    method, parameter, seed = args.method, args.parameter, args.seed
    ood_model_path = os.path.join(tmp_dir, f"model_cache/analysis/delta/{task_name}/{dataset_name}/{model_name}-{scale}/{method}-{parameter}/{seed}")
    obs = {}
    ################# load #################
    if os.path.exists(ood_model_path):
        print("Load plm from cache")
        model = tiny_deberta_v2_tok()  # was: AutoModelForTokenClassification.from_pretrained(model_path, num_labels=num_classes)
        model.classifier.load_state_dict(torch.load(os.path.join(ood_model_path, "classifier.pt")))
        delta_model = AutoDeltaModel.from_finetuned(ood_model_path, backbone_model=model.base_model, parameter=parameter)
        delta_model.freeze_module(module=model.base_model, exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
    ################# train #################
    else:
        print("Train from scratch")

        model = tiny_deberta_v2_tok()  # was: AutoModelForTokenClassification.from_pretrained(model_path, num_labels=num_classes)
        delta_model = AdapterModel(backbone_model=model.base_model, bottleneck_dim=parameter)
        delta_model.freeze_module(module=model.base_model, exclude=["deltas", "layernorm_embedding"], set_state_dict=True)
        delta_model.log()
        obs["trainable_names_before_first_forward"] = trainable_names(model)

        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

        model.eval()  # (dropout off so the glue is deterministic)
        losses = []
        for step in range(4):
            loss = model(**batch()).loss
            loss.backward()
            losses.append(float(loss))
            optimizer.step()
            optimizer.zero_grad()
        obs["loss_decreased"] = bool(losses[-1] < losses[0])

        print("finish training")
        delta_model.save_finetuned(ood_model_path)
        torch.save(model.classifier.state_dict(), os.path.join(ood_model_path, "classifier.pt"))
        obs["saved_files"] = files(ood_model_path)
    obs["trainable_names"] = trainable_names(model)
    obs["num_trainable"] = num_trainable(model)
    obs["base_model_state_dict_keys"] = sorted(model.base_model.state_dict().keys())
    obs["full_state_dict_num_keys"] = len(model.state_dict())
    model.eval()
    with torch.no_grad():
        obs["_logits"] = model(input_ids=ids(), attention_mask=mask()).logits[mask().bool()]
    return obs


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(repeats=1, model_name="deberta", dataset_name="fewnerd", method="adapter", parameter=16,
                              scale="small", task_name="NameEntityRecognition", model_path="microsoft/deberta-v3-small",
                              dataset_path="./datasets/process/NameEntityRecognition", num_classes=5, seed=0)
    trained = main(args, tmp_dir)
    cached = main(args, tmp_dir)
    with torch.no_grad():
        plain = tiny_deberta_v2_tok()(input_ids=ids(), attention_mask=mask()).logits[mask().bool()]
    return {
        "train": {k: v for k, v in trained.items() if not k.startswith("_")},
        "cache": {k: v for k, v in cached.items() if not k.startswith("_")},
        "trained_differs_from_plain": not same(trained["_logits"], plain),
        "cache_reproduces_trained": same(cached["_logits"], trained["_logits"], atol=1e-5),
    }
