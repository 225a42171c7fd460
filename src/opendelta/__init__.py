"""OpenDelta: attach parameter-efficient deltas to any PyTorch / transformers model, by module name."""

__version__ = "0.4.0"

from .auto import AutoDeltaConfig, AutoDeltaModel, register_delta, registered_delta_types
from .base import DeltaBase, Site
from .config import DeltaConfig
from .deltas.lora import LoraConfig, LoraModel
from .deltas.prefix import PrefixConfig, PrefixModel
from .errors import (CheckpointError, DeltaConfigError, DeltaStateError, HashMismatchError, ModuleMatchError,
                     OpenDeltaError, UnsupportedModuleError)
from .stats import ModelStats, inspect, inspect_checkpoint
from .visualization import Visualization

__all__ = [
    "AutoDeltaConfig", "AutoDeltaModel", "CheckpointError", "DeltaBase", "DeltaConfig", "DeltaConfigError",
    "DeltaStateError", "HashMismatchError", "LoraConfig", "LoraModel", "ModelStats", "ModuleMatchError",
    "OpenDeltaError", "PrefixConfig", "PrefixModel", "Site", "UnsupportedModuleError", "Visualization",
    "inspect", "inspect_checkpoint",
    "register_delta", "registered_delta_types",
]
