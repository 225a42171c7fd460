"""Helpers for the generate() tests of prompt-style deltas (prefix, soft prompt). A plain module.

batch(family, seed=1) -> dict        input_ids + attention_mask (row 0 padded at the end; the same ids for
                                     every family), plus decoder_input_ids for encoder-decoder families
greedy_by_hand(model, family, ids, mask, steps) -> (tokens, step logits)
                                     greedy decoding with full forwards and no cache: the reference for
                                     generate()
"""

from __future__ import annotations

import torch

from tiny import SEQ2SEQ, VOCAB, inputs_for


def batch(family: str, seed: int = 1) -> dict:
    x = inputs_for("gpt2", seed=seed)  # input_ids + attention_mask (row 0 padded at the end)
    if family in SEQ2SEQ:
        x["decoder_input_ids"] = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(seed))
    return x


def greedy_by_hand(model, family: str, ids: torch.Tensor, mask: torch.Tensor, steps: int):
    """Greedy decoding with full forwards and no cache, the reference for generate(): (tokens, step logits)."""
    step_logits = []
    if family in SEQ2SEQ:
        out = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
        for _ in range(steps):
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=out, use_cache=False).logits[:, -1]
            step_logits.append(logits)
            out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        return out, torch.stack(step_logits)
    out = ids
    for _ in range(steps):
        logits = model(input_ids=out, attention_mask=mask, use_cache=False).logits[:, -1]
        step_logits.append(logits)
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return out, torch.stack(step_logits)
