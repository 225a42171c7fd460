"""`save_pretrained` of a backbone that carries a delta under a `BackboneGuard` (see `guard.py`).

- "model" mode (what `freeze_module(set_state_dict=True)` sets): the backbone class's own `save_pretrained` with
  the complete state (every backbone weight and the delta tensors, never the filtered state_dict), then the delta's
  files next to it: `delta_config.json`, `delta_model.safetensors`, `fingerprint.json`. `from_pretrained` loads the
  backbone as it is (the delta tensors are reported as unused keys); `AutoDeltaModel.from_finetuned(folder,
  backbone_model=fresh)` loads the delta, hash-checked, and gives the trained outputs.
- "delta" mode (what `OpenDeltaCallback` sets): a delta checkpoint folder (`save_finetuned`), plus the trainable
  tensors as `model.safetensors` so that a transformers Trainer can resume from it / reload it as the best model.
  A parameter that trains but is not part of the delta is an error (it would be lost).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import io
from ._logging import logger
from .distributed import full_tensor, is_writer
from .errors import DeltaStateError
from .guard import BackboneGuard
from .persistence import _opendelta_writer
from .providers import provide

#: what a transformers Trainer reads back from a checkpoint folder (`resume_from_checkpoint`, best model)
TRAINER_WEIGHTS_NAME = "model.safetensors"


def trainable_not_saved(guard: BackboneGuard) -> list[str]:
    """Parameters that train but that the delta's checkpoint would not hold."""
    saved = set(guard.delta.delta_state_dict())
    return [n for n, p in guard.delta.backbone_model.named_parameters() if p.requires_grad and n not in saved]


def save_pretrained_with_delta(
    guard: BackboneGuard,
    save_directory: str | os.PathLike,
    *,
    is_main_process: bool = True,
    state_dict: dict | None = None,
    **kwargs: Any,
) -> Any:
    delta = guard.delta
    if guard.save_mode == "delta":
        lost = trainable_not_saved(guard)
        if lost:
            raise DeltaStateError(
                f"{len(lost)} parameter(s) train but are not part of the delta (e.g. {lost[:3]}); a delta checkpoint "
                f"would lose them. Freeze them, or name their modules in "
                f"delta.freeze_module(exclude=['deltas', ...])."
            )
        path = delta.save_finetuned(save_directory)  # every rank: gathers sharded tensors, rank 0 writes
        state = {k: full_tensor(v) for k, v in delta.delta_state_dict().items()}
        if state_dict is not None:  # e.g. tensors an engine gathered from shards
            state.update({k: v for k, v in state_dict.items() if k in state})
        if is_main_process and is_writer():
            io.save_weights(state, path / TRAINER_WEIGHTS_NAME)
        logger.info("saved a delta checkpoint (and the trainable tensors for the Trainer) to %s", path)
        return None
    full = guard.full_state_dict()
    if state_dict is not None:
        full.update(state_dict)
    result = guard.original_save_pretrained(save_directory, is_main_process=is_main_process, state_dict=full, **kwargs)
    if is_main_process:
        _, write = _opendelta_writer(delta, config_name=io.EMBEDDED_CONFIG_NAME)
        folder = Path(save_directory)
        write(folder)
        logger.info(
            "saved the complete model with its %s delta to %s (delta_config.json: AutoDeltaModel.from_finetuned "
            "loads the delta onto a fresh backbone)",
            delta.delta_type,
            folder,
        )
    return result


provide("save_pretrained_with_delta", save_pretrained_with_delta)
