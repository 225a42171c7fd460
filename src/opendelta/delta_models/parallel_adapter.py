"""OpenDelta 0.3's `opendelta.delta_models.parallel_adapter` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.parallel_adapter import ParallelAdapterConfig, ParallelAdapterModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.parallel_adapter",
        {
            "ParallelAdapterLayer": LAYERS,
        },
    )
)

__all__ = ["ParallelAdapterConfig", "ParallelAdapterModel", "logger"]
