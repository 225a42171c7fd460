"""Low-rank adapter (Mahabadi et al. 2021): an adapter whose down / up weights are rank-k products.

h' = h + up(act(down(h))) with down(x) = x (U_d V_d) + b_d and up(z) = z (U_u V_u) + b_u, where
U: (in, k) and V: (k, out) for any rank k = `low_rank_rank`. The bottleneck is dim // reduction_factor.
V_u starts at zero, so the backbone is exactly unchanged until training.
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
from ._common import (
    W_INITS,
    activation,
    bottleneck_of,
    check_activation,
    check_size,
    init_glorot,
    output_dim,
    route_output,
)


@dataclass(repr=False)
class LowRankAdapterConfig(DeltaConfig):
    """reduction_factor: bottleneck = hidden // reduction_factor; low_rank_rank: rank k of each weight;
    low_rank_w_init: initialisation of the factors; non_linearity: activation name (ACT2FN)."""

    positional_keys = ("reduction_factor", "non_linearity", "low_rank_w_init", "low_rank_rank")

    reduction_factor: int = 32
    non_linearity: str = "gelu_new"
    low_rank_w_init: str = "glorot-uniform"
    low_rank_rank: int = 1

    def _validate(self) -> None:
        super()._validate()
        self._require(self.reduction_factor >= 1, "reduction_factor", "an integer >= 1")
        self._require(self.low_rank_rank >= 1, "low_rank_rank", "an integer >= 1")
        self._require(self.low_rank_w_init in W_INITS, "low_rank_w_init", f"one of {', '.join(W_INITS)}")
        check_activation(self)


class LowRankLinear(nn.Module):
    """y = x (W_left W_right) + b with W_left: (in, rank), W_right: (rank, out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        w_init: str,
        zero_right: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.W_left = nn.Parameter(torch.empty(in_features, rank, **kw))
        self.W_right = nn.Parameter(torch.zeros(rank, out_features, **kw))
        self.b = nn.Parameter(torch.zeros(out_features, **kw))
        init_glorot(self.W_left, w_init)
        if not zero_right:
            init_glorot(self.W_right, w_init)

    def full_weight(self) -> torch.Tensor:
        """The full (in, out) weight W_left @ W_right."""
        return self.W_left @ self.W_right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.W_left) @ self.W_right + self.b


class LowRankAdapterLayer(nn.Module):
    """`forward(h)` returns h + up(act(down(h))) with low-rank down / up samplers."""

    def __init__(
        self, dim: int, bottleneck: int, rank: int, w_init: str, non_linearity: str, device=None, dtype=None
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.down_sampler = LowRankLinear(dim, bottleneck, rank, w_init, **kw)
        self.activation = activation(non_linearity)
        self.up_sampler = LowRankLinear(bottleneck, dim, rank, w_init, zero_right=True, **kw)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up_sampler(self.activation(self.down_sampler(h)))


@register_delta("low_rank_adapter")
class LowRankAdapterModel(DeltaBase):
    """A low-rank adapter after each module addressed by `modified_modules` (a layer or a whole block)."""

    config_class = LowRankAdapterConfig
    default_modules = {"*": ["attn.proj", "ff.w2"]}
    default_learning_rate = 6e-3
    legacy = LegacyMapping(positional=(*LowRankAdapterConfig.positional_keys, *SELECTION_ARGS), layer_keys=())

    def build_site(self, site: Site) -> None:
        cfg = self.config
        dim = output_dim(site.name, site.module)
        bottleneck = bottleneck_of(site.name, dim, cfg.reduction_factor, self.delta_type)
        check_size(self.delta_type, site.name, "low_rank_rank", cfg.low_rank_rank, dim, "its output size")
        layer = LowRankAdapterLayer(
            dim, bottleneck, cfg.low_rank_rank, cfg.low_rank_w_init, cfg.non_linearity, **site.factory_kwargs()
        )
        route_output(site, site.add_layer("low_rank_adapter", layer), dim, self.delta_type)
