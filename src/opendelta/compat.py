"""OpenDelta 0.3's API on the delta object, where it costs little; an error naming the replacement where the
API changed on purpose. `DeltaBase` inherits `Legacy03Mixin`; the checks are functions `base` calls.

What the mixin gives a delta (0.3 scripts use these): `parameters()` / `named_parameters()` (the delta's
own parameters), `state_dict()` (delta tensors only), `to()`, `modified_modules`, `unfrozen_modules`,
`default_modified_modules`, `trainable_parameters_names()`, `frozen_parameters_names()`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._logging import logger
from .errors import CheckpointError, DeltaConfigError, LegacyAPIError, ModuleMatchError
from .matching import name_matches
from .providers import provider
from .replaced import CUSTOM_DELTA
from .stats import ModelStats, model_stats
from .structures import find_backbone

if TYPE_CHECKING:  # pragma: no cover
    from .base import DeltaBase

#: 0.3 `from_finetuned` / `save_finetuned` keywords that are gone -> the exact replacement
GONE_KEYWORDS = {
    "use_auth_token": "`use_auth_token` is gone; use `token=...`",
}
#: where `save_finetuned` puts what 0.3 sent to DeltaCenter: model-card metadata
CARD_KEYWORDS = ("center_args", "center_args_pool", "list_tags", "dict_tags", "usage", "test_result", "delay_push")
#: 0.3's default folder of `save_finetuned()` without one
LEGACY_SAVE_DIR = "./delta_checkpoints/"


def _plain(value: Any) -> Any:
    """`value` if it is JSON-like (what a model card's front matter holds), else its str()."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def check_save_keywords(save_directory: Any, legacy: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """0.3's `save_finetuned` keywords. Returns (the folder, model-card data, results): the folder is
    `finetuned_delta_path` or 0.3's default `./delta_checkpoints/`; what 0.3 sent to DeltaCenter (`list_tags`,
    `dict_tags`, `center_args`, `center_args_pool`, `usage`, `test_result`) goes into the model card;
    `push_to_dc=True` raises naming `push_to_hub`; other keywords that changed raise naming the replacement."""
    path = legacy.pop("finetuned_delta_path", None)
    if save_directory is None:
        save_directory = path
    if save_directory is None:
        save_directory = LEGACY_SAVE_DIR
        logger.info("save_finetuned() without a folder: saving into %s, as OpenDelta 0.3 did", LEGACY_SAVE_DIR)
    card: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for key, value in legacy.items():
        if key == "save_config":
            if not value:
                raise TypeError("`save_config=False` is gone: the config is always saved with the delta (drop it)")
        elif key == "state_dict":
            if value is not None:
                raise TypeError(
                    "`state_dict=` is gone: save_finetuned saves the delta's own tensors (and the modules "
                    "left trainable by freeze_module); load other tensors with `delta.load_delta_state_dict(...)` "
                    "before saving"
                )
        elif key == "save_function":
            if value is not None and getattr(value, "__name__", "") != "save":
                raise TypeError(
                    "`save_function` is gone: checkpoints are written as safetensors; use `format='opendelta'`, "
                    "`format='peft'` or `format='opendelta-0.3'`"
                )
        elif key == "push_to_dc":
            if value:
                raise LegacyAPIError(
                    "`push_to_dc=True`: the DeltaCenter service no longer exists; use "
                    "`save_finetuned(folder, push_to_hub=True, repo_id='user/name')`"
                )
        elif key == "list_tags":
            card.setdefault("tags", []).extend(str(t) for t in value or [])
        elif key == "dict_tags":
            card.setdefault("tags", []).extend(f"{k}:{v}" for k, v in (value or {}).items())
        elif key in ("center_args", "center_args_pool"):
            args = value if isinstance(value, dict) else vars(value) if value is not None else {}
            card.update({str(k): _plain(v) for k, v in args.items() if v not in (None, "", [], {})})
        elif key == "usage":
            if value:
                card["usage"] = str(value)
        elif key == "test_result":
            if value:
                results.update(_plain(value) if isinstance(value, dict) else {"test_result": _plain(value)})
        elif key == "delay_push":
            pass  # nothing is pushed unless push_to_hub=True
        elif key in GONE_KEYWORDS:
            raise TypeError(GONE_KEYWORDS[key])
        else:
            raise TypeError(f"save_finetuned() got an unexpected keyword argument {key!r}")
    return save_directory, card, results


def reject_module_argument(method: str, module: Any) -> None:
    """0.3's `detach(module=...)` / `attach(module=...)` acted on part of a delta: say what to write now."""
    if module is not None:
        raise TypeError(
            f"`{method}(module=...)` is gone: {method}() acts on the whole delta. To switch part of a model on and "
            f"off, attach a separate delta to those modules (`modified_modules=[...]`, `name=...`) and use "
            f"`opendelta.deactivate(model, name)` / `opendelta.activate(model, names)`"
        )


def check_load_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """0.3's `from_finetuned(delta_config=..., state_dict=...)`: raise naming the replacement."""
    if kwargs.get("delta_config") is not None:
        raise TypeError(
            "`from_finetuned(delta_config=...)` is gone: build the delta from the config with "
            "`AutoDeltaModel.from_config(delta_config, backbone_model)`, then `delta.load_delta_state_dict(state)`; "
            "to change a few keys of a checkpoint's config pass them as keywords (`from_finetuned(path, model, "
            "lora_dropout=0.0)`)"
        )
    if kwargs.get("state_dict") is not None:
        raise TypeError(
            "`from_finetuned(state_dict=...)` is gone: load the checkpoint, then "
            "`delta.load_delta_state_dict(state_dict)`"
        )
    return {k: v for k, v in kwargs.items() if k not in ("delta_config", "state_dict")}


def positional_settings(cls: type[DeltaBase], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with OpenDelta 0.3's positional constructor arguments (after `backbone_model`) added by name, in
    the type's 0.3 order (`legacy.positional`)."""
    if not args:
        return kwargs
    order = cls.legacy.positional or cls.config_class.positional_order()
    if len(args) > len(order):
        raise TypeError(
            f"{cls.__name__}(backbone_model, ...) takes {len(order)} more positional argument(s) ({', '.join(order)}), "
            f"got {len(args)}; pass the others by name."
        )
    out = dict(kwargs)
    for key, value in zip(order, args):
        if key in out:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {key!r}")
        out[key] = value
    return out


def check_init_keywords(kwargs: dict[str, Any]) -> dict[str, Any]:
    """0.3's constructor keywords `backend`, `unfrozen_modules=None` (the rest are config keys, returned;
    `interactive_modify` is handled by DeltaBase through the module picker)."""
    kwargs = dict(kwargs)
    backend = kwargs.pop("backend", "hf")
    if backend != "hf":
        raise DeltaConfigError(f"`backend={backend!r}` is gone: only PyTorch modules are supported (drop `backend`)")
    if "unfrozen_modules" in kwargs and kwargs["unfrozen_modules"] is None:
        del kwargs["unfrozen_modules"]  # 0.3's None meant the default ["deltas"]
    return kwargs


def closest_names(model: nn.Module, entry: str, n: int = 5) -> list[str]:
    names = [name for name, _ in model.named_modules() if name]
    tails = {".".join(name.split(".")[-k:]) for name in names for k in (1, 2, 3)}
    return difflib.get_close_matches(entry, sorted(tails), n=n, cutoff=0.4)


def warn_unmatched_exclude(model: nn.Module, entries: list[str]) -> None:
    """0.3 ignored `freeze_module(exclude=[...])` entries that match nothing; say so, with the closest names."""
    for entry in entries:
        close = closest_names(model, entry)
        logger.warning(
            "freeze_module(exclude=...): %r matches no parameter of %s; ignored%s",
            entry,
            type(model).__name__,
            f" (closest module names: {', '.join(close)})" if close else "",
        )


def _layer_tensors(delta: DeltaBase) -> dict[str, torch.Tensor]:
    """Name -> live tensor of the delta layers, named as `state_dict()` gives them."""
    renames = delta.legacy.layer_keys
    layers = list(delta.delta_modules())
    if renames is None or any(site.name == "" and site.layers for site in delta.sites):  # no 0.3 layout
        return {f"{name}.{k}": v for name, layer in layers for k, v in layer.state_dict(keep_vars=True).items()}
    out = {}
    for i, (_, layer) in enumerate(layers):
        for key, value in layer.state_dict(keep_vars=True).items():
            for pattern, repl in renames:
                key = re.sub(pattern, repl, key)
            out[f"delta_modules.{i}.{key}"] = value
    return out


class Legacy03Mixin:
    """OpenDelta 0.3's informative attributes and nn.Module-like methods on a delta (see the module doc)."""

    backbone_model: nn.Module
    config: Any

    # ----- nn.Module-like ---------------------------------------------------------------------------
    def named_parameters(self: DeltaBase, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """The delta's own parameters, keyed as in the backbone's state_dict."""
        for name, layer in self.delta_modules():
            for key, p in layer.named_parameters(recurse=recurse):
                yield (f"{prefix}{name}.{key}", p)

    def parameters(self: DeltaBase, recurse: bool = True) -> Iterator[nn.Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def state_dict(
        self: DeltaBase, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, torch.Tensor]:
        """The delta layers' tensors in OpenDelta 0.3's layout, `delta_modules.<i>.<tensor>` (the i-th layer in
        the order they were built, 0.3's tensor names), for the types 0.3 stored so; for the others (bitfit,
        prefix, ia3) keyed as in the backbone. Unfrozen backbone modules are not included (`delta_state_dict()`
        holds everything a checkpoint stores)."""
        out = destination if destination is not None else {}
        for key, tensor in _layer_tensors(self).items():
            out[prefix + key] = tensor if keep_vars else tensor.detach()
        return out

    def load_state_dict(self: DeltaBase, state_dict: dict[str, torch.Tensor], strict: bool = True) -> Any:
        """Copy tensors keyed as `state_dict()` gives them (or as in the backbone) into the delta layers; checks
        every key and shape first, so a refused call changes nothing. Returns (missing_keys, unexpected_keys)."""
        live = _layer_tensors(self)
        backbone_keyed = {f"{name}.{k}": v for name, layer in self.delta_modules() for k, v in layer.state_dict(
            keep_vars=True).items()}  # fmt: skip
        targets = {k: live.get(k, backbone_keyed.get(k)) for k in state_dict}
        unexpected = [k for k, t in targets.items() if t is None]
        given = {id(t) for t in targets.values() if t is not None}
        missing = [k for k, t in live.items() if id(t) not in given]
        wrong = [k for k, t in targets.items() if t is not None and tuple(t.shape) != tuple(state_dict[k].shape)]
        if wrong or (strict and (missing or unexpected)):
            raise CheckpointError(
                f"load_state_dict: {len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} unexpected "
                f"{unexpected[:3]}, {len(wrong)} of another shape {wrong[:3]}; keys are those of `delta.state_dict()` "
                f"(or the backbone's names). Nothing was loaded."
            )
        with torch.no_grad():
            for key, target in targets.items():
                if target is not None:
                    target.copy_(state_dict[key])
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def to(self: DeltaBase, *args: Any, **kwargs: Any) -> DeltaBase:
        """Move / cast the delta layers (as `nn.Module.to`); returns the delta."""
        for _, layer in self.delta_modules():
            layer.to(*args, **kwargs)
        return self

    # ----- 0.3's informative attributes -----------------------------------------------------------
    @property
    def modified_modules(self: DeltaBase) -> list[str]:
        return list(self.modified_module_names)

    @property
    def unfrozen_modules(self: DeltaBase) -> list[str]:
        return list(self.config.unfrozen_modules)

    @property
    def default_modified_modules(self: DeltaBase) -> list[str] | dict[str, Any]:
        """This type's default modules for the backbone's family (common names)."""
        backbone = find_backbone(self.backbone_model)
        family = backbone.family.name if backbone is not None else "*"
        entry = self.default_modules.get(family, self.default_modules.get("*", []))
        return entry.get("modified_modules", []) if isinstance(entry, dict) else list(entry)

    def trainable_parameters_names(self: DeltaBase, module: nn.Module | None = None) -> list[str]:
        root = module if module is not None else self.backbone_model
        return [n for n, p in root.named_parameters() if p.requires_grad]

    def frozen_parameters_names(self: DeltaBase, module: nn.Module | None = None) -> list[str]:
        root = module if module is not None else self.backbone_model
        return [n for n, p in root.named_parameters() if not p.requires_grad]

    def trainable_parameters(self: DeltaBase, module: nn.Module | None = None) -> list[nn.Parameter]:
        """The trainable parameters of `module`; without one, of the delta itself (0.3: pass them to an
        optimizer)."""
        params = module.parameters() if module is not None else self.delta_parameters()
        return [p for p in params if p.requires_grad]

    def mark_as_delta(self: DeltaBase, module: nn.Module | None = None) -> None:
        """Tag every parameter of `module` (default: the delta's) with `_is_delta = True`, as 0.3 did."""
        for p in module.parameters() if module is not None else self.delta_parameters():
            p._is_delta = True

    def find_module(self: DeltaBase, root_module: nn.Module, key: str) -> tuple[nn.Module, str, nn.Module]:
        """(parent, child name, module) of the submodule `key` of `root_module`."""
        *path, child = key.split(".")
        parent = root_module.get_submodule(".".join(path)) if path else root_module
        if not hasattr(parent, child):
            raise ModuleMatchError(f"{type(root_module).__name__} has no submodule {key!r}")
        return parent, child, getattr(parent, child)

    def find_key(self: DeltaBase, key: str, target_list: list[str]) -> bool:
        """True when the module name `key` is addressed by an entry of `target_list` (this version's rules)."""
        return any(name_matches(key, entry) for entry in target_list)

    def create_config_from_model(self: DeltaBase) -> None:
        """0.3 rebuilt `self.config` from a delta built by arguments; here the config always exists and is kept
        up to date, so this only checks it names the delta type."""
        self.config.delta_type = self.delta_type

    def set_active_state_dict(self: DeltaBase, module: nn.Module | None = None) -> None:
        """Make the backbone's `state_dict()` hold its trainable tensors only, as `freeze_module` does by
        default (removed again by `detach()`, `merge()` or `freeze_module(set_state_dict=False)`)."""
        if module is not None and module is not self.backbone_model:
            raise LegacyAPIError(
                "set_active_state_dict(module) works on the backbone this delta is attached to; "
                "call it without a module"
            )
        self._set_trainable_state_dict(True)

    def forward(self: DeltaBase, *args: Any, **kwargs: Any) -> Any:
        raise LegacyAPIError(
            "a delta model is not called itself (neither was OpenDelta 0.3's): call the backbone model, which "
            "now computes with the delta"
        )

    # ----- 0.3's hooks for writing delta types, replaced by Site / build_site -----------------------
    def _custom_delta(self: DeltaBase, *args: Any, **kwargs: Any) -> Any:
        raise LegacyAPIError(f"OpenDelta 0.3's delta-building helpers are not part of this version: {CUSTOM_DELTA}")

    add_all_delta_to_backbone = update_module = modify_module = new_module_like = _custom_delta
    insert_module = insert_sequential_module = insert_parallel_module = replace_module = _custom_delta

    # ----- report -----------------------------------------------------------------------------------
    def log(
        self: DeltaBase,
        module: nn.Module | None = None,
        delta_ratio: bool = True,
        trainable_ratio: bool = True,
        visualization: bool = True,
        cuda_memory: bool = True,
        print_report: bool = True,
    ) -> ModelStats:
        """Print (and log at INFO level) the backbone's tree with the delta (`visualization`), parameter counts
        and ratios, parameter memory and peak accelerator memory; return the numbers (`stats["trainable"]`,
        `stats.delta_ratio`, ...; also kept in `self.stat`, as in 0.3). `module` restricts the counts to a
        submodule; the other keywords leave parts out of the report (0.3's spelling); `print_report=False` only
        logs."""
        root = module if module is not None else self.backbone_model
        stats = model_stats(root, self.delta_parameters())
        lines = [f"{self.delta_type} delta on {stats.model_class} ({len(self.sites)} modified module(s))"]
        if trainable_ratio:
            lines.append(f"trainable parameters: {stats.trainable:,} / {stats.total:,} ({stats.trainable_ratio:.4%})")
        if delta_ratio:
            lines.append(f"delta parameters: {stats.delta:,} / {stats.total:,} ({stats.delta_ratio:.4%})")
        if cuda_memory:
            lines.append(stats.memory_line())
        report = "\n".join(lines)
        if visualization and print_report:
            provider("structure_graph")(root)
        if print_report:
            print(report)
        logger.info(
            "%s delta on %s (%d modified module(s)): parameters %s; %s",
            self.delta_type,
            stats.model_class,
            len(self.sites),
            stats.counts_line(),
            stats.memory_line(),
        )
        self.stat = stats.to_dict()
        return stats
