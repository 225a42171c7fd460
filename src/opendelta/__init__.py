"""OpenDelta: attach parameter-efficient deltas to any PyTorch / transformers model, by module name."""

__version__ = "0.4.0"

from .auto import AutoDeltaConfig, AutoDeltaModel, register_delta, registered_delta_types
from .base import DeltaBase, Site
from .config import DeltaConfig
from .deltas.lora import LoraConfig, LoraModel
from .deltas.prefix import PrefixConfig, PrefixModel
from .deltas.soft_prompt import SoftPromptConfig, SoftPromptModel
from .errors import (CheckpointError, DataError, DeltaConfigError, DeltaStateError, HashMismatchError,
                     ModuleMatchError, OpenDeltaError, UnsupportedModuleError)
from .stats import ModelStats, inspect, inspect_checkpoint
from .visualization import Visualization

__all__ = [
    "AutoDeltaConfig", "AutoDeltaModel", "CheckpointError", "DataError", "DeltaBase", "DeltaConfig",
    "DeltaConfigError",
    "DeltaStateError", "HashMismatchError", "LoraConfig", "LoraModel", "ModelStats", "ModuleMatchError",
    "OpenDeltaError", "PrefixConfig", "PrefixModel", "Site", "SoftPromptConfig", "SoftPromptModel",
    "UnsupportedModuleError", "Visualization",
    "inspect", "inspect_checkpoint",
    "register_delta", "registered_delta_types",
]

from .deltas.adapter import AdapterConfig, AdapterModel  # noqa: E402
from .deltas.bitfit import BitFitConfig, BitFitModel  # noqa: E402
from .deltas.compacter import CompacterConfig, CompacterModel  # noqa: E402
from .deltas.ia3 import IA3Config, IA3Model  # noqa: E402
from .deltas.low_rank_adapter import LowRankAdapterConfig, LowRankAdapterModel  # noqa: E402
from .deltas.parallel_adapter import ParallelAdapterConfig, ParallelAdapterModel  # noqa: E402

__all__ += ["AdapterConfig", "AdapterModel", "BitFitConfig", "BitFitModel", "CompacterConfig", "CompacterModel",
            "IA3Config", "IA3Model", "LowRankAdapterConfig", "LowRankAdapterModel", "ParallelAdapterConfig",
            "ParallelAdapterModel"]
