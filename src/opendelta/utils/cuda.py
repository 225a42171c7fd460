"""OpenDelta 0.3's `opendelta.utils.cuda`: the device / dtype of a module's parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _single(module: nn.Module | nn.Parameter, attr: str) -> Any:
    if not isinstance(module, (nn.Module, nn.Parameter)):
        raise TypeError(f"expected a torch.nn.Module or Parameter, got {type(module).__name__}")
    if hasattr(module, attr):
        return getattr(module, attr)
    found = {getattr(p, attr) for p in module.parameters()}
    if len(found) > 1:
        raise ValueError(f"the module's parameters have several {attr}s ({sorted(map(str, found))}); ask a submodule")
    return found.pop() if found else None


def get_device(module: nn.Module | nn.Parameter) -> torch.device | None:
    return _single(module, "device")


def get_dtype(module: nn.Module | nn.Parameter) -> torch.dtype | None:
    return _single(module, "dtype")


def move_dict_to_cuda(dict_of_tensor: dict[str, Any], device: Any) -> dict[str, Any]:
    """Moves the dict's tensors to `device`, in place; returns the dict."""
    for key, value in dict_of_tensor.items():
        if isinstance(value, torch.Tensor):
            dict_of_tensor[key] = value.to(device)
    return dict_of_tensor
