"""How a delta type maps onto other libraries' checkpoints, declared by the type in its own file.

A delta class sets `peft = PeftMapping(...)` when PEFT has the same method, and `legacy = LegacyMapping(...)`
when OpenDelta 0.3 stored it differently; `formats/peft.py` and `formats/legacy.py` only read these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .base import DeltaBase, Site
    from .config import DeltaConfig


SELECTION_ARGS = (
    "modified_modules",
    "exclude_modules",
    "unfrozen_modules",
    "common_structure",
    "interactive_modify",
    "backend",
)
"""0.3's model constructor arguments shared by most types, in its order (they follow the type's own settings)."""


@dataclass(frozen=True)
class PeftMapping:
    """A delta type's PEFT counterpart.

    peft_type: PEFT's `peft_type` ("LORA", "IA3").
    read_config(adapter_config) -> our type-specific config keys (raise CheckpointError for settings that
        cannot be reproduced). Targets, excludes, modules_to_save and the backbone are read generically.
    write_config(delta, config) -> PEFT's type-specific adapter_config keys (may override target_modules).
    read_tensor(name, tensor) -> (our key, tensor), or None when `name` is not one of the delta's tensors
        (then it is a `modules_to_save` tensor). `name` has PEFT's `base_model.model.` prefix removed.
    write_tensor(site, attr, key, tensor) -> {PEFT name (no prefix): tensor} for the tensor `key` of the
        delta layer `attr` on `site`.
    """

    peft_type: str
    read_config: Callable[[dict[str, Any]], dict[str, Any]]
    write_config: Callable[[DeltaBase, DeltaConfig], dict[str, Any]]
    read_tensor: Callable[[str, torch.Tensor], tuple[str, torch.Tensor] | None]
    write_tensor: Callable[[Site, str, str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class LegacyMapping:
    """What OpenDelta 0.3 wrote differently for a delta type.

    config_keys: 0.3 config key -> our key, or None when the key means nothing here (dropped with a log).
    tensor_renames: (regex over a tensor name, replacement) pairs applied in order; a None replacement
        drops the tensor (0.3 saved it but no computation used it).
    defaults: 0.3's config-class defaults where they differ from ours (0.3 left keys equal to its defaults
        out of config.json, so a missing key means 0.3's default).
    honours_exclude: whether 0.3's model class applied `exclude_modules` (0.3's LoRA / Compacter did not).
    fit_config(config, backbone, names, state) -> config: the type's own translation once the modules 0.3
        modified are known (`names`, raw names in model order; `state` the renamed tensors), e.g. moving a
        target to the module this version hooks. `config` still holds 0.3's `modified_modules` entries; the
        result must hold the new ones (without a hook they are `names`).
    fit_state(delta, state) -> state: tensor transforms that need the built delta (split a shared MLP,
        turn a reused backbone bias into our delta's own bias).
    positional: the constructor arguments after `backbone_model`, in 0.3's order (`LoraModel(model, 8, 16)`).
    layer_keys: how 0.3 named a delta layer's tensors inside the delta (`delta.state_dict()` keys
        `delta_modules.<i>.<name>`): (regex over our layer-local name, replacement) pairs; None where 0.3's layout
        is not reproduced (the delta's `state_dict()` then keys its tensors as in the backbone).
    """

    config_keys: Mapping[str, str | None] = field(default_factory=dict)
    tensor_renames: tuple[tuple[str, str | None], ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    honours_exclude: bool = True
    fit_config: Callable[[dict[str, Any], nn.Module, list[str], dict[str, torch.Tensor]], dict[str, Any]] | None = None
    fit_state: Callable[[DeltaBase, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    positional: tuple[str, ...] = ()
    layer_keys: tuple[tuple[str, str], ...] | None = None

    def rename_tensor(self, name: str) -> str | None:
        for pattern, replacement in self.tensor_renames:
            if re.search(pattern, name):
                if replacement is None:
                    return None
                name = re.sub(pattern, replacement, name)
        return name
