"""Site: one modified module and everything a delta put on it (child layers, hooks). With `dispatch.py` (the
one hook per module that runs every delta's entry there), the only code that registers or removes hooks on
the backbone."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .dispatch import Entry, MixedFn, dispatcher, drop_entries
from .errors import DeltaStateError
from .matching import DELTA_MARKER

#: Delta parameters on a float16 / bfloat16 module are created in float32 (True, the default) or in the module's
#: dtype (False). `DeltaBase` sets it from `config.delta_dtype` while it builds a delta.
HALF_TO_FLOAT32: ContextVar[bool] = ContextVar("opendelta_half_to_float32", default=True)
_HALF = (torch.float16, torch.bfloat16)


def _float_tensors(values: Any) -> list[torch.Tensor]:
    return [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


@dataclass
class _Hook:
    kind: str  # "forward" (module, args, output) or "pre" (module, args[, kwargs])
    fn: Callable[..., Any]
    with_kwargs: bool = False
    target: nn.Module | None = None  # the module hooked (None: the site's module)
    mixed: MixedFn | None = None  # computes this hook for a mixed batch (see dispatch.py)


@dataclass
class Site:
    """One modified module and everything a delta put on it."""

    name: str
    module: nn.Module
    layers: dict[str, nn.Module] = field(default_factory=dict)
    hooks: list[_Hook] = field(default_factory=list)
    #: the entries of this site that are in effect (hooked: attached and not merged)
    handles: list[Entry] = field(default_factory=list)
    #: layer attribute (as in checkpoints) -> the attribute it has on the module now ("lora" or "lora_1", ...)
    attr_names: dict[str, str] = field(default_factory=dict)
    entries: list[tuple[nn.Module, str, Entry]] = field(default_factory=list)
    owner: Any = None
    #: dtype casts on the delta's own layers (float32 layers on a half-precision module)
    cast_handles: list[Any] = field(default_factory=list)

    # -- used by delta types while building ------------------------------------------------
    def add_layer(self, attr: str, layer: nn.Module) -> nn.Module:
        """Register `layer` as the child `attr` of the modified module (done when the delta activates)."""
        setattr(layer, DELTA_MARKER, True)
        self.layers[attr] = layer
        return layer

    def on_output(
        self, fn: Callable[[nn.Module, tuple, Any], Any], target: nn.Module | None = None, mixed: MixedFn | None = None
    ) -> None:
        """`fn(module, args, output) -> new output` runs after the module's (or `target`'s) forward.
        `mixed(entries, index, module, args, output)`: the same for a mixed batch (see dispatch.py)."""
        self.hooks.append(_Hook("forward", fn, target=target, mixed=mixed))

    def on_input(
        self,
        fn: Callable[..., Any],
        with_kwargs: bool = False,
        target: nn.Module | None = None,
        mixed: MixedFn | None = None,
    ) -> None:
        """`fn(module, args) -> new args` (or `fn(module, args, kwargs) -> (args, kwargs)`) runs before the
        module's (or `target`'s) forward. `mixed(entries, index, module, args, kwargs) -> (args, kwargs)`."""
        self.hooks.append(_Hook("pre", fn, with_kwargs, target, mixed))

    @property
    def weight(self) -> torch.Tensor | None:
        """The tensor whose device / dtype the delta's parameters should follow."""
        w = getattr(self.module, "weight", None)
        if isinstance(w, torch.Tensor):
            return w
        return next(self.module.parameters(), None)

    def factory_kwargs(self) -> dict[str, Any]:
        """device / dtype for a new delta layer: the module's, but float32 on a half-precision module (unless the
        config's `delta_dtype` is "backbone"); the forward then casts (see `register_hooks`)."""
        w = self.weight
        if w is None:
            return {}
        dtype = torch.float32 if w.dtype in _HALF and HALF_TO_FLOAT32.get() else w.dtype
        return {"device": w.device, "dtype": dtype}

    # -- used by DeltaBase -------------------------------------------------------------------
    def layer_attr(self, attr: str) -> str:
        """The attribute the layer `attr` has on the module now (`attr` itself for the first delta of a type)."""
        return self.attr_names.get(attr, attr)

    def attrs_free(self, suffix: str) -> bool:
        return not any(self._taken(attr + suffix) for attr in self.layers)

    def _taken(self, attr: str) -> bool:
        return attr in self.module._modules or hasattr(self.module, attr)

    def activate(self, hooks: bool = True, suffix: str = "") -> bool:
        """Register the layers as children (`attr + suffix`) and, with `hooks`, make the entries act.
        Returns whether a hook was registered (see `set_live`)."""
        for attr in self.layers:
            if self._taken(attr + suffix):
                raise DeltaStateError(
                    f"Module {self.name!r} already has an attribute {attr + suffix!r}; detach what is there first."
                )
        for attr, layer in self.layers.items():
            self.module.add_module(attr + suffix, layer)
            self.attr_names[attr] = attr + suffix
        return self.set_live(hooks, hooks)

    def _ensure_entries(self) -> None:
        if self.entries or not self.hooks:
            return
        layer = next(iter(self.layers.values()), None)
        for h in self.hooks:
            module = h.target if h.target is not None else self.module
            entry = Entry(h.fn, self.owner, layer, h.kind == "forward" or h.with_kwargs, h.mixed)
            dispatcher(module, h.kind).entries.append(entry)
            self.entries.append((module, h.kind, entry))
        self._register_casts()

    def _register_casts(self) -> None:
        """A layer whose parameters have another dtype than the module's weight (float32 deltas on a half-precision
        backbone) gets its floating inputs cast to its own dtype, and its output cast back to the weight's dtype,
        when it is called with floating tensors (layers called without, e.g. prefixes, cast themselves). These
        hooks sit on the delta's own layers (not the backbone) for the layers' lifetime."""
        w = self.weight
        for layer in self.layers.values():
            own = next((p.dtype for p in layer.parameters() if p.is_floating_point()), None)
            if w is None or own is None or own == w.dtype:
                continue

            def cast_in(module: nn.Module, args: tuple, kwargs: dict, own: torch.dtype = own) -> tuple[tuple, dict]:
                return _cast(args, own), {k: _cast(v, own) for k, v in kwargs.items()}

            def cast_out(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
                if not _float_tensors((*args, *kwargs.values())):
                    return output
                return _cast(output, self.weight.dtype)

            self.cast_handles.append(layer.register_forward_pre_hook(cast_in, with_kwargs=True))
            self.cast_handles.append(layer.register_forward_hook(cast_out, with_kwargs=True))

    def set_live(self, live: bool, on: bool) -> bool:
        """Set this site's entries: `live` keeps the module's hook registered, `on` makes them act. Returns
        whether a hook was registered or removed (compiled code must then be dropped)."""
        self._ensure_entries()
        changed = False
        for _, _, entry in self.entries:
            entry.live, entry.on = live, on and live
        for module, kind, _ in self.entries:
            changed |= dispatcher(module, kind).refresh()
        self.handles = [e for _, _, e in self.entries if e.live]
        return changed

    def set_on(self, on: bool) -> None:
        """Make the live entries act or not (the hooks stay; a compiled model's guard sees the flag)."""
        for _, _, entry in self.entries:
            entry.on = on and entry.live

    def forget(self) -> None:
        """Remove this site's entries for good (the delta is unloaded)."""
        for module in {id(m): m for m, _, _ in self.entries}.values():
            drop_entries(module, [e for m, _, e in self.entries if m is module])
        self.entries = []
        self.handles = []
        for handle in self.cast_handles:
            handle.remove()
        self.cast_handles = []

    def register_hooks(self) -> bool:
        return self.set_live(True, True)

    def remove_hooks(self) -> bool:
        return self.set_live(False, False)

    def deactivate(self) -> bool:
        changed = self.remove_hooks()
        for attr, layer in self.layers.items():
            actual = self.layer_attr(attr)
            if self.module._modules.get(actual) is layer:
                del self.module._modules[actual]
        return changed
