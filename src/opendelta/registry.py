"""The delta-type registry: `@register_delta("name")` makes a DeltaBase subclass a `delta_type`."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import DeltaConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .base import DeltaBase

_REGISTRY: dict[str, type] = {}
_T = TypeVar("_T", bound=type)


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


def registered_delta_types() -> list[str]:
    """Names accepted as `delta_type`."""
    return sorted(_REGISTRY)


def registered_delta_classes() -> list[type[DeltaBase]]:
    """The registered delta classes, in name order."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_delta_class(delta_type: Any) -> type[DeltaBase]:
    """The class registered as `delta_type`, or a DeltaConfigError listing the registered ones."""
    if not isinstance(delta_type, str) or delta_type not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(delta_type), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DeltaConfigError(
            f"Unknown delta_type {delta_type!r}.{hint} Use one of the registered types: {', '.join(known)}."
        )
    return _REGISTRY[delta_type]
