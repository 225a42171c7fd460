"""Source: thunlp/Mode-Connectivity-PLM, RoBERTa_model/itp_pretrain_adapter.py
(commit f45efd03fabdb23777c3ddcb35612cb1f7b1960c), main(), with configs/adapter_roberta-base/mnli_itp_pretrain_pre15k.json.

Mode connectivity between two adapter solutions: for each interpolation point x, three backbones get adapters with
``AutoDeltaModel.from_finetuned(path, backbone_model=...)`` (path1, path1, path2); the state dicts of model1/model2
are mixed key by key, loaded into ``model`` with a strict ``load_state_dict``, then ``freeze_module(set_state_dict =
True)`` and ``log(...)``. ``AutoDeltaConfig.from_dict(vars(delta_args))`` is built from the parser-object delta_args
as in the source (and not used further there either).
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModelForSequenceClassification
from ./checkpoint/ckpt_15000 -> tiny RoBERTa classifier; the two fine-tuned adapter checkpoints path1 / path2 are made
by the glue with AutoDeltaModel.from_config + save_finetuned and seeded non-zero delta weights; np.linspace(0, 1, 26)
-> x in (0.0, 0.5); ``.cuda()`` dropped).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, mask, same, tiny_roberta_cls, trainable_names, files  # noqa: E402

from opendelta import AutoDeltaConfig  # noqa: E402
from opendelta.auto_delta import AutoDeltaModel  # noqa: E402

REMAINING = {  # mnli_itp_pretrain_pre15k.json minus the dataclass keys (path1/path2 are ModelArguments)
    "bottleneck_dim": 24,
    "delta_type": "adapter",
    "do_test": True,
    "eval_dataset_config_name": ["en"],
    "eval_dataset_name": "mnli",
    "max_source_length": 128,
    "predict_with_generate": True,
    "test_dataset_config_name": ["en"],
    "test_dataset_name": "mnli",
    "unfrozen_modules": ["deltas", "layer_norm", "final_layer_norm", "classifier"],
}


def make_finetuned_adapter(path, seed):
    """glue: stands in for run_glue.py's adapter training on mnli with two seeds (checkpoint-10000)."""
    model = tiny_roberta_cls()
    config = AutoDeltaConfig.from_dict({"delta_type": "adapter", "bottleneck_dim": 24,
                                        "unfrozen_modules": ["deltas", "layer_norm", "final_layer_norm", "classifier"]})
    delta = AutoDeltaModel.from_config(config, backbone_model=model)
    delta.freeze_module(set_state_dict=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and "adapter" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    delta.save_finetuned(path)


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    model_args = argparse.Namespace(model_name_or_path="./checkpoint/ckpt_15000",
                                    path1=os.path.join(tmp_dir, "mnli-ckpt15000-seed20", "checkpoint-10000"),
                                    path2=os.path.join(tmp_dir, "mnli-ckpt15000-seed30", "checkpoint-10000"),
                                    config_name=None, tokenizer_name="roberta-base", cache_dir=None,
                                    use_fast_tokenizer=True, model_revision="main", use_auth_token=False)
    make_finetuned_adapter(model_args.path1, 20)
    make_finetuned_adapter(model_args.path2, 30)
    delta_args = argparse.ArgumentParser()
    delta_args.__dict__.update(dict(REMAINING))

    x_ids, am = ids(), mask()
    obs = {"checkpoint_files": files(model_args.path1)}
    outs = {}
    for x in (0.0, 0.5):
        model = tiny_roberta_cls()
        model1 = tiny_roberta_cls()
        model2 = tiny_roberta_cls()

        delta_config = AutoDeltaConfig.from_dict(vars(delta_args))
        delta_model = AutoDeltaModel.from_finetuned(model_args.path1, backbone_model=model)
        delta_model1 = AutoDeltaModel.from_finetuned(model_args.path1, backbone_model=model1)
        delta_model2 = AutoDeltaModel.from_finetuned(model_args.path2, backbone_model=model2)

        model_dict = {k: v for (k, v) in model.state_dict().items()}
        model_dict_to_update = {key: ((1-x)*model1.state_dict()[key] + x*model2.state_dict()[key])
                            for key in list(model1.state_dict().keys())}

        model_dict.update(model_dict_to_update)
        model.load_state_dict(model_dict)
        delta_model.freeze_module(set_state_dict = True)
        delta_model.log(delta_ratio=True, trainable_ratio=True, visualization=True)

        for m in (model, model1, model2):
            m.eval()
        with torch.no_grad():
            outs[x] = [m(input_ids=x_ids, attention_mask=am).logits for m in (model, model1, model2)]
        if x == 0.0:
            obs["model1_state_dict_num_keys_after_from_finetuned"] = len(model1.state_dict())
            obs["interpolated_num_keys"] = len(model_dict_to_update)
            obs["trainable_names"] = trainable_names(model)
            obs["state_dict_keys_after_freeze"] = sorted(model.state_dict().keys())
    plain = tiny_roberta_cls()
    with torch.no_grad():
        plain_out = plain(input_ids=x_ids, attention_mask=am).logits
    obs["x0_equals_model1"] = same(outs[0.0][0], outs[0.0][1])
    obs["x05_differs_from_model1"] = not same(outs[0.5][0], outs[0.5][1])
    obs["x05_differs_from_model2"] = not same(outs[0.5][0], outs[0.5][2])
    obs["finetuned_differs_from_plain"] = not same(outs[0.0][1], plain_out)
    obs["path1_differs_from_path2"] = not same(outs[0.0][1], outs[0.0][2])
    return obs
