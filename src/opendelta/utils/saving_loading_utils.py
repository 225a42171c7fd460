"""OpenDelta 0.3's `opendelta.utils.saving_loading_utils` import path: `SaveLoadMixin` is the class that gives
every delta `save_finetuned` / `from_finetuned` / `push_to_hub` here."""

from __future__ import annotations

from .._logging import logger  # noqa: F401
from ..checkpoint_api import CheckpointMethods as SaveLoadMixin
from ..replaced import replaced_names

alternative_names = {"pytorch_model.bin": ["delta_model.safetensors", "adapter_model.safetensors"]}

globals().update(
    replaced_names(
        "opendelta.utils.saving_loading_utils",
        {
            "DeltaCenterArguments": "DeltaCenter no longer exists: pass model-card metadata to "
            "`save_finetuned(..., card_data={...})` (0.3's list_tags / dict_tags / usage / test_result are accepted)"
        },
    )
)

__all__ = ["SaveLoadMixin"]
