"""Prefix tuning on tiny T5 / BERT / GPT-2 / Llama / BART (and a T5 v1.1-style config): shared properties,
generate() consistency with an uncached step-by-step decode, a hand-computed attention reference, the exact
parameter count, and the error paths."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import transformers

from generation import batch, greedy_by_hand
from opendelta import AutoDeltaConfig, AutoDeltaModel, PrefixModel
from opendelta.deltas import prefix as prefix_mod
from opendelta.errors import DeltaStateError, UnsupportedModuleError
from shared_tester import check_all, perturb
from tiny import HEADS, HIDDEN, SEQ2SEQ, VOCAB, build, inputs_for, loss_of

TARGETS = {
    "t5": ["SelfAttention"],
    "bert": ["attention.self"],
    "roberta-cls": ["attention.self"],
    "gpt2": ["attn"],
    "llama": ["self_attn"],
    "bart": ["self_attn"],
    "t5-v1_1": ["SelfAttention"],
}
SMALL = {"prefix_token_num": 3, "embed_dim": 8, "mid_dim": 16}


def attach(model, family, **extra):
    cfg = AutoDeltaConfig.from_dict({"delta_type": "prefix", "modified_modules": TARGETS[family], **SMALL, **extra})
    return AutoDeltaModel.from_config(cfg, backbone_model=model)


# ----- the shared properties (attach, grads, frozen weights, detach, save/load, hash, merge, dtype) -----------
@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_shared_properties(family, tmp_path):
    check_all(family, "prefix", {"modified_modules": TARGETS[family], **SMALL}, tmp_path)


def test_shared_properties_without_reparameterization(tmp_path):
    check_all("llama", "prefix", {"modified_modules": TARGETS["llama"], **SMALL, "reparameterize": False}, tmp_path)


@pytest.mark.parametrize("family", ["bart", "t5-v1_1", "roberta-cls"])
def test_train_detach_save_load(family, tmp_path):
    """The same properties on families the shared property checks do not run on (BART, T5 v1.1, RoBERTa)."""
    model = build(family)
    x = batch(family)
    with torch.no_grad():
        ref = model(**x).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    delta = attach(model, family)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    ids = {id(p) for p in delta.delta_parameters()}
    loss_of(model(**x).logits).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (id(p) in ids), n
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.step()
        opt.zero_grad()
        loss_of(model(**x).logits).backward()
    with torch.no_grad():
        out = model(**x).logits
    assert not torch.allclose(out, ref)
    delta.save_finetuned(tmp_path / "ckpt")
    delta.detach()
    with torch.no_grad():
        assert torch.equal(model(**x).logits, ref)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    fresh = build(family)
    AutoDeltaModel.from_finetuned(tmp_path / "ckpt", backbone_model=fresh)
    with torch.no_grad():
        assert torch.equal(fresh(**x).logits, out)


# ----- generate(): the cached path equals an uncached step-by-step decode of the prefixed model -----------
@pytest.fixture
def prefix_calls(monkeypatch):
    """Records, for every cache update during a forward, (keys returned) - (keys stored in the real cache)."""
    seen = []
    original = prefix_mod._PrefixedCache.update

    def spy(self, k, v, layer_idx=None, *args, **kwargs):
        keys, values = original(self, k, v, layer_idx, *args, **kwargs)
        stored = self._inner.get_seq_length(layer_idx) if self._inner is not None else k.shape[2]
        seen.append(keys.shape[2] - stored)
        return keys, values

    monkeypatch.setattr(prefix_mod._PrefixedCache, "update", spy)
    return seen


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5", "bart", "t5-v1_1"])
def test_generate_matches_uncached_decode(family, prefix_calls):
    steps = 5
    model = build(family)
    x = batch(family)
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
    perturb(delta, scale=1.0)
    prefix_calls.clear()
    gen = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=steps,
        do_sample=False,
        eos_token_id=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    n_sites = len(delta.modified_module_names)
    cross = family in SEQ2SEQ
    # prefix at every step in every prefixed layer: steps forwards (the encoder runs once, before them)
    expected_calls = (n_sites // 2 + steps * n_sites // 2) if cross else steps * n_sites
    assert len(prefix_calls) == expected_calls
    assert set(prefix_calls) == {SMALL["prefix_token_num"]}
    # the real cache holds real tokens only (no prefix, no double prefixing)
    cache = gen.past_key_values
    cache = getattr(cache, "self_attention_cache", cache)
    real = steps if cross else ids.shape[1] + steps - 1  # the last generated token is never fed back
    assert cache.get_seq_length() == real
    by_hand, by_hand_logits = greedy_by_hand(model, family, ids, mask, steps)
    assert torch.equal(gen.sequences, by_hand)
    torch.testing.assert_close(torch.stack(gen.logits), by_hand_logits, rtol=1e-4, atol=1e-5)
    # the delta changed what the model predicts
    assert not torch.allclose(torch.stack(gen.logits), torch.stack(base.logits), atol=1e-3)


def test_generate_with_left_padding_matches_uncached_decode():
    """Llama with a left-padded prompt: generate (cached, position ids from the mask) vs full forwards."""
    model = build("llama")
    delta = attach(model, "llama")
    perturb(delta)
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=None)
    out, m = ids, mask
    for _ in range(4):
        pos = (m.cumsum(-1) - 1).clamp(min=0)  # what generate() derives from the mask
        logits = model(input_ids=out, attention_mask=m, position_ids=pos, use_cache=False).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        m = torch.cat([m, m.new_ones(2, 1)], dim=1)
    assert torch.equal(gen, out)


# ----- a direct reference: softmax over [prefix_k; k] computed by hand --------------------------------------
@pytest.mark.parametrize("family", ["bert", "roberta-cls"])
def test_bert_attention_matches_hand_computation(family):
    model = build(family)
    delta = attach(model, family)
    perturb(delta)
    attn = model.base_model.encoder.layer[0].attention.self
    h = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, _ = attn(h)
        pk, pv = attn.prefix()
        d = HIDDEN // HEADS

        def heads(t):
            return t.view(2, 5, HEADS, d).transpose(1, 2)

        q, k, v = heads(attn.query(h)), heads(attn.key(h)), heads(attn.value(h))
        k = torch.cat([pk.expand(2, -1, -1, -1), k], dim=2)
        v = torch.cat([pv.expand(2, -1, -1, -1), v], dim=2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        ref = (probs @ v).transpose(1, 2).reshape(2, 5, HIDDEN)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("padded", [True, False])  # unpadded sdpa gets no mask from the model: prefix builds it
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_llama_gqa_rotary_attention_matches_hand_computation(impl, padded):
    """Grouped-query attention with rotary embeddings, causal, optionally a padded row: prefix keys are not rotated."""
    model = build("llama")
    model.set_attn_implementation(impl)
    delta = attach(model, "llama")
    perturb(delta)
    x = {
        "input_ids": torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(0)),
        "attention_mask": torch.tensor([[0 if padded else 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
    }
    attn = model.model.layers[0].self_attn
    captured = {}
    handle = attn.register_forward_hook(
        lambda m, a, kw, out: captured.update(h=kw["hidden_states"], pe=kw["position_embeddings"], out=out[0]),
        with_kwargs=True,
    )
    with torch.no_grad():
        model(**x)
    handle.remove()
    h, (cos, sin), out = captured["h"], captured["pe"], captured["out"]
    n_kv, d, s = 2, HIDDEN // HEADS, 6
    with torch.no_grad():
        q = attn.q_proj(h).view(2, s, HEADS, d).transpose(1, 2)
        k = attn.k_proj(h).view(2, s, n_kv, d).transpose(1, 2)
        v = attn.v_proj(h).view(2, s, n_kv, d).transpose(1, 2)
        q, k = transformers.models.llama.modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
        pk, pv = attn.prefix()
        k = torch.cat([pk.expand(2, -1, -1, -1), k], dim=2).repeat_interleave(HEADS // n_kv, dim=1)
        v = torch.cat([pv.expand(2, -1, -1, -1), v], dim=2).repeat_interleave(HEADS // n_kv, dim=1)
        p = SMALL["prefix_token_num"]
        visible = torch.ones(2, 1, s, p + s, dtype=torch.bool)
        visible[..., p:] = torch.tril(torch.ones(s, s, dtype=torch.bool))
        visible[0, :, :, p] = not padded  # the padded key of row 0
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        ref = attn.o_proj((probs @ v).transpose(1, 2).reshape(2, s, HEADS * d))
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0, 1:], ref[0, 1:], rtol=1e-5, atol=1e-6)  # row 0, position 0 is padding


def test_t5_position_bias_only_on_real_keys():
    """T5 relative position bias applies to real keys; the prefix columns get zero bias."""
    model = build("t5")
    delta = attach(model, "t5")
    perturb(delta)
    attn = model.encoder.block[0].layer[0].SelfAttention
    h = torch.randn(1, 4, HIDDEN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, bias, _ = attn(h)
        assert bias.shape[-1] == 4  # the bias handed on to the next layer is the real-length one
        pk, pv = attn.prefix()
        q = attn.q(h).view(1, 4, HEADS, -1).transpose(1, 2)
        k = torch.cat([pk[None], attn.k(h).view(1, 4, HEADS, -1).transpose(1, 2)], dim=2)
        v = torch.cat([pv[None], attn.v(h).view(1, 4, HEADS, -1).transpose(1, 2)], dim=2)
        full_bias = torch.cat([torch.zeros(1, HEADS, 4, SMALL["prefix_token_num"]), attn.compute_bias(4, 4)], dim=-1)
        probs = torch.softmax(q @ k.transpose(-1, -2) + full_bias, dim=-1)  # T5 does not scale scores
        ref = attn.o((probs @ v).transpose(1, 2).reshape(1, 4, -1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# ----- exact parameter counts ------------------------------------------------------------------------------
def test_parameter_count_reparameterized():
    model = build("llama")
    delta = attach(model, "llama", prefix_token_num=3, embed_dim=8, mid_dim=16)
    # trunk: embedding 3*8 = 24, Linear(8 -> 16) = 8*16 + 16 = 144                       -> 168
    # per layer: kv_dim = 2 kv heads * head 8 = 16; Linear(16 -> 2*16) = 16*32 + 32 = 544   -> 2 layers = 1088
    assert delta.num_delta_parameters() == 24 + 144 + 2 * 544 == 1256
    delta.freeze_module(exclude=["deltas"])
    assert delta.num_trainable_parameters() == 1256


def test_parameter_count_plain_and_t5_v11_width():
    model = build("t5-v1_1")
    delta = attach(model, "t5-v1_1", prefix_token_num=3, reparameterize=False)
    # 4 self-attention modules (2 encoder + 2 decoder), each: key + value of 4 heads * 3 tokens * d_kv 12
    assert delta.num_delta_parameters() == 4 * 2 * (4 * 3 * 12) == 1152
    assert "prefix_trunk" not in dict(model.named_children())


# ----- errors ------------------------------------------------------------------------------------------------
def test_merge_is_refused():
    model = build("gpt2")
    delta = attach(model, "gpt2")
    with pytest.raises(DeltaStateError, match="cannot be merged"):
        delta.merge()


@pytest.mark.parametrize(
    "family,target,match",
    [
        ("t5", ["EncDecAttention"], "cross-attention"),
        ("bart", ["encoder_attn"], "cross-attention"),
        ("gpt2", ["c_attn"], "attention module"),
    ],
)
def test_unsupported_targets_leave_model_untouched(family, target, match):
    model = build(family)
    keys = list(model.state_dict())
    with pytest.raises(UnsupportedModuleError, match=match):
        PrefixModel(model, modified_modules=target, **SMALL)
    assert list(model.state_dict()) == keys
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_unsupported_attention_implementation():
    model = build("gpt2")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedModuleError, match="flex_attention.*sdpa"):
        attach(model, "gpt2")


def test_attention_implementation_switched_after_attach():
    model = build("gpt2")
    attach(model, "gpt2")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(UnsupportedModuleError, match="flex_attention"):
        model(**inputs_for("gpt2"))


def test_old_transformers_is_refused_clearly(monkeypatch):
    model = build("gpt2")
    # the module object in sys.modules at attach time (transformers may swap its lazy module while loading)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.45.2")
    with pytest.raises(UnsupportedModuleError, match=r"transformers >= 5\.0 \(installed: 4\.45\.2\)"):
        attach(model, "gpt2")
    assert not any(m._forward_pre_hooks for m in model.modules())


class _IgnoresCache(torch.nn.Module):
    """Looks like an attention module (cache and mask arguments, head attributes) but never reads the cache."""

    num_heads, head_dim = 2, 4

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, hidden_states, attention_mask=None, cache=None):
        return self.proj(hidden_states)


def test_module_that_ignores_the_cache_is_an_error_not_a_silent_no_op():
    model = torch.nn.Sequential(_IgnoresCache())
    PrefixModel(model, modified_modules=["0"], **SMALL)
    with pytest.raises(UnsupportedModuleError, match="without reading its keys"):
        model(torch.randn(1, 3, 8))


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_beam_search_cached_equals_uncached(family):
    """Beam search reorders the cache between steps: with and without a cache it must pick the same beams."""
    model = build(family)
    perturb(attach(model, family), scale=1.0)
    x = batch(family)
    kw = dict(
        input_ids=x["input_ids"],
        attention_mask=torch.ones_like(x["input_ids"]),
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
