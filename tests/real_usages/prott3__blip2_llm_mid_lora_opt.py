"""Source: acharkq/ProtT3, model/blip2_opt.py (commit f427daca2cf94e7544354b03e777f853bcd6bdce), Blip2OPT.__init__,
branch ``llm_tune == 'mid_lora'`` (the same lines are in model/llm_captioning.py).

LoRA on the OPT/Galactica language model (bfloat16, embeddings resized for the added pad token) on an explicit list
of modules (q/k/v/out_proj, fc1, fc2): positional ``LoraConfig(r, alpha, dropout, modified_modules=...)``, ``LoraModel.from_config``, ``freeze_module(
set_state_dict=False)``, ``log()``.
OpenDelta calls kept exactly as written; only model and data loading replaced (OPTForCausalLM.from_pretrained
"facebook/galactica-1.3b" -> tiny OPT; the ESM / Q-former parts are left out).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import VOCAB, ids, loss_decreases, mask, num_trainable, same, tiny_opt, trainable_names  # noqa: E402

from opendelta import LoraModel  # noqa: E402
from opendelta.delta_models.lora import LoraConfig as DeltaLoraConfig  # noqa: E402


def load_llm():
    llm_model = tiny_opt().to(torch.bfloat16)  # was: OPTForCausalLM.from_pretrained(llm_model, torch_dtype=bfloat16)
    llm_model.resize_token_embeddings(VOCAB + 1)  # the tokenizer got a '<pad>' token
    return llm_model


class Blip2OPT(nn.Module):
    def __init__(self, llm_tune='freeze', args=None):
        super().__init__()
        self.args = args
        ## initialize opt model
        self.llm_model = load_llm()

        if llm_tune == 'freeze':
            for name, param in self.llm_model.named_parameters():
                param.requires_grad = False
        elif llm_tune == 'full':
            for name, param in self.llm_model.named_parameters():
                param.requires_grad = True
        elif llm_tune == 'lora':
            lora_config = DeltaLoraConfig(args.lora_r, 
                                          args.lora_alpha, 
                                          args.lora_dropout,)
            self.delta = LoraModel.from_config(lora_config, self.llm_model)
            self.delta.freeze_module(set_state_dict=False)
            self.delta.log()
        elif llm_tune == 'mid_lora':
            lora_config = DeltaLoraConfig(args.lora_r, args.lora_alpha, args.lora_dropout, modified_modules=["q_proj", "v_proj", 'k_proj', "out_proj", "fc1", "fc2"])
            self.delta = LoraModel.from_config(lora_config, self.llm_model)
            self.delta.freeze_module(set_state_dict=False)
            self.delta.log()
        else:
            raise NotImplementedError()


LLM_TUNE = "mid_lora"


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(llm_name="facebook/galactica-1.3b", llm_tune=LLM_TUNE, plm_tune="freeze", lora_r=8,
                              lora_alpha=32, lora_dropout=0.1, enbale_gradient_checkpointing=False, peft_dir="",
                              peft_config=None, caption_eval_epoch=10, do_sample=False, num_beams=5,
                              max_inference_len=36, min_inference_len=1, enable_flash=False)
    x, am = ids(), mask()
    with torch.no_grad():
        plain = load_llm()(input_ids=x, attention_mask=am).logits
    model = Blip2OPT(llm_tune=args.llm_tune, args=args)
    model.eval()
    with torch.no_grad():
        out = model.llm_model(input_ids=x, attention_mask=am).logits

    def loss():
        return model.llm_model(input_ids=x, attention_mask=am, labels=x).loss.float()

    return {
        "llm_trainable_names": trainable_names(model.llm_model),
        "llm_num_trainable": num_trainable(model.llm_model),
        "wrapper_state_dict_delta_keys": sorted(k for k in model.state_dict() if k.startswith("delta.")),
        "lora_param_dtypes": sorted({str(p.dtype) for n, p in model.llm_model.named_parameters() if "lora" in n}),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model, loss, lr=1.0),
    }
