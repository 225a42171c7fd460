"""OpenDelta 0.3's `opendelta.delta_models.compacter` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.compacter import CompacterConfig, CompacterModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.compacter",
        {
            "HyperComplexAdapterLayer": LAYERS,
        },
    )
)

__all__ = ["CompacterConfig", "CompacterModel", "logger"]
