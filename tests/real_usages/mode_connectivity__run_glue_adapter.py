"""Source: thunlp/Mode-Connectivity-PLM, RoBERTa_model/run_glue.py (commit f45efd03fabdb23777c3ddcb35612cb1f7b1960c),
main(), with RoBERTa_model/configs/adapter_roberta-base/sst2.json.

The json keys that none of the HF dataclasses take are put into a plain ``argparse.ArgumentParser`` object
(``remain_args.__dict__.update(data)``, RemainArgHfArgumentParser.parse_json_file), and ``vars()`` of that parser -
its own internals (prog, formatter_class, _actions, ...) included - is what ``AutoDeltaConfig.from_dict`` gets; then
``AutoDeltaModel.from_config``, ``freeze_module(set_state_dict = True)``, ``log(delta_ratio=True,
trainable_ratio=True, visualization=True)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForSequenceClassification
from ./checkpoint/ckpt_15000 -> tiny RoBERTa classifier; the json file -> the dict of its keys left after the
dataclasses took theirs).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, labels, loss_decreases, mask, num_trainable, same, tiny_roberta_cls, trainable_names  # noqa: E402

# configs/adapter_roberta-base/sst2.json minus the keys of ModelArguments / DataTrainingArguments / TrainingArguments
REMAINING = {
    "bottleneck_dim": 24,
    "delta_type": "adapter",
    "do_test": True,
    "eval_dataset_config_name": ["en"],
    "eval_dataset_name": "sst2",
    "max_source_length": 128,
    "predict_with_generate": True,
    "test_dataset_config_name": ["en"],
    "test_dataset_name": "sst2",
    "unfrozen_modules": ["deltas", "layer_norm", "final_layer_norm", "classifier"],
}


def parse_remaining(data):  # RemainArgHfArgumentParser.parse_json_file, the part that builds delta_args
    remain_args = argparse.ArgumentParser()
    remain_args.__dict__.update(data)
    return remain_args


def build(delta_args):
    model = tiny_roberta_cls()  # was: AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path, ...)
    if delta_args.delta_type.lower() != "none":
        from opendelta import AutoDeltaConfig
        from opendelta.auto_delta import AutoDeltaModel
        delta_config = AutoDeltaConfig.from_dict(vars(delta_args))
        delta_model = AutoDeltaModel.from_config(delta_config, backbone_model=model)
        delta_model.freeze_module(set_state_dict = True)
        delta_model.log(delta_ratio=True, trainable_ratio=True, visualization=True)
    return model


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    delta_args = parse_remaining(dict(REMAINING))
    x, am, y = ids(), mask(), labels()
    with torch.no_grad():
        plain = tiny_roberta_cls()(input_ids=x, attention_mask=am).logits
    model = build(delta_args)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=x, attention_mask=am).logits
    return {
        "trainable_names": trainable_names(model),
        "num_trainable": num_trainable(model),
        "state_dict_keys": sorted(model.state_dict().keys()),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model, lambda: model(input_ids=x, attention_mask=am, labels=y).loss),
    }
