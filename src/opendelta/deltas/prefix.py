"""Prefix tuning: learned key / value vectors put in front of the real ones in every addressed attention module.

Each attention module addressed by `modified_modules` attends over `[prefix_k; k]` / `[prefix_v; v]`, where the
prefix holds `prefix_token_num` positions per key/value head. With `reparameterize=True` the prefixes are
produced by an MLP, as in Li & Liang (2021): a shared trunk (an embedding of `prefix_token_num` x `embed_dim`,
then Linear(embed_dim -> mid_dim) and tanh) lives on the backbone root as `prefix_trunk`, and each attention
module owns the last Linear(mid_dim -> 2 * kv_heads * head_dim) as `<attention>.prefix.head`. Taken together
this is exactly one MLP embed -> mid -> 2 * layers * kv_dim, split by layer, which also lets attention modules
of different widths share one trunk. With `reparameterize=False` each module holds plain `prefix_key` /
`prefix_value` tensors.

How it plugs into transformers 5.x attention (eager / sdpa): a forward pre-hook (with kwargs) on each
attention module
  * hands the module a `_PrefixedCache` in place of its `cache` argument: its `update(k, v, layer_idx)`
    passes the real keys / values to the real cache (if any) and returns them with the prefix in front.
    The real cache therefore only ever stores real tokens (no double prefixing across `generate()` steps,
    and transformers' own length bookkeeping stays right); the prefix is added at every step.
  * widens the attention mask the module receives by `prefix_token_num` always-visible columns; where the
    model passed no mask (pure-causal or unpadded sdpa) it builds the explicit one sdpa would have meant.
  * for T5-style relative position bias, pads the bias with zero columns for the prefix (a forward hook
    strips them again from the bias the module returns, so the next layer gets the real-length one).
Rotary models (Llama): `update` receives keys after the rotary embedding was applied, so prefix keys live in
the rotated space and are never rotated: they act as position-free memory slots, identical at every decoding
step and in every forward, which keeps the cached and uncached paths consistent. Grouped-query attention: the
prefix has one vector per key/value head, and the attention kernels repeat it like real keys.
Self-attention only: cross-attention reuses cached encoder keys without calling `update`. An addressed module
whose forward never called `update` raises UnsupportedModuleError after it ran (never a silent no-op).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import CheckpointError, UnsupportedModuleError
from ..interop import LegacyMapping
from ..registry import register_delta
from ..site import Site
from ._common import CACHE_ARGS, MAX_TOKENS, CallArgs, CallSlot, positional_names

_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")
_MASK_ARGS = ("attention_mask", "mask")
_CROSS_ARGS = ("key_value_states", "encoder_hidden_states")
_CROSS_MODULE_NAMES = ("EncDecAttention", "encoder_attn", "crossattention")
_HEAD_DIM_ATTRS = ("head_dim", "key_value_proj_dim", "attention_head_size")
_HEADS_ATTRS = ("num_key_value_heads", "num_heads", "n_heads", "num_attention_heads")


@dataclass(repr=False)
class PrefixConfig(DeltaConfig):
    """prefix_token_num: prefix positions per attention module; reparameterize: produce the prefixes with an
    MLP (embed_dim -> mid_dim -> 2 * kv_dim per module) instead of holding them as plain tensors.

    legacy_position_bias: T5-style position bias as OpenDelta 0.3 computed it (set when loading a 0.3
    checkpoint, so the function it was trained as is kept): a module with its own relative bias gives the
    prefix the relative positions of the tokens before the input; the bias is then not handed on, so later
    blocks run without position bias. Default: prefix columns get zero bias and the bias is handed on.
    """

    positional_keys = ("prefix_token_num", "reparameterize", "embed_dim", "mid_dim")

    prefix_token_num: int = 6
    reparameterize: bool = True
    embed_dim: int = 512
    mid_dim: int = 512
    legacy_position_bias: bool = False

    def _validate(self) -> None:
        super()._validate()
        for key in ("prefix_token_num", "embed_dim", "mid_dim"):
            self._require(1 <= getattr(self, key) <= MAX_TOKENS, key, f"an integer in [1, {MAX_TOKENS}]")


class PrefixTrunk(nn.Module):
    """The shared part of the reparameterization: tanh(Linear(embedding)) of shape (prefix_token_num, mid_dim)."""

    def __init__(self, num_tokens: int, embed_dim: int, mid_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, embed_dim, device=device, dtype=dtype)
        self.dense = nn.Linear(embed_dim, mid_dim, device=device, dtype=dtype)

    def forward(self) -> torch.Tensor:
        return torch.tanh(self.dense(self.embedding.weight))


class PrefixLayer(nn.Module):
    """The prefix of one attention module: `forward()` returns keys and values, each (kv_heads, tokens, head_dim)."""

    def __init__(
        self, num_tokens: int, kv_heads: int, head_dim: int, trunk: PrefixTrunk | None, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.num_tokens, self.kv_heads, self.head_dim = num_tokens, kv_heads, head_dim
        self._trunk = (trunk,)  # a reference, not a child: the trunk is registered once, on the root
        if trunk is not None:
            self.head = nn.Linear(trunk.dense.out_features, 2 * kv_heads * head_dim, device=device, dtype=dtype)
        else:
            shape = (kv_heads, num_tokens, head_dim)
            self.prefix_key = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            self.prefix_value = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            if self.prefix_key.device.type != "meta":
                nn.init.normal_(self.prefix_key, std=1.0)
                nn.init.normal_(self.prefix_value, std=1.0)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self._trunk[0]
        if trunk is None:
            return self.prefix_key, self.prefix_value
        kv = self.head(trunk()).view(self.num_tokens, 2, self.kv_heads, self.head_dim)
        kv = kv.permute(1, 2, 0, 3)  # (2, kv_heads, tokens, head_dim)
        return kv[0], kv[1]

    def extra_repr(self) -> str:
        mode = "reparameterized" if self._trunk[0] is not None else "plain"
        return f"tokens={self.num_tokens}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, {mode}"


class _PrefixedCache:
    """Stands in for an attention module's cache for one call.

    `update(k, v, layer_idx, ...)` stores k / v in the real cache (when there is one) and returns everything
    cached so far with the prefix in front. Every other attribute is the real cache's.
    """

    def __init__(self, inner: Any, key: torch.Tensor, value: torch.Tensor, where: str) -> None:
        self._inner, self._key, self._value, self._where = inner, key, value, where
        self.used = False  # set by update(): the module really read its keys through the cache

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.used = True
        if self._inner is not None:
            key_states, value_states = self._inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        expected = (self._key.shape[0], self._key.shape[2])
        if (key_states.shape[1], key_states.shape[-1]) != expected:
            raise UnsupportedModuleError(
                f"prefix on {self._where!r}: the module's keys have {key_states.shape[1]} heads of size "
                f"{key_states.shape[-1]}, but the prefix was built for {expected[0]} heads of size {expected[1]} "
                f"from the module's attributes. This attention module is laid out differently; it is not supported."
            )
        batch = key_states.shape[0]
        pk = self._key.to(key_states.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        pv = self._value.to(value_states.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
        return torch.cat([pk, key_states], dim=2), torch.cat([pv, value_states], dim=2)

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return 0 if self._inner is None else self._inner.get_seq_length(layer_idx)

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(f"prefix: the model passed no cache, so there is no cache attribute {name!r}")
        return getattr(inner, name)


def _first_attr(obj: Any, names: tuple[str, ...]) -> int | None:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def kv_geometry(module: nn.Module) -> tuple[int, int] | None:
    """(key/value heads, head size) of an attention module, from its attributes; None if unknown."""
    head_dim = _first_attr(module, _HEAD_DIM_ATTRS)
    groups = getattr(module, "num_key_value_groups", None)
    total = getattr(getattr(module, "config", None), "num_attention_heads", None)
    if isinstance(groups, int) and groups > 0 and isinstance(total, int):
        heads = total // groups
    else:
        heads = _first_attr(module, _HEADS_ATTRS)
    return (heads, head_dim) if heads and head_dim else None


def _attn_implementation(module: nn.Module) -> str | None:
    return getattr(getattr(module, "config", None), "_attn_implementation", None)


def _check_attn_implementation(name: str, module: nn.Module) -> None:
    impl = _attn_implementation(module)
    if impl is not None and impl not in _ATTENTION_IMPLEMENTATIONS:
        raise UnsupportedModuleError(
            f"prefix on {name!r}: attention implementation {impl!r} is not supported (prefix widens the 4-D "
            f"attention mask, which {impl!r} does not take); load the model with attn_implementation='sdpa' or "
            f"'eager', or call model.set_attn_implementation('sdpa')."
        )


def _require_transformers_5() -> None:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise UnsupportedModuleError(
            f"prefix needs transformers >= 5.0 (installed: {transformers.__version__}): it relies on attention "
            f"modules taking a Cache object and a 4-D mask. Upgrade transformers, or use another delta type "
            f"(lora, adapter, ... work with this version)."
        )


def _extend_mask(
    mask: torch.Tensor | None, tokens: int, q_len: int, kv_len: int, causal: bool, like: torch.Tensor, where: str
) -> torch.Tensor:
    """`mask` with `tokens` visible key columns in front; an explicit one where the model passed None."""
    if mask is None:
        visible = torch.ones(q_len, kv_len, dtype=torch.bool, device=like.device)
        if causal:  # bottom-right aligned: query i sits at position kv_len - q_len + i
            visible = torch.tril(visible, diagonal=kv_len - q_len)
        visible = torch.cat([visible.new_ones(q_len, tokens), visible], dim=1)
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        return torch.where(visible, zero, torch.finfo(like.dtype).min)[None, None]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        kind = f"{mask.dim()}-D tensor" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise UnsupportedModuleError(
            f"prefix on {where!r}: the attention mask is a {kind}; prefix supports the 4-D masks of the eager and "
            f"sdpa attention implementations."
        )
    pad = (
        mask.new_ones(*mask.shape[:-1], tokens)
        if mask.dtype == torch.bool
        else mask.new_zeros(*mask.shape[:-1], tokens)
    )
    return torch.cat([pad, mask], dim=-1)


@register_delta("prefix")
class PrefixModel(DeltaBase):
    """Prefix tuning on the self-attention modules addressed by `modified_modules` (transformers >= 5)."""

    config_class = PrefixConfig
    default_modules = {"*": ["attn"], "bert": ["attn.core"], "deberta-v2": ["attn.core"]}
    default_learning_rate = 1e-3
    _trunk: PrefixTrunk | None = None
    # 0.3 hooked the block around the attention (T5 `layer.0`, BERT `attention`) and kept one MLP for all
    # modules as `<first module>.reparams`: wte (our trunk's embedding), control_trans.0 (trunk's dense),
    # control_trans.2 (rows [2*hidden*i, 2*hidden*(i+1)) are module i's key then value: our heads)
    legacy = LegacyMapping(
        fit_config=lambda config, backbone, names, state: {
            **config,
            "modified_modules": _attention_in(backbone, names),
            "legacy_position_bias": True,
        },
        fit_state=lambda delta, state: _legacy_reparams(delta, state),
        positional=(
            *PrefixConfig.positional_keys,
            "modified_modules",
            "exclude_modules",
            "unfrozen_modules",
            "common_structure",
            "interactive_modify",
        ),
    )

    def check_module(self, name: str, module: nn.Module) -> None:
        _require_transformers_5()
        params = set(inspect.signature(module.forward).parameters)
        if not params & set(CACHE_ARGS) or not params & set(_MASK_ARGS):
            raise UnsupportedModuleError(
                f"prefix cannot modify {name!r} ({type(module).__name__}): it must be an attention module whose "
                f"forward takes a cache ({' / '.join(CACHE_ARGS)}) and a mask ({' / '.join(_MASK_ARGS)}). Point "
                f"`modified_modules` at the self-attention modules, e.g. 'attn', 'self_attn', 'SelfAttention', "
                f"'attention.self'."
            )
        if getattr(module, "is_cross_attention", False) or name.split(".")[-1] in _CROSS_MODULE_NAMES:
            raise UnsupportedModuleError(
                f"prefix cannot modify the cross-attention module {name!r}: with a cache, transformers reuses the "
                f"cached encoder keys without calling the cache's update(), so the prefix would vanish after the "
                f"first decoding step. Address self-attention modules only."
            )
        if kv_geometry(module) is None:
            raise UnsupportedModuleError(
                f"prefix cannot modify {name!r} ({type(module).__name__}): its number of key/value heads and head "
                f"size are not readable from the attributes {_HEADS_ATTRS} / {_HEAD_DIM_ATTRS}."
            )
        _check_attn_implementation(name, module)

    def build_site(self, site: Site) -> None:
        cfg = self.config
        factory = site.factory_kwargs()
        if cfg.reparameterize and self._trunk is None:
            self._trunk = PrefixTrunk(cfg.prefix_token_num, cfg.embed_dim, cfg.mid_dim, **factory)
        heads, head_dim = kv_geometry(site.module)
        layer = site.add_layer(
            "prefix",
            PrefixLayer(cfg.prefix_token_num, heads, head_dim, self._trunk if cfg.reparameterize else None, **factory),
        )
        positional = positional_names(site.module)
        params = set(inspect.signature(site.module.forward).parameters)
        cache_arg = next(a for a in CACHE_ARGS if a in params)
        mask_arg = next(a for a in _MASK_ARGS if a in params)
        has_bias = "position_bias" in params
        tokens = cfg.prefix_token_num
        current = CallSlot()  # the cache handed to this call (per thread: concurrent forwards)

        def add_prefix(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            call = CallArgs(positional, args, kwargs)
            if any(call.get(a) is not None for a in _CROSS_ARGS if a in params):
                raise UnsupportedModuleError(
                    f"prefix on {site.name!r}: the module is being called as cross-attention; prefix supports "
                    f"self-attention only. Remove it from `modified_modules`."
                )
            _check_attn_implementation(site.name, module)
            hidden = call.get(positional[0])
            cache = call.get(cache_arg)
            inner = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache -> its self-attention part
            layer_idx = getattr(module, "layer_idx", None)
            past = int(inner.get_seq_length(layer_idx if layer_idx is not None else 0)) if inner is not None else 0
            q_len = hidden.shape[1]
            key, value = layer()
            prefixed = _PrefixedCache(inner, key, value, site.name)
            current.set(prefixed)
            call.set(cache_arg, prefixed)
            is_causal = kwargs.get("is_causal")
            is_causal = getattr(module, "is_causal", False) if is_causal is None else is_causal
            # with no mask, sdpa is causal for multi-token queries of a causal module; eager does not mask at all
            causal = bool(is_causal) and q_len > 1 and _attn_implementation(module) == "sdpa"
            call.set(mask_arg, _extend_mask(call.get(mask_arg), tokens, q_len, past + q_len, causal, hidden, site.name))
            if has_bias and cfg.legacy_position_bias:
                _legacy_position_bias(module, call, tokens, q_len, past, hidden)
            elif has_bias:
                _pad_position_bias(module, call, tokens, q_len, past)
            return tuple(call.args), call.kwargs

        def check_and_strip(module: nn.Module, args: tuple, output: Any) -> Any:
            prefixed = current.take()
            used = prefixed is not None and prefixed.used
            if not used:  # never a silent no-op
                raise UnsupportedModuleError(
                    f"prefix on {site.name!r}: {type(module).__name__} computed attention without reading its keys "
                    f"through the cache's update(), so the prefix could not be added. This module is not supported."
                )
            if has_bias and cfg.legacy_position_bias and isinstance(output, tuple) and len(output) > 1:
                return (output[0], None, *output[2:])  # 0.3 dropped the shared bias after a prefixed module
            if has_bias and isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
                return (output[0], output[1][..., tokens:], *output[2:])  # hand on the real-length position bias
            return output

        site.on_input(add_prefix, with_kwargs=True)
        site.on_output(check_and_strip)

    def build_model_sites(self) -> list[Site]:
        if self._trunk is None:
            return []
        root = Site("", self.backbone_model)
        root.add_layer("prefix_trunk", self._trunk)
        return [root]


def _legacy_position_bias(
    module: nn.Module, call: CallArgs, tokens: int, q_len: int, past: int, like: torch.Tensor
) -> None:
    """OpenDelta 0.3 on T5: the prefix sits at the positions before the input (queries shifted by `tokens`);
    a module without its own relative bias (it would have received the first one's) uses none."""
    kv_len = tokens + past + q_len
    if getattr(module, "has_relative_attention_bias", False):
        device = module.relative_attention_bias.weight.device
        bias = module.compute_bias(q_len, kv_len, device=device, past_seen_tokens=tokens + past)
    else:
        bias = torch.zeros((1, module.n_heads, q_len, kv_len), device=like.device, dtype=like.dtype)
    call.set("position_bias", bias)


def _pad_position_bias(module: nn.Module, call: CallArgs, tokens: int, q_len: int, past: int) -> None:
    """T5-style additive position bias: zero bias for the prefix columns (computed here when the module would)."""
    bias = call.get("position_bias")
    if bias is None and getattr(module, "has_relative_attention_bias", False):
        bias = module.compute_bias(
            q_len, past + q_len, device=module.relative_attention_bias.weight.device, past_seen_tokens=past
        )
    if bias is None:  # the module creates a zero bias of the full (prefixed) key length itself
        return
    call.set("position_bias", torch.cat([bias.new_zeros(*bias.shape[:-1], tokens), bias], dim=-1))


def _is_attention(module: nn.Module) -> bool:
    params = set(inspect.signature(module.forward).parameters)
    return bool(params & set(CACHE_ARGS)) and bool(params & set(_MASK_ARGS)) and kv_geometry(module) is not None


def _attention_in(backbone: nn.Module, names: list[str]) -> list[str]:
    """The attention module this version hooks for each module 0.3 hooked (itself, or the first one inside)."""
    out = []
    for name in names:
        found = [n for n, m in backbone.get_submodule(name).named_modules() if _is_attention(m)]
        if not found:
            raise CheckpointError(f"OpenDelta 0.3 put a prefix on {name!r}, which holds no attention module here.")
        out.append(f"{name}.{found[0]}" if found[0] else name)
    return out


def _legacy_reparams(delta: DeltaBase, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sites = [s for s in delta.sites if s.name]
    keys = [k for k in state if ".reparams." in k]
    if not keys:
        return state
    base = keys[0].split(".reparams.")[0] + ".reparams."
    get = {k[len(base) :]: state.pop(k) for k in keys}
    get.pop("input_tokens", None)
    out = {
        "prefix_trunk.embedding.weight": get.pop("wte.weight"),
        "prefix_trunk.dense.weight": get.pop("control_trans.0.weight"),
        "prefix_trunk.dense.bias": get.pop("control_trans.0.bias"),
    }
    weight, bias = get.pop("control_trans.2.weight"), get.pop("control_trans.2.bias")
    rows = [2 * s.layers["prefix"].kv_heads * s.layers["prefix"].head_dim for s in sites]
    if sum(rows) != weight.shape[0]:
        raise CheckpointError(
            f"OpenDelta 0.3 prefix MLP produces {weight.shape[0]} values per token, but the {len(sites)} attention "
            f"module(s) here need {sum(rows)}; was it trained on another backbone?"
        )
    start = 0
    for site, n in zip(sites, rows):
        out[f"{site.name}.prefix.head.weight"] = weight[start : start + n]
        out[f"{site.name}.prefix.head.bias"] = bias[start : start + n]
        start += n
    return {**state, **out, **{base + k: v for k, v in get.items()}}
