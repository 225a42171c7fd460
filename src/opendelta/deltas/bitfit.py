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
from ..errors import UnsupportedModuleError
from ..registry import register_delta
from ..site import Site
from ._common import is_norm, map_first_output


@dataclass(repr=False)
class BitFitConfig(DeltaConfig):
    """No keys beyond `modified_modules` & co.: point them at Linear / Conv1D / norm layers."""


def bias_shape(module: nn.Module) -> tuple[int, ...]:
    """The shape of the bias a layer adds to its output."""
    if isinstance(module, Conv1D):
        return (module.weight.shape[1],)
    if isinstance(module, nn.Linear):
        return (module.out_features,)
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

    def check_module(self, name: str, module: nn.Module) -> None:
        if not (isinstance(module, (nn.Linear, Conv1D)) or is_norm(module)):
            raise UnsupportedModuleError(
                f"'bitfit' cannot modify {name!r} ({type(module).__name__}); it adds biases to Linear, Conv1D "
                f"and norm layers (LayerNorm, T5LayerNorm, RMSNorm). Point `modified_modules` at those, e.g. "
                f"the projections inside attention and the layer norms."
            )

    def build_site(self, site: Site) -> None:
        layer = site.add_layer("bitfit", BitFitBias(bias_shape(site.module), **site.factory_kwargs()))

        def add_bias(module: nn.Module, args: tuple, output: Any) -> Any:
            return map_first_output(output, layer)

        site.on_output(add_bias)
