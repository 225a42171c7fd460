"""Source: acharkq/ProtT3, model/blip2_opt.py (commit f427daca2cf94e7544354b03e777f853bcd6bdce), Blip2OPT.__init__,
branch ``plm_tune == 'lora'``.

LoRA on the query/value projections of the ESM-2 protein encoder (loaded in bfloat16), built from a positional
``LoraConfig(r, alpha, dropout, modified_modules=...)`` via ``LoraModel.from_config``, frozen with
``set_state_dict=False``; the delta model is kept as an attribute (``self.delta``) of the wrapping nn.Module.
OpenDelta calls kept exactly as written; only model and data loading replaced (EsmModel.from_pretrained
"facebook/esm2_t30_150M_UR50D" -> tiny ESM; the Q-former / OPT parts are left out).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, loss_decreases, mask, num_trainable, same, tiny_esm, trainable_names  # noqa: E402

from opendelta import LoraModel  # noqa: E402
from opendelta.delta_models.lora import LoraConfig as DeltaLoraConfig  # noqa: E402


class Blip2OPT(nn.Module):
    def __init__(self, plm_tune='freeze', args=None):
        super().__init__()
        self.args = args
        self.enbale_gradient_checkpointing = args.enbale_gradient_checkpointing

        # was: self.plm_tokenizer, self.plm, self.ln_layer = self.init_protein_encoder(plm_model)
        self.plm = tiny_esm().to(torch.bfloat16)
        self.ln_layer = nn.LayerNorm(self.plm.config.hidden_size)
        self.plm_tune = plm_tune
        if plm_tune == 'freeze':
            for name, param in self.plm.named_parameters():
                param.requires_grad = False
            self.plm = self.plm.eval()
        elif plm_tune == 'lora':
            lora_config = DeltaLoraConfig(args.lora_r, 
                                          args.lora_alpha, 
                                          args.lora_dropout,
                                          modified_modules=["query", "value"])
            self.delta = LoraModel.from_config(lora_config, self.plm)
            self.delta.freeze_module(set_state_dict=False)
            self.delta.log()
        else:
            raise NotImplementedError()


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(plm_model="facebook/esm2_t30_150M_UR50D", plm_tune="lora", llm_tune="freeze",
                              lora_r=8, lora_alpha=32, lora_dropout=0.1, enbale_gradient_checkpointing=False,
                              num_query_token=8, cross_attention_freq=2, bert_name="scibert", peft_dir="",
                              init_lr=1e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=1000, weight_decay=0.05)
    x, am = ids(), mask()
    with torch.no_grad():
        plain = tiny_esm().to(torch.bfloat16)(input_ids=x, attention_mask=am).last_hidden_state
    model = Blip2OPT(plm_tune=args.plm_tune, args=args)
    model.eval()
    with torch.no_grad():
        out = model.plm(input_ids=x, attention_mask=am).last_hidden_state
    wrapper_keys = sorted(model.state_dict().keys())
    return {
        "plm_trainable_names": trainable_names(model.plm),
        "plm_num_trainable": num_trainable(model.plm),
        "wrapper_trainable_names": trainable_names(model),
        "wrapper_state_dict_delta_keys": [k for k in wrapper_keys if k.startswith("delta.")],
        "wrapper_state_dict_num_keys": len(wrapper_keys),
        "lora_param_dtypes": sorted({str(p.dtype) for n, p in model.plm.named_parameters() if "lora" in n}),
        "output_dtype": str(out.dtype),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(
            model, lambda: model.plm(input_ids=x, attention_mask=am).last_hidden_state.float()[..., 0].mean(), lr=0.5),
    }
