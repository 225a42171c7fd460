"""Whole tensors from sharded training: what `save_finetuned` and the fingerprint read under FSDP / DTensor.

- FSDP2 (`torch.distributed.fsdp.fully_shard`) and tensor parallelism keep parameters as `DTensor`s: `full_tensor`
  gathers one (a collective: every rank must call it, in the same order; the save and the fingerprint go through
  parameters in sorted name order on every rank, so they do).
- FSDP1 (`FullyShardedDataParallel`) keeps flattened local shards: save inside
  `FSDP.summon_full_params(wrapped_model, writeback=False)` on every rank, where the parameters are whole again.
- `is_writer()`: rank 0 of an initialised process group (or a single process) writes files.
torch.distributed is imported lazily: nothing here costs anything in a single process.
"""

from __future__ import annotations

from typing import Any

import torch


def _dtensor_class() -> Any:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return DTensor


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """`t` itself, or the whole tensor of a DTensor shard (collective)."""
    dtensor = _dtensor_class()
    if dtensor is not None and isinstance(t, dtensor):
        return t.full_tensor()
    return t


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_writer() -> bool:
    """True in a single process and on rank 0 of a process group."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()
