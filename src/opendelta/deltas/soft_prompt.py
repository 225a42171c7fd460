"""Soft prompt tuning: `soft_token_num` trainable embeddings put in front of every input sequence.

`modified_modules` addresses the model's input embedding (e.g. "shared" for T5 / BART, "wte" for GPT-2,
"embed_tokens" for Llama, "word_embeddings" for BERT). The prompt lives there as `<embedding>.soft_prompt`
(`soft_embeds`, soft_token_num x hidden). With `token_init=True` it starts as the embeddings of the first
soft_token_num vocabulary tokens, as in OpenDelta 0.3 (taken through the embedding module, so scaled embeddings
such as BART's stay in scale); otherwise uniform(-init_range, init_range).

Prepending happens on the model's own forward arguments (a forward pre-hook with kwargs), so positions,
masks and caches downstream are computed by the model itself for the longer sequence:
  * decoder-only / encoder-only models (hook on the backbone root): `input_ids` are embedded, the prompt is
    put in front of `inputs_embeds`, `attention_mask` gets visible columns, `token_type_ids` zeros, sequence
    `labels` -100 and given `position_ids` are shifted. With a cache that already holds tokens (later
    `generate()` steps), nothing is prepended: the cache holds the prompt from the first step, so only the
    mask is widened and given position ids shifted (they count real tokens, as generate() computes them;
    `cache_position`, which transformers 4.x passes, is shifted the same way; legacy tuple caches are read).
  * encoder-decoder models: the hook sits on the encoder (which `generate()` calls directly), and a hook on
    the root widens the `attention_mask` that the decoder's cross-attention uses. Decoder inputs and labels
    are untouched; the encoder's own output always holds the prompt (the decoder attends to it).

What the caller gets back depends on `prompt_positions`:
  * "keep" (the default, OpenDelta 0.3's meaning): every output includes the prompt positions (L + N: `logits`,
    `last_hidden_state`, `hidden_states`, `attentions`, the `encoder_*` outputs), and the caller's own
    `attention_mask` and `token_type_ids` tensors are widened in place (N leading columns), so code that pools
    the outputs with its mask (`(h * mask[..., None]).sum(1) / mask.sum(1)`) sees matching shapes. A mask that
    already covers the prompt (the same tensor passed again) is not widened twice.
  * "trim": sequence-aligned outputs (and the root's `encoder_*` outputs) are cut back to the caller's L tokens,
    and the caller's tensors are left as they were (the widened mask exists only inside the call).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import ModuleMatchError, UnsupportedModuleError
from ..interop import LegacyMapping
from ..registry import register_delta
from ..site import Site
from ._common import CACHE_ARGS, MAX_TOKENS, CallArgs, CallSlot, positional_names

_SEQUENCE_OUTPUTS = ("logits", "last_hidden_state", "hidden_states", "attentions")
_ENCODER_OUTPUTS = ("encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions")
#: the caller's tensors that get the prompt's columns
_CALLER_TENSORS = ("attention_mask", "token_type_ids")
ROOT = "root"


def _input_embedding(model: nn.Module) -> str:
    """The raw name of the embedding a soft prompt goes on (the encoder's for encoder-decoder models)."""
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        raise UnsupportedModuleError(f"soft_prompt needs a transformers model; {type(model).__name__} is not one.")
    embedding = getter()
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is embedding and n]
    encoder = [n for n in names if n.startswith("encoder.")]
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False) and encoder:
        return encoder[0]
    if not names:
        raise ModuleMatchError(f"{type(model).__name__}.get_input_embeddings() is not one of its modules.")
    return names[0]


@dataclass(repr=False)
class SoftPromptConfig(DeltaConfig):
    """soft_token_num: prompt length; token_init: start from embeddings of vocabulary tokens (else
    uniform(-init_range, init_range)); prompt_positions: "keep" (outputs hold the prompt positions and the caller's
    attention_mask / token_type_ids are widened in place, as in OpenDelta 0.3) or "trim" (outputs cut back to the
    caller's tokens, the caller's tensors untouched)."""

    positional_keys = ("soft_token_num", "init_range", "token_init")
    ignored_keys = frozenset({"other_expand_ids"})  # 0.3's mask-widening switches: the masks are always widened

    soft_token_num: int = 100
    init_range: float = 0.5
    token_init: bool = True
    prompt_positions: Literal["keep", "trim"] = "keep"

    def _validate(self) -> None:
        super()._validate()
        self._require(1 <= self.soft_token_num <= MAX_TOKENS, "soft_token_num", f"an integer in [1, {MAX_TOKENS}]")
        self._require(self.init_range > 0, "init_range", "a number > 0")


class SoftPromptLayer(nn.Module):
    """The prompt: `forward(batch)` returns it expanded to (batch, soft_token_num, hidden)."""

    def __init__(
        self, embedding: nn.Embedding, num_tokens: int, init_range: float, token_init: bool, dtype=None
    ) -> None:
        super().__init__()
        w = embedding.weight
        self.soft_embeds = nn.Parameter(
            torch.empty(num_tokens, embedding.embedding_dim, device=w.device, dtype=dtype or w.dtype)
        )
        if w.device.type == "meta":
            return
        with torch.no_grad():
            if token_init:
                vocab = embedding.num_embeddings
                # the first `num_tokens` vocabulary entries, as OpenDelta 0.3 (cycled if the prompt is longer)
                ids = torch.arange(num_tokens) % vocab
                self.soft_embeds.copy_(embedding(ids.to(w.device)))
            else:
                nn.init.uniform_(self.soft_embeds, -init_range, init_range)

    def forward(self, batch: int) -> torch.Tensor:
        return self.soft_embeds.unsqueeze(0).expand(batch, -1, -1)


class _Prepender:
    """Rewrites one forward call's arguments so the sequence starts with the prompt."""

    def __init__(self, module: nn.Module, embedding: nn.Module, layer: SoftPromptLayer, keep: bool) -> None:
        self.keep = keep  # "keep": widen the caller's mask / token types in place, outputs keep the prompt
        self.positional = positional_names(module)
        self.params = set(inspect.signature(module.forward).parameters)
        self.embedding, self.layer = embedding, layer
        self.tokens = layer.soft_embeds.shape[0]
        self._prepended = CallSlot()  # sequence length after prepending, in the current call of this thread

    @property
    def prepended_len(self) -> int | None:
        return self._prepended.get()

    @prepended_len.setter
    def prepended_len(self, value: int | None) -> None:
        self._prepended.set(value)

    def _past(self, call: CallArgs) -> int:
        cache = next((call.get(a) for a in CACHE_ARGS if a in self.params and call.get(a) is not None), None)
        return _cached_length(cache)

    def _widen(self, call: CallArgs, name: str, value: float) -> None:
        t = call.get(name)
        if t is not None:
            wide = torch.cat([t.new_full((t.shape[0], self.tokens), value), t], dim=1)
            if self.keep and name in _CALLER_TENSORS:
                t.data = wide  # the caller's own tensor, as OpenDelta 0.3 did: its pooling code sees L + N
            else:
                call.set(name, wide)

    def _check_mask(self, mask: Any) -> None:
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
            raise UnsupportedModuleError(
                "soft_prompt needs a 2-D attention_mask (batch, sequence) or none; got "
                f"{getattr(mask, 'shape', type(mask).__name__)}."
            )

    def prepend(self, call: CallArgs, labels: bool) -> None:
        """Embed, put the prompt in front, widen mask / token types / labels, shift given positions."""
        self.prepended_len = None
        ids, embeds, mask = call.get("input_ids"), call.get("inputs_embeds"), call.get("attention_mask")
        self._check_mask(mask)
        if ids is None and embeds is None:
            return
        seq = (embeds if embeds is not None else ids).shape[1]
        past = self._past(call)
        if past > 0:  # the cache holds the prompt already: only widen the mask and shift given positions
            real_mask = mask is not None and mask.shape[1] == past + seq - self.tokens
            if real_mask:
                self._widen(call, "attention_mask", 1)
            # cache_position counts real tokens; position ids derived from a mask that already covers the prompt
            # (generate() after a "keep" call widened its mask) count the prompt too
            shift = ("position_ids", "cache_position") if mask is None or real_mask else ("cache_position",)
            for name in shift:
                if call.get(name) is not None:
                    call.set(name, call.get(name) + self.tokens)
            return
        if embeds is None:
            embeds = self.embedding(ids)
        prompt = self.layer(embeds.shape[0]).to(embeds.dtype)
        call.set("input_ids", None)
        call.set("inputs_embeds", torch.cat([prompt, embeds], dim=1))
        real_mask = mask is None or mask.shape[1] == seq  # else it covers the prompt already (passed again)
        if mask is not None and real_mask:
            self._widen(call, "attention_mask", 1)
        types = call.get("token_type_ids")
        if types is not None and types.shape[-1] == seq:
            self._widen(call, "token_type_ids", 0)
        # given positions are read in the mask's frame: derived from a mask that covers the prompt (generate() on
        # a mask a "keep" call widened) they count the prompt already; cache_position always counts real tokens
        for name in ("position_ids", "cache_position"):
            pos = call.get(name)
            if pos is not None:
                front = torch.arange(self.tokens, device=pos.device, dtype=pos.dtype).expand(*pos.shape[:-1], -1)
                shift = self.tokens if real_mask or name == "cache_position" else 0
                call.set(name, torch.cat([front, pos + shift], dim=-1))
        y = call.get("labels") if labels and "labels" in self.params else None
        if y is not None and y.dim() >= 2 and y.shape[1] == seq:
            self._widen(call, "labels", -100)
        self.prepended_len = seq + self.tokens

    def cut(self, output: Any) -> Any:
        """With "trim": drop the prompt positions from sequence-aligned outputs of a call that prepended."""
        n, self.prepended_len = self.prepended_len, None
        if n is None or self.keep:
            return output
        return cut_prompt(output, _SEQUENCE_OUTPUTS, n, self.tokens)


def cut_prompt(output: Any, keys: tuple[str, ...], n: int, tokens: int) -> Any:
    """`output` with the first `tokens` of `n` positions removed from the tensors (or tuples of tensors) at `keys`;
    attention maps lose them on both sequence axes."""

    def cut(t: Any, attention: bool) -> Any:
        if isinstance(t, (tuple, list)):
            return type(t)(cut(x, attention) for x in t)
        if not isinstance(t, torch.Tensor) or t.dim() < 3:
            return t
        if attention and t.dim() == 4 and t.shape[-1] == n and t.shape[-2] == n:
            return t[..., tokens:, tokens:]
        return t[:, tokens:] if t.shape[1] == n else t

    for key in keys:
        t = getattr(output, key, None)
        if t is not None:
            output[key] = cut(t, key.endswith("attentions"))
    return output


def _cached_length(cache: Any) -> int:
    """Tokens a cache holds: a Cache object, or the legacy tuple of (key, value) per layer of transformers 4.x."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        return int(cache[0][0].shape[-2])
    return 0


@register_delta("soft_prompt")
class SoftPromptModel(DeltaBase):
    """Soft prompt tuning; `modified_modules` names the model's input embedding."""

    config_class = SoftPromptConfig
    default_modules = {"*": ["embeddings"], "t5": ["encoder.embeddings"], "bart": ["encoder.embeddings"]}
    default_learning_rate = 1e-2
    app_settings = {"soft_token_num": 20}  # 100 tokens would triple the demo's sequences
    supported_modules = (nn.Embedding,)
    # 0.3 always addressed the root ("root") and hung `soft_prompt_layer` on the encoder (encoder-decoder) or the
    # model; it extended the masks as this version does (`other_expand_ids` configures nothing here)
    legacy = LegacyMapping(
        config_keys=dict.fromkeys(SoftPromptConfig.ignored_keys),
        layer_keys=(),
        fit_config=lambda config, backbone, names, state: {**config, "modified_modules": [_input_embedding(backbone)]},
        fit_state=lambda delta, state: {
            (f"{delta.sites[0].name}.soft_prompt.soft_embeds" if k.endswith("soft_prompt_layer.soft_embeds") else k): v
            for k, v in state.items()
        },
        positional=(
            *SoftPromptConfig.positional_keys,
            "other_expand_ids",
            "modified_modules",
            "exclude_modules",
            "unfrozen_modules",
            "common_structure",
            "interactive_modify",
        ),
    )

    def resolve_targets(self) -> list[tuple[str, nn.Module]]:
        if self.config.modified_modules == [ROOT]:  # OpenDelta 0.3's spelling: the model's input embedding
            self.config = self.config.replace(modified_modules=[_input_embedding(self.backbone_model)])
        targets = super().resolve_targets()
        if len(targets) != 1:
            raise ModuleMatchError(
                f"soft_prompt is put on exactly one module, the input embedding; {self.config.modified_modules} "
                f"matched {len(targets)}: {[n for n, _ in targets][:5]}. Point `modified_modules` at the input "
                f"embedding only."
            )
        return targets

    def _encoder(self) -> nn.Module | None:
        bb = self.backbone_model
        if getattr(getattr(bb, "config", None), "is_encoder_decoder", False) and hasattr(bb, "get_encoder"):
            return bb.get_encoder()
        return None

    def check_module(self, name: str, module: nn.Module) -> None:
        super().check_module(name, module)
        bb = self.backbone_model
        if not hasattr(bb, "get_input_embeddings"):
            raise UnsupportedModuleError(
                f"soft_prompt needs a transformers model (one with get_input_embeddings()); "
                f"{type(bb).__name__} is not one."
            )
        encoder = self._encoder()
        inputs = [bb.get_input_embeddings()] + ([encoder.get_input_embeddings()] if encoder is not None else [])
        if not any(module is m for m in inputs):
            names = [n for n, m in bb.named_modules() if any(m is e for e in inputs)]
            raise UnsupportedModuleError(
                f"soft_prompt must be put on the model's input embedding ({', '.join(names)}), not {name!r}."
            )

    def build_site(self, site: Site) -> None:
        cfg = self.config
        layer = site.add_layer(
            "soft_prompt",
            SoftPromptLayer(
                site.module, cfg.soft_token_num, cfg.init_range, cfg.token_init, site.factory_kwargs().get("dtype")
            ),
        )
        root, encoder = self.backbone_model, self._encoder()
        keep = cfg.prompt_positions == "keep"
        if encoder is None:
            prepender = _Prepender(root, site.module, layer, keep)

            def prepend(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                call = CallArgs(prepender.positional, args, kwargs)
                prepender.prepend(call, labels=True)
                return tuple(call.args), call.kwargs

            site.on_input(prepend, with_kwargs=True, target=root)
            site.on_output(lambda module, args, output: prepender.cut(output), target=root)
            return
        enc = _Prepender(encoder, site.module, layer, keep)

        def prepend_encoder(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            call = CallArgs(enc.positional, args, kwargs)
            enc.prepend(call, labels=False)
            enc.prepended_len = None  # the encoder's output keeps the prompt: the decoder attends to it
            return tuple(call.args), call.kwargs

        site.on_input(prepend_encoder, with_kwargs=True, target=encoder)
        tokens = layer.soft_embeds.shape[0]
        site.on_input(_cross_mask_widener(root, tokens, keep), with_kwargs=True, target=root)
        if not keep:
            site.on_output(lambda module, args, output: _cut_encoder_outputs(output, tokens), target=root)


def _cut_encoder_outputs(output: Any, tokens: int) -> Any:
    hidden = getattr(output, "encoder_last_hidden_state", None)
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        return output
    return cut_prompt(output, _ENCODER_OUTPUTS, hidden.shape[1], tokens)


def _cross_mask_widener(root: nn.Module, tokens: int, keep: bool):
    """Pre-hook for an encoder-decoder root: the `attention_mask` it hands the decoder must cover the prompt."""
    positional = positional_names(root)

    def widen(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        call = CallArgs(positional, args, kwargs)
        mask = call.get("attention_mask")
        if mask is None:
            return args, kwargs
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise UnsupportedModuleError(
                f"soft_prompt needs a 2-D attention_mask (batch, sequence) or none; got "
                f"{getattr(mask, 'shape', type(mask).__name__)}."
            )
        enc_out = call.get("encoder_outputs")
        if enc_out is not None:
            real = enc_out[0].shape[1] - tokens  # the encoder already ran with the prompt
        else:
            x = call.get("inputs_embeds") if call.get("inputs_embeds") is not None else call.get("input_ids")
            real = x.shape[1] if x is not None else -1
        if mask.shape[1] == real:
            wide = torch.cat([mask.new_ones(mask.shape[0], tokens), mask], dim=1)
            if keep:
                mask.data = wide  # the caller's own mask (OpenDelta 0.3); the encoder then finds it widened
            else:
                call.set("attention_mask", wide)
        return tuple(call.args), call.kwargs

    return widen
