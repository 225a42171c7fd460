"""OpenDelta 0.3's `opendelta.delta_models.lora` import path."""

from __future__ import annotations

from .._logging import logger
from ..deltas.lora import LoraConfig, LoraModel
from ..replaced import LAYERS, replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.lora",
        {
            "LowRankLinear": LAYERS,
            "LoraArguments": "pass LoRA's settings to `LoraConfig(...)` / `LoraModel(...)`",
        },
    )
)

__all__ = ["LoraConfig", "LoraModel", "logger"]
