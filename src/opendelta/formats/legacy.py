"""OpenDelta 0.3 checkpoints: `config.json` + `pytorch_model.bin`, keys such as `...SelfAttention.q.lora.lora_A`.

What differs from our format, and how it is handled:

- The config carries keys 0.3 wrote that are not settings here. Known ones are dropped with a log line
  (`LEGACY_KEYS`, plus a config class's own `legacy_keys` mapping of old key -> new key or None to drop);
  any other unknown key is still an error, raised by the config class.
- Common-structure names are spelled "attn@.q@"; they are kept as they are and resolved at attach time by
  `structures.find_targets`. 0.3 left keys equal to its defaults out of config.json; its default
  `common_structure` was False (names are raw module names), so a missing key means False here too.
- `backbone_hash` is an md5 this library cannot recompute: loading logs that it cannot be verified.
- The `.bin` held every trainable tensor of the model (which may include e.g. a classifier); it is read
  with `torch.load(weights_only=True)`, never running pickled code. 0.3's LoRA layer also carried an
  unused `lin` Linear whose tensors were saved too; they are dropped (they never entered the output).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .._logging import logger

#: Keys OpenDelta 0.3 configs hold that mean nothing here (dropped on load, with a log line).
LEGACY_KEYS = {
    "opendelta_version": "the version that wrote it",
    "transformers_version": "the version that wrote it",
    "interactive_modify": "0.3's interactive module picker",
    "model_type": "a transformers config key 0.3 copied along",
    "torch_dtype": "a transformers config key 0.3 copied along",
}
#: Tensors 0.3 saved that no computation used, per delta type.
_UNUSED_TENSORS = {"lora": re.compile(r"\.lora\.lin\.(weight|bias)$")}


def translate_config(data: dict[str, Any], source: str) -> dict[str, Any]:
    """An OpenDelta 0.3 config dict in this version's vocabulary (really unknown keys are left for the
    config class to reject)."""
    from ..auto import get_delta_class

    config_class = get_delta_class(data.get("delta_type")).config_class
    fields = set(config_class.field_names())
    renames: dict[str, str | None] = dict(getattr(config_class, "legacy_keys", {}))
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
        logger.info("%s is an OpenDelta 0.3 checkpoint; ignoring its config key(s) %s (not settings in this "
                    "version)", source, ", ".join(sorted(dropped)))
    out.setdefault("common_structure", False)  # 0.3 omitted defaults from config.json; its default was False
    if out.get("backbone_hash") is not None:
        out["hash_algorithm"] = None  # 0.3's md5: reported as unverifiable when loading
    return out


def clean_state(state: dict[str, torch.Tensor], delta_type: str | None) -> dict[str, torch.Tensor]:
    """Drop the tensors 0.3 saved that never took part in the computation."""
    unused = _UNUSED_TENSORS.get(delta_type or "")
    if unused is None:
        return state
    dropped = [k for k in state if unused.search(k)]
    if dropped:
        logger.info("dropping %d tensor(s) of OpenDelta 0.3's unused `lin` layer inside LoRA, e.g. %s",
                    len(dropped), dropped[0])
    return {k: v for k, v in state.items() if k not in dropped}
