"""Per-module dispatchers: the one hook OpenDelta registers on a module, whatever number of deltas act there.

Every delta on a module is an `Entry` of that module's `Dispatcher` (one for its forward hooks, one for its
forward pre-hooks). The dispatcher applies the entries in attach order; an entry acts when its plain Python
flag `on` is true. Switching deltas (activate / deactivate) flips these flags: a `torch.compile`d model
guards on them (dynamo reads them while tracing the hook), so it recompiles by itself, or reuses the graph
it compiled for that state before, and never returns stale outputs.

The hook itself is registered while at least one entry is `live` (attached and not merged) and removed when
none is. Dynamo does not guard on hooks added or removed after compilation (`skip_nnmodule_hook_guards`),
so each such change drops the code caches of compiled functions (`invalidate_compiled`): the next call
recompiles. Switching and loading weights in place never do that.

Mixed batches: while `plan` is set (see `switching.mixed_batch`), a forward gives example `i` only the
delta routed to it; entries of one type are computed together by that type's `mixed` function (batched
matrix products over the deltas present, not a loop over them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import DeltaConfigError

_ATTR = "_opendelta_dispatchers"
_DELTAS_ATTR = "_opendelta_deltas"

#: mixed(entries, index, module, args, output_or_kwargs) -> new output / (args, kwargs)
MixedFn = Callable[..., Any]


class Entry:
    """One delta's hook on one module. `on`: it acts now; `live`: it needs the hook registered."""

    def __init__(
        self, fn: Callable[..., Any], owner: Any, layer: nn.Module | None, with_kwargs: bool, mixed: MixedFn | None
    ) -> None:
        self.fn = fn
        self.owner = owner  # the delta (for routing mixed batches by name)
        self.layer = layer
        self.with_kwargs = with_kwargs
        self.mixed = mixed
        self.on = False
        self.live = False


class MixGroup:
    """Entries of one type computed together in a mixed batch: `index[i]` is the entry example i uses
    (len(entries): none of them)."""

    def __init__(self, mixed: MixedFn, entries: list[Entry], index: torch.Tensor) -> None:
        self.mixed, self.entries, self.index = mixed, entries, index


class Dispatcher:
    """The hook of one kind ("forward" or "pre") on one module."""

    def __init__(self, module: nn.Module, kind: str) -> None:
        self.kind = kind
        self.entries: list[Entry] = []
        self.plan: list[MixGroup] | None = None
        self._module_ref = module
        self._handle: RemovableHandle | None = None

    # -- the hook -----------------------------------------------------------------------------
    def forward_hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self.plan is not None:
            for group in self.plan:
                output = group.mixed(group.entries, group.index, module, args, output)
            return output
        for e in self.entries:
            if e.on:
                new = e.fn(module, args, output)
                if new is not None:
                    output = new
        return output

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.plan is not None:
            for group in self.plan:
                args, kwargs = group.mixed(group.entries, group.index, module, args, kwargs)
            return args, kwargs
        for e in self.entries:
            if e.on:
                if e.with_kwargs:
                    new = e.fn(module, args, kwargs)
                    if new is not None:
                        args, kwargs = new
                else:
                    new = e.fn(module, args)
                    if new is not None:
                        args = new if isinstance(new, tuple) else (new,)
        return args, kwargs

    # -- registration -------------------------------------------------------------------------
    @property
    def registered(self) -> bool:
        return self._handle is not None

    def refresh(self) -> bool:
        """Register the hook if an entry is live, remove it if none is. Returns whether that changed."""
        want = any(e.live for e in self.entries)
        if want == self.registered:
            return False
        module = self._module_ref
        if want:
            if self.kind == "forward":
                self._handle = module.register_forward_hook(self.forward_hook)
            else:
                self._handle = module.register_forward_pre_hook(self.pre_hook, with_kwargs=True)
        else:
            assert self._handle is not None
            self._handle.remove()
            self._handle = None
        return True


def dispatcher(module: nn.Module, kind: str) -> Dispatcher:
    """The dispatcher of `kind` on `module`, created (unregistered) when it has none."""
    table = module.__dict__.get(_ATTR)
    if table is None:
        table = {}
        module.__dict__[_ATTR] = table
    if kind not in table:
        table[kind] = Dispatcher(module, kind)
    return table[kind]


def dispatchers_of(model: nn.Module) -> list[Dispatcher]:
    """Every dispatcher on `model` and its submodules."""
    out = []
    for m in model.modules():
        out.extend(m.__dict__.get(_ATTR, {}).values())
    return out


def drop_entries(module: nn.Module, entries: list[Entry]) -> None:
    """Forget `entries` (a delta removed for good); the dispatcher goes when it has none left."""
    table = module.__dict__.get(_ATTR, {})
    for kind, d in list(table.items()):
        d.entries = [e for e in d.entries if all(e is not x for x in entries)]
        if not d.entries:
            d.refresh()
            del table[kind]
    if not table and _ATTR in module.__dict__:
        del module.__dict__[_ATTR]


def invalidate_compiled() -> None:
    """Make every `torch.compile`d function recompile on its next call (hooks were added or removed, which
    dynamo does not guard on). Free when torch._dynamo was never imported."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is None:
        return
    reset = getattr(dynamo, "reset_code_caches", None) or dynamo.reset
    reset()


# -- the deltas of a backbone, by name ------------------------------------------------------------
def named_deltas(backbone: nn.Module) -> dict[str, Any]:
    """Name -> delta, in attach order, of the deltas created on `backbone` (kept on the backbone itself; do not
    modify the dict)."""
    return backbone.__dict__.get(_DELTAS_ATTR, {})


def claim_name(backbone: nn.Module, delta: Any, name: str | None, default: str) -> str:
    """Register `delta` under `name` (or `default`, `default_1`, `default_2`, ...: OpenDelta 0.3's scheme)."""
    table = backbone.__dict__.setdefault(_DELTAS_ATTR, {})
    if name is not None:
        if not isinstance(name, str) or not name or "." in name:
            raise DeltaConfigError(f"A delta name must be a non-empty string without dots, got {name!r}.")
        if name in table:
            raise DeltaConfigError(
                f"The backbone already has a delta named {name!r} ({type(table[name]).__name__}); pick another "
                f"name, or remove that one first (merge_and_unload / release). Deltas: {', '.join(table)}."
            )
        chosen = name
    else:
        chosen, k = default, 0
        while chosen in table:
            k += 1
            chosen = f"{default}_{k}"
    table[chosen] = delta
    return chosen


def release_name(backbone: nn.Module, name: str) -> None:
    named_deltas(backbone).pop(name, None)
