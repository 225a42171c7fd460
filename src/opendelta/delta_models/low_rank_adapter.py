"""OpenDelta 0.3's `opendelta.delta_models.low_rank_adapter` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.low_rank_adapter import LowRankAdapterConfig, LowRankAdapterModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.low_rank_adapter",
        {
            "LowRankAdapter": LAYERS,
        },
    )
)

__all__ = ["LowRankAdapterConfig", "LowRankAdapterModel", "logger"]
