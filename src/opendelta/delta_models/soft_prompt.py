"""OpenDelta 0.3's `opendelta.delta_models.soft_prompt` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.soft_prompt import SoftPromptConfig, SoftPromptModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.soft_prompt",
        {
            "SoftPromptLayer": LAYERS,
        },
    )
)

__all__ = ["SoftPromptConfig", "SoftPromptModel", "logger"]
