"""OpenDelta: attach parameter-efficient deltas to any PyTorch / transformers model, by module name."""

__version__ = "0.4.0"

from .auto import AutoDeltaConfig, AutoDeltaModel, register_delta, registered_delta_types
from .base import DeltaBase, Site
from .config import DeltaConfig
from .deltas.adapter import AdapterConfig, AdapterModel
from .deltas.bitfit import BitFitConfig, BitFitModel
from .deltas.compacter import CompacterConfig, CompacterModel
from .deltas.ia3 import IA3Config, IA3Model
from .deltas.lora import LoraConfig, LoraModel
from .deltas.low_rank_adapter import LowRankAdapterConfig, LowRankAdapterModel
from .deltas.parallel_adapter import ParallelAdapterConfig, ParallelAdapterModel
from .deltas.prefix import PrefixConfig, PrefixModel
from .deltas.soft_prompt import SoftPromptConfig, SoftPromptModel
from .errors import (CheckpointError, DataError, DeltaConfigError, DeltaStateError, HashMismatchError,
                     ModuleMatchError, OpenDeltaError, UnsupportedModuleError)
from .stats import ModelStats, inspect, inspect_checkpoint
from .visualization import Visualization
from . import picker  # noqa: F401,E402  (the module picker; installs `interactive_modify=`)

__all__ = [
    "AutoDeltaConfig", "AutoDeltaModel", "DeltaBase", "DeltaConfig", "Site", "Visualization",
    "register_delta", "registered_delta_types", "inspect", "inspect_checkpoint", "ModelStats",
    "AdapterConfig", "AdapterModel", "BitFitConfig", "BitFitModel", "CompacterConfig", "CompacterModel",
    "IA3Config", "IA3Model", "LoraConfig", "LoraModel", "LowRankAdapterConfig", "LowRankAdapterModel",
    "ParallelAdapterConfig", "ParallelAdapterModel", "PrefixConfig", "PrefixModel", "SoftPromptConfig",
    "SoftPromptModel",
    "OpenDeltaError", "CheckpointError", "DataError", "DeltaConfigError", "DeltaStateError", "HashMismatchError",
    "ModuleMatchError", "UnsupportedModuleError",
]
