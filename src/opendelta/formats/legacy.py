"""OpenDelta 0.3 checkpoints: `config.json` + `pytorch_model.bin`, keys such as `...SelfAttention.q.lora.lora_A`.

What differs from our format, and how it is handled:

- The config carries keys 0.3 wrote that are not settings here. Known ones are dropped with a log line
  (`LEGACY_KEYS`, plus the delta class's `legacy.config_keys` mapping of old key -> new key or None to
  drop); any other unknown key is still an error, raised by the config class.
- Module names mean what they meant in 0.3 (`legacy_structure.py`: its common names, e.g. T5's `attn@` is
  the `layer.0` sub-layer, and its matching rules): once the backbone is known (`fit_config`), the config's
  `modified_modules` become the exact raw names 0.3 modified, then the type's `legacy.fit_config` moves them
  where this version hooks. 0.3 left keys equal to its defaults out of config.json: a missing key takes
  0.3's default (`common_structure` False, the type's `legacy.defaults`).
- `backbone_hash` is an md5 this library cannot recompute: loading logs that it cannot be verified.
- The `.bin` held every trainable tensor of the model (which may include e.g. a classifier); it is read
  with `torch.load(weights_only=True)`, never running pickled code. Tensor names 0.3 spelled differently
  are renamed, and tensors no computation used are dropped, by the delta class's `legacy.tensor_renames`;
  `legacy.fit_state` then adapts them to the built delta (`fit_state`). Backbone tensors in it are the
  modules that were left trainable (they become `unfrozen_modules`), unless the file holds the whole model
  (saved without `set_state_dict`): then only the delta's tensors are taken, with one log line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import legacy_structure
from .._logging import logger
from ..errors import CheckpointError
from ..matching import delta_layer_prefixes, inside_any
from ..registry import get_delta_class

if TYPE_CHECKING:  # pragma: no cover
    from ..base import DeltaBase

#: Keys OpenDelta 0.3 configs hold that mean nothing here (dropped on load, with a log line).
LEGACY_KEYS = {
    "opendelta_version": "the version that wrote it",
    "transformers_version": "the version that wrote it",
    "interactive_modify": "0.3's interactive module picker",
    "model_type": "a transformers config key 0.3 copied along",
    "torch_dtype": "a transformers config key 0.3 copied along",
}


def translate_config(data: dict[str, Any], source: str) -> dict[str, Any]:
    """An OpenDelta 0.3 config dict in this version's vocabulary (really unknown keys are left for the
    config class to reject)."""
    delta_class = get_delta_class(data.get("delta_type"))
    fields = set(delta_class.config_class.field_names())
    renames: dict[str, str | None] = dict(delta_class.legacy.config_keys)
    out: dict[str, Any] = {}
    dropped = []
    for key, value in data.items():
        if key in renames and renames[key] is not None:
            out[renames[key]] = value
        elif key in renames or key in LEGACY_KEYS:
            dropped.append(key)
        elif key in fields or key == "delta_type":
            out[key] = value
        else:
            out[key] = value
    if dropped:
        logger.info(
            "%s is an OpenDelta 0.3 checkpoint; ignoring its config key(s) %s (not settings in this version)",
            source,
            ", ".join(sorted(dropped)),
        )
    for key, value in delta_class.legacy.defaults.items():
        out.setdefault(key, value)  # 0.3 omitted keys equal to its defaults from config.json
    out.setdefault("common_structure", False)  # 0.3 omitted defaults from config.json; its default was False
    if out.get("backbone_hash") is not None:
        out["hash_algorithm"] = None  # 0.3's md5: reported as unverifiable when loading
    return out


def clean_state(state: dict[str, torch.Tensor], delta_type: str | None) -> dict[str, torch.Tensor]:
    """Rename the tensors 0.3 spelled differently and drop those that never took part in the computation."""
    legacy = get_delta_class(delta_type).legacy
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state.items():
        new = legacy.rename_tensor(key)
        if new is None:
            dropped.append(key)
        else:
            out[new] = value
    if dropped:
        logger.info(
            "dropping %d tensor(s) OpenDelta 0.3 saved that no computation used, e.g. %s", len(dropped), dropped[0]
        )
    return out


def fit_config(config: dict[str, Any], backbone: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`config` with `modified_modules` set to the raw names of the modules 0.3 modified on `backbone`."""
    legacy = get_delta_class(config.get("delta_type")).legacy
    modified = config.get("modified_modules")
    out = dict(config)
    if modified is not None:
        common = bool(config.get("common_structure"))
        if common and not legacy_structure.has_tree(backbone):
            raise CheckpointError(
                f"This OpenDelta 0.3 checkpoint names modules in 0.3's common structure ({modified}), which 0.3 "
                f"only knew for {', '.join(sorted(legacy_structure.TREES))}; {type(backbone).__name__} contains "
                f"none of them. Load it onto the backbone it was trained on."
            )
        exclude = config.get("exclude_modules") if legacy.honours_exclude else None
        names = legacy_structure.resolve(backbone, list(modified), exclude, common)
        if names != modified:
            logger.info("OpenDelta 0.3 modified_modules %s (0.3 meaning) -> %d module(s)", modified, len(names))
        if not names:
            logger.warning(
                "This OpenDelta 0.3 checkpoint's modified_modules %s matched no module of %s in 0.3 either; the "
                "loaded delta modifies nothing (as 0.3's did).",
                modified,
                type(backbone).__name__,
            )
        out.update(exclude_modules=None, common_structure=False)
        if legacy.fit_config is not None:
            out = legacy.fit_config(out, backbone, names, state)
        else:
            out["modified_modules"] = names
    return out


def fit_state(delta: DeltaBase, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 0.3 tensors as `delta.load_delta_state_dict` takes them; backbone tensors become unfrozen modules
    (or are ignored when the file holds the whole model)."""
    if delta.legacy.fit_state is not None:
        state = delta.legacy.fit_state(delta, dict(state))
    ours = set(delta.delta_state_dict())
    backbone = delta.backbone_model
    prefixes = delta_layer_prefixes(backbone)
    params = {n: p for n, p in backbone.named_parameters() if not inside_any(n, prefixes)}
    extra = [k for k in state if k not in ours]
    from_backbone = [k for k in extra if k in params]
    if len(from_backbone) > len(params) // 2:  # saved without set_state_dict: the whole model
        changed = [k for k in from_backbone if not torch.equal(state[k].to(params[k].dtype), params[k].detach())]
        logger.warning(
            "This OpenDelta 0.3 checkpoint holds the whole model (%d tensors; it was saved without "
            "`set_state_dict`): loading the delta's %d tensor(s) only and ignoring the backbone's%s.",
            len(state),
            len(ours & set(state)),
            f" ({len(changed)} of them differ from this backbone, e.g. {changed[0]!r})" if changed else "",
        )
        return {k: v for k, v in state.items() if k in ours}
    if from_backbone:
        unfrozen = _module_names(backbone, from_backbone, params)
        logger.info("OpenDelta 0.3 checkpoint: %s were trained with the delta; loading them too", unfrozen)
        delta.config.unfrozen_modules = [*delta.config.unfrozen_modules, *unfrozen]
    return state


def _module_names(backbone: nn.Module, names: list[str], params: dict[str, Any]) -> list[str]:
    """Parameter names, collapsed to their module's name where every parameter of that module is listed."""
    out: list[str] = []
    given = set(names)
    for name in names:
        module = name.rsplit(".", 1)[0] if "." in name else ""
        own = [f"{module}.{n}" for n, _ in backbone.get_submodule(module).named_parameters(recurse=False)]
        entry = module if module and all(o in given for o in own) else name
        if entry not in out:
            out.append(entry)
    return out
