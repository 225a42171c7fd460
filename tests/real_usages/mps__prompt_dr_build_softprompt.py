"""Source: ethankim00/multitask-prompted-search, src/mps/models/prompt_tuning/prompt_tuning_model.py
(commit 685c457a6532be58f5255b936dde69ae5563d37b), PromptDRModel.build (Hugging Face branch), encode and
get_soft_token_parameters.

Prompt-tuned dense retrieval: separate query and passage encoders each get ``SoftPromptModel(lm, token_init=...,
soft_token_num=...)`` (backbone positional), frozen with ``freeze_module(exclude=["deltas"], set_state_dict=True)``
(+ ``log()``); encode() mean-pools the hidden states over the attention mask with the soft-prompt positions zeroed,
and the soft prompt is read back through ``delta_model.state_dict()["delta_modules.0.soft_embeds"]``.
OpenDelta calls kept exactly as written; only model and data loading replaced (AutoModel.from_pretrained
bert-base-uncased -> tiny BertModel; the OpenMatch DRModel base class -> nn.Module; batches -> random ids).
"""
import argparse
import copy
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import BatchEncoding

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _tiny import ids, mask, num_trainable, same, tiny_bert_model, trainable_names  # noqa: E402

from opendelta import SoftPromptModel  # noqa: E402
from opendelta import AutoDeltaModel  # noqa: E402


# Mean Pooling - Take attention mask into account for correct averaging
def mean_pooling(token_embeddings, attention_mask):
    input_mask_expanded = (
        attention_mask.unsqueeze(-1).expand(token_embeddings.size()).float()
    )
    return torch.sum(token_embeddings * input_mask_expanded, 1) / torch.clamp(
        input_mask_expanded.sum(1), min=1e-9
    )


class PromptDRModel(nn.Module):
    def __init__(self, lm_q, lm_p, q_delta_model=None, p_delta_model=None, tied=True, feature="last_hidden_state",
                 pooling="first", head_q=None, head_p=None, normalize=False, model_args=None):
        super().__init__()
        self.tied = tied
        self.lm_q = lm_q
        self.lm_p = lm_p
        self.q_delta_model = q_delta_model
        self.p_delta_model = p_delta_model
        self.head_q = head_q
        self.head_p = head_p
        self.feature = feature
        self.pooling = pooling
        self.normalize = normalize
        self.model_args = model_args

    def get_soft_token_parameters(self):
        if self.tied:
            query_embeddings = self.q_delta_model.state_dict()["delta_modules.0.soft_embeds"].detach().cpu().numpy()
            return query_embeddings
        else:
            query_embeddings = self.q_delta_model.state_dict()["delta_modules.0.soft_embeds"].detach().cpu().numpy()
            passage_embeddings = self.p_delta_model.state_dict()["delta_modules.0.soft_embeds"].detach().cpu().numpy()
            return query_embeddings, passage_embeddings

    def encode(self, items, model, head):
        if items is None:
            return None, None
        items = BatchEncoding(items)
        if "T5" in type(model).__name__ and not self.model_args.encoder_only:
            raise NotImplementedError  # (T5 branch of the source, not exercised)
        else:
            items_out = model(**items, return_dict=True)
            hidden = getattr(items_out, self.feature)
            if self.feature == "pooler_output":
                return hidden, hidden
            if self.pooling == "first":
                reps = hidden[:, 0, :]
            elif self.pooling == "mean":
                soft_prompt_attention_mask = items.attention_mask
                soft_prompt_attention_mask[
                    :, : model.soft_prompt_token_number
                ] = torch.zeros(
                    (items.attention_mask.shape[0], model.soft_prompt_token_number)
                )
                reps = mean_pooling(
                    hidden, soft_prompt_attention_mask
                )  # only pool hidden reps of real tokens
            elif self.pooling == "no":
                reps = hidden
            else:
                raise ValueError("Unknown pooling type: {}".format(self.pooling))
        if head is not None:
            reps = head(reps)  # D * d
        if self.normalize:
            reps = F.normalize(reps, dim=1)
        return hidden, reps

    @classmethod
    def build(cls, model_args):
        head_q = head_p = None
        q_delta_model = p_delta_model = None
        tied = not model_args.untie_encoder
        lm_q = tiny_bert_model()  # was: model_class.from_pretrained(model_args.model_name_or_path, **hf_kwargs)
        if model_args.use_delta:
            q_delta_model = SoftPromptModel(
                lm_q,
                token_init=model_args.init_from_vocab,
                soft_token_num=model_args.soft_prompt_token_number,
            )
            lm_q.soft_prompt_token_number = model_args.soft_prompt_token_number
            if model_args.freeze_plm:
                q_delta_model.freeze_module(exclude=["deltas"], set_state_dict=True)
                q_delta_model.log()
            if model_args.untie_encoder:
                lm_p = tiny_bert_model()  # was: model_class.from_pretrained(model_args.model_name_or_path, **hf_kwargs)
                p_delta_model = SoftPromptModel(
                    lm_p,
                    token_init=model_args.init_from_vocab,
                    soft_token_num=model_args.soft_prompt_token_number,
                )
                lm_p.soft_prompt_token_number = model_args.soft_prompt_token_number
                if model_args.freeze_plm:
                    p_delta_model.freeze_module(
                        exclude=["deltas"], set_state_dict=True
                    )
            else:
                lm_p = lm_q

        # TODO support linear dimension reduction head
        lm_p = copy.deepcopy(lm_q) if not tied else lm_q
        return cls(tied=tied, lm_q=lm_q, lm_p=lm_p, q_delta_model=q_delta_model, p_delta_model=p_delta_model,
                   feature=model_args.feature, pooling=model_args.pooling, head_q=head_q, head_p=head_p,
                   normalize=model_args.normalize, model_args=model_args)


def run(tmp_dir: str) -> dict:
    torch.manual_seed(0)
    model_args = argparse.Namespace(model_name_or_path="bert-base-uncased", use_delta=True,
                                    soft_prompt_token_number=40, init_from_vocab=True, freeze_plm=True,
                                    untie_encoder=True, encoder_only=False, add_linear_head=False,
                                    projection_in_dim=768, projection_out_dim=768, feature="last_hidden_state",
                                    pooling="mean", normalize=True, tokenizer_name=None, cache_dir=None)
    model = PromptDRModel.build(model_args)
    model.eval()
    obs = {
        "q_trainable_names": trainable_names(model.lm_q),
        "p_trainable_names": trainable_names(model.lm_p),
        "q_num_trainable": num_trainable(model.lm_q),
        "q_backbone_state_dict_keys": sorted(model.lm_q.state_dict().keys()),
        "q_delta_state_dict_keys": sorted(model.q_delta_model.state_dict().keys()),
        "lm_p_is_lm_q": model.lm_p is model.lm_q,
    }
    q_soft, p_soft = model.get_soft_token_parameters()
    obs["soft_embeds_shapes"] = [list(q_soft.shape), list(p_soft.shape)]
    word = model.lm_q.embeddings.word_embeddings.weight.detach()
    obs["soft_embeds_init_from_vocab"] = same(torch.from_numpy(q_soft), word[:40])
    items = {"input_ids": ids(seq=6), "attention_mask": mask(seq=6)}
    with torch.no_grad():
        plain_hidden = tiny_bert_model()(**items).last_hidden_state
        for pooling in ("first", "mean"):
            model.pooling = pooling
            try:
                hidden, reps = model.encode({k: v.clone() for k, v in items.items()}, model.lm_q, model.head_q)
                obs[f"encode_{pooling}"] = {"hidden_shape": list(hidden.shape), "reps_shape": list(reps.shape),
                                            "reps_norm_is_1": bool(torch.allclose(reps.norm(dim=1),
                                                                                  torch.ones(2), atol=1e-5))}
            except Exception as e:  # recorded: how the source's pooling meets the soft-prompt-extended hidden states
                obs[f"encode_{pooling}"] = {"error": type(e).__name__}
        hidden = model.lm_q(**items).last_hidden_state
    obs["real_token_hidden_differs_from_plain"] = not same(hidden[:, -6:], plain_hidden)
    return obs
