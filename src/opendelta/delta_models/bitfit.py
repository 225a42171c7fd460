"""OpenDelta 0.3's `opendelta.delta_models.bitfit` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.bitfit import BitFitConfig, BitFitModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.bitfit",
        {
            "BiasLayer": LAYERS,
        },
    )
)

__all__ = ["BitFitConfig", "BitFitModel", "logger"]
