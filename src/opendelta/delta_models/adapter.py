"""OpenDelta 0.3's `opendelta.delta_models.adapter` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.adapter import AdapterConfig, AdapterModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.adapter",
        {
            "AdapterLayer": LAYERS,
            "InterFaceMixin": LAYERS,
        },
    )
)

__all__ = ["AdapterConfig", "AdapterModel", "logger"]
