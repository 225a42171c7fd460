"""BitFit (Ben Zaken et al. 2021): train only biases.

Each modified Linear / Conv1D / norm layer gets a zero-initialised trainable bias b' (a child layer), so
y = f(x) + b'. On a layer with a bias b this is exactly training b (b + b'), and it also works on bias-free
layers (T5 linears, T5LayerNorm, LlamaRMSNorm). The backbone's own tensors are never touched, so freezing
keeps them bit-identical and `detach()` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import UnsupportedModuleError, class_path
from ..interop import SELECTION_ARGS, LegacyMapping
from ..registry import register_delta
from ..site import Site
from ._common import is_linear_like, is_norm, linear_features, map_first_output


@dataclass(repr=False)
class BitFitConfig(DeltaConfig):
    """No keys beyond `modified_modules` & co.: point them at Linear / Conv1D / norm layers."""

    positional_keys = ()


def bias_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape of the bias a layer adds to its output."""
    if isinstance(module, Conv1D):
        return (module.weight.shape[1],)
    if is_linear_like(module):
        return (linear_features(module)[1],)
    shape = getattr(module, "normalized_shape", None)
    return tuple(shape) if shape else tuple(module.weight.shape)


class BitFitBias(nn.Module):
    """`forward(y)` returns y + bias (zero at initialisation)."""

    def __init__(self, shape: tuple[int, ...], device=None, dtype=None) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.bias


@register_delta("bitfit")
class BitFitModel(DeltaBase):
    """A trainable bias on each Linear / Conv1D / LayerNorm / RMSNorm-style layer in `modified_modules`."""

    config_class = BitFitConfig
    default_modules = {
        "*": [
            "attn.q",
            "attn.k",
            "attn.v",
            "attn.qkv",
            "attn.proj",
            "attn.layer_norm",
            "crossattn.q",
            "crossattn.k",
            "crossattn.v",
            "crossattn.proj",
            "crossattn.layer_norm",
            "ff.w1",
            "ff.w3",
            "ff.w2",
            "ff.layer_norm",
            "encoder.layer_norm",
            "decoder.layer_norm",
        ]
    }
    default_learning_rate = 1e-2
    # 0.3 trained the layers' own biases (saved under the backbone's names, `...query.bias`) of every Linear /
    # LayerNorm it matched or found inside a matched block, and added `<leaf>.bitfit.bias` to other leaves
    # 0.3's own building steps of BitFit (replaced by build_site)
    add_bias_to_modules_have_bias_or_known_type = add_bias_to_others = DeltaBase._custom_delta

    legacy = LegacyMapping(
        fit_config=lambda c, b, n, s: _legacy_sites(c, b, n),
        fit_state=lambda d, s: _legacy_bias(d, s),
        positional=SELECTION_ARGS,
    )

    def check_module(self, name: str, module: nn.Module) -> None:
        if not _supported(module):
            raise UnsupportedModuleError(
                f"'bitfit' cannot modify {name!r} ({class_path(module)}); it adds biases to Linear(-like), Conv1D "
                f"and norm layers (LayerNorm, T5LayerNorm, RMSNorm). Point `modified_modules` at those, e.g. "
                f"the projections inside attention and the layer norms."
            )

    def build_site(self, site: Site) -> None:
        layer = site.add_layer("bitfit", BitFitBias(bias_shape(site.module), **site.factory_kwargs()))

        def add_bias(module: nn.Module, args: tuple, output: Any) -> Any:
            return map_first_output(output, layer)

        site.on_output(add_bias)


def _supported(module: nn.Module) -> bool:
    return is_linear_like(module) or is_norm(module)


def _legacy_sites(config: dict[str, Any], backbone: nn.Module, names: list[str]) -> dict[str, Any]:
    """The layers 0.3's bitfit changed: each matched layer, or the layers with a bias inside a matched block."""
    sites: list[str] = []
    for name in names:
        module = backbone.get_submodule(name)
        if _supported(module):
            inner = [(name, module)]
        else:
            inner = [(f"{name}.{n}", m) for n, m in module.named_modules() if n and _supported(m)]
            inner = [(n, m) for n, m in inner if isinstance(getattr(m, "bias", None), torch.Tensor)]
        sites.extend(n for n, _ in inner if n not in sites)
    return {**config, "modified_modules": sites}


def _legacy_bias(delta: DeltaBase, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our bias on top of the layer's own: trained value - the backbone's value (zero where 0.3 saved none: its
    lazily created biases did not exist when it froze the model, so they never trained)."""
    for site in delta.sites:
        ours, own = f"{site.name}.bitfit.bias", f"{site.name}.bias"
        if ours in state:
            continue
        bias = getattr(site.module, "bias", None)
        if own in state and isinstance(bias, torch.Tensor):
            state[ours] = state.pop(own).to(bias.dtype) - bias.detach()
        else:
            state[ours] = torch.zeros_like(site.layers["bitfit"].bias.detach())
    return state
