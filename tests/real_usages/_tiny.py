"""Tiny backbones for the real-usage corpus (hidden 32, 2 layers, 4 heads, vocab 99).

Every backbone is built from a config and then loaded with fixed weights from ``backbones/<name>.safetensors`` (next to
this file), so the weights do not depend on how a given transformers version (4.45.2 or 5.x) initialises a model.
Keys a transformers version adds or drops (tied weights, non-persistent buffers) are tolerated; any other missing or
unexpected key is an error.

Configs:
  t5       T5ForConditionalGeneration  d_model 32, d_kv 8, d_ff 64, 2+2 layers, 4 heads  (tests/fixtures/legacy03)
  t5_wide  T5ForConditionalGeneration  d_model 64, d_kv 16, d_ff 64, 2+2 layers, 4 heads (only where a library default
           needs a wider model: CompacterModel's reduction_factor 16 with phm_dim 4)
  bert     BertForSequenceClassification  hidden 32, 2 layers, 4 heads, intermediate 64, 64 positions (legacy03)
  gpt2     GPT2LMHeadModel  n_embd 32, 2 layers, 4 heads, 64 positions (legacy03)
  roberta_cls  RobertaForSequenceClassification  hidden 32, 2 layers, 4 heads, intermediate 37, 66 positions, 2 labels
  roberta_tok  RobertaForTokenClassification     same encoder config, 5 labels
  deberta_v2_cls  DebertaV2ForSequenceClassification  hidden 32, 2 layers, 4 heads, intermediate 37, relative
               attention (DeBERTa-v3 style: position_buckets 16, share_att_key, p2c|c2p, layer_norm rel-embeddings), 3 labels
  deberta_v2_tok  DebertaV2ForTokenClassification  same encoder config, 5 labels (transformers 4.45 zeroes the
               outputs at padded positions, 5.x does not; unpadded positions agree)
  esm      EsmModel(add_pooling_layer=False)  hidden 32, 2 layers, 4 heads, intermediate 37, rotary positions
  opt      OPTForCausalLM  hidden 32, 2 layers, 4 heads, ffn 37, 64 positions
  llama    LlamaForCausalLM  hidden 32, 2 layers, 4 heads (4 kv heads), intermediate 37, 64 positions
  cpmbee   TinyCPMBeeTorch (plain torch): the module layout of cpm_live's CPMBee / CPMBeeTorch
           (encoder.layers.N.self_att.self_attention.project_q|k|v|attention_out, ffn.ffn.w_in.w_0|w_1, ffn.ffn.w_out)
           with cpm_live's native ``Linear`` (in_features/out_features/weight, output scaled by 1/sqrt(dim_in));
           TinyCpmBeeForCausalLM is the HF remote-code layout (``cpmbee.`` prefix, nn.Linear subclasses) on the same
           weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
BACKBONES = HERE / "backbones"
LEGACY03_BACKBONES = HERE.parent / "fixtures" / "legacy03" / "backbones"
HIDDEN, LAYERS, HEADS, VOCAB = 32, 2, 4, 99


# ---------------------------------------------------------------------------------------------------------------------
# configs
def t5_config():
    return transformers.T5Config(vocab_size=VOCAB, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=64, num_layers=LAYERS,
                                 num_decoder_layers=LAYERS, num_heads=HEADS, decoder_start_token_id=0, pad_token_id=0,
                                 eos_token_id=1)


def t5_wide_config():
    """d_model 64: CompacterModel's defaults (reduction_factor 16, phm_dim 4) need d_model/16 divisible by 4."""
    return transformers.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=64, num_layers=LAYERS,
                                 num_decoder_layers=LAYERS, num_heads=HEADS, decoder_start_token_id=0, pad_token_id=0,
                                 eos_token_id=1)


def bert_config():
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, intermediate_size=64, max_position_embeddings=64)


def gpt2_config():
    return transformers.GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)


def roberta_config(num_labels=2):
    return transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, intermediate_size=37, max_position_embeddings=66,
                                      type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                      num_labels=num_labels)


def deberta_v2_config(num_labels=3):
    return transformers.DebertaV2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                        num_attention_heads=HEADS, intermediate_size=37, max_position_embeddings=64,
                                        relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                                        position_biased_input=False, type_vocab_size=0, pad_token_id=0,
                                        num_labels=num_labels)


def esm_config():
    return transformers.EsmConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, intermediate_size=37, max_position_embeddings=64,
                                  position_embedding_type="rotary", pad_token_id=1, mask_token_id=3,
                                  token_dropout=True, emb_layer_norm_before=False)


def opt_config():
    return transformers.OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                  num_attention_heads=HEADS, ffn_dim=37, max_position_embeddings=64,
                                  word_embed_proj_dim=HIDDEN, pad_token_id=1, bos_token_id=2, eos_token_id=2)


def llama_config():
    return transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=37,
                                    num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                    max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


# ---------------------------------------------------------------------------------------------------------------------
# tiny CPM-Bee (plain torch, cpm_live module names)
class CPMBeeLinear(torch.nn.Module):
    """cpm_live.native_layers.linear.Linear: weight only, output scaled by 1/sqrt(dim_in)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.dim_in = self.in_features = dim_in
        self.dim_out = self.out_features = dim_out
        self.weight = torch.nn.Parameter(torch.empty((dim_out, dim_in)))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight) / math.sqrt(self.dim_in)


class CpmBeeHFLinear(torch.nn.Linear):
    """The HF remote code's CpmBeeLinear(nn.Linear): no bias, output scaled by 1/sqrt(in_features)."""

    def __init__(self, dim_in, dim_out):
        super().__init__(dim_in, dim_out, bias=False)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight) / math.sqrt(self.in_features)


class _LayerNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        var = x.float().pow(2).mean(dim=-1, keepdim=True)
        return (x * torch.rsqrt(var + 1e-6)) * self.weight


class _Attention(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.num_heads, self.dim_head = HEADS, HIDDEN // HEADS
        self.project_q = lin(HIDDEN, HIDDEN)
        self.project_k = lin(HIDDEN, HIDDEN)
        self.project_v = lin(HIDDEN, HIDDEN)
        self.attention_out = lin(HIDDEN, HIDDEN)

    def forward(self, hidden_q, hidden_kv, attention_mask):
        b, s, _ = hidden_q.shape
        q = self.project_q(hidden_q).view(b, s, self.num_heads, self.dim_head).transpose(1, 2)
        k = self.project_k(hidden_kv).view(b, s, self.num_heads, self.dim_head).transpose(1, 2)
        v = self.project_v(hidden_kv).view(b, s, self.num_heads, self.dim_head).transpose(1, 2)
        score = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dim_head)
        score = score.masked_fill(~attention_mask[:, None], torch.finfo(score.dtype).min)
        out = torch.matmul(torch.softmax(score, dim=-1), v).transpose(1, 2).reshape(b, s, HIDDEN)
        return self.attention_out(out)


class _SelfAttentionBlock(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.layernorm_before_attention = _LayerNorm(HIDDEN)
        self.self_attention = _Attention(lin)

    def forward(self, x, mask):
        h = self.layernorm_before_attention(x)
        return x + self.self_attention(h, h, mask)


class _DenseGatedACT(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.w_0 = lin(HIDDEN, 37)
        self.w_1 = lin(HIDDEN, 37)

    def forward(self, x):
        return torch.nn.functional.gelu(self.w_0(x)) * self.w_1(x)


class _FeedForward(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.w_in = _DenseGatedACT(lin)
        self.w_out = lin(37, HIDDEN)

    def forward(self, x):
        return self.w_out(self.w_in(x))


class _FFNBlock(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.layernorm_before_ffn = _LayerNorm(HIDDEN)
        self.ffn = _FeedForward(lin)

    def forward(self, x):
        return x + self.ffn(self.layernorm_before_ffn(x))


class _TransformerBlock(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.self_att = _SelfAttentionBlock(lin)
        self.ffn = _FFNBlock(lin)

    def forward(self, x, mask):
        return self.ffn(self.self_att(x, mask))


class _Encoder(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.layers = torch.nn.ModuleList([_TransformerBlock(lin) for _ in range(LAYERS)])
        self.output_layernorm = _LayerNorm(HIDDEN)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.output_layernorm(x)


class _CPMBeeCore(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.encoder = _Encoder(lin)
        self.input_embedding = torch.nn.Embedding(VOCAB, HIDDEN)

    def forward(self, input, length):
        b, s = input.shape
        valid = torch.arange(s)[None, :] < length[:, None]
        causal = torch.tril(torch.ones(s, s, dtype=torch.bool))
        mask = causal[None] & valid[:, None, :] & valid[:, :, None]
        mask = mask | torch.eye(s, dtype=torch.bool)[None]
        hidden = self.encoder(self.input_embedding(input), mask)
        logits = torch.nn.functional.linear(hidden, self.input_embedding.weight) / math.sqrt(HIDDEN)
        return logits, hidden


class TinyCPMBeeTorch(_CPMBeeCore):
    """Stands in for cpm_live.models.CPMBee / CPMBeeTorch: forward(input, length) -> (logits, hidden)."""

    def __init__(self):
        super().__init__(CPMBeeLinear)


class TinyCpmBeeForCausalLM(torch.nn.Module):
    """Stands in for openbmb/cpm-bee-10b's remote-code CpmBeeForCausalLM: the same model under ``cpmbee.``."""

    def __init__(self):
        super().__init__()
        self.cpmbee = _CPMBeeCore(CpmBeeHFLinear)

    def forward(self, input_ids, length):
        return self.cpmbee(input_ids, length)[0]


# ---------------------------------------------------------------------------------------------------------------------
# loading
# weights that one transformers version builds but never uses (4.45 builds absolute position embeddings for a rotary
# ESM; 5.x does not): not stored, left at the seeded init where they exist
UNUSED = {"esm": ("embeddings.position_embeddings.weight",)}


def _load(model, name, prefix=""):
    path = BACKBONES / f"{name}.safetensors"
    if not path.exists():  # t5 / bert / gpt2: the weights of the 0.3.2 checkpoint corpus
        path = LEGACY03_BACKBONES / f"{name}.safetensors"
    weights = load_file(str(path))
    if prefix:
        weights = {prefix + k: v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected, f"{name}: unexpected keys {unexpected}"
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    state = model.state_dict()
    params = dict(model.named_parameters())
    loaded_ptrs = {state[k].data_ptr() for k in weights if k in state}
    for key in missing:  # only tied copies of loaded weights, buffers, or weights a version no longer has may be missing
        ok = key not in params or params[key].data_ptr() in loaded_ptrs or key in UNUSED.get(name, ())
        assert ok, f"{name}: weight {key} is not in {name}.safetensors"
    model.eval()
    return model


def _build(cls, config, name, **kwargs):
    torch.manual_seed(0)
    return _load(cls(config, **kwargs), name)


def tiny_t5():
    return _build(transformers.T5ForConditionalGeneration, t5_config(), "t5")


def tiny_t5_wide():
    return _build(transformers.T5ForConditionalGeneration, t5_wide_config(), "t5_wide")


def tiny_bert():
    return _build(transformers.BertForSequenceClassification, bert_config(), "bert")


def tiny_bert_model():
    """BertModel (the AutoModel of bert-base-uncased) on the encoder weights of bert.safetensors."""
    torch.manual_seed(0)
    model = transformers.BertModel(bert_config())
    weights = load_file(str(LEGACY03_BACKBONES / "bert.safetensors"))
    weights = {k[len("bert."):]: v for k, v in weights.items() if k.startswith("bert.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.endswith(("position_ids", "token_type_ids")) for k in missing), (missing,
                                                                                                     unexpected)
    model.eval()
    return model


def tiny_gpt2():
    return _build(transformers.GPT2LMHeadModel, gpt2_config(), "gpt2")


def tiny_roberta_cls():
    return _build(transformers.RobertaForSequenceClassification, roberta_config(2), "roberta_cls")


def tiny_roberta_tok():
    return _build(transformers.RobertaForTokenClassification, roberta_config(5), "roberta_tok")


def tiny_deberta_v2_cls():
    return _build(transformers.DebertaV2ForSequenceClassification, deberta_v2_config(3), "deberta_v2_cls")


def tiny_deberta_v2_tok():
    return _build(transformers.DebertaV2ForTokenClassification, deberta_v2_config(5), "deberta_v2_tok")


def tiny_esm():
    return _build(transformers.EsmModel, esm_config(), "esm", add_pooling_layer=False)


def tiny_opt():
    return _build(transformers.OPTForCausalLM, opt_config(), "opt")


def tiny_llama():
    return _build(transformers.LlamaForCausalLM, llama_config(), "llama")


def tiny_cpmbee():
    torch.manual_seed(0)
    return _load(TinyCPMBeeTorch(), "cpmbee")


def tiny_cpmbee_hf():
    torch.manual_seed(0)
    return _load(TinyCpmBeeForCausalLM(), "cpmbee", prefix="cpmbee.")


# ---------------------------------------------------------------------------------------------------------------------
# inputs and small helpers for observations
def ids(batch=2, seq=7, seed=1, low=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (batch, seq), generator=g)


def mask(batch=2, seq=7):
    m = torch.ones(batch, seq, dtype=torch.long)
    m[0, -2:] = 0
    return m


def labels(batch=2, n=2, seed=2, shape=None):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, shape or (batch,), generator=g)


def trainable_names(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def num_trainable(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def same(a, b, atol=1e-6):
    return bool(a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=0))


def loss_decreases(model, loss_fn, steps=3, lr=0.1):
    """3 SGD steps over the trainable parameters; True when the last loss is below the first."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    losses = []
    for _ in range(steps + 1):
        opt.zero_grad()
        loss = loss_fn()
        losses.append(float(loss))
        loss.backward()
        opt.step()
    return bool(losses[-1] < losses[0])


def files(folder):
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
