"""Source: ethankim00/multitask-prompted-search, src/mps/models/prompt_tuning/prompt_tuning_model.py
(commit 685c457a6532be58f5255b936dde69ae5563d37b), PromptDRModel.save, PromptDRModel._load_delta_model and the
"OpenMatch model load from directory" branch of PromptDRModel.build.

Saving an untied prompt-tuned retriever writes ``q_delta_model.save_finetuned(<dir>/query_model)`` and
``p_delta_model.save_finetuned(<dir>/passage_model)``; loading reads ``backbone_checkpoint_name`` from the saved
config.json, re-attaches each soft prompt with ``AutoDeltaModel.from_finetuned(path, lm, local_files_only=True)``
(backbone positional), deletes ``lm.embeddings.token_type_ids`` and freezes with
``freeze_module(exclude=["deltas"], set_state_dict=True)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModel.from_pretrained(model_name)
-> tiny BertModel; the trained soft prompts come from the source's own SoftPromptModel(...) build path, given seeded
values by the glue; wandb upload left out).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import files, ids, mask, same, tiny_bert_model, trainable_names  # noqa: E402

from opendelta import SoftPromptModel  # noqa: E402
from opendelta import AutoDeltaModel  # noqa: E402


def save(q_delta_model, p_delta_model, output_dir, tied=False):  # PromptDRModel.save (wandb part left out)
    if not tied:
        os.makedirs(os.path.join(output_dir, "query_model"))
        os.makedirs(os.path.join(output_dir, "passage_model"))
        q_delta_model.save_finetuned(os.path.join(output_dir, "query_model"))
        p_delta_model.save_finetuned(os.path.join(output_dir, "passage_model"))
    else:
        q_delta_model.save_finetuned(os.path.join(output_dir, "query_model"))
    with open(os.path.join(output_dir, "openmatch_config.json"), "w") as f:
        json.dump({"tied": tied, "linear_head": False, "plm_backbone": {"feature": "last_hidden_state"},
                   "pooling": "mean", "normalize": True}, f, indent=4)


def _load_delta_model(model_args, model_type: str, **hf_kwargs):
    with open(
        os.path.join(model_args.model_name_or_path, model_type, "config.json")
    ) as f:
        config = json.load(f)
    model_name = config["backbone_checkpoint_name"]
    # model_class = getattr(importlib.import_module("transformers"), model_name)
    lm = tiny_bert_model()  # was: AutoModel.from_pretrained(model_name, **hf_kwargs)
    lm.soft_prompt_token_number = model_args.soft_prompt_token_number
    delta_model =  AutoDeltaModel.from_finetuned(
        os.path.join(model_args.model_name_or_path, model_type),
        lm,
        local_files_only=True,
    )
    del lm.embeddings.token_type_ids
    return lm, delta_model


def build_from_directory(model_args):  # PromptDRModel.build, untied branch of "load local"
    lm_q, q_delta_model = _load_delta_model(
        model_args, model_type="query_model"
    )
    lm_p, p_delta_model = _load_delta_model(
        model_args, model_type="passage_model"
    )
    if model_args.freeze_plm:
        p_delta_model.freeze_module(
            exclude=["deltas"], set_state_dict=True
        )
        q_delta_model.freeze_module(
            exclude=["deltas"], set_state_dict=True
        )
    return lm_q, lm_p, q_delta_model, p_delta_model


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    train_args = argparse.Namespace(model_name_or_path="bert-base-uncased", use_delta=True,
                                    soft_prompt_token_number=40, init_from_vocab=True, freeze_plm=True,
                                    untie_encoder=True, pooling="mean", normalize=True)
    trained = {}
    for role, seed in (("q", 11), ("p", 12)):  # the build path of the source, then "training" (seeded values)
        lm = tiny_bert_model()
        delta = SoftPromptModel(lm, token_init=train_args.init_from_vocab,
                                soft_token_num=train_args.soft_prompt_token_number)
        delta.freeze_module(exclude=["deltas"], set_state_dict=True)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in lm.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        lm.eval()
        trained[role] = (lm, delta)
    output_dir = os.path.join(tmp_dir, "checkpoint-1000")
    save(trained["q"][1], trained["p"][1], output_dir, tied=False)
    with open(os.path.join(output_dir, "query_model", "config.json")) as f:
        saved_config = json.load(f)

    load_args = argparse.Namespace(model_name_or_path=output_dir, soft_prompt_token_number=40, freeze_plm=True,
                                   untie_encoder=True, pooling="mean", normalize=True)
    lm_q, lm_p, q_delta_model, p_delta_model = build_from_directory(load_args)
    items = {"input_ids": ids(seq=6), "attention_mask": mask(seq=6)}
    with torch.no_grad():
        outs = {"q": lm_q(**items).last_hidden_state, "p": lm_p(**items).last_hidden_state}
        ref = {r: trained[r][0](**items).last_hidden_state for r in ("q", "p")}
    return {
        "saved_files": files(output_dir),
        "saved_config_has_backbone_checkpoint_name": "backbone_checkpoint_name" in saved_config,
        "saved_config_delta_type": saved_config.get("delta_type"),
        "saved_config_soft_token_num": saved_config.get("soft_token_num"),
        "q_trainable_names": trainable_names(lm_q),
        "q_state_dict_keys": sorted(lm_q.state_dict().keys()),
        "token_type_ids_deleted": not hasattr(lm_q.embeddings, "token_type_ids"),
        "hidden_shape": list(outs["q"].shape),
        "query_reload_reproduces_trained": same(outs["q"], ref["q"], atol=1e-5),
        "passage_reload_reproduces_trained": same(outs["p"], ref["p"], atol=1e-5),
        "query_differs_from_passage": not same(outs["q"], outs["p"]),
    }
