"""The checkpoint formats `from_finetuned` reads, each turned into our config vocabulary and key layout.

- "opendelta": this version's folder (`config.json` with `format_version`, `delta_model.safetensors`,
  `fingerprint.json`).
- "opendelta-0.3": an OpenDelta 0.3 folder (`config.json` without `format_version`, `pytorch_model.bin`
  or safetensors); see `legacy.py`.
- "peft": a PEFT adapter (`adapter_config.json`, `adapter_model.safetensors` or `.bin`); see `peft.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import io as ckpt
from ..errors import CheckpointError
from ..hub import HubOptions, resolve_checkpoint, split_hub_options
from ..io import CONFIG_NAME
from ..providers import provide
from . import legacy, peft

OPENDELTA, LEGACY, PEFT = "opendelta", "opendelta-0.3", "peft"
#: Every file a checkpoint of any format may need (what is fetched from the Hub).
CHECKPOINT_FILES = (
    CONFIG_NAME,
    ckpt.WEIGHTS_NAME,
    ckpt.FINGERPRINT_NAME,
    ckpt.LEGACY_WEIGHTS_NAME,
    ckpt.EMBEDDED_CONFIG_NAME,
    peft.CONFIG_NAME,
    *peft.WEIGHTS_NAMES,
)
CONFIG_FILES = (CONFIG_NAME, ckpt.EMBEDDED_CONFIG_NAME, peft.CONFIG_NAME)


@dataclass
class Checkpoint:
    """A checkpoint found on disk: its format, and its config already in our vocabulary."""

    format: str
    folder: Path
    source: str  # where it came from, for messages ("folder 'x'", "Hub repo 'Org/name' (revision main)")
    config: dict[str, Any]
    _weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def delta_type(self) -> str | None:
        return self.config.get("delta_type")

    def config_for(self, backbone_model: nn.Module) -> dict[str, Any]:
        """The config dict to build on `backbone_model` (PEFT drops targets that match nothing, as PEFT does)."""
        if self.format == PEFT:
            return peft.fit_to_backbone(self.config, backbone_model)
        if self.format == LEGACY:  # 0.3's module names, resolved as 0.3 resolved them
            return legacy.fit_config(self.config, backbone_model, self.load_weights())
        return dict(self.config)

    def load_weights(self) -> dict[str, torch.Tensor]:
        """The tensors, keyed as our delta's `delta_state_dict()`."""
        if self.format == PEFT:
            return peft.load_weights(self.folder, self.config)
        if self._weights is None:
            state = ckpt.load_weights(self.folder)
            self._weights = legacy.clean_state(state, self.delta_type) if self.format == LEGACY else state
        return dict(self._weights)

    def fit_state(self, delta: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` adapted to the delta built from `config_for(...)` (0.3 checkpoints: see legacy.fit_state)."""
        return legacy.fit_state(delta, state) if self.format == LEGACY else state

    def fingerprint(self) -> dict[str, Any] | None:
        return ckpt.read_fingerprint(self.folder) if self.format == OPENDELTA else None


def open_checkpoint(
    path_or_id: str | os.PathLike, options: HubOptions = HubOptions(), config_only: bool = False
) -> Checkpoint:
    """Resolve a folder or Hub id, detect the format and read the config (weights are read on demand)."""
    folder, source = resolve_checkpoint(path_or_id, options, CONFIG_FILES if config_only else CHECKPOINT_FILES)
    if not folder.is_dir():
        raise CheckpointError(f"{str(folder)!r} is a file; pass the checkpoint folder that holds it.")
    ours = folder / CONFIG_NAME
    data = ckpt.read_json_object(ours) if ours.is_file() else None
    if data is not None and "delta_type" in data:
        # our files without `format_version` are an edited checkpoint of ours, not a 0.3 one (whose hash check
        # is only a warning): the fingerprint stays required
        ours_files = (folder / ckpt.FINGERPRINT_NAME).exists() or (folder / ckpt.WEIGHTS_NAME).exists()
        if "format_version" in data or ours_files:
            return Checkpoint(OPENDELTA, folder, source, data)
        return Checkpoint(LEGACY, folder, source, legacy.translate_config(data, source))
    embedded = folder / ckpt.EMBEDDED_CONFIG_NAME  # a model folder saved with a delta on it (model_save.py)
    if embedded.is_file():
        return Checkpoint(OPENDELTA, folder, source, ckpt.read_json_object(embedded))
    if (folder / peft.CONFIG_NAME).is_file():
        adapter_config = ckpt.read_json_object(folder / peft.CONFIG_NAME)
        return Checkpoint(PEFT, folder, source, peft.to_opendelta_config(adapter_config))
    raise CheckpointError(_no_checkpoint_message(folder, source, data))


def read_checkpoint_config(
    path_or_id: str | os.PathLike, kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`DeltaConfig.from_finetuned`: (the checkpoint's config dict, the keywords that override its keys)."""
    options, overrides = split_hub_options(kwargs)
    return open_checkpoint(path_or_id, options, config_only=True).config, overrides


provide("read_checkpoint_config", read_checkpoint_config)


def _no_checkpoint_message(folder: Path, source: str, config: dict[str, Any] | None) -> str:
    present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))[:10]
    if config is not None:
        what = f"its {CONFIG_NAME} has no `delta_type`" + (
            f" (it looks like a transformers model config, model_type={config['model_type']!r})"
            if "model_type" in config
            else ""
        )
    else:
        what = f"it holds {present or 'nothing'}"
    return (
        f"No delta checkpoint in {source}: {what}. Expected an OpenDelta checkpoint ({CONFIG_NAME} with a "
        f"`delta_type` + {ckpt.WEIGHTS_NAME} or {ckpt.LEGACY_WEIGHTS_NAME}) or a PEFT adapter "
        f"({peft.CONFIG_NAME} + {' or '.join(peft.WEIGHTS_NAMES)}). Save one with "
        f"`delta.save_finetuned(...)`, or check the path / repo id."
    )
