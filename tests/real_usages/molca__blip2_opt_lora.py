"""Source: acharkq/MolCA, model/blip2_opt.py (commit 803ba29e7d302ca2775c70d9d0fafcbaad746b3d), Blip2OPT.__init__,
branch ``llm_tune == 'lora'`` (OpenDelta path).

LoRA on Galactica-125m (OPT, float32; embeddings resized for the added '<pad>' and '<mol>' tokens), the backbone
passed positionally with keyword LoRA hyper-parameters: ``LoraModel(self.opt_model, lora_r=..., lora_alpha=...,
lora_dropout=...)``, then ``freeze_module()`` with no arguments and ``log()``.
OpenDelta calls kept exactly as written; only model and data loading replaced (OPTForCausalLM.from_pretrained
"facebook/galactica-125m" -> tiny OPT; the graph encoder / Q-former parts are left out).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import VOCAB, ids, loss_decreases, mask, num_trainable, same, tiny_opt, trainable_names  # noqa: E402

from opendelta import LoraModel  # noqa: E402


def load_opt():
    opt_model = tiny_opt()  # was: OPTForCausalLM.from_pretrained('facebook/galactica-125m')
    opt_model.resize_token_embeddings(VOCAB + 2)  # '<pad>' and '<mol>' added to the tokenizer
    return opt_model


class Blip2OPT(nn.Module):
    def __init__(self, llm_tune='freeze', peft_dir='', args=None):
        super().__init__()
        self.args = args
        self.opt_model = load_opt()
        self.llm_tune = llm_tune
        if llm_tune == 'lora':
            if False:
                pass  # (the PEFT path of the source)
            else:
                # self.delta_model = LoraModel(self.opt_model, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, modified_modules=["q_proj", "v_proj", "out_proj", "fc1", "fc2"])
                self.delta_model = LoraModel(self.opt_model, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout)
                self.delta_model.freeze_module()
                self.delta_model.log()
        elif llm_tune == 'freeze':
            for name, param in self.opt_model.named_parameters():
                param.requires_grad = False
        elif llm_tune == 'full':
            pass
        else:
            raise NotImplementedError()


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(opt_model="facebook/galactica-125m", llm_tune="lora", lora_r=8, lora_alpha=32,
                              lora_dropout=0.1, peft_dir="", peft_config=None, tune_gnn=False, num_query_token=8,
                              cross_attention_freq=2, prompt="[START_I_SMILES]{}[END_I_SMILES].", init_lr=1e-4)
    x, am = ids(), mask()
    with torch.no_grad():
        plain = load_opt()(input_ids=x, attention_mask=am).logits
    model = Blip2OPT(llm_tune=args.llm_tune, args=args)
    model.eval()
    with torch.no_grad():
        out = model.opt_model(input_ids=x, attention_mask=am).logits

    def loss():
        return model.opt_model(input_ids=x, attention_mask=am, labels=x).loss

    return {
        "opt_trainable_names": trainable_names(model.opt_model),
        "opt_num_trainable": num_trainable(model.opt_model),
        "opt_state_dict_num_keys": len(model.opt_model.state_dict()),
        "wrapper_state_dict_delta_keys": sorted(k for k in model.state_dict() if k.startswith("delta_model.")),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model, loss, lr=1.0),
    }
