"""Soft prompt tuning on tiny T5 / BERT / GPT-2 / Llama / BART: shared properties, equality with running the plain
backbone on hand-prepended embeddings, input_ids vs inputs_embeds, masks, labels, generate() consistency with an
uncached step-by-step decode, exact parameter count, initialisation and error paths."""

from __future__ import annotations

import pytest
import torch

from generation import batch, greedy_by_hand
from opendelta import AutoDeltaConfig, AutoDeltaModel, SoftPromptModel
from opendelta.errors import DeltaStateError, ModuleMatchError, UnsupportedModuleError
from shared_tester import check_all
from tiny import HIDDEN, VOCAB, build, loss_of

TARGETS = {
    "t5": ["shared"],
    "bert": ["word_embeddings"],
    "roberta-cls": ["word_embeddings"],
    "gpt2": ["wte"],
    "llama": ["embed_tokens"],
    "bart": ["model.shared"],
}
ENC_DEC = ("t5", "bart")
P = 4


def attach(model, family, **extra):
    cfg = AutoDeltaConfig.from_dict(
        {"delta_type": "soft_prompt", "modified_modules": TARGETS[family], "soft_token_num": P, **extra}
    )
    return AutoDeltaModel.from_config(cfg, backbone_model=model)


def inputs(family, seed=1):
    x = batch(family, seed)
    if family == "bert":
        x["token_type_ids"] = torch.zeros_like(x["input_ids"])
    return x


def embed(model, ids):
    return model.get_input_embeddings()(ids)


def prompt_of(delta, batch_size):
    return delta.sites[0].module.soft_prompt(batch_size)


def ones_front(mask):
    return torch.cat([mask.new_ones(mask.shape[0], P), mask], dim=1)


# ----- shared properties ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_shared_properties(family, tmp_path):
    check_all(family, "soft_prompt", {"modified_modules": TARGETS[family], "soft_token_num": P}, tmp_path)


def test_bart_train_detach_save_load(tmp_path):
    model = build("bart")

    def x():  # the caller's tensors, anew for every call (the soft prompt widens the mask in place)
        return inputs("bart")

    with torch.no_grad():
        ref = model(**x()).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = attach(model, "bart")
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    (soft,) = list(delta.delta_parameters())
    opt = torch.optim.AdamW([soft], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss_of(model(**x()).logits).backward()
        assert all(p.grad is None for p in model.parameters() if p is not soft) and soft.grad.abs().sum() > 0
        opt.step()
    with torch.no_grad():
        out = model(**x()).logits
    assert not torch.allclose(out, ref)
    delta.save_finetuned(tmp_path / "ckpt")
    delta.detach()
    with torch.no_grad():
        assert torch.equal(model(**x()).logits, ref)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    fresh = build("bart")
    AutoDeltaModel.from_finetuned(tmp_path / "ckpt", backbone_model=fresh)
    with torch.no_grad():
        assert torch.equal(fresh(**x()).logits, out)


# ----- the math: equal to the plain backbone on embeddings prepended by hand ------------------------------
@pytest.mark.parametrize("mode", ["keep", "trim"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "roberta-cls", "t5", "bart"])
def test_equals_backbone_on_prepended_embeddings(family, mode):
    """ "keep" (the default, OpenDelta 0.3): outputs hold the prompt positions and the caller's mask / token types
    are widened in place; "trim": outputs are cut back to the caller's tokens and its tensors are untouched."""
    model = build(family)
    x = inputs(family)
    given = {k: v.clone() for k, v in x.items()}
    delta = attach(model, family) if mode == "keep" else attach(model, family, prompt_positions=mode)
    with torch.no_grad():
        out = model(**x, output_hidden_states=True)
        manual = dict(given)
        ids = manual.pop("input_ids")
        manual["inputs_embeds"] = torch.cat([prompt_of(delta, 2), embed(model, ids)], dim=1)
        manual["attention_mask"] = ones_front(given["attention_mask"])
        if "token_type_ids" in manual:
            manual["token_type_ids"] = ones_front(manual["token_type_ids"]) * 0
        delta.detach()
        ref = model(**manual, output_hidden_states=True)
    if mode == "keep":
        assert torch.equal(x["attention_mask"], ones_front(given["attention_mask"]))  # the caller's own tensor
        if "token_type_ids" in x:
            assert torch.equal(x["token_type_ids"], ones_front(given["token_type_ids"]) * 0)
    else:
        assert all(torch.equal(x[k], given[k]) for k in given)
        if family not in ENC_DEC:  # sequence-aligned outputs are cut back to the caller's tokens
            ref.logits = ref.logits[:, P:] if ref.logits.dim() == 3 else ref.logits  # not a classifier's
            ref.hidden_states = tuple(h[:, P:] for h in ref.hidden_states)
    assert out.logits.shape == ref.logits.shape
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-6)
    states = "encoder_hidden_states" if family in ENC_DEC else "hidden_states"
    got, want = getattr(out, states), getattr(ref, states)
    if mode == "trim" and family in ENC_DEC:
        want = tuple(h[:, P:] for h in want)
    assert [h.shape for h in got] == [h.shape for h in want]
    torch.testing.assert_close(got[-1], want[-1], rtol=1e-5, atol=1e-6)


def test_caller_pooling_over_its_mask_sees_the_prompt():
    """The OpenDelta 0.3 pattern: mean pooling of last_hidden_state with the caller's own mask after the call."""
    model = build("bert").bert
    attach(model, "bert")
    x = inputs("bert")
    with torch.no_grad():
        h = model(**x).last_hidden_state
        mask = x["attention_mask"]
        assert h.shape[1] == mask.shape[1] == 7 + P
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        again = model(**x).last_hidden_state  # the widened mask passed again is not widened twice
    torch.testing.assert_close(again, h)
    assert torch.isfinite(pooled).all() and mask.shape[1] == 7 + P


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "roberta-cls", "t5", "bart"])
def test_input_ids_or_embeds_with_or_without_mask(family):
    model = build(family)
    attach(model, family)
    x = inputs(family)
    x["attention_mask"] = torch.ones_like(x["attention_mask"])
    with torch.no_grad():
        ref = model(**x).logits
        no_mask = {k: v for k, v in x.items() if k != "attention_mask"}
        torch.testing.assert_close(model(**no_mask).logits, ref, rtol=1e-5, atol=1e-6)
        as_embeds = dict(x)
        as_embeds["inputs_embeds"] = embed(model, as_embeds.pop("input_ids"))
        torch.testing.assert_close(model(**as_embeds).logits, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_labels_are_extended_with_ignore_index(family):
    model = build(family)
    delta = attach(model, family)
    x = inputs(family)
    labels = x["input_ids"].masked_fill(x["attention_mask"] == 0, -100)
    with torch.no_grad():
        loss = model(**x, labels=labels).loss
        prepended = torch.cat([prompt_of(delta, 2), embed(model, x["input_ids"])], dim=1)
        delta.detach()
        ref = model(
            inputs_embeds=prepended,
            attention_mask=ones_front(x["attention_mask"]),
            labels=torch.cat([labels.new_full((2, P), -100), labels], dim=1),
        ).loss
    torch.testing.assert_close(loss, ref)


def test_encoder_decoder_prompt_reaches_encoder_and_cross_attention_mask():
    model = build("t5")
    attach(model, "t5")
    x = inputs("t5")
    with torch.no_grad():
        enc = model.get_encoder()(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
        assert enc.last_hidden_state.shape[1] == x["input_ids"].shape[1] + P
        # generate() style: the encoder ran already; the root gets the caller's (short) mask
        via_outputs = model(
            encoder_outputs=enc, attention_mask=x["attention_mask"], decoder_input_ids=x["decoder_input_ids"]
        ).logits
        direct = model(**x).logits
    torch.testing.assert_close(via_outputs, direct, rtol=1e-5, atol=1e-6)


# ----- generate() -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "bart"])
def test_generate_matches_uncached_decode(family):
    steps = 5
    model = build(family)
    x = inputs(family)
    ids, mask = x["input_ids"], torch.ones_like(x["input_ids"])
    base = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=steps,
        do_sample=False,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    delta = attach(model, family)
    with torch.no_grad():
        delta.sites[0].module.soft_prompt.soft_embeds.mul_(3.0)
    gen = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=steps,
        do_sample=False,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    cache = gen.past_key_values
    if family in ENC_DEC:
        assert cache.cross_attention_cache.get_seq_length() == ids.shape[1] + P  # the encoder saw the prompt
        assert cache.self_attention_cache.get_seq_length() == steps
    else:  # the prompt went into the cache once, on the first step, and was never added again
        assert cache.get_seq_length() == P + ids.shape[1] + steps - 1
    by_hand, by_hand_logits = greedy_by_hand(model, family, ids, mask, steps)
    assert torch.equal(gen.sequences, by_hand)
    torch.testing.assert_close(torch.stack(gen.logits), by_hand_logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(torch.stack(gen.logits), torch.stack(base.logits), atol=1e-3)


def test_generate_left_padded_and_from_embeds():
    """Llama: left padding (generate derives position ids from the mask) and a prompt given as inputs_embeds."""
    model = build("llama")
    attach(model, "llama")
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    caller_mask = mask.clone()
    greedy = dict(max_new_tokens=4, do_sample=False, eos_token_id=None)
    gen = model.generate(input_ids=ids, attention_mask=caller_mask, **greedy)
    assert caller_mask.shape[1] == 6 + P  # "keep": the caller's mask now covers the prompt, as in OpenDelta 0.3
    again = model.generate(input_ids=ids, attention_mask=caller_mask, **greedy)
    assert torch.equal(again, gen)  # passed again: not widened twice, positions read in the mask's frame
    out, m = ids, mask
    for _ in range(4):
        pos = (m.cumsum(-1) - 1).clamp(min=0)  # positions of real tokens, as generate() computes them
        logits = model(input_ids=out, attention_mask=m.clone(), position_ids=pos, use_cache=False).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        m = torch.cat([m, m.new_ones(2, 1)], dim=1)
    assert torch.equal(gen, out)
    from_embeds = model.generate(inputs_embeds=embed(model, ids), attention_mask=mask.clone(), **greedy)
    assert torch.equal(from_embeds, out[:, ids.shape[1] :])


# ----- parameters and initialisation ------------------------------------------------------------------------
def test_parameter_count():
    model = build("gpt2")
    delta = attach(model, "gpt2", soft_token_num=5)
    # one (soft_token_num x hidden) tensor: 5 * 32
    assert delta.num_delta_parameters() == 5 * HIDDEN == 160
    delta.freeze_module(exclude=["deltas"])
    assert delta.num_trainable_parameters() == 160
    assert list(delta.delta_state_dict()) == ["transformer.wte.soft_prompt.soft_embeds"]


def test_initialisation():
    model = build("gpt2")
    rows = model.transformer.wte.weight
    delta = attach(model, "gpt2", soft_token_num=P)
    soft = delta.sites[0].module.soft_prompt.soft_embeds
    assert all(any(torch.equal(s, r) for r in rows) for s in soft)  # copies of vocabulary embeddings
    delta.detach()
    uniform = attach(model, "gpt2", soft_token_num=50, token_init=False, init_range=0.1)
    soft = uniform.sites[0].module.soft_prompt.soft_embeds
    assert soft.abs().max() <= 0.1 and soft.std() > 0.03


# ----- errors ----------------------------------------------------------------------------------------------
def test_merge_is_refused():
    delta = attach(build("gpt2"), "gpt2")
    with pytest.raises(DeltaStateError, match="cannot be merged"):
        delta.merge()


@pytest.mark.parametrize(
    "target,error,match",
    [
        (["wpe"], UnsupportedModuleError, "input embedding.*wte"),
        (["h.0.attn.c_attn"], UnsupportedModuleError, "Embedding"),
        (["[r].*w[tp]e"], ModuleMatchError, "exactly one"),
    ],
)
def test_bad_targets_leave_model_untouched(target, error, match):
    model = build("gpt2")
    keys = list(model.state_dict())
    with pytest.raises(error, match=match):
        SoftPromptModel(model, modified_modules=target, soft_token_num=P)
    assert list(model.state_dict()) == keys
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_non_transformers_model_is_refused():
    with pytest.raises(UnsupportedModuleError, match="get_input_embeddings"):
        SoftPromptModel(torch.nn.Sequential(torch.nn.Embedding(10, 4)), modified_modules=["0"], soft_token_num=2)


def test_cached_length_reads_cache_objects_and_legacy_tuples():
    from transformers import DynamicCache

    from opendelta.deltas.soft_prompt import _cached_length

    kv = torch.zeros(1, 2, 5, 4)
    assert _cached_length(((kv, kv), (kv, kv))) == 5  # transformers 4.x legacy format
    cache = DynamicCache()
    assert _cached_length(cache) == 0 and _cached_length(None) == 0
    cache.update(kv, kv, 0)
    assert _cached_length(cache) == 5


def test_four_d_mask_is_refused():
    model = build("gpt2")
    attach(model, "gpt2")
    with pytest.raises(UnsupportedModuleError, match="2-D attention_mask"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 1, 3, 3))


@pytest.mark.parametrize("family", ["llama", "bart"])
def test_beam_search_cached_equals_uncached(family):
    """Beam search reorders the cache between steps: with and without a cache it must pick the same beams."""
    model = build(family)
    delta = attach(model, family)
    with torch.no_grad():
        delta.sites[0].module.soft_prompt.soft_embeds.mul_(3.0)
    ids = inputs(family)["input_ids"]
    kw = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=5,
        num_beams=3,
        do_sample=False,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
    )
    cached, uncached = model.generate(**kw, use_cache=True), model.generate(**kw, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(cached.sequences_scores, uncached.sequences_scores, rtol=1e-4, atol=1e-5)
