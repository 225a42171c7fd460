"""Late binding of services that a lower layer exposes and a higher layer implements.

`DeltaBase.save_finetuned` and `DeltaConfig.from_finetuned` are part of the public API of low layers, but
saving and reading checkpoints live higher up (`persistence`, `formats`). The higher module registers its
implementation with `provide(name, fn)` when it is imported and the method calls `provider(name)`, so no
module imports upward. `import opendelta` (which any `import opendelta.x` runs first) registers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_PROVIDERS: dict[str, Callable[..., Any]] = {}


def provide(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register `fn` as the implementation of the service `name` (the last registration wins)."""
    _PROVIDERS[name] = fn
    return fn


def provider(name: str) -> Callable[..., Any]:
    """The implementation registered for `name`."""
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise RuntimeError(
            f"No implementation of {name!r} is registered; import opendelta (the package) before using it."
        ) from None
