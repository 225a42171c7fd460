"""Source: SMILELab-FL/FedPETuning, models/base_models.py (commit fb37362e2d98dff506eb699bbc6880648ccdbca0),
BaseModels._add_delta_model, with the ``bitfit_roberta-base`` entry of configs/tuning.py (all_delta_config).

Federated parameter-efficient tuning: the delta config dict taken from the registry (it carries training keys such
as learning_rate next to the delta keys) goes through ``AutoDeltaConfig.from_dict`` and
``AutoDeltaModel.from_config(delta_config, backbone_model=backbone)``, then ``freeze_module(set_state_dict=True)``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForSequenceClassification
roberta-base -> tiny RoBERTa classifier; utils.registry -> a dict).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, labels, loss_decreases, mask, num_trainable, same, tiny_roberta_cls, trainable_names  # noqa: E402

from opendelta import AutoDeltaConfig  # noqa: E402
from opendelta.auto_delta import AutoDeltaModel  # noqa: E402

PromptType = ["p-tuning", "soft-prompt", "prompt"]  # models/utils.py
registry = {}  # utils.registry

# configs/tuning.py
all_delta_config = {
    "bitfit_roberta-base":
        {'delta_type': 'bitfit', 'learning_rate': 0.0003, 'unfrozen_modules': ['classifier', 'deltas']},
}


def config_check_tuning(model_config, task_name):  # utils/config.py, the part that registers "delta_config"
    delta_args = all_delta_config[model_config.tuning_type]
    if task_name in delta_args:
        delta_config = delta_args[task_name]
    else:
        delta_config = delta_args
    registry["delta_config"] = delta_config


class BaseModels(nn.Module):
    def __init__(self, task_name, model_config):
        super().__init__()
        self.task_name = task_name
        self.model_config = model_config

    def _build_model(self):
        backbone = self._add_base_model()

        if self.model_config.tuning_type:
            backbone = self._add_delta_model(backbone)

        return backbone

    def _add_base_model(self):
        return tiny_roberta_cls()  # was: AutoModelForSequenceClassification.from_pretrained(model_name_or_path, ...)

    def _add_delta_model(self, backbone):

        if any([True for PType in PromptType if PType in self.model_config.tuning_type]):
            # prefix tuning maybe in OpenDelta
            ...
        else:
            delta_args = registry.get("delta_config")
            delta_config = AutoDeltaConfig.from_dict(delta_args)
            delta_model = AutoDeltaModel.from_config(delta_config, backbone_model=backbone)
            delta_model.freeze_module(set_state_dict=True)
            # delta_model.log(delta_ratio=True, trainable_ratio=True, visualization=True)
            # self.logger.debug(delta_config)
            # self.logger.debug(backbone)
            # self.logger.debug(delta_args)

        return backbone


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    model_config = argparse.Namespace(model_name_or_path="roberta-base", model_type="roberta",
                                      tuning_type="bitfit_roberta-base", config_name=None, model_revision="main",
                                      use_auth_token=False, permutation_layers=False, prefix_token_num=16,
                                      bottleneck_dim=64, lora_r=8, lora_alpha=8)
    task_name = "rte"
    config_check_tuning(model_config, task_name)
    x, am, y = ids(), mask(), labels()
    with torch.no_grad():
        plain = tiny_roberta_cls()(input_ids=x, attention_mask=am).logits
    backbone = BaseModels(task_name, model_config)._build_model()
    backbone.eval()
    with torch.no_grad():
        out = backbone(input_ids=x, attention_mask=am).logits
    return {
        "registered_delta_config_keys": sorted(registry["delta_config"]),
        "trainable_names": trainable_names(backbone),
        "num_trainable": num_trainable(backbone),
        "state_dict_keys": sorted(backbone.state_dict().keys()),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(backbone, lambda: backbone(input_ids=x, attention_mask=am, labels=y).loss),
    }
