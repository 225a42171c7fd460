"""PEFT adapters: `adapter_config.json` + `adapter_model.safetensors` (or `.bin`), read and written.

A PEFT LoRA adapter becomes our `lora` delta: `r` -> lora_r, `lora_alpha`, `lora_dropout`, `use_rslora` ->
lora_scaling="rslora", `target_modules` (a list entry matches a whole dotted suffix of a module name, as
ours do; a string is a regular expression over the whole name, which becomes "[r]^(?:...)"),
`exclude_modules` likewise, `modules_to_save` -> unfrozen modules. Keys
`base_model.model.<path>.lora_A.weight` become `<path>.lora.lora_A`. Options whose effect we do not
reproduce (DoRA, biases, rank / alpha patterns, ...) raise a clear error rather than load something else.
An IA3 adapter becomes our `ia3` delta when that type is registered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import checkpoint as ckpt
from .._logging import logger
from ..errors import CheckpointError
from ..matching import REGEX_PREFIX, name_matches, named_backbone_modules

if TYPE_CHECKING:
    from ..base import DeltaBase
    from ..config import DeltaConfig

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
_ANCHORED = re.compile(r"^\[r\]\^\(\?:(?P<regex>.*)\)$", re.S)
_SAVED_MODULE = re.compile(r"\.modules_to_save(?:\.default)?\.")

# PEFT settings that change what an adapter computes in ways we do not reproduce: value(s) accepted.
_LORA_MUST_BE = {
    "use_dora": (False, None), "lora_bias": (False, None), "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None), "layers_to_transform": (None, []), "layer_replication": (None, []),
    "target_parameters": (None, []), "trainable_token_indices": (None, {}, []), "use_qalora": (False, None),
    "alora_invocation_tokens": (None, []), "megatron_config": (None, {}), "loftq_config": ({}, None),
    "use_bdlora": (None, False),
}
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")


# ----- reading ---------------------------------------------------------------------------------
def to_opendelta_config(pc: dict[str, Any]) -> dict[str, Any]:
    """Our config dict for a PEFT adapter config."""
    kind = pc.get("peft_type")
    if kind == "LORA":
        return _lora_config(pc)
    if kind == "IA3":
        return _ia3_config(pc)
    raise CheckpointError(
        f"PEFT adapters of type {kind!r} cannot be loaded; supported: LORA, IA3. Load it with PEFT itself "
        f"(PeftModel.from_pretrained).")


def _common(pc: dict[str, Any], delta_type: str) -> dict[str, Any]:
    saved = pc.get("modules_to_save") or []
    return {
        "delta_type": delta_type,
        "modified_modules": _targets(pc.get("target_modules"), "target_modules"),
        "exclude_modules": _targets(pc.get("exclude_modules"), "exclude_modules", required=False),
        "unfrozen_modules": ["deltas", *saved],
        "common_structure": False,
        "backbone_class": (pc.get("auto_mapping") or {}).get("base_model_class"),
        "backbone_checkpoint_name": pc.get("base_model_name_or_path") or None,
    }


def _lora_config(pc: dict[str, Any]) -> dict[str, Any]:
    problems = [f"{k}={pc[k]!r}" for k, ok in _LORA_MUST_BE.items() if k in pc and pc[k] not in ok]
    if pc.get("bias", "none") != "none":
        problems.append(f"bias={pc['bias']!r} (only 'none' is supported: the adapter would also train biases)")
    init = pc.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(f"init_lora_weights={init!r} (it changes the base weights the adapter expects)")
    if problems:
        raise CheckpointError(
            f"This PEFT LoRA adapter uses setting(s) OpenDelta does not reproduce: {'; '.join(problems)}. Load it "
            f"with PEFT (PeftModel.from_pretrained), or re-train without them.")
    return {**_common(pc, "lora"), "lora_r": pc["r"], "lora_alpha": pc.get("lora_alpha", 8),
            "lora_dropout": pc.get("lora_dropout", 0.0),
            "lora_scaling": "rslora" if pc.get("use_rslora") else "standard"}


def _ia3_config(pc: dict[str, Any]) -> dict[str, Any]:
    from ..auto import registered_delta_types

    if "ia3" not in registered_delta_types():
        raise CheckpointError("This is a PEFT IA3 adapter, but this installation has no 'ia3' delta type.")
    return {**_common(pc, "ia3"), "feedforward_modules": _targets(pc.get("feedforward_modules"),
                                                                  "feedforward_modules", required=False) or []}


def _targets(value: Any, key: str, required: bool = True) -> list[str] | None:
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
    """Drop list entries that match no module of `backbone_model` (PEFT ignores them too)."""
    names = [n for n, _ in named_backbone_modules(backbone_model)]
    out = dict(config)
    for key in ("modified_modules", "unfrozen_modules", "feedforward_modules"):
        entries = out.get(key)
        if not entries:
            continue
        kept = [e for e in entries if e in ("deltas", "all-linear") or e.startswith(REGEX_PREFIX)
                or any(name_matches(n, e) for n in names)]
        if len(kept) < len(entries) and (kept or key != "modified_modules"):
            logger.info("PEFT %s: %s match(es) no module of %s; ignored as PEFT does", key,
                        [e for e in entries if e not in kept], type(backbone_model).__name__)
            out[key] = kept
    return out


def load_weights(folder: Path, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The adapter's tensors renamed to our layout."""
    st, bin_ = (folder / n for n in WEIGHTS_NAMES)
    if st.is_file():
        raw = ckpt.load_safetensors(st)
    elif bin_.is_file():
        raw = ckpt.load_legacy_bin(bin_)
    else:
        raise CheckpointError(f"No adapter weights in {str(folder)!r}: expected {' or '.join(WEIGHTS_NAMES)}.")
    if config["delta_type"] == "lora":
        return {_lora_key(k): v for k, v in raw.items()}
    # IA3 vectors are (out, 1) or (1, in) in PEFT, flat here
    return {_ia3_key(k): v.reshape(-1) if k.endswith(("ia3_l", "ia3_l.default")) else v for k, v in raw.items()}


def _strip(key: str) -> str:
    if not key.startswith(PREFIX):
        raise CheckpointError(f"Unexpected key {key!r} in a PEFT adapter: keys start with {PREFIX!r}.")
    return key[len(PREFIX):]


def _lora_key(key: str) -> str:
    name = _strip(key)
    m = re.fullmatch(r"(.+)\.lora_([AB])(?:\.default)?\.weight", name)
    if m:
        return f"{m.group(1)}.lora.lora_{m.group(2)}"
    if ".lora_" in name:
        raise CheckpointError(f"PEFT tensor {key!r} is not a LoRA A/B matrix of a Linear layer (e.g. an "
                              f"embedding LoRA or DoRA magnitude); OpenDelta cannot load it.")
    return _SAVED_MODULE.sub(".", name)


def _ia3_key(key: str) -> str:
    name = _strip(key)
    m = re.fullmatch(r"(.+)\.ia3_l(?:\.default)?", name)
    if m:
        return f"{m.group(1)}.ia3.scale"
    return _SAVED_MODULE.sub(".", name)


# ----- writing ---------------------------------------------------------------------------------
def export(delta: "DeltaBase", cfg: "DeltaConfig") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's adapter_config.json dict and tensors for `delta` (LoRA or IA3) saved with config `cfg`."""
    if delta.delta_type not in ("lora", "ia3"):
        raise CheckpointError(f"format='peft' can write 'lora' and 'ia3' deltas, not {delta.delta_type!r}; save "
                              f"it in OpenDelta's format instead.")
    state = {PREFIX + k: v for k, v in delta.delta_state_dict().items()}  # unfrozen modules keep their names
    config = {
        "task_type": None, "base_model_name_or_path": cfg.backbone_checkpoint_name,
        "target_modules": _peft_targets(delta), "exclude_modules": None,
        "modules_to_save": _modules_to_save(delta), "inference_mode": True,
        "fan_in_fan_out": any(type(s.module).__name__ == "Conv1D" for s in delta.sites),
        "auto_mapping": {"base_model_class": type(delta.backbone_model).__name__,
                         "parent_library": type(delta.backbone_model).__module__},
    }
    for site in delta.sites:
        if delta.delta_type == "lora":
            for ab in "AB":
                state[f"{PREFIX}{site.name}.lora_{ab}.weight"] = state.pop(f"{PREFIX}{site.name}.lora.lora_{ab}")
        else:
            on_input = site.layers["ia3"].on_input  # PEFT: (1, in) scales the input, (out, 1) the output
            scale = state.pop(f"{PREFIX}{site.name}.ia3.scale")
            state[f"{PREFIX}{site.name}.ia3_l"] = scale[None, :] if on_input else scale[:, None]
    if delta.delta_type == "lora":
        config.update({"peft_type": "LORA", "r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                       "lora_dropout": cfg.lora_dropout, "use_rslora": cfg.lora_scaling == "rslora",
                       "bias": "none", "init_lora_weights": True, "use_dora": False, "rank_pattern": {},
                       "alpha_pattern": {}, "layers_to_transform": None, "layers_pattern": None})
    else:
        config.update({"peft_type": "IA3", "init_ia3_weights": True, **_ia3_targets(delta, config["target_modules"])})
    return config, state


def _ia3_targets(delta: "DeltaBase", targets: list[str] | str) -> dict[str, Any]:
    """target_modules / feedforward_modules for PEFT, which wants the second a subset of the first (lists)."""
    ff_sites = [s.name for s in delta.sites if s.layers["ia3"].on_input]
    ours = list(delta.config.feedforward_modules or [])
    names = [s.name for s in delta.sites]
    if not isinstance(targets, list) or (set(ours) <= set(targets)
                                         and [n for n in names if any(name_matches(n, e) for e in ours)] == ff_sites):
        return {"target_modules": targets, "feedforward_modules": ours if isinstance(targets, list) else ff_sites}
    return {"target_modules": names, "feedforward_modules": ff_sites}


def _peft_targets(delta: "DeltaBase") -> list[str] | str:
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


def _modules_to_save(delta: "DeltaBase") -> list[str] | None:
    """The whole modules whose parameters the delta saves besides its own (PEFT saves whole modules only)."""
    saved = [k for k in delta.delta_state_dict() if ".lora.lora_" not in k]
    if not saved:
        return None
    params = [n for n, _ in delta.backbone_model.named_parameters() if ".lora.lora_" not in n]
    owners = sorted({k.rsplit(".", 1)[0] for k in saved if "." in k})
    partial = [o for o in owners if not all(p in saved for p in params if p.startswith(o + "."))]
    partial += [k for k in saved if "." not in k]  # a parameter of the root model itself
    if partial:
        raise CheckpointError(
            f"The delta also saves parameters that are not whole modules ({partial[:3]}); PEFT's "
            f"modules_to_save can only hold whole modules. Unfreeze whole modules (e.g. 'classifier') or "
            f"save in OpenDelta's format.")
    return [o for o in owners if not any(o.startswith(p + ".") for p in owners)]


def write(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Write an adapter folder's two files (called inside an atomic checkpoint write)."""
    ckpt.save_weights(state, folder / WEIGHTS_NAMES[0])
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
