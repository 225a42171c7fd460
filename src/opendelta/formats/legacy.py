"""OpenDelta 0.3 checkpoints: `config.json` + `pytorch_model.bin`, keys such as `...SelfAttention.q.lora.lora_A`.

What differs from our format, and how it is handled:

- The config carries keys 0.3 wrote that are not settings here. Known ones are dropped with a log line
  (`LEGACY_KEYS`, plus the delta class's `legacy.config_keys` mapping of old key -> new key or None to
  drop); any other unknown key is still an error, raised by the config class.
- Common-structure names are spelled "attn@.q@"; they are kept as they are and resolved at attach time by
  `structures.find_targets`. 0.3 left keys equal to its defaults out of config.json; its default
  `common_structure` was False (names are raw module names), so a missing key means False here too.
- `backbone_hash` is an md5 this library cannot recompute: loading logs that it cannot be verified.
- The `.bin` held every trainable tensor of the model (which may include e.g. a classifier); it is read
  with `torch.load(weights_only=True)`, never running pickled code. Tensor names 0.3 spelled differently
  are renamed, and tensors no computation used are dropped, by the delta class's `legacy.tensor_renames`.
"""

from __future__ import annotations

from typing import Any

import torch

from .._logging import logger
from ..registry import get_delta_class

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
        if key in fields or key == "delta_type":
            out[key] = value
        elif key in renames and renames[key] is not None:
            out[renames[key]] = value
        elif key in renames or key in LEGACY_KEYS:
            dropped.append(key)
        else:
            out[key] = value
    if dropped:
        logger.info(
            "%s is an OpenDelta 0.3 checkpoint; ignoring its config key(s) %s (not settings in this version)",
            source,
            ", ".join(sorted(dropped)),
        )
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
