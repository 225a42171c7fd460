"""DeltaBase: a delta attached to a backbone in place; attach / detach / freeze / merge and its parameters.

A delta type (see `deltas/`) describes what to put on one modified module through a `Site` (`site.py`, the
only place that touches hooks): child layers (so their parameters get keys such as
`...SelfAttention.q.lora.lora_A`) and hooks that route the module's input / output through them. The
backbone keeps its classes, forward signatures and the state_dict keys of its own weights. Saving, loading
and publishing are implemented in `persistence` / `publishing` and reached through short methods here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ._logging import logger
from .checkpoint_api import CheckpointMethods
from .compat import (
    Legacy03Mixin,
    check_init_keywords,
    positional_settings,
    reject_module_argument,
    warn_unmatched_exclude,
)
from .config import DeltaConfig
from .copyplan import CopyPlan, build_copy_plan, copy_state
from .dispatch import claim_name, invalidate_compiled, release_name
from .errors import DeltaConfigError, DeltaStateError, LegacyAPIError, UnsupportedModuleError, class_path
from .fingerprint import Fingerprint, backbone_tensors, fingerprint_model, fingerprint_tensors
from .guard import BackboneGuard
from .interop import LegacyMapping, PeftMapping
from .matching import delta_layer_prefixes, inside_any, is_delta_layer, parameters_under
from .providers import provider
from .registry import registered_delta_classes
from .site import HALF_TO_FLOAT32, Site
from .stats import count_parameters
from .structures import default_settings, find_targets

DELTAS_KEYWORD = "deltas"
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class DeltaBase(CheckpointMethods, Legacy03Mixin):
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
    #: where the delta goes when the config names no modules: family name (or "*" for any family) -> common
    #: names, or a dict of config values (see `structures.default_settings`)
    default_modules: ClassVar[Mapping[str, list[str] | dict[str, Any]]] = {}
    #: AdamW learning rate the `opendelta train` app uses for this type (chosen on a validation split)
    default_learning_rate: ClassVar[float] = 1e-3
    #: config values the `opendelta train` app uses when the type is given by name only
    app_settings: ClassVar[Mapping[str, Any]] = {}
    #: the PEFT adapter type this delta reads and writes (None: no PEFT counterpart)
    peft: ClassVar[PeftMapping | None] = None
    #: how OpenDelta 0.3 stored this type, where it differs
    legacy: ClassVar[LegacyMapping] = LegacyMapping()

    def __init__(
        self,
        backbone_model: nn.Module,
        *args: Any,
        config: DeltaConfig | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(backbone_model, nn.Module):
            raise TypeError(f"backbone_model must be a torch.nn.Module, got {type(backbone_model).__name__}.")
        if args and isinstance(args[0], DeltaConfig) and config is None:  # `Model(backbone, config)`
            config, args = args[0], args[1:]
        kwargs = positional_settings(type(self), args, kwargs)  # OpenDelta 0.3's `LoraModel(model, 8, 16, ...)`
        interactive = kwargs.pop("interactive_modify", False)  # True or a port: pick the modules on a web page
        kwargs = check_init_keywords(kwargs)  # OpenDelta 0.3's backend / unfrozen_modules=None
        if config is None:
            config = self.config_class.from_dict(kwargs, strict=True)
        else:
            if not isinstance(config, self.config_class):
                raise DeltaConfigError(
                    f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
                )
            if kwargs:
                config = config.replace(**kwargs)
        if interactive not in (False, None):
            config = provider("pick_modules")(backbone_model, config, interactive)  # opendelta.picker
        self.config = config
        self.backbone_model = backbone_model
        self.sites: list[Site] = []
        self._attached = False
        self._merged = False
        self._guard: BackboneGuard | None = None  # state_dict filter + save_pretrained route (guard.py)
        self._active = True
        self.loaded_from: str | None = None  # set by from_finetuned: which checkpoint this delta holds
        #: the delta's name on its backbone (`name=`, else its type: "lora", then "lora_1", "lora_2", ...)
        self.name = claim_name(backbone_model, self, name, self.delta_type)
        try:
            self._attach_new()
        except BaseException:
            release_name(backbone_model, self.name)
            raise

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DeltaConfig | dict, backbone_model: nn.Module, **kwargs: Any) -> DeltaBase:
        """Attach a delta described by `config` to `backbone_model` (modified in place). `name=` names it on
        the backbone (default: its type, then `<type>_1`, `<type>_2`, ...); other keywords override the config."""
        if isinstance(config, dict):
            config = cls.config_class.from_dict(config)
        return cls(backbone_model, config=config, **kwargs)

    def resolve_targets(self) -> list[tuple[str, nn.Module]]:
        """The (name, module) pairs this delta modifies, from the config's module addresses."""
        if self.config.modified_modules == []:  # nothing, as in OpenDelta 0.3 (None means the defaults)
            logger.warning("%s: modified_modules=[] modifies no module (pass None for the defaults)", self.delta_type)
            return []
        if self.config.modified_modules is None:  # the family's defaults (settings the user changed are kept)
            defaults = default_settings(self.backbone_model, self.delta_type, self.default_modules)
            fresh = type(self.config)()
            keep = {
                k
                for k in defaults
                if k not in ("modified_modules", "common_structure") and getattr(self.config, k) != getattr(fresh, k)
            }
            self.config = self.config.replace(**{k: v for k, v in defaults.items() if k not in keep})
        return find_targets(
            self.backbone_model, self.config.modified_modules, self.config.exclude_modules, self.config.common_structure
        )

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
        if isinstance(module, _CONTAINERS):
            # a Sequential runs every child (a delta layer would run as an extra step besides its hook); a
            # ModuleList / ModuleDict is indexed and iterated by its owner (a new child breaks that code)
            inside = [n for n, _ in module.named_children()][:3]
            raise UnsupportedModuleError(
                f"{self.delta_type!r} cannot modify {name!r}: it is a {class_path(module)}, a container whose "
                f"children its owner runs in turn, so a delta layer cannot be added to it. Point "
                f"`modified_modules` at a module inside it (e.g. {', '.join(f'{name}.{c}' for c in inside)}) or at "
                f"the module that owns it."
            )
        if not self.supports_module(module):
            allowed = ", ".join(c.__name__ for c in self.supported_modules or ())
            raise UnsupportedModuleError(
                f"{self.delta_type!r} cannot modify {name!r} ({class_path(module)}); it supports {allowed}"
                f"{self.supported_also}. Point `modified_modules` at such layers (e.g. the q / v projections inside "
                f"attention)."
            )

    #: what else `supports_module` accepts, in words (appended to the list of `supported_modules` in errors)
    supported_also: ClassVar[str] = ""

    def supports_module(self, module: nn.Module) -> bool:
        """Whether this delta type can be put on `module` (default: an instance of `supported_modules`)."""
        return self.supported_modules is None or isinstance(module, self.supported_modules)

    def merge_problem(self, site: Site) -> str | None:
        """Why this delta cannot be merged into `site.module` (None: it can); `merge()` checks every site first."""
        return None

    def _attach_new(self) -> None:
        targets = self.resolve_targets()
        for name, module in targets:
            self.check_module(name, module)
        sites = []
        policy = HALF_TO_FLOAT32.set(self.config.delta_dtype == "float32")
        try:
            for name, module in targets:
                site = Site(name, module)
                self.build_site(site)
                sites.append(site)
            sites.extend(self.build_model_sites())
        finally:
            HALF_TO_FLOAT32.reset(policy)
        for site in sites:
            site.owner = self
        self.sites = sites
        self._activate_all()
        logger.info(
            "%s attached to %d module(s) of %s", self.delta_type, len(sites), type(self.backbone_model).__name__
        )

    def _activate_all(self) -> None:
        """Register the layers (as `lora`, or `lora_1`, ... when another delta of the type is there) and hooks."""
        k = 0
        while not all(site.attrs_free(f"_{k}" if k else "") for site in self.sites):
            k += 1
        suffix = f"_{k}" if k else ""
        done: list[Site] = []
        changed = False
        try:
            for site in self.sites:
                changed |= site.activate(suffix=suffix)
                done.append(site)
        except BaseException:
            for site in reversed(done):
                changed |= site.deactivate()
            raise
        finally:
            if changed:
                invalidate_compiled()
        self._attached = True
        if not self._active:
            for site in self.sites:
                site.set_on(False)

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

    def detach(self, module: nn.Module | None = None, reset_state_dict: bool = True) -> None:
        """Take the delta off: the backbone computes exactly what it computed before attaching, and its
        `state_dict()` is complete again (`reset_state_dict`, 0.3's keyword, cannot be False)."""
        reject_module_argument("detach", module)
        if not reset_state_dict:
            raise LegacyAPIError(
                "detach(reset_state_dict=False) is not supported: a detached delta always leaves the backbone's "
                "state_dict complete; call freeze_module() again after attach() to filter it"
            )
        if not self._attached:
            raise DeltaStateError("The delta is already detached; call attach() to put it back.")
        if self._merged:
            self.unmerge()
        changed = False
        for site in self.sites:
            changed |= site.deactivate()
        self._remove_guard()  # the state_dict filter goes with the delta
        self._attached = False
        if changed:
            invalidate_compiled()

    def attach(self, module: nn.Module | None = None, reset_state_dict: bool = True) -> None:
        """Put a detached delta back, with the parameters it had. (`reset_state_dict` is 0.3's keyword; as there,
        call `freeze_module()` to make the backbone's state_dict hold trainable tensors only.)"""
        reject_module_argument("attach", module)
        if self._attached:
            raise DeltaStateError("The delta is already attached; call detach() first to take it off.")
        self._activate_all()

    @property
    def active(self) -> bool:
        """Whether the delta acts in the forward pass (an attached delta can be switched off, see `set_active`)."""
        return self._active

    def set_active(self, active: bool = True) -> None:
        """Switch the delta on or off without detaching it: its layers stay (and stay in `state_dict`), its hooks
        stay registered and read this flag, so a compiled model follows without dropping its code.
        `opendelta.activate(model, names)` switches several deltas of a backbone at once."""
        if self._merged and not active:
            raise DeltaStateError(f"Delta {self.name!r} is merged into the weights; unmerge() it to switch it off.")
        self._active = bool(active)
        if self._attached and not self._merged:
            for site in self.sites:
                site.set_on(self._active)

    def merge(self) -> None:
        """Fold the delta into the backbone weights: inference then runs the plain backbone (no hooks)."""
        self._check_mergeable("merge")
        if self._merged:
            raise DeltaStateError("The delta is already merged; call unmerge() first to merge it again.")
        if not self._active:
            raise DeltaStateError(f"Delta {self.name!r} is switched off; set_active(True) before merging it.")
        problems = [(site.name, p) for site in self.sites if (p := self.merge_problem(site)) is not None]
        if problems:
            name, why = problems[0]
            raise DeltaStateError(
                f"Cannot merge {self.delta_type!r} into {name!r}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                + f": {why}. Nothing was changed; keep the delta unmerged (it computes "
                f"the same outputs)."
            )
        changed = False
        with torch.no_grad():
            for site in self.sites:
                for layer in site.layers.values():
                    layer.merge_into(site.module)
                changed |= site.remove_hooks()
        self._remove_guard()  # the weights now hold the delta: state_dict / save_pretrained save them all
        self._merged = True
        if changed:
            invalidate_compiled()

    def unmerge(self) -> None:
        """Undo `merge()` (exact up to floating-point rounding of the subtraction)."""
        self._check_mergeable("unmerge")
        if not self._merged:
            raise DeltaStateError("The delta is not merged; call merge() first.")
        changed = False
        with torch.no_grad():
            for site in self.sites:
                for layer in site.layers.values():
                    layer.unmerge_from(site.module)
                changed |= site.register_hooks()
        self._merged = False
        if changed:
            invalidate_compiled()

    def merge_and_unload(self) -> nn.Module:
        """Merge the delta into the weights and remove its layers and hooks for good.

        The backbone becomes a plain model (no delta keys in its state_dict, loads without opendelta); this
        delta object is then empty. Returns the backbone.
        """
        self.merge()
        for site in self.sites:
            site.deactivate()
            site.forget()
        self._remove_guard()
        self.sites = []
        self._attached = self._merged = False
        release_name(self.backbone_model, self.name)
        return self.backbone_model

    def release(self) -> None:
        """Take the delta off for good (detached if attached): its hooks and name leave the backbone, and a
        delta of the same name or checkpoint can be attached again. The object cannot be re-attached."""
        if self._attached:
            self.detach()
        changed = False
        for site in self.sites:
            changed |= site.remove_hooks()
            site.forget()
        if changed:
            invalidate_compiled()
        self._remove_guard()
        self.sites = []
        release_name(self.backbone_model, self.name)

    def _check_mergeable(self, what: str) -> None:
        if not self.mergeable:
            mergeable = ", ".join(repr(c.delta_type) for c in registered_delta_classes() if c.mergeable)
            raise DeltaStateError(
                f"{self.delta_type!r} deltas cannot be merged into the backbone weights (they are not a "
                f"linear change of a weight); {what}() is available for {mergeable}. Keep this delta unmerged."
            )
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
        return parameters_under(self.backbone_model, [p for p in patterns if p != DELTAS_KEYWORD])

    def freeze_module(
        self, module: nn.Module | None = None, exclude: list[str] | None = None, set_state_dict: bool = True
    ) -> None:
        """Freeze every parameter except the deltas and the modules named in `exclude`.

        `exclude` entries use the module addressing rules; "deltas" stands for every delta layer on the
        backbone. Default: `config.unfrozen_modules` (["deltas"] unless the config says more); an entry
        that matches nothing is ignored with a warning naming the closest modules. With `set_state_dict=True`
        the backbone's `state_dict()` then holds trainable tensors only (until `detach()`, `merge()` or
        `freeze_module(set_state_dict=False)`), and `save_pretrained` writes the complete model plus the
        delta's files instead of that filtered state (see `guard.py`). The names are remembered in
        `config.unfrozen_modules` and saved with the delta.
        """
        exclude = list(exclude) if exclude is not None else list(self.config.unfrozen_modules)
        root = module if module is not None else self.backbone_model
        unfrozen = set(self._unfrozen_param_names(exclude))
        prefixes = delta_layer_prefixes(self.backbone_model)
        prefix = ""
        if module is not None:
            found = [n for n, m in self.backbone_model.named_modules() if m is module]
            prefix = f"{found[0]}." if found and found[0] else ""
        keep_deltas = DELTAS_KEYWORD in exclude
        for name, p in root.named_parameters():
            full = prefix + name
            is_delta = inside_any(full, prefixes)
            trainable = (keep_deltas and is_delta) or full in unfrozen
            p.requires_grad_(trainable)
        unmatched = [e for e in exclude if e != DELTAS_KEYWORD and not self._unfrozen_param_names([e])]
        if unmatched:
            warn_unmatched_exclude(self.backbone_model, unmatched)
        self.config.unfrozen_modules = [e for e in exclude if e not in unmatched]
        self._set_trainable_state_dict(set_state_dict)

    def _set_trainable_state_dict(self, on: bool = True) -> None:
        mode = self._guard.save_mode if self._guard is not None else "model"
        self._remove_guard()
        if on or mode != "model":  # "delta" mode (OpenDeltaCallback) keeps routing save_pretrained
            self._guard = BackboneGuard(self, filter_state_dict=on, save_mode=mode)

    def set_save_mode(self, mode: str) -> None:
        """What `backbone.save_pretrained(dir)` writes while this delta is attached: "model" (the complete model
        plus the delta's files; what `freeze_module(set_state_dict=True)` sets) or "delta" (a delta checkpoint
        folder, plus the trainable tensors as `model.safetensors` for a Trainer's resume; what
        `OpenDeltaCallback` sets). Removed on `detach()` / `merge()`."""
        if not self._attached or self._merged:
            raise DeltaStateError("set_save_mode needs an attached, unmerged delta.")
        on = self._guard.filter_state_dict if self._guard is not None else False
        self._remove_guard()
        self._guard = BackboneGuard(self, filter_state_dict=on, save_mode=mode)

    def _remove_guard(self) -> None:
        if self._guard is not None:
            self._guard.remove()
            self._guard = None

    def num_trainable_parameters(self, module: nn.Module | None = None) -> int:
        """Trainable parameters of `module`; without one, of the delta itself (OpenDelta 0.3's meaning)."""
        if module is None:
            return sum(p.numel() for p in self.delta_parameters() if p.requires_grad)
        return count_parameters(module, trainable_only=True)

    def num_total_parameters(self, module: nn.Module | None = None) -> int:
        """Parameters of `module`; without one, of the delta itself (OpenDelta 0.3's meaning)."""
        return self.num_delta_parameters() if module is None else count_parameters(module)

    def num_delta_parameters(self) -> int:
        return sum(p.numel() for p in self.delta_parameters())

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

    def _copy_plan(self) -> CopyPlan:
        """Where every saved tensor lives; cached until the settings change or a tensor is replaced."""
        state = (tuple(self.config.unfrozen_modules or ()), self._attached, tuple(map(id, self.sites)))
        cached: CopyPlan | None = self.__dict__.get("_plan")
        if cached is None or cached.state != state or not cached.valid():
            unfrozen = self._unfrozen_param_names(self.config.unfrozen_modules)
            cached = build_copy_plan(state, self.delta_modules(), unfrozen, self.backbone_model, self._saved_tensors)
            self.__dict__["_plan"] = cached
        return cached

    def load_delta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` into the delta (and unfrozen modules). Missing or unexpected keys are an error."""
        if not self._attached:
            raise DeltaStateError("Attach the delta before loading weights into it.")
        copy_state(self._copy_plan(), state)

    def fingerprint(self) -> Fingerprint:
        """Fingerprint of the backbone's own tensors (parameters and persistent buffers, no delta layer) and of
        this delta's saved tensors, as they are now. Another delta's layers never enter it, so deltas saved
        separately reload in any order with the check on. Digests of unchanged tensors are reused."""
        own = {k: v for k, v in self._saved_tensors().items()}
        return fingerprint_tensors({**backbone_tensors(self.backbone_model, skip=is_delta_layer), **own})

    def model_fingerprint(self) -> Fingerprint:
        """The fingerprint of every parameter of the model, deltas included ("xxh3-128-tensors-v1", the scheme
        of older checkpoints)."""
        return fingerprint_model(self.backbone_model)

    def __repr__(self) -> str:
        state = "merged" if self._merged else ("attached" if self._attached else "detached")
        if self._attached and not self._active:
            state += ", inactive"
        return (
            f"{type(self).__name__}({self.name!r}, {state}, {len(self.sites)} module(s), "
            f"{self.num_delta_parameters()} delta parameters, config={self.config!r})"
        )
