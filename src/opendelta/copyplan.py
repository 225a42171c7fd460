"""Loading tensors into a delta in place: a cached plan of where each saved tensor lives, and one fused copy.

A hot-swap (`DeltaBase.load_weights`) then costs about as much as copying the tensors: the plan is rebuilt
only when the delta's settings change or one of its tensors was replaced (checked by identity, per call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ._logging import logger
from .errors import CheckpointError


class CopyPlan:
    """The saved tensors of a delta in a fixed order, with the dict holding each one (to notice replacements)."""

    def __init__(self, state: tuple, holders: dict[str, tuple[dict, str]]) -> None:
        self.state = state
        self.keys = {k: i for i, k in enumerate(holders)}
        self.holders = list(holders.values())
        self.tensors = [d[a] for d, a in self.holders]
        self.shapes = [t.shape for t in self.tensors]
        self.dtypes = [t.dtype for t in self.tensors]

    def valid(self) -> bool:
        return all(d.get(a) is t for (d, a), t in zip(self.holders, self.tensors))


def build_copy_plan(
    state: tuple,
    delta_modules: Iterable[tuple[str, nn.Module]],
    unfrozen: list[str],
    backbone: nn.Module,
    saved_tensors: Callable[[], dict[str, torch.Tensor]],
) -> CopyPlan:
    """The plan for the keys `saved_tensors()` gives: delta layers' parameters and persistent buffers, then the
    unfrozen backbone parameters."""
    holders: dict[str, tuple[dict, str]] = {}
    for prefix, layer in delta_modules:
        for mname, m in layer.named_modules(remove_duplicate=False):
            base = f"{prefix}.{mname}." if mname else f"{prefix}."
            for a, t in m._parameters.items():
                if t is not None:
                    holders[base + a] = (m._parameters, a)
            for a, t in m._buffers.items():
                if t is not None and a not in m._non_persistent_buffers_set:
                    holders[base + a] = (m._buffers, a)
    for name in unfrozen:
        owner, _, a = name.rpartition(".")
        holders[name] = (backbone.get_submodule(owner)._parameters, a)
    saved = saved_tensors()
    if holders.keys() != saved.keys():  # a layer with its own state_dict logic: hold the tensors themselves
        holders = {k: ({k: v}, k) for k, v in saved.items()}
    return CopyPlan(state, holders)


def copy_state(plan: CopyPlan, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the plan's tensors; missing / unexpected keys or other shapes are a CheckpointError
    raised before anything is written."""
    if state.keys() != plan.keys.keys():
        missing, unexpected = sorted(set(plan.keys) - set(state)), sorted(set(state) - set(plan.keys))
        raise CheckpointError(key_report(missing, unexpected))
    srcs = [state[k] for k in plan.keys]
    if [s.shape for s in srcs] != plan.shapes:
        for k, src, dst in zip(plan.keys, srcs, plan.tensors):
            if src.shape != dst.shape:
                raise CheckpointError(
                    f"Tensor {k!r} has shape {tuple(src.shape)} in the checkpoint but "
                    f"{tuple(dst.shape)} in the model; was it saved with other settings?"
                )
    if [s.dtype for s in srcs] != plan.dtypes:
        for k, src, dst in zip(plan.keys, srcs, plan.tensors):
            if src.dtype != dst.dtype:
                logger.info("casting %s from %s to %s", k, src.dtype, dst.dtype)
    with torch.no_grad():
        if srcs:  # a delta may hold no tensor (e.g. OpenDelta 0.3 defaults that matched nothing)
            torch._foreach_copy_(plan.tensors, srcs)  # one fused copy (casts and moves like copy_ where needed)


def key_report(missing: list[str], unexpected: list[str]) -> str:
    lines = ["The checkpoint does not fit this delta:"]
    if missing:
        lines.append(f"  {len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    lines.append("  Was it saved from another backbone or with other `modified_modules`?")
    return "\n".join(lines)
