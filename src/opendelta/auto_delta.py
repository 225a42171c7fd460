"""OpenDelta 0.3's `opendelta.auto_delta` import path: `AutoDeltaConfig`, `AutoDeltaModel` and the
delta-type mappings (live views of the registry)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._logging import logger
from .auto import AutoDeltaConfig, AutoDeltaModel
from .registry import get_delta_class, registered_delta_types
from .replaced import replaced_names


class _DeltaMapping(Mapping[str, type]):
    """delta_type -> its config class (`configs=True`) or model class, as the registry holds them now."""

    def __init__(self, configs: bool) -> None:
        self._configs = configs

    def __getitem__(self, delta_type: str) -> type:
        cls = get_delta_class(delta_type)
        return cls.config_class if self._configs else cls

    def __iter__(self) -> Iterator[str]:
        return iter(registered_delta_types())

    def __len__(self) -> int:
        return len(registered_delta_types())


DELTA_CONFIG_MAPPING = LAZY_CONFIG_MAPPING = _DeltaMapping(configs=True)
DELTA_MODEL_MAPPING = LAZY_DELTA_MAPPING = _DeltaMapping(configs=False)


def get_values(model_mapping: Mapping[str, Any]) -> list[Any]:
    """The classes of a mapping, flattened (0.3's helper)."""
    out: list[Any] = []
    for value in model_mapping.values():
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


globals().update(
    replaced_names(
        "opendelta.auto_delta",
        {"getattribute_from_module": "look a delta class up with `opendelta.get_delta_class(delta_type)`"},
    )
)

__all__ = ["AutoDeltaConfig", "AutoDeltaModel", "DELTA_CONFIG_MAPPING", "DELTA_MODEL_MAPPING", "logger"]
