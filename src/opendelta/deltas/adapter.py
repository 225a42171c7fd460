"""Adapter (Houlsby et al. 2019): a bottleneck MLP added after a module's output, with a residual.

h' = h + up(act(down(h))), where h is the module's output (the first element when it returns a tuple).
`up` starts at zero, so the backbone is exactly unchanged until training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..base import DeltaBase
from ..config import DeltaConfig
from ..interop import SELECTION_ARGS, LegacyMapping
from ..registry import register_delta
from ..site import Site
from ._common import activation, check_activation, check_mixed_batch, check_size, output_dim, route_output, stack_slots


@dataclass(repr=False)
class AdapterConfig(DeltaConfig):
    """bottleneck_dim: width of the bottleneck; non_linearity: activation name (transformers' ACT2FN)."""

    positional_keys = ("bottleneck_dim", "non_linearity")

    bottleneck_dim: int = 24
    non_linearity: str = "gelu_new"

    def _validate(self) -> None:
        super()._validate()
        self._require(self.bottleneck_dim >= 1, "bottleneck_dim", "an integer >= 1")
        check_activation(self)


class AdapterLayer(nn.Module):
    """`forward(h)` returns h + up(act(down(h)))."""

    def __init__(self, dim: int, bottleneck_dim: int, non_linearity: str, device=None, dtype=None) -> None:
        super().__init__()
        self.down_proj = nn.Linear(dim, bottleneck_dim, device=device, dtype=dtype)
        self.non_linear = activation(non_linearity)
        self.mix_key = non_linearity  # adapters with one activation share a mixed-batch computation
        self.up_proj = nn.Linear(bottleneck_dim, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up_proj(self.non_linear(self.down_proj(h)))

    @staticmethod
    def mixed(layers: list[AdapterLayer], index: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Example i through `layers[index[i]]` (none for index len(layers)): gathered, batched products."""
        check_mixed_batch(h, index)
        dim = h.shape[-1]
        width = max(layer.down_proj.out_features for layer in layers)
        w_down = stack_slots([la.down_proj.weight for la in layers], (width, dim))[index]
        b_down = stack_slots([la.down_proj.bias for la in layers], (width,))[index]
        w_up = stack_slots([la.up_proj.weight for la in layers], (dim, width))[index]
        b_up = stack_slots([la.up_proj.bias for la in layers], (dim,))[index]
        flat = h.reshape(h.shape[0], -1, dim)
        z = layers[0].non_linear(torch.baddbmm(b_down.unsqueeze(1), flat, w_down.transpose(1, 2)))
        return (flat + torch.baddbmm(b_up.unsqueeze(1), z, w_up.transpose(1, 2))).view(h.shape)


@register_delta("adapter")
class AdapterModel(DeltaBase):
    """A sequential adapter after each module addressed by `modified_modules` (a layer or a whole block)."""

    config_class = AdapterConfig
    default_modules = {"*": ["attn.proj", "ff.w2"]}
    default_learning_rate = 8e-3
    app_settings = {"bottleneck_dim": 8}
    # 0.3 kept the two projections in a `modulelist` child: `<module>.adapter.modulelist.down_proj.weight`
    legacy = LegacyMapping(
        tensor_renames=((r"\.adapter\.modulelist\.", ".adapter."),),
        layer_keys=((r"^", "modulelist."),),
        positional=("bottleneck_dim", "non_linearity", *SELECTION_ARGS),
    )

    def build_site(self, site: Site) -> None:
        dim = output_dim(site.name, site.module)
        check_size(
            self.delta_type, site.name, "bottleneck_dim", self.config.bottleneck_dim, dim, "its output size", warn=True
        )
        layer = site.add_layer(
            "adapter", AdapterLayer(dim, self.config.bottleneck_dim, self.config.non_linearity, **site.factory_kwargs())
        )
        route_output(site, layer, dim, self.delta_type, mixed=AdapterLayer.mixed)
