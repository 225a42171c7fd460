"""OpenDelta 0.3's `opendelta.utils.inspect` helpers, on top of `opendelta.stats`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._logging import logger
from ..stats import count_parameters, model_stats


def inspect_module_statistics(module: nn.Module, verbose: bool = True) -> dict[str, Any]:
    """0.3's statistics dict of `module`: trainable_parameters, total_parameters, trainable_ratio,
    delta_parameters, delta_ratio, cudamem, maxcudamem (GB)."""
    stats = model_stats(module)
    cuda = torch.cuda.is_available()
    out = {
        "trainable_parameters": stats.trainable,
        "total_parameters": stats.total,
        "trainable_ratio": stats.trainable_ratio,
        "delta_parameters": stats.delta,
        "delta_ratio": stats.delta_ratio,
        "cudamem": torch.cuda.memory_allocated() / 1024**3 if cuda else 0.0,
        "maxcudamem": torch.cuda.max_memory_allocated() / 1024**3 if cuda else 0.0,
    }
    if verbose:
        logger.info("%s", out)
    return out


def inspect_optimizer_statistics(optimizer: torch.optim.Optimizer, verbose: bool = True) -> dict[str, Any]:
    """How many parameter tensors / values the optimizer updates, per group and in total."""
    groups = [
        {"tensors": len(g["params"]), "parameters": sum(p.numel() for p in g["params"]), "lr": g.get("lr")}
        for g in optimizer.param_groups
    ]
    out = {
        "groups": groups,
        "tensors": sum(g["tensors"] for g in groups),
        "parameters": sum(g["parameters"] for g in groups),
    }
    if verbose:
        logger.info("%s", out)
    return out


def num_trainable_parameters(module: nn.Module) -> int:
    return count_parameters(module, trainable_only=True)


def num_total_parameters(module: nn.Module) -> int:
    return count_parameters(module)


def num_delta_parameters(module: nn.Module) -> int:
    """Parameters of the delta layers attached to `module`."""
    return model_stats(module).delta
