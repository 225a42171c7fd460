"""AutoDeltaConfig / AutoDeltaModel: pick the delta class from `delta_type`, and the delta-type registry."""

from __future__ import annotations

import difflib
import os
from typing import Any, Callable, TypeVar

from torch import nn

from .base import DeltaBase
from .config import DeltaConfig
from .errors import DeltaConfigError

_REGISTRY: dict[str, type[DeltaBase]] = {}
_T = TypeVar("_T", bound=type[DeltaBase])


def register_delta(name: str) -> Callable[[_T], _T]:
    """Class decorator: make a DeltaBase subclass available as `delta_type=name`."""

    def decorate(cls: _T) -> _T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"delta_type {name!r} is already registered to {_REGISTRY[name].__name__}")
        cls.delta_type = name
        cls.config_class.delta_type = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtin() -> None:
    from . import deltas  # noqa: F401  (registers the built-in types)


def registered_delta_types() -> list[str]:
    """Names accepted as `delta_type`."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_delta_class(delta_type: Any) -> type[DeltaBase]:
    _load_builtin()
    if not isinstance(delta_type, str) or delta_type not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(delta_type), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DeltaConfigError(f"Unknown delta_type {delta_type!r}.{hint} Registered types: {', '.join(known)}.")
    return _REGISTRY[delta_type]


class AutoDeltaConfig:
    """Builds the config class that matches a `delta_type`. Not instantiable."""

    def __init__(self) -> None:
        raise EnvironmentError("Use AutoDeltaConfig.from_dict(...) or AutoDeltaConfig.from_finetuned(...).")

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> DeltaConfig:
        """A validated config of the class named by `config_dict["delta_type"]`."""
        if not isinstance(config_dict, dict):
            raise DeltaConfigError(f"AutoDeltaConfig.from_dict expects a dict, got {type(config_dict).__name__}.")
        merged = {**config_dict, **kwargs}
        if "delta_type" not in merged:
            raise DeltaConfigError(f"The config has no `delta_type`; add one of: {', '.join(registered_delta_types())}.")
        return get_delta_class(merged["delta_type"]).config_class.from_dict(merged)

    @classmethod
    def from_finetuned(cls, finetuned_delta_path: str | os.PathLike, **kwargs: Any) -> DeltaConfig:
        """The config of a checkpoint: a folder (ours, OpenDelta 0.3 or PEFT) or a Hub repo id `Org/name`.

        kwargs: the Hub options `revision`, `cache_dir`, `force_download`, `local_files_only`, `token`;
        any other keyword overrides a config key. Only the config file is fetched from the Hub.
        """
        from .formats import open_checkpoint
        from .hub import split_hub_options

        options, overrides = split_hub_options(kwargs)
        return cls.from_dict(open_checkpoint(finetuned_delta_path, options, config_only=True).config, **overrides)


class AutoDeltaModel:
    """Attaches the delta class that matches a config's `delta_type`. Not instantiable."""

    def __init__(self) -> None:
        raise EnvironmentError("Use AutoDeltaModel.from_config(...) or AutoDeltaModel.from_finetuned(...).")

    @classmethod
    def from_config(cls, config: DeltaConfig | dict, backbone_model: nn.Module, **kwargs: Any) -> DeltaBase:
        """Attach the delta described by `config` to `backbone_model`, in place."""
        if isinstance(config, dict):
            config = AutoDeltaConfig.from_dict(config)
        if not isinstance(config, DeltaConfig):
            raise DeltaConfigError(f"from_config expects a DeltaConfig or dict, got {type(config).__name__}.")
        return get_delta_class(config.delta_type).from_config(config, backbone_model, **kwargs)

    @classmethod
    def from_finetuned(cls, finetuned_delta_path: str | os.PathLike, backbone_model: nn.Module,
                       check_hash: bool = True, **kwargs: Any) -> DeltaBase:
        """Attach a saved delta to `backbone_model`, load its weights, and verify the model fingerprint.

        Accepts what `DeltaBase.from_finetuned` accepts (folders of any supported format, Hub repo ids,
        Hub options, config overrides); the delta class is picked from the checkpoint's delta type.
        """
        from .formats import open_checkpoint
        from .hub import split_hub_options

        options, overrides = split_hub_options(kwargs)
        checkpoint = open_checkpoint(finetuned_delta_path, options)
        return get_delta_class(checkpoint.delta_type)._from_checkpoint(checkpoint, backbone_model, check_hash,
                                                                      overrides)
