"""OpenDelta 0.3's `opendelta.basemodel` import path: `DeltaBase` and its two module helpers."""

from __future__ import annotations

from torch import nn

from ._logging import logger
from .base import DeltaBase


def is_leaf_module(module: nn.Module) -> bool:
    """True when `module` has no submodules."""
    return next(module.children(), None) is None


def non_module_param(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs `module` holds itself, not through a submodule."""
    return list(module.named_parameters(recurse=False))


__all__ = ["DeltaBase", "is_leaf_module", "non_module_param", "logger"]
