"""BackboneGuard: what a delta puts on its backbone besides hooks, so that saving the backbone never loses it.

`freeze_module(..., set_state_dict=True)` installs one guard. While it is installed:

- `backbone.state_dict()` holds the trainable tensors only (OpenDelta 0.3's small `torch.save(model.state_dict())`
  files keep working);
- `backbone.save_pretrained(dir)` (also what a transformers `Trainer` calls) never writes that filtered state:
  in "model" mode (the default) it writes the complete model (backbone + delta tensors) plus the delta's own files,
  so `from_pretrained` gets every backbone weight and `AutoDeltaModel.from_finetuned` the delta; in "delta" mode
  (what `OpenDeltaCallback` sets) it writes a delta checkpoint folder. The implementation lives in `model_save`
  (reached through `providers`).

The guard goes away with the delta: on `detach()`, `merge()`, `merge_and_unload()` and
`freeze_module(set_state_dict=False)`; afterwards `state_dict()` and `save_pretrained` are the backbone's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .providers import provider

SAVE_MODES = ("model", "delta")


class BackboneGuard:
    """The state_dict filter and the `save_pretrained` route of one delta (see the module docstring)."""

    def __init__(self, delta: Any, filter_state_dict: bool = True, save_mode: str = "model") -> None:
        if save_mode not in SAVE_MODES:
            raise ValueError(f"save_mode must be one of {SAVE_MODES}, got {save_mode!r}.")
        self.delta = delta
        self.save_mode = save_mode
        self.filter_state_dict = filter_state_dict
        self._paused = 0
        backbone: nn.Module = delta.backbone_model
        self._hook = backbone._register_state_dict_hook(self._filter) if filter_state_dict else None
        self._bound = None
        if callable(getattr(type(backbone), "save_pretrained", None)):
            self._bound = self._save_pretrained  # an instance attribute shadows the class's method
            backbone.__dict__["save_pretrained"] = self._bound

    def _filter(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        if self._paused:
            return
        trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
        for key in [k for k in state_dict if k.startswith(prefix) and k not in trainable]:
            del state_dict[key]

    @contextlib.contextmanager
    def unfiltered(self) -> Iterator[None]:
        """`state_dict()` holds every tensor inside this block."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The backbone's complete state_dict (backbone weights and delta tensors), whatever the filter says."""
        with self.unfiltered():
            return self.delta.backbone_model.state_dict()

    def _save_pretrained(
        self, save_directory: Any, is_main_process: bool = True, state_dict: dict | None = None, **kwargs: Any
    ) -> Any:
        return provider("save_pretrained_with_delta")(
            self, save_directory, is_main_process=is_main_process, state_dict=state_dict, **kwargs
        )

    def original_save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        """The backbone class's own `save_pretrained`."""
        backbone = self.delta.backbone_model
        return type(backbone).save_pretrained(backbone, *args, **kwargs)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        backbone = self.delta.backbone_model
        if self._bound is not None and backbone.__dict__.get("save_pretrained") is self._bound:
            del backbone.__dict__["save_pretrained"]
        self._bound = None
