"""Source: TsinghuaC3I/SoRA, run_glue.py (commit c275ac237b68b888a918cf9dad36d3827e46f616), main(), with
config/lora_config.json (scripts/run_glue_lora.sh runs it on DeBERTaV3-base).

The GLUE baseline of the SoRA paper: the json config (with ``lora_r`` overridden from the command line) goes
through ``LoraConfig.from_dict`` and ``LoraModel.from_config(..., backbone_model=model)``, then
``freeze_module(set_state_dict = True)`` and ``log(delta_ratio=True, trainable_ratio=True, visualization=False)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForSequenceClassification
.from_pretrained(DeBERTaV3_base) -> tiny DeBERTa-v2 classifier; ``json.load(open(...))`` -> the file's content).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, labels, loss_decreases, mask, num_trainable, same, tiny_deberta_v2_cls, trainable_names  # noqa: E402

CONFIG_JSON = {
    "lora_r": 32,
    "lora_alpha": 16,
    "unfrozen_modules": [
        "deltas",
        "layer_norm",
        "final_layer_norm"
    ]
}


def build(model_args, training_args, sparse_args):
    model = tiny_deberta_v2_cls()  # was: AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path, ...)

    if training_args.train_sparse:
        print("loading from src.lora")
        from src.lora import LoraModel, LoraConfig
    else:
        from opendelta.delta_models import LoraModel, LoraConfig

    import json
    lora_config = dict(CONFIG_JSON)  # was: json.load(open("config/lora_config.json"))
    lora_config["lora_r"] = sparse_args.lora_r
    lora_config = LoraConfig.from_dict(lora_config)
    delta_model = LoraModel.from_config(lora_config, backbone_model=model)
    delta_model.freeze_module(set_state_dict = True)
    delta_model.log(delta_ratio=True, trainable_ratio=True, visualization=False)

    return model


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    model_args = argparse.Namespace(model_name_or_path="/root/xtlv/data/models/DeBERTaV3_base", config_name=None,
                                    tokenizer_name=None, cache_dir=None, use_fast_tokenizer=True,
                                    model_revision="main", use_auth_token=False, ignore_mismatched_sizes=False)
    training_args = argparse.Namespace(train_sparse=False, do_train=True, do_eval=True, learning_rate=3e-4,
                                       num_train_epochs=10, per_device_train_batch_size=8, seed=100,
                                       max_grad_norm=0.1, output_dir=os.path.join(tmp_dir, "results"))
    sparse_args = argparse.Namespace(lora_r=16, bottleneck_dim=16, sparse_lambda=10, sparse_lambda_2=3e-4,
                                     lambda_schedule=None, max_lambda=10, lambda_num=10)
    x, am, y = ids(), mask(), labels(n=3)
    with torch.no_grad():
        plain = tiny_deberta_v2_cls()(input_ids=x, attention_mask=am).logits
    model = build(model_args, training_args, sparse_args)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=am).logits
    return {
        "trainable_names": trainable_names(model),
        "num_trainable": num_trainable(model),
        "state_dict_keys": sorted(model.state_dict().keys()),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model, lambda: model(input_ids=x, attention_mask=am, labels=y).loss, lr=1.0),
    }
