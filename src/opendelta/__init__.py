"""OpenDelta: attach parameter-efficient deltas to any PyTorch / transformers model, by module name."""

from . import (
    deltas,  # noqa: F401  (registers the built-in delta types)
    model_save,  # noqa: F401  (implements save_pretrained of a backbone that carries a delta)
    persistence,  # noqa: F401  (implements DeltaBase.save_finetuned / from_finetuned)
    picker,  # noqa: F401  (the module picker: implements `interactive_modify=`)
)
from .auto import AutoDeltaConfig, AutoDeltaModel
from .base import DeltaBase
from .config import DeltaConfig
from .delta_configs import BaseDeltaConfig
from .deltas.adapter import AdapterConfig, AdapterModel
from .deltas.bitfit import BitFitConfig, BitFitModel
from .deltas.compacter import CompacterConfig, CompacterModel
from .deltas.ia3 import IA3Config, IA3Model
from .deltas.lora import LoraConfig, LoraModel
from .deltas.low_rank_adapter import LowRankAdapterConfig, LowRankAdapterModel
from .deltas.parallel_adapter import ParallelAdapterConfig, ParallelAdapterModel
from .deltas.prefix import PrefixConfig, PrefixModel
from .deltas.soft_prompt import SoftPromptConfig, SoftPromptModel
from .errors import (
    CheckpointError,
    DeltaConfigError,
    DeltaStateError,
    HashMismatchError,
    LegacyAPIError,
    ModuleMatchError,
    OpenDeltaError,
    UnsupportedModuleError,
)
from .inspection import CheckpointInfo, inspect, inspect_checkpoint
from .legacy_settings import GlobalSetting, global_setting, set_axis_order
from .registry import get_delta_class, register_delta, registered_delta_types
from .site import Site
from .stats import ModelStats
from .switching import activate, active_deltas, deactivate, deltas_of, get_delta, mixed_batch, using
from .utils import logging
from .utils.saving_loading_utils import SaveLoadMixin
from .utils.structure_mapping import CommonStructureMap
from .version import __version__
from .visualization import Visualization

__all__ = [
    "__version__",
    "AutoDeltaConfig",
    "AutoDeltaModel",
    "DeltaBase",
    "DeltaConfig",
    "Site",
    "Visualization",
    "register_delta",
    "registered_delta_types",
    "get_delta_class",
    "inspect",
    "inspect_checkpoint",
    "CheckpointInfo",
    "ModelStats",
    "deltas_of",
    "get_delta",
    "activate",
    "deactivate",
    "active_deltas",
    "using",
    "mixed_batch",
    "AdapterConfig",
    "AdapterModel",
    "BitFitConfig",
    "BitFitModel",
    "CompacterConfig",
    "CompacterModel",
    "IA3Config",
    "IA3Model",
    "LoraConfig",
    "LoraModel",
    "LowRankAdapterConfig",
    "LowRankAdapterModel",
    "ParallelAdapterConfig",
    "ParallelAdapterModel",
    "PrefixConfig",
    "PrefixModel",
    "SoftPromptConfig",
    "SoftPromptModel",
    "OpenDeltaError",
    "LegacyAPIError",
    "CheckpointError",
    "DeltaConfigError",
    "DeltaStateError",
    "HashMismatchError",
    "ModuleMatchError",
    "UnsupportedModuleError",
    # OpenDelta 0.3's top-level names
    "BaseDeltaConfig",
    "CommonStructureMap",
    "GlobalSetting",
    "SaveLoadMixin",
    "global_setting",
    "logging",
    "set_axis_order",
]
