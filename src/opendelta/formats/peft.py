"""PEFT adapters: `adapter_config.json` + `adapter_model.safetensors` (or `.bin`), read and written.

The generic part lives here: `target_modules` (a list entry matches a whole dotted suffix of a module name,
as ours do; a string is a regular expression over the whole name, which becomes "[r]^(?:...)"),
`exclude_modules`, `modules_to_save` (-> unfrozen modules), the `base_model.model.` key prefix and the
backbone's identity. What is specific to one method (its settings, its tensor names and shapes) is declared
by the delta type that reproduces it, as its `peft` attribute (`interop.PeftMapping`); LoRA and IA3 have one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import io
from .._logging import logger
from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import CheckpointError
from ..interop import PeftMapping
from ..matching import REGEX_PREFIX, name_matches, named_backbone_modules
from ..registry import get_delta_class, registered_delta_classes

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
_ANCHORED = re.compile(r"^\[r\]\^\(\?:(?P<regex>.*)\)$", re.S)
_SAVED_MODULE = re.compile(r"\.modules_to_save(?:\.default)?\.")


def _mappings() -> dict[str, type[DeltaBase]]:
    """PEFT type -> the delta class that reproduces it."""
    return {cls.peft.peft_type: cls for cls in registered_delta_classes() if cls.peft is not None}


def _mapping(delta_type: str) -> PeftMapping:
    mapping = get_delta_class(delta_type).peft
    if mapping is None:
        raise CheckpointError(f"{delta_type!r} deltas have no PEFT counterpart.")
    return mapping


# ----- reading ---------------------------------------------------------------------------------
def to_opendelta_config(pc: dict[str, Any]) -> dict[str, Any]:
    """Our config dict for a PEFT adapter config."""
    kind = pc.get("peft_type")
    classes = _mappings()
    if kind not in classes:
        raise CheckpointError(
            f"PEFT adapters of type {kind!r} cannot be loaded; supported: {', '.join(sorted(classes))}. Load it "
            f"with PEFT itself (PeftModel.from_pretrained)."
        )
    cls = classes[kind]
    saved = pc.get("modules_to_save") or []
    return {
        "delta_type": cls.delta_type,
        "modified_modules": targets(pc.get("target_modules"), "target_modules"),
        "exclude_modules": targets(pc.get("exclude_modules"), "exclude_modules", required=False),
        "unfrozen_modules": ["deltas", *saved],
        "common_structure": False,
        "backbone_class": (pc.get("auto_mapping") or {}).get("base_model_class"),
        "backbone_checkpoint_name": pc.get("base_model_name_or_path") or None,
        **cls.peft.read_config(pc),
    }


def targets(value: Any, key: str, required: bool = True) -> list[str] | None:
    """A PEFT module list (names, or a regex string) as our module addresses."""
    if value is None or value == []:
        if required:
            raise CheckpointError(f"The PEFT adapter config has no `{key}`; it cannot say which modules to modify.")
        return None
    if isinstance(value, str):
        return ["all-linear"] if value == "all-linear" else [f"{REGEX_PREFIX}^(?:{value})"]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise CheckpointError(f"PEFT `{key}` must be a list of names or a regex string, got {value!r}.")


def fit_to_backbone(config: dict[str, Any], backbone_model: nn.Module) -> dict[str, Any]:
    """Drop module-list entries that match no module of `backbone_model` (PEFT ignores them too)."""
    names = [n for n, _ in named_backbone_modules(backbone_model)]
    out = dict(config)
    for key, entries in config.items():
        if not key.endswith("_modules") or key == "exclude_modules" or not isinstance(entries, list) or not entries:
            continue
        kept = [
            e
            for e in entries
            if e in ("deltas", "all-linear") or e.startswith(REGEX_PREFIX) or any(name_matches(n, e) for n in names)
        ]
        if len(kept) < len(entries) and (kept or key != "modified_modules"):
            logger.info(
                "PEFT %s: %s match(es) no module of %s; ignored as PEFT does",
                key,
                [e for e in entries if e not in kept],
                type(backbone_model).__name__,
            )
            out[key] = kept
    return out


def load_weights(folder: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapter's tensors renamed to our layout."""
    st, bin_ = (folder / n for n in WEIGHTS_NAMES)
    raw = io.load_weight_pair(st, bin_)
    if raw is None:
        raise CheckpointError(f"No adapter weights in {str(folder)!r}: expected {' or '.join(WEIGHTS_NAMES)}.")
    mapping = _mapping(config["delta_type"])
    out = {}
    for key, value in raw.items():
        if not key.startswith(PREFIX):
            raise CheckpointError(f"Unexpected key {key!r} in a PEFT adapter: keys start with {PREFIX!r}.")
        name = key[len(PREFIX) :]
        mapped = mapping.read_tensor(name, value)
        if mapped is None:  # a modules_to_save tensor
            mapped = (_SAVED_MODULE.sub(".", name), value)
        out[mapped[0]] = mapped[1]
    return out


# ----- writing ---------------------------------------------------------------------------------
def export(delta: DeltaBase, cfg: DeltaConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's adapter_config.json dict and tensors for `delta` saved with config `cfg`."""
    mapping = delta.peft
    if mapping is None:
        able = ", ".join(repr(c.delta_type) for c in registered_delta_classes() if c.peft is not None)
        raise CheckpointError(
            f"format='peft' can write {able} deltas, not {delta.delta_type!r}; save it in OpenDelta's format instead."
        )
    state: dict[str, torch.Tensor] = {}
    own: set[str] = set()
    for site in delta.sites:
        for attr, layer in site.layers.items():
            for key, tensor in layer.state_dict().items():
                own.add(f"{site.name}.{attr}.{key}" if site.name else f"{attr}.{key}")
                for name, value in mapping.write_tensor(site, attr, key, tensor.detach()).items():
                    state[PREFIX + name] = value
    saved = {k: v for k, v in delta.delta_state_dict().items() if k not in own}  # unfrozen modules
    state.update({PREFIX + k: v for k, v in saved.items()})
    config = {
        "task_type": None,
        "base_model_name_or_path": cfg.backbone_checkpoint_name,
        "target_modules": peft_targets(delta),
        "exclude_modules": None,
        "modules_to_save": _modules_to_save(delta, sorted(saved)),
        "inference_mode": True,
        "fan_in_fan_out": any(type(s.module).__name__ == "Conv1D" for s in delta.sites),
        "auto_mapping": {
            "base_model_class": type(delta.backbone_model).__name__,
            "parent_library": type(delta.backbone_model).__module__,
        },
        "peft_type": mapping.peft_type,
    }
    config.update(mapping.write_config(delta, cfg))
    return config, state


def peft_targets(delta: DeltaBase) -> list[str] | str:
    """Our module addresses in PEFT's terms: kept as they are where PEFT selects exactly the same modules."""
    entries = delta.config.modified_modules or []
    sites = set(delta.modified_module_names)
    anchored = _ANCHORED.fullmatch(entries[0]) if len(entries) == 1 else None
    names = [n for n, _ in named_backbone_modules(delta.backbone_model)]
    if anchored and not delta.config.exclude_modules:
        if {n for n in names if re.fullmatch(anchored.group("regex"), n)} == sites:
            return anchored.group("regex")
    plain = all(not e.startswith(REGEX_PREFIX) and "@" not in e and e != "all-linear" for e in entries)
    if plain and {n for n in names if any(name_matches(n, e) for e in entries)} == sites:
        return list(entries)
    return list(delta.modified_module_names)


def _modules_to_save(delta: DeltaBase, saved: list[str]) -> list[str] | None:
    """The whole modules whose parameters the delta saves besides its own (PEFT saves whole modules only)."""
    if not saved:
        return None
    own = {id(p) for p in delta.delta_parameters()}
    params = [n for n, p in delta.backbone_model.named_parameters() if id(p) not in own]
    owners = sorted({k.rsplit(".", 1)[0] for k in saved if "." in k})
    partial = [o for o in owners if not all(p in saved for p in params if p.startswith(o + "."))]
    partial += [k for k in saved if "." not in k]  # a parameter of the root model itself
    if partial:
        raise CheckpointError(
            f"The delta also saves parameters that are not whole modules ({partial[:3]}); PEFT's "
            f"modules_to_save can only hold whole modules. Unfreeze whole modules (e.g. 'classifier') or "
            f"save in OpenDelta's format."
        )
    return [o for o in owners if not any(o.startswith(p + ".") for p in owners)]


def write(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Write an adapter folder's two files (called inside an atomic checkpoint write)."""
    io.save_weights(state, folder / WEIGHTS_NAMES[0])
    (folder / CONFIG_NAME).write_text(io.json_text(config), encoding="utf-8")
