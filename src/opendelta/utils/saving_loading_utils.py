"""OpenDelta 0.3's `opendelta.utils.saving_loading_utils` import path: `SaveLoadMixin` is the class that gives
every delta `save_finetuned` / `from_finetuned` / `push_to_hub` here."""

from __future__ import annotations

from .._logging import logger  # noqa: F401
from ..checkpoint_api import CheckpointMethods
from ..replaced import DELTA_CENTER, Replaced, replaced_names


class SaveLoadMixin(CheckpointMethods):
    """What gives a delta `save_finetuned` / `from_finetuned` here; 0.3's DeltaCenter helpers raise."""


_CENTER_HELPERS = (
    "add_configs_when_saving", "compute_saving", "create_yml", "load_checkpoint", "save_checkpoint",
    "create_delta_center_args", "create_default_usage", "create_default_name",
)  # fmt: skip
for _name in _CENTER_HELPERS:
    setattr(SaveLoadMixin, _name, Replaced(f"opendelta.utils.saving_loading_utils.SaveLoadMixin.{_name}", DELTA_CENTER))

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
