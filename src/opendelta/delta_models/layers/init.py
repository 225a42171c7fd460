"""OpenDelta 0.3's `opendelta.delta_models.layers.init`: Glorot initialisers, in place."""

from __future__ import annotations

import torch
from torch import nn


def glorot_normal(tensor: torch.Tensor) -> torch.Tensor:
    return nn.init.xavier_normal_(tensor)


def glorot_uniform(tensor: torch.Tensor) -> torch.Tensor:
    return nn.init.xavier_uniform_(tensor)
