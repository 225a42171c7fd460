"""AutoDeltaConfig / AutoDeltaModel: pick the delta class from a config's or a checkpoint's `delta_type`."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .base import DeltaBase
from .compat import check_load_keywords
from .config import DeltaConfig
from .errors import DeltaConfigError
from .formats import LEGACY, legacy, open_checkpoint
from .hub import split_hub_options
from .persistence import load_delta
from .registry import get_delta_class, registered_delta_types

#: set on a config built from a dict OpenDelta 0.3 wrote: its module names keep 0.3's meanings at attach time
LEGACY_MEANINGS = "_opendelta_0_3_meanings"


def _written_by_0_3(data: dict[str, Any]) -> bool:
    version = str(data.get("opendelta_version") or "")
    return version.startswith("0.") and "format_version" not in data


class AutoDeltaConfig:
    """Builds the config class that matches a `delta_type`. Not instantiable."""

    def __init__(self) -> None:
        raise OSError("Use AutoDeltaConfig.from_dict(...) or AutoDeltaConfig.from_finetuned(...).")

    @classmethod
    def from_dict(
        cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, strict: bool = False, **kwargs: Any
    ) -> Any:
        """A validated config of the class named by `config_dict["delta_type"]`. Keys the type does not take: a
        near miss of a valid key is an error, the others are dropped with one warning (`strict=True`: all are
        errors); with `return_unused_kwargs=True`, returns (config, {keys the config does not take: value})."""
        if not isinstance(config_dict, dict):
            raise DeltaConfigError(
                f"AutoDeltaConfig.from_dict expects a dict, got {type(config_dict).__name__}; pass a dict such as "
                f"{{'delta_type': 'lora'}}."
            )
        merged = {**config_dict, **kwargs}
        if "delta_type" not in merged:
            raise DeltaConfigError(
                f"The config has no `delta_type`; add one (write `delta_type`) of: "
                f"{', '.join(registered_delta_types())}."
            )
        config_class = get_delta_class(merged["delta_type"]).config_class
        written_by_0_3 = _written_by_0_3(merged)
        if written_by_0_3:  # its module names keep 0.3's meanings when the delta is attached (from_config)
            merged = legacy.translate_config(merged, "this config (written by OpenDelta 0.3)")
        result = config_class.from_dict(merged, return_unused_kwargs=return_unused_kwargs, strict=strict)
        if written_by_0_3:
            (result[0] if return_unused_kwargs else result).__dict__[LEGACY_MEANINGS] = True
        return result

    @classmethod
    def from_finetuned(cls, finetuned_delta_path: str | os.PathLike, **kwargs: Any) -> DeltaConfig:
        """The config of a checkpoint: a folder (ours, OpenDelta 0.3 or PEFT) or a Hub repo id `Org/name`.

        kwargs: the Hub options `revision`, `cache_dir`, `force_download`, `local_files_only`, `token`;
        any other keyword overrides a config key. Only the config file is fetched from the Hub.
        """
        options, overrides = split_hub_options(kwargs)
        checkpoint = open_checkpoint(finetuned_delta_path, options, config_only=True)
        config = cls.from_dict(checkpoint.config, **overrides)
        if checkpoint.format == LEGACY:  # its module names keep 0.3's meanings in from_config, as in from_finetuned
            config.__dict__[LEGACY_MEANINGS] = True
        return config


class AutoDeltaModel:
    """Attaches the delta class that matches a config's `delta_type`. Not instantiable."""

    def __init__(self) -> None:
        raise OSError("Use AutoDeltaModel.from_config(...) or AutoDeltaModel.from_finetuned(...).")

    @classmethod
    def from_config(cls, config: DeltaConfig | dict, backbone_model: nn.Module, **kwargs: Any) -> DeltaBase:
        """Attach the delta described by `config` to `backbone_model`, in place."""
        if isinstance(config, dict):
            config = AutoDeltaConfig.from_dict(config)
        if not isinstance(config, DeltaConfig):
            raise DeltaConfigError(f"from_config expects a DeltaConfig or dict, got {type(config).__name__}.")
        if config.__dict__.get(LEGACY_MEANINGS):  # 0.3's common names / matching rules, as from_finetuned applies
            fitted = legacy.fit_config(config.to_dict(), backbone_model, {})
            config = type(config).from_dict(fitted, strict=True)
        return get_delta_class(config.delta_type).from_config(config, backbone_model, **kwargs)

    @classmethod
    def from_finetuned(
        cls, finetuned_delta_path: str | os.PathLike, backbone_model: nn.Module, check_hash: bool = True, **kwargs: Any
    ) -> DeltaBase:
        """Attach a saved delta to `backbone_model`, load its weights, and verify the model fingerprint.

        Accepts what `DeltaBase.from_finetuned` accepts (folders of any supported format, Hub repo ids,
        Hub options, config overrides); the delta class is picked from the checkpoint's delta type.
        """
        return load_delta(DeltaBase, finetuned_delta_path, backbone_model, check_hash, check_load_keywords(kwargs))
