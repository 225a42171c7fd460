"""LoRA: a trainable low-rank update B·A parallel to a Linear (or GPT-2 Conv1D) layer.

y = W x + b + (B A dropout(x)) * lora_alpha / lora_r (or / sqrt(lora_r) with lora_scaling="rslora"), with A
kaiming-uniform and B zero (so the model is unchanged at initialisation). `merge()` adds the update to W for
inference without any overhead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..auto import register_delta
from ..base import DeltaBase, Site
from ..config import DeltaConfig


@dataclass(repr=False)
class LoraConfig(DeltaConfig):
    """lora_r: rank of the update; lora_alpha: scale numerator; lora_dropout: dropout on the LoRA input;
    lora_scaling: "standard" scales the update by lora_alpha / lora_r, "rslora" by lora_alpha / sqrt(lora_r)
    (rank-stabilised LoRA, PEFT's `use_rslora=True`)."""

    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_scaling: Literal["standard", "rslora"] = "standard"

    def _validate(self) -> None:
        super()._validate()
        self._require(self.lora_r >= 1, "lora_r", "an integer >= 1")
        self._require(self.lora_alpha > 0, "lora_alpha", "a number > 0")
        self._require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "a probability in [0, 1)")


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear or a Conv1D (which stores its weight transposed)."""
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


class LoraLayer(nn.Module):
    """The low-rank update itself: `forward(x)` returns (B A dropout(x)) * scaling."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float,
                 device=None, dtype=None, rslora: bool = False) -> None:
        super().__init__()
        self.r, self.alpha = r, alpha
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        # scaling the rank-r intermediate is far cheaper than scaling the full-width output
        return F.linear(F.linear(x, self.lora_A) * self.scaling, self.lora_B)

    def add_to(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`output + self(x)` with the final matmul and the addition fused (one pass over the output)."""
        if self.dropout is not None:
            x = self.dropout(x)
        h = F.linear(x, self.lora_A) * self.scaling
        flat = torch.addmm(output.reshape(-1, output.shape[-1]), h.reshape(-1, self.r), self.lora_B.t())
        return flat.view(output.shape)

    def delta_weight(self) -> torch.Tensor:
        """The update in Linear layout (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merge_into(self, module: nn.Module) -> None:
        dw = self.delta_weight().to(module.weight.dtype)
        module.weight.add_(dw.T if isinstance(module, Conv1D) else dw)

    def unmerge_from(self, module: nn.Module) -> None:
        dw = self.delta_weight().to(module.weight.dtype)
        module.weight.sub_(dw.T if isinstance(module, Conv1D) else dw)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


@register_delta("lora")
class LoraModel(DeltaBase):
    """LoRA on Linear / Conv1D layers addressed by `modified_modules`."""

    config_class = LoraConfig
    supported_modules = (nn.Linear, Conv1D)
    mergeable = True

    def build_site(self, site: Site) -> None:
        cfg = self.config
        in_f, out_f = linear_shape(site.module)
        layer = site.add_layer("lora", LoraLayer(in_f, out_f, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                                                 rslora=cfg.lora_scaling == "rslora", **site.factory_kwargs()))

        def add_update(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return layer.add_to(output, args[0])

        site.on_output(add_update)
