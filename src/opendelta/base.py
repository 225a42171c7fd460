"""DeltaBase: attaching a delta to a backbone in place, detaching it, freezing, saving and loading.

This is the only module that touches forward hooks. A delta type (see `deltas/`) describes what to put on
one modified module through a `Site`: child layers (so their parameters get keys such as
`...SelfAttention.q.lora.lora_A`) and hooks that route the module's input / output through them. The
backbone keeps its classes, forward signatures and the state_dict keys of its own weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from . import checkpoint as ckpt
from ._logging import logger
from .config import DeltaConfig
from .errors import (CheckpointError, DeltaConfigError, DeltaStateError, HashMismatchError,
                     ModuleMatchError, UnsupportedModuleError)
from .fingerprint import ALGORITHM, Fingerprint, fingerprint_model
from .matching import DELTA_MARKER, is_delta_layer, name_matches

if TYPE_CHECKING:  # pragma: no cover
    from .stats import ModelStats

DELTAS_KEYWORD = "deltas"


@dataclass
class _Hook:
    kind: str  # "forward" (module, args, output) or "pre" (module, args[, kwargs])
    fn: Callable[..., Any]
    with_kwargs: bool = False
    target: nn.Module | None = None  # the module hooked (None: the site's module)


@dataclass
class Site:
    """One modified module and everything a delta put on it."""

    name: str
    module: nn.Module
    layers: dict[str, nn.Module] = field(default_factory=dict)
    hooks: list[_Hook] = field(default_factory=list)
    handles: list[RemovableHandle] = field(default_factory=list)

    # -- used by delta types while building ------------------------------------------------
    def add_layer(self, attr: str, layer: nn.Module) -> nn.Module:
        """Register `layer` as the child `attr` of the modified module (done when the delta activates)."""
        setattr(layer, DELTA_MARKER, True)
        self.layers[attr] = layer
        return layer

    def on_output(self, fn: Callable[[nn.Module, tuple, Any], Any], target: nn.Module | None = None) -> None:
        """`fn(module, args, output) -> new output` runs after the module's (or `target`'s) forward."""
        self.hooks.append(_Hook("forward", fn, target=target))

    def on_input(self, fn: Callable[..., Any], with_kwargs: bool = False, target: nn.Module | None = None) -> None:
        """`fn(module, args) -> new args` (or `fn(module, args, kwargs) -> (args, kwargs)`) runs before the
        module's (or `target`'s) forward."""
        self.hooks.append(_Hook("pre", fn, with_kwargs, target))

    @property
    def weight(self) -> torch.Tensor | None:
        """The tensor whose device / dtype the delta's parameters should follow."""
        w = getattr(self.module, "weight", None)
        if isinstance(w, torch.Tensor):
            return w
        return next(self.module.parameters(), None)

    def factory_kwargs(self) -> dict[str, Any]:
        w = self.weight
        return {} if w is None else {"device": w.device, "dtype": w.dtype}

    # -- used by DeltaBase -------------------------------------------------------------------
    def activate(self, hooks: bool = True) -> None:
        for attr, layer in self.layers.items():
            if attr in self.module._modules or hasattr(self.module, attr):
                raise DeltaStateError(
                    f"Module {self.name!r} already has an attribute {attr!r}; another delta of the same "
                    f"type is probably attached there. Detach it first.")
        for attr, layer in self.layers.items():
            self.module.add_module(attr, layer)
        if hooks:
            self.register_hooks()

    def register_hooks(self) -> None:
        for h in self.hooks:
            module = h.target if h.target is not None else self.module
            if h.kind == "forward":
                self.handles.append(module.register_forward_hook(h.fn))
            else:
                self.handles.append(module.register_forward_pre_hook(h.fn, with_kwargs=h.with_kwargs))

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def deactivate(self) -> None:
        self.remove_hooks()
        for attr, layer in self.layers.items():
            if self.module._modules.get(attr) is layer:
                del self.module._modules[attr]


def _delta_layer_prefixes(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if name and is_delta_layer(m)}


def _inside(name: str, prefixes: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in prefixes for i in range(1, len(parts)))


class DeltaBase:
    """A delta attached to a backbone model. Subclasses set `config_class` and implement `build_site`.

    Create one with `SomeDeltaModel(backbone, **config_kwargs)`, `SomeDeltaModel.from_config(config,
    backbone)`, or through `AutoDeltaModel`. The backbone is modified in place.
    """

    config_class: ClassVar[type[DeltaConfig]] = DeltaConfig
    delta_type: ClassVar[str] = ""
    #: module classes this delta can be put on (None: any module)
    supported_modules: ClassVar[tuple[type, ...] | None] = None
    #: whether `merge()` can fold the delta into the backbone weights
    mergeable: ClassVar[bool] = False
    #: runs `interactive_modify=True | PORT`: (backbone, config, port) -> config; installed by opendelta.picker
    _module_picker: ClassVar[Callable[..., DeltaConfig] | None] = None

    def __init__(self, backbone_model: nn.Module, config: DeltaConfig | None = None, **kwargs: Any) -> None:
        if not isinstance(backbone_model, nn.Module):
            raise TypeError(f"backbone_model must be a torch.nn.Module, got {type(backbone_model).__name__}.")
        interactive = kwargs.pop("interactive_modify", False)  # True or a port: pick the modules on a web page
        if config is None:
            config = self.config_class.from_dict(kwargs)
        else:
            if not isinstance(config, self.config_class):
                raise DeltaConfigError(
                    f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}.")
            if kwargs:
                config = config.replace(**kwargs)
        if interactive not in (False, None):
            if DeltaBase._module_picker is None:
                raise DeltaConfigError("interactive_modify needs the module picker: `import opendelta.picker` first.")
            config = DeltaBase._module_picker(backbone_model, config, interactive)
        self.config = config
        self.backbone_model = backbone_model
        self.sites: list[Site] = []
        self._attached = False
        self._merged = False
        self._state_dict_hook: RemovableHandle | None = None
        self._attach_new()

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DeltaConfig | dict, backbone_model: nn.Module, **kwargs: Any) -> "DeltaBase":
        """Attach a delta described by `config` to `backbone_model` (modified in place)."""
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(backbone_model, config=config, **kwargs)

    def resolve_targets(self) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs this delta modifies, from the config's module addresses."""
        from .structures import default_settings, find_targets

        if not self.config.modified_modules:  # the family's defaults (settings the user changed are kept)
            defaults, fresh = default_settings(self.backbone_model, self.delta_type), type(self.config)()
            keep = {k for k in defaults if k not in ("modified_modules", "common_structure")
                    and getattr(self.config, k) != getattr(fresh, k)}
            self.config = self.config.replace(**{k: v for k, v in defaults.items() if k not in keep})
        return find_targets(self.backbone_model, self.config.modified_modules, self.config.exclude_modules,
                            self.config.common_structure)

    def build_site(self, site: Site) -> None:
        """Put the delta on one module: `site.add_layer(...)` and `site.on_input / on_output(...)`."""
        raise NotImplementedError

    def build_model_sites(self) -> list[Site]:
        """Sites beyond the matched modules, built once after `build_site` ran on all of them (default: none).

        For deltas whose math reaches past one module: a layer shared by every site, or hooks that read the
        model's own forward arguments (attention mask, labels). `Site("", self.backbone_model)` is the
        backbone root; layers added to it get top-level state_dict keys (`attr.*`).
        """
        return []

    def check_module(self, name: str, module: nn.Module) -> None:
        """Raise UnsupportedModuleError if this delta cannot be put on `module`."""
        if self.supported_modules is not None and not isinstance(module, self.supported_modules):
            allowed = ", ".join(c.__name__ for c in self.supported_modules)
            raise UnsupportedModuleError(
                f"{self.delta_type!r} cannot modify {name!r} ({type(module).__name__}); it supports {allowed}. "
                f"Point `modified_modules` at such layers (e.g. the q / v projections inside attention).")

    def _attach_new(self) -> None:
        targets = self.resolve_targets()
        for name, module in targets:
            self.check_module(name, module)
        sites = []
        for name, module in targets:
            site = Site(name, module)
            self.build_site(site)
            sites.append(site)
        sites.extend(self.build_model_sites())
        self.sites = sites
        self._activate_all()
        logger.info("%s attached to %d module(s) of %s", self.delta_type, len(sites),
                    type(self.backbone_model).__name__)

    def _activate_all(self) -> None:
        done: list[Site] = []
        try:
            for site in self.sites:
                site.activate()
                done.append(site)
        except BaseException:
            for site in reversed(done):
                site.deactivate()
            raise
        self._attached = True

    # ----- attach / detach / merge ----------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def merged(self) -> bool:
        return self._merged

    @property
    def modified_module_names(self) -> list[str]:
        return [s.name for s in self.sites if s.name]

    def detach(self) -> None:
        """Take the delta off: the backbone computes exactly what it computed before attaching."""
        if not self._attached:
            raise DeltaStateError("The delta is already detached; call attach() to put it back.")
        if self._merged:
            self.unmerge()
        for site in self.sites:
            site.deactivate()
        self._attached = False

    def attach(self) -> None:
        """Put a detached delta back, with the parameters it had."""
        if self._attached:
            raise DeltaStateError("The delta is already attached.")
        self._activate_all()

    def merge(self) -> None:
        """Fold the delta into the backbone weights: inference then runs the plain backbone (no hooks)."""
        self._check_mergeable("merge")
        if self._merged:
            raise DeltaStateError("The delta is already merged.")
        with torch.no_grad():
            for site in self.sites:
                for layer in site.layers.values():
                    layer.merge_into(site.module)
                site.remove_hooks()
        self._merged = True

    def unmerge(self) -> None:
        """Undo `merge()` (exact up to floating-point rounding of the subtraction)."""
        self._check_mergeable("unmerge")
        if not self._merged:
            raise DeltaStateError("The delta is not merged.")
        with torch.no_grad():
            for site in self.sites:
                for layer in site.layers.values():
                    layer.unmerge_from(site.module)
                site.register_hooks()
        self._merged = False

    def merge_and_unload(self) -> nn.Module:
        """Merge the delta into the weights and remove its layers and hooks for good.

        The backbone becomes a plain model (no delta keys in its state_dict, loads without opendelta); this
        delta object is then empty. Returns the backbone.
        """
        self.merge()
        for site in self.sites:
            site.deactivate()
        if self._state_dict_hook is not None:
            self._state_dict_hook.remove()
            self._state_dict_hook = None
        self.sites = []
        self._attached = self._merged = False
        return self.backbone_model

    def _check_mergeable(self, what: str) -> None:
        if not self.mergeable:
            raise DeltaStateError(
                f"{self.delta_type!r} deltas cannot be merged into the backbone weights (they are not a "
                f"linear change of a weight); {what}() is available for 'lora' and 'ia3'.")
        if not self._attached:
            raise DeltaStateError(f"Cannot {what}() a detached delta; call attach() first.")

    # ----- parameters -----------------------------------------------------------------------
    def delta_modules(self) -> Iterable[tuple[str, nn.Module]]:
        for site in self.sites:
            for attr, layer in site.layers.items():
                yield (f"{site.name}.{attr}" if site.name else attr), layer

    def delta_parameters(self) -> Iterable[nn.Parameter]:
        for _, layer in self.delta_modules():
            yield from layer.parameters()

    def _unfrozen_param_names(self, patterns: Iterable[str]) -> list[str]:
        """Non-delta parameters addressed by `patterns` (module names or parameter names)."""
        patterns = [p for p in patterns if p != DELTAS_KEYWORD]
        if not patterns:
            return []
        prefixes = _delta_layer_prefixes(self.backbone_model)
        names = []
        for pname, _ in self.backbone_model.named_parameters():
            if _inside(pname, prefixes):
                continue
            if any(name_matches(pname, p) or _owned_by(pname, p) for p in patterns):
                names.append(pname)
        return names

    def freeze_module(self, module: nn.Module | None = None, exclude: list[str] | None = None,
                      set_state_dict: bool = True) -> None:
        """Freeze every parameter except the deltas and the modules named in `exclude`.

        `exclude` entries use the module addressing rules; "deltas" stands for every delta layer on the
        backbone. With `set_state_dict=True` the backbone's `state_dict()` then holds trainable tensors only.
        The names are remembered in `config.unfrozen_modules` and saved with the delta.
        """
        exclude = list(exclude) if exclude is not None else [DELTAS_KEYWORD]
        root = module if module is not None else self.backbone_model
        unfrozen = set(self._unfrozen_param_names(exclude))
        prefixes = _delta_layer_prefixes(self.backbone_model)
        prefix = ""
        if module is not None:
            found = [n for n, m in self.backbone_model.named_modules() if m is module]
            prefix = f"{found[0]}." if found and found[0] else ""
        keep_deltas = DELTAS_KEYWORD in exclude
        matched_any = False
        for name, p in root.named_parameters():
            full = prefix + name
            is_delta = _inside(full, prefixes)
            trainable = (keep_deltas and is_delta) or full in unfrozen
            matched_any |= full in unfrozen
            p.requires_grad_(trainable)
        other = [e for e in exclude if e != DELTAS_KEYWORD]
        if other and not matched_any:
            raise ModuleMatchError(f"freeze_module(exclude={exclude}): {other} match no parameter of the backbone.")
        self.config.unfrozen_modules = exclude
        if set_state_dict:
            self._set_trainable_state_dict()

    def _set_trainable_state_dict(self) -> None:
        if self._state_dict_hook is not None:
            self._state_dict_hook.remove()

        def only_trainable(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
            trainable = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
            for key in [k for k in state_dict if k.startswith(prefix) and k not in trainable]:
                del state_dict[key]

        self._state_dict_hook = self.backbone_model._register_state_dict_hook(only_trainable)

    def num_trainable_parameters(self, module: nn.Module | None = None) -> int:
        root = module if module is not None else self.backbone_model
        return sum(p.numel() for p in root.parameters() if p.requires_grad)

    def num_total_parameters(self, module: nn.Module | None = None) -> int:
        root = module if module is not None else self.backbone_model
        return sum(p.numel() for p in root.parameters())

    def num_delta_parameters(self) -> int:
        return sum(p.numel() for p in self.delta_parameters())

    def log(self) -> "ModelStats":
        """Log (at INFO level) and return parameter counts and ratios, parameter memory by dtype and peak
        accelerator memory; `stats["trainable"]`, `stats.delta_ratio`, ... (see `opendelta.inspect`)."""
        from .stats import inspect

        return inspect(self)

    # ----- state ----------------------------------------------------------------------------
    def _saved_tensors(self) -> dict[str, torch.Tensor]:
        """Name -> live tensor of everything `save_finetuned` stores: delta layers + unfrozen modules."""
        out: dict[str, torch.Tensor] = {}
        for prefix, layer in self.delta_modules():
            for k, v in layer.state_dict(keep_vars=True).items():
                out[f"{prefix}.{k}"] = v
        params = dict(self.backbone_model.named_parameters())
        for name in self._unfrozen_param_names(self.config.unfrozen_modules):
            out[name] = params[name]
        return out

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint of this delta holds (detached, keys relative to the backbone)."""
        return {k: v.detach() for k, v in self._saved_tensors().items()}

    def load_delta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` into the delta (and unfrozen modules). Missing or unexpected keys are an error."""
        if not self._attached:
            raise DeltaStateError("Attach the delta before loading weights into it.")
        targets = self._saved_tensors()
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise CheckpointError(_key_report(missing, unexpected))
        for k, src in state.items():
            if tuple(src.shape) != tuple(targets[k].shape):
                raise CheckpointError(f"Tensor {k!r} has shape {tuple(src.shape)} in the checkpoint but "
                                      f"{tuple(targets[k].shape)} in the model; was it saved with other settings?")
        with torch.no_grad():
            for k, src in state.items():
                dst = targets[k]
                if dst.dtype != src.dtype:
                    logger.info("casting %s from %s to %s", k, src.dtype, dst.dtype)
                dst.copy_(src.to(device=dst.device, dtype=dst.dtype))

    def fingerprint(self) -> Fingerprint:
        """Fingerprint of the whole model as it is now (backbone + deltas)."""
        return fingerprint_model(self.backbone_model)

    # ----- checkpoints ----------------------------------------------------------------------
    def _backbone_identity(self) -> dict[str, Any]:
        bb = self.backbone_model
        name = getattr(bb, "name_or_path", None) or getattr(getattr(bb, "config", None), "_name_or_path", None)
        return {"backbone_class": type(bb).__name__, "backbone_checkpoint_name": name or None}

    def save_finetuned(self, save_directory: str | os.PathLike, *, format: str = "opendelta",
                       push_to_hub: bool = False, repo_id: str | None = None, private: bool | None = None,
                       token: str | bool | None = None, commit_message: str | None = None,
                       card_data: dict[str, Any] | None = None, results: dict[str, Any] | None = None,
                       overwrite_card: bool = False) -> Path:
        """Save the delta into `save_directory`, atomically, with a model card; optionally push it to the Hub.

        format: "opendelta" writes config.json, delta_model.safetensors and fingerprint.json; "peft" writes a
            PEFT adapter (adapter_config.json + adapter_model.safetensors; LoRA only) that
            `PeftModel.from_pretrained` loads.
        Only the delta (and the modules left unfrozen by `freeze_module`) is written, whatever
        `set_state_dict` did. A README.md model card is written (Hub front matter with `card_data`, usage,
        parameter counts, `results`); a README.md already there that this library did not write is kept
        unless `overwrite_card=True`. push_to_hub: upload the folder to `repo_id` (default: the folder
        name, in your namespace), created if needed (`private`). Returns the folder.
        """
        if format not in ("opendelta", "peft"):
            raise ValueError(f"format must be 'opendelta' or 'peft', got {format!r}.")
        if not self._attached:
            raise DeltaStateError("Cannot save a detached delta; call attach() first.")
        if self._merged:
            raise DeltaStateError("Cannot save while merged (the backbone weights hold the delta); "
                                  "call unmerge() first.")
        from . import hub

        if push_to_hub:
            hub.validate_repo_id(repo_id or Path(save_directory).resolve().name, namespace_required=False)
        if format == "peft":
            config = self.config.replace(**self._backbone_identity())
            write_files = self._peft_writer(config)
        else:
            config, write_files = self._opendelta_writer()
        card = hub.model_card(self, config=config, repo_id=repo_id, format=format, card_data=card_data,
                              results=results)
        existing = Path(save_directory) / hub.CARD_NAME
        keep_card = existing.is_file() and not overwrite_card and not hub.is_generated_card(existing)
        if keep_card:
            logger.info("kept the README.md already in %s (not written by OpenDelta); pass overwrite_card=True "
                        "to replace it with a generated model card", save_directory)

        def write(tmp: Path) -> None:
            write_files(tmp)
            if not keep_card:
                (tmp / hub.CARD_NAME).write_text(card, encoding="utf-8")

        path = ckpt.write_checkpoint_dir(save_directory, write)
        if format == "opendelta":
            self.config = config
        logger.info("saved %s delta in %s format to %s", self.delta_type, format, path)
        if push_to_hub:
            hub.push_folder(path, repo_id or path.name, private=private, token=token, commit_message=commit_message)
        return path

    def _opendelta_writer(self) -> tuple[DeltaConfig, Callable[[Path], None]]:
        from . import __version__

        fp = self.fingerprint()
        config = self.config.replace(**self._backbone_identity(), backbone_hash=fp.root, hash_algorithm=fp.algorithm)
        meta = {"opendelta_version": __version__, "transformers_version": _transformers_version(),
                "torch_version": torch.__version__.split("+")[0], "format_version": 1}
        state = self.delta_state_dict()

        def write(tmp: Path) -> None:
            ckpt.save_weights(state, tmp / ckpt.WEIGHTS_NAME)
            (tmp / ckpt.FINGERPRINT_NAME).write_text(
                _json({"algorithm": fp.algorithm, "root": fp.root, "tensors": fp.tensors}), encoding="utf-8")
            (tmp / ckpt.CONFIG_NAME).write_text(_json({**config.to_dict(), **meta}), encoding="utf-8")

        return config, write

    def _peft_writer(self, config: DeltaConfig) -> Callable[[Path], None]:
        from .formats import peft

        adapter_config, state = peft.export(self, config)
        return lambda tmp: peft.write(tmp, adapter_config, state)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    commit_message: str | None = None, format: str = "opendelta",
                    card_data: dict[str, Any] | None = None, results: dict[str, Any] | None = None,
                    revision: str | None = None, create_pr: bool = False) -> Any:
        """Save the delta (with a freshly generated model card) and upload it to the Hub repo `repo_id`.

        The repo is created if needed. To publish a hand-written README.md, put it in a folder, call
        `save_finetuned(folder, push_to_hub=True, repo_id=...)` instead. Returns huggingface_hub's CommitInfo.
        """
        import tempfile

        from . import hub

        hub.validate_repo_id(repo_id, namespace_required=False)
        with tempfile.TemporaryDirectory(prefix="opendelta-push-") as tmp:
            folder = self.save_finetuned(Path(tmp) / repo_id.split("/")[-1], format=format, repo_id=repo_id,
                                         card_data=card_data, results=results)
            return hub.push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message,
                                   revision=revision, create_pr=create_pr)

    @classmethod
    def from_finetuned(cls, finetuned_delta_path: str | os.PathLike, backbone_model: nn.Module,
                       check_hash: bool = True, **kwargs: Any) -> "DeltaBase":
        """Attach a saved delta to `backbone_model`, load its weights and verify the model fingerprint.

        finetuned_delta_path: a checkpoint folder (ours, OpenDelta 0.3, or a PEFT adapter) or a Hub repo id
            `Org/name`, fetched through the Hugging Face cache (`HF_HUB_OFFLINE=1` is honoured).
        kwargs: the Hub options `revision`, `cache_dir`, `force_download`, `local_files_only`, `token`;
            any other keyword overrides a config key.
        On any failure (bad checkpoint, key mismatch, hash mismatch) the backbone is left as it was.
        """
        from .formats import open_checkpoint
        from .hub import split_hub_options

        options, overrides = split_hub_options(kwargs)
        return cls._from_checkpoint(open_checkpoint(finetuned_delta_path, options), backbone_model, check_hash,
                                    overrides)

    @classmethod
    def _from_checkpoint(cls, checkpoint: Any, backbone_model: nn.Module, check_hash: bool,
                         overrides: dict[str, Any]) -> "DeltaBase":
        from .formats import PEFT

        if cls.delta_type and checkpoint.delta_type != cls.delta_type:
            raise CheckpointError(f"{checkpoint.source} holds a {checkpoint.delta_type!r} delta, not "
                                  f"{cls.delta_type!r}; load it with AutoDeltaModel.from_finetuned.")
        config = cls.config_class.from_dict(checkpoint.config_for(backbone_model), **overrides)
        state = checkpoint.load_weights()
        delta = cls.from_config(config, backbone_model)
        params = dict(backbone_model.named_parameters())
        backup = {k: params[k].detach().clone() for k in state if k in params}
        try:
            delta.load_delta_state_dict(state)
            if not check_hash:
                logger.info("hash check skipped (check_hash=False)")
            elif checkpoint.format == PEFT:
                logger.info("%s is a PEFT adapter: it stores no model fingerprint to verify", checkpoint.source)
            else:
                delta._verify_hash(checkpoint.fingerprint())
        except BaseException:
            with torch.no_grad():
                for k, v in backup.items():
                    params[k].copy_(v)
            delta.detach()
            raise
        logger.info("loaded a %s delta from %s (%s format)", delta.delta_type, checkpoint.source, checkpoint.format)
        return delta

    def _verify_hash(self, saved: dict[str, Any] | None) -> None:
        expected = self.config.backbone_hash
        if expected is None:
            logger.warning("This checkpoint stores no model fingerprint; it cannot be verified.")
            return
        if self.config.hash_algorithm is None:
            logger.warning("This is an OpenDelta 0.3 checkpoint: its backbone_hash (%s) is an md5 this version "
                           "cannot recompute, so the backbone cannot be verified. Make sure it is %s (%s); "
                           "save_finetuned() again to store a verifiable fingerprint, or pass check_hash=False "
                           "to silence this.", expected, self.config.backbone_checkpoint_name or "the same model",
                           self.config.backbone_class or "same class")
            return
        if self.config.hash_algorithm != ALGORITHM:
            logger.warning("This checkpoint's fingerprint (%s) was made by another method (%s) and cannot be "
                           "verified by this version; pass check_hash=False to silence this.",
                           expected, self.config.hash_algorithm)
            return
        now = self.fingerprint()
        if now.root == expected:
            logger.info("hash check passed (%s)", expected)
            return
        detail = "no per-tensor record was saved"
        if saved and saved.get("root") == expected:
            detail = Fingerprint(root=expected, tensors=saved.get("tensors", {})).diff(now)
        raise HashMismatchError(
            f"The model after loading does not match the one the delta was trained with: {detail}. "
            f"Check that the backbone ({self.config.backbone_class}, {self.config.backbone_checkpoint_name}) "
            f"is the same checkpoint, dtype and version; pass check_hash=False to load anyway.")

    def __repr__(self) -> str:
        state = "merged" if self._merged else ("attached" if self._attached else "detached")
        return (f"{type(self).__name__}({state}, {len(self.sites)} module(s), "
                f"{self.num_delta_parameters()} delta parameters, config={self.config!r})")


def _owned_by(param_name: str, pattern: str) -> bool:
    """Whether `param_name` lies under a module addressed by `pattern` at any depth."""
    parts = param_name.split(".")
    return any(name_matches(".".join(parts[:i]), pattern) for i in range(1, len(parts)))


def _key_report(missing: list[str], unexpected: list[str]) -> str:
    lines = ["The checkpoint does not fit this delta:"]
    if missing:
        lines.append(f"  {len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    lines.append("  Was it saved from another backbone or with other `modified_modules`?")
    return "\n".join(lines)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2) + "\n"


def _transformers_version() -> str | None:
    try:
        import transformers

        return transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
