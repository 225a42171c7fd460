"""Several deltas on one backbone: list them, switch which act, run mixed batches.

Every delta created on a backbone has a name (`from_config(..., name="sst2")`; default: its type, then
`<type>_1`, `<type>_2`, ...). Deltas on one module apply in attach order: each one transforms the module's
output (or input) as left by the ones before it, so "after" deltas (adapters) compose in attach order and
additive ones (LoRA, BitFit, parallel adapters) commute.

Switching flips a plain flag that the hooks read (see `dispatch.py`): it costs microseconds and a
`torch.compile`d model follows it (dynamo guards on the flags), reusing the graph it compiled for that
combination before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .base import DeltaBase
from .dispatch import MixGroup, dispatchers_of, named_deltas
from .errors import DeltaStateError, ModuleMatchError, UnsupportedModuleError


def deltas_of(model: nn.Module) -> dict[str, DeltaBase]:
    """Name -> delta of every delta on `model` (attached or detached, not released), in attach order."""
    return dict(named_deltas(model))


def get_delta(model: nn.Module, name: str) -> DeltaBase:
    """The delta called `name` on `model`."""
    deltas = named_deltas(model)
    if name not in deltas:
        known = ", ".join(repr(n) for n in deltas) or "none"
        raise ModuleMatchError(f"No delta named {name!r} on this {type(model).__name__}; its deltas: {known}.")
    return deltas[name]


def active_deltas(model: nn.Module) -> list[str]:
    """Names of the deltas that act in `model`'s forward now (attached and switched on), in attach order."""
    return [n for n, d in named_deltas(model).items() if d.attached and d.active]


def _names(names: str | Iterable[str] | None) -> list[str]:
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def activate(model: nn.Module, names: str | Iterable[str] | None) -> None:
    """Make exactly the deltas `names` act (the other attached deltas stay attached, switched off).

    `None` or `[]` runs the plain backbone. Costs a few microseconds per delta; a compiled model follows.
    """
    wanted = _names(names)
    for n in wanted:
        d = get_delta(model, n)
        if not d.attached:
            raise DeltaStateError(f"Delta {n!r} is detached; call its attach() before activating it.")
    chosen = set(wanted)
    for n, d in named_deltas(model).items():
        if d.merged and n not in chosen:
            raise DeltaStateError(f"Delta {n!r} is merged into the weights; unmerge() it before switching it off.")
    for n, d in named_deltas(model).items():
        if d.attached and d.active != (n in chosen):
            d.set_active(n in chosen)


def deactivate(model: nn.Module, names: str | Iterable[str] | None = None) -> None:
    """Switch off the deltas `names` (default: all), without detaching them."""
    off = set(_names(names)) if names is not None else set(named_deltas(model))
    for n in off:
        get_delta(model, n).set_active(False)


@contextmanager
def using(model: nn.Module, names: str | Iterable[str] | None) -> Iterator[None]:
    """`with opendelta.using(model, "sst2"): ...` runs with exactly these deltas active, then restores."""
    before = {n: d.active for n, d in named_deltas(model).items()}
    activate(model, names)
    try:
        yield
    finally:
        for n, d in named_deltas(model).items():
            if n in before and d.active != before[n]:
                d.set_active(before[n])


@contextmanager
def mixed_batch(model: nn.Module, names: Sequence[str | None]) -> Iterator[None]:
    """Run forwards in which example `i` of the batch uses only the delta `names[i]` (None: the plain backbone).

    Supported for delta types with a batched mixed computation (LoRA, IA3, adapter): each forward computes
    every such module once for the whole batch, with batched matrix products over the deltas present. The
    result for each example equals running it alone with its delta active. The batch size of every forward
    inside must be `len(names)`; deltas not named act on no example.
    """
    names = list(names)
    deltas = named_deltas(model)
    routed = {n for n in names if n is not None}
    for n in sorted(routed):
        d = get_delta(model, n)
        if not d.attached or d.merged:
            raise DeltaStateError(f"Delta {n!r} must be attached and unmerged to serve a mixed batch.")
    for n, d in deltas.items():
        if d.merged:
            raise DeltaStateError(
                f"Delta {n!r} is merged into the weights (it would act on every example); unmerge it."
            )
    plans = []
    for disp in dispatchers_of(model):
        groups: dict[object, list] = {}
        for e in disp.entries:
            if e.owner is None or e.owner.name not in routed or not e.live:
                continue
            if e.mixed is None:
                raise UnsupportedModuleError(
                    f"Delta {e.owner.name!r} ({e.owner.delta_type}) has no mixed-batch computation; mixed batches "
                    f"support lora, ia3 and adapter deltas."
                )
            key = (e.mixed, getattr(e.layer, "mix_key", None))
            groups.setdefault(key, []).append(e)
        plan = []
        for (mixed, _), entries in groups.items():
            slot = {e.owner.name: i for i, e in enumerate(entries)}
            device = next(entries[0].layer.parameters()).device
            index = torch.tensor([slot.get(n, len(entries)) for n in names], dtype=torch.long, device=device)
            plan.append(MixGroup(mixed, entries, index))
        plans.append((disp, plan))
    for disp, plan in plans:
        disp.plan = plan
    try:
        yield
    finally:
        for disp, _ in plans:
            disp.plan = None
