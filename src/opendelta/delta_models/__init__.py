"""OpenDelta 0.3's `opendelta.delta_models` package: one module per delta type, re-exporting this version's
classes (`from opendelta.delta_models.lora import LoraConfig, LoraModel`)."""

from ..deltas.bitfit import BitFitModel
from ..deltas.lora import LoraConfig, LoraModel

__all__ = ["BitFitModel", "LoraConfig", "LoraModel"]
