"""Source: acharkq/ProtT3, model/protein_chat.py (commit f427daca2cf94e7544354b03e777f853bcd6bdce), ProteinChat.__init__,
branch ``llm_tune == 'lora'``.

LoRA with the default modified modules on a LLaMA language model loaded in bfloat16 (embeddings resized for the
added pad token): ``from opendelta.delta_models.lora import LoraConfig``, positional ``LoraConfig(r, alpha,
dropout)``, ``LoraModel.from_config``, ``freeze_module(set_state_dict=False)``, ``log()``.
OpenDelta calls kept exactly as written; only model and data loading replaced (LlamaForCausalLM.from_pretrained
(args.llm_name, torch_dtype=torch.bfloat16) -> tiny LLaMA).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import VOCAB, ids, loss_decreases, mask, num_trainable, same, tiny_llama, trainable_names  # noqa: E402

from opendelta import LoraModel  # noqa: E402
from opendelta.delta_models.lora import LoraConfig  # noqa: E402


def load_llm():
    llm_model = tiny_llama().to(torch.bfloat16)  # was: LlamaForCausalLM.from_pretrained(args.llm_name, bfloat16)
    llm_model.resize_token_embeddings(VOCAB + 1)  # for the special placeholder token
    return llm_model


class ProteinChat(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.llm_tune = args.llm_tune
        self.llm_model = load_llm()
        if self.llm_tune == 'freeze':
            for name, param in self.llm_model.named_parameters():
                param.requires_grad = False
        elif self.llm_tune == 'full':
            for name, param in self.llm_model.named_parameters():
                param.requires_grad = True
        elif self.llm_tune == 'lora':
            lora_config = LoraConfig(args.lora_r, args.lora_alpha, args.lora_dropout)
            self.delta = LoraModel.from_config(lora_config, self.llm_model)
            self.delta.freeze_module(set_state_dict=False)
            self.delta.log()
        elif self.llm_tune == 'mid_lora':
            lora_config = LoraConfig(args.lora_r, args.lora_alpha, args.lora_dropout, modified_modules=["q_proj", "v_proj", 'k_proj', "out_proj", "fc1", "fc2"])
            self.delta = LoraModel.from_config(lora_config, self.llm_model)
            self.delta.freeze_module(set_state_dict=False)
            self.delta.log()
        else:
            raise NotImplementedError()

        self.proj = nn.Linear(512, self.llm_model.config.hidden_size)


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    args = argparse.Namespace(llm_name="lmsys/vicuna-7b-v1.5", llm_tune="lora", lora_r=8, lora_alpha=16,
                              lora_dropout=0.1, enbale_gradient_checkpointing=False, caption_eval_epoch=10,
                              do_sample=False, num_beams=5, max_inference_len=128, min_inference_len=1,
                              enable_flash=False, plm_model="facebook/esm2_t30_150M_UR50D", plm_tune="freeze",
                              weight_decay=0.05, init_lr=1e-4, min_lr=1e-5, warmup_lr=1e-6, warmup_steps=1000)
    x, am = ids(), mask()
    with torch.no_grad():
        plain = load_llm()(input_ids=x, attention_mask=am).logits
    model = ProteinChat(args)
    model.eval()
    with torch.no_grad():
        out = model.llm_model(input_ids=x, attention_mask=am).logits

    def loss():
        return model.llm_model(input_ids=x, attention_mask=am, labels=x).loss.float()

    return {
        "llm_trainable_names": trainable_names(model.llm_model),
        "llm_num_trainable": num_trainable(model.llm_model),
        "wrapper_trainable_names": trainable_names(model),
        "lora_param_dtypes": sorted({str(p.dtype) for n, p in model.llm_model.named_parameters() if "lora" in n}),
        "output_shape": list(out.shape),
        "equals_backbone_at_init": same(out, plain),
        "loss_decreased": loss_decreases(model.llm_model, loss, lr=1.0),
    }
