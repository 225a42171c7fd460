"""OpenDelta 0.3's `opendelta.delta_models.prefix` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.prefix import PrefixConfig, PrefixModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.prefix",
        {
            "PrefixLayerT5": LAYERS,
            "PrefixLayerBart": LAYERS,
            "PrefixLayerGPT2": LAYERS,
            "PrefixLayerDistilBert": LAYERS,
            "PrefixLayerBert": LAYERS,
            "PrefixLayerRoberta": LAYERS,
            "ReparameterizeFunction": LAYERS,
        },
    )
)

__all__ = ["PrefixConfig", "PrefixModel", "logger"]
