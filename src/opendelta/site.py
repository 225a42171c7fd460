"""Site: one modified module and everything a delta put on it (child layers, hooks). The only place that
registers or removes hooks on the backbone."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

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
        """device / dtype for a new delta layer: the module's, but float32 on a half-precision module (unless the
        config's `delta_dtype` is "backbone"); the forward then casts (see `register_hooks`)."""
        w = self.weight
        if w is None:
            return {}
        dtype = torch.float32 if w.dtype in _HALF and HALF_TO_FLOAT32.get() else w.dtype
        return {"device": w.device, "dtype": dtype}

    # -- used by DeltaBase -------------------------------------------------------------------
    def activate(self, hooks: bool = True) -> None:
        for attr in self.layers:
            if attr in self.module._modules or hasattr(self.module, attr):
                raise DeltaStateError(
                    f"Module {self.name!r} already has an attribute {attr!r}; another delta of the same "
                    f"type is probably attached there. Detach it first."
                )
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
        self._register_casts()

    def _register_casts(self) -> None:
        """A layer whose parameters have another dtype than the module's weight (float32 deltas on a half-precision
        backbone) gets its floating inputs cast to its own dtype, and its output cast back to the weight's dtype,
        when it is called with floating tensors (layers called without, e.g. prefixes, cast themselves)."""
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

            self.handles.append(layer.register_forward_pre_hook(cast_in, with_kwargs=True))
            self.handles.append(layer.register_forward_hook(cast_out, with_kwargs=True))

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def deactivate(self) -> None:
        self.remove_hooks()
        for attr, layer in self.layers.items():
            if self.module._modules.get(attr) is layer:
                del self.module._modules[attr]
