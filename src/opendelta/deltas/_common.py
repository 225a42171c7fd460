"""Helpers shared by the delta types: feature sizes of a module, activations, tuple-aware hook plumbing."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.pytorch_utils import Conv1D

from .._logging import logger
from ..errors import DeltaConfigError, UnsupportedModuleError, class_path
from ..matching import named_backbone_modules
from ..site import Site

#: the names attention modules and models take their key / value cache by
CACHE_ARGS = ("cache", "past_key_values")
ACTIVATIONS: tuple[str, ...] = tuple(sorted(ACT2FN))
W_INITS = ("glorot-uniform", "glorot-normal")


def check_activation(config: Any, key: str = "non_linearity") -> None:
    """Validate an activation name in `config.<key>` (a DeltaConfig), listing the valid ones."""
    config._require(getattr(config, key) in ACT2FN, key, f"one of {', '.join(ACTIVATIONS)}")


def activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (a key of transformers' ACT2FN)."""
    if name not in ACT2FN:
        raise DeltaConfigError(f"Unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}.")
    return ACT2FN[name]


def is_norm(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm, or a norm of the T5LayerNorm / LlamaRMSNorm style (a 1-D `weight`, no children)."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    w = getattr(module, "weight", None)
    return (
        type(module).__name__.endswith("Norm")
        and isinstance(w, torch.Tensor)
        and w.dim() == 1
        and not any(True for _ in module.children())
    )


def is_linear_like(module: nn.Module) -> bool:
    """An nn.Linear, a GPT-2 Conv1D, or a module shaped like a Linear: integer `in_features` / `out_features`
    and a 2-D `weight` of shape (out_features, in_features) (e.g. a large LM's own Linear class)."""
    if isinstance(module, (nn.Linear, Conv1D)):
        return True
    i, o, w = (getattr(module, k, None) for k in ("in_features", "out_features", "weight"))
    return isinstance(i, int) and isinstance(o, int) and isinstance(w, torch.Tensor) and tuple(w.shape) == (o, i)


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a Linear-like module (a Conv1D stores its weight transposed)."""
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def weight_layout_problem(module: nn.Module) -> str | None:
    """Why a change of `module.weight` may not be the same change of its output (None for nn.Linear / Conv1D,
    whose forward is known: x W^T + b, x W + b); merging into any other Linear-like module is refused."""
    if isinstance(module, (nn.Linear, Conv1D)):
        return None
    return (
        f"{class_path(module)} is Linear-like (in_features, out_features, a 2-D weight) but not an nn.Linear, so "
        f"what its forward does with `weight` is unknown (it may scale or cast it)"
    )


def _is_dim_leaf(module: nn.Module) -> bool:
    return is_linear_like(module) or is_norm(module)


def _leaf_dims(module: nn.Module) -> tuple[int, int]:
    """(input features, output features) of a Linear-like or a norm layer."""
    if is_linear_like(module):
        return linear_features(module)
    shape = getattr(module, "normalized_shape", None)
    dim = int(shape[-1]) if shape else int(module.weight.shape[-1])
    return dim, dim


def _dim(name: str, module: nn.Module, which: int) -> int:
    if _is_dim_leaf(module):
        return _leaf_dims(module)[which]
    leaves = [m for _, m in named_backbone_modules(module) if _is_dim_leaf(m)]  # delta layers skipped
    if not leaves:
        side = "input" if which == 0 else "output"
        raise UnsupportedModuleError(
            f"Cannot tell the {side} feature size of {name!r} ({class_path(module)}): it is not a Linear, "
            f"Conv1D or norm layer and holds none. Point `modified_modules` at such a layer or at a block "
            f"that contains one (e.g. the attention or feed-forward block)."
        )
    # a block reads its input with its first layer and writes its output with its last one
    return _leaf_dims(leaves[0] if which == 0 else leaves[-1])[which]


def input_dim(name: str, module: nn.Module) -> int:
    """Feature size of `module`'s input: its own (Linear / Conv1D / norm) or its first such layer's."""
    return _dim(name, module, 0)


def output_dim(name: str, module: nn.Module) -> int:
    """Feature size of `module`'s output: its own (Linear / Conv1D / norm) or its last such layer's."""
    return _dim(name, module, 1)


def check_last_dim(name: str, tensor: torch.Tensor, expected: int, delta_type: str, side: str) -> None:
    """Raise a clear error when a hooked tensor does not have the feature size the delta was built for."""
    if tensor.shape[-1] != expected:
        raise UnsupportedModuleError(
            f"{delta_type!r} on {name!r} was built for {side} size {expected} (read from its layers), but the "
            f"module's {side} has shape {tuple(tensor.shape)}. Point `modified_modules` at a Linear / Conv1D / "
            f"norm layer, or a block whose last (first, for inputs) such layer gives the right size."
        )


def map_first_output(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to a module's output tensor, or to the first element when it returns a tuple / ModelOutput."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (fn(output[0]), *output[1:])
    if isinstance(output, list) and output and isinstance(output[0], torch.Tensor):
        return [fn(output[0]), *output[1:]]
    if isinstance(output, dict) and output:  # transformers ModelOutput: the first field is the hidden state
        key = next(iter(output))
        output[key] = fn(output[key])
        return output
    raise UnsupportedModuleError(
        f"Cannot modify a module output of type {type(output).__name__}: expected a tensor or a tuple whose "
        f"first element is one."
    )


def first_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple[tuple, dict]]]:
    """A module call's main input (first positional argument, else first tensor keyword argument) and a
    function that returns (args, kwargs) with that input replaced."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0], lambda t: ((t, *args[1:]), kwargs)
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            return value, lambda t, key=key: (args, {**kwargs, key: t})
    raise UnsupportedModuleError("The module was called without a tensor input; cannot read its input.")


def route_output(site: Site, layer: nn.Module, dim: int, delta_type: str, mixed: Callable | None = None) -> None:
    """Make the site's output (its first element for tuples) pass through `layer`, checking its size.
    `mixed(layers, index, h) -> h'`: the same for a mixed batch (see `opendelta.mixed_batch`)."""

    def apply(h: torch.Tensor) -> torch.Tensor:
        check_last_dim(site.name, h, dim, delta_type, "output")
        return layer(h)

    site.on_output(lambda module, args, output: map_first_output(output, apply), mixed=_mixed_output_hook(mixed))


_MIXED_HOOKS: dict[Callable, Callable] = {}


def _mixed_output_hook(mixed: Callable | None) -> Callable | None:
    """One hook function per `mixed` (so the deltas of a type on a module are computed together)."""
    if mixed is None:
        return None
    if mixed not in _MIXED_HOOKS:

        def hook(entries: list, index: torch.Tensor, module: nn.Module, args: tuple, output: Any) -> Any:
            return map_first_output(output, lambda h: mixed([e.layer for e in entries], index, h))

        _MIXED_HOOKS[mixed] = hook
    return _MIXED_HOOKS[mixed]


def check_mixed_batch(t: torch.Tensor, index: torch.Tensor) -> None:
    """A clear error when a mixed batch's forward does not have one example per routed name."""
    if t.shape[0] != index.shape[0]:
        raise UnsupportedModuleError(
            f"A mixed batch was set up for {index.shape[0]} examples (one delta name each), but a module got a "
            f"tensor of shape {tuple(t.shape)}: its first dimension must be the batch of {index.shape[0]}."
        )


def stack_slots(tensors: list[torch.Tensor], shape: tuple[int, ...], fill: float = 0.0) -> torch.Tensor:
    """Stack `tensors`, each zero-padded at the end of every dimension to `shape`, plus one slot of `fill`
    (the "no delta" slot of a mixed batch)."""
    padded = []
    for t in tensors:
        pad: list[int] = []
        for have, want in zip(reversed(t.shape), reversed(shape)):
            pad += [0, want - have]
        padded.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    ref = tensors[0]
    padded.append(torch.full(shape, fill, dtype=ref.dtype, device=ref.device))
    return torch.stack(padded)


def init_glorot(t: torch.Tensor, how: str) -> None:
    """Xavier (Glorot) uniform or normal initialisation, in place; skipped on the meta device."""
    if t.device.type == "meta":
        return
    if how == "glorot-uniform":
        nn.init.xavier_uniform_(t)
    else:
        nn.init.xavier_normal_(t)


#: the most tokens a prompt or prefix may have (far beyond any useful length; keeps allocations sane)
MAX_TOKENS = 65536


def check_size(delta_type: str, name: str, key: str, value: int, limit: int, what: str, warn: bool = False) -> None:
    """A size setting may not exceed what the module it is built for has (`limit`, e.g. its features); with
    `warn`, one up to WIDER_LIMIT times larger is built (it works, at more cost than a full-width layer) with one
    warning per setting, and only a larger one is an error (an absurd size would allocate gigabytes)."""
    if warn and limit < value <= WIDER_LIMIT * limit:
        if (delta_type, key, value, limit) not in _SIZE_WARNED:
            _SIZE_WARNED.add((delta_type, key, value, limit))
            logger.warning(
                "%r on %r: `%s`=%d is larger than %s (%d); building it as asked (OpenDelta 0.3 did too), but a "
                "bottleneck wider than the layer saves nothing: consider `%s` <= %d",
                delta_type, name, key, value, what, limit, key, limit,
            )  # fmt: skip
        return
    if value > limit:
        most = WIDER_LIMIT * limit if warn else limit
        raise DeltaConfigError(
            f"{delta_type!r} on {name!r}: `{key}`={value} is larger than {what} ({limit})"
            + (f" times {WIDER_LIMIT}" if warn else "")
            + f"; use `{key}` <= {most}."
        )


_SIZE_WARNED: set[tuple] = set()
#: how many times the module's width a bottleneck may be (with a warning) before it is an error
WIDER_LIMIT = 4


def bottleneck_of(name: str, dim: int, reduction_factor: int, delta_type: str) -> int:
    """dim // reduction_factor, or a DeltaConfigError naming the module when that is below 1."""
    size = dim // reduction_factor
    if size < 1:
        raise DeltaConfigError(
            f"{delta_type!r} on {name!r}: output size {dim} // reduction_factor {reduction_factor} = {size}; "
            f"use a reduction_factor <= {dim}."
        )
    return size


class MergeBackup:
    """The weights a merge overwrites, kept on the CPU (off the compute device) so that unmerge restores them
    bit-exactly: subtracting / dividing the update again would leave rounding drift (1e-8 in fp32, 1e-3 in
    bf16). Costs one CPU copy of each merged weight (and bias) while merged."""

    def __init__(self) -> None:
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def keep(self, *tensors: torch.Tensor | None) -> None:
        self.saved = [(t, t.detach().to("cpu", copy=True)) for t in tensors if t is not None]

    def restore(self) -> bool:
        """Copy the kept values back; False when nothing was kept (then the caller undoes the update)."""
        if self.saved is None:
            return False
        for live, copy in self.saved:
            live.copy_(copy.to(live.device))
        self.saved = None
        return True


class CallSlot:
    """A value a pre-hook hands to the forward hook of the same call, kept per thread: one model can serve
    concurrent forwards from several threads (each call's state lives with the thread running it)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> Any:
        return getattr(self._local, "value", None)

    def set(self, value: Any) -> None:
        self._local.value = value

    def take(self) -> Any:
        """The value, cleared."""
        value = self.get()
        self._local.value = None
        return value


class CallArgs:
    """The arguments of one module call, read and written by parameter name (positional or keyword)."""

    def __init__(self, positional: list[str], args: tuple, kwargs: dict) -> None:
        self.positional, self.args, self.kwargs = positional, list(args), dict(kwargs)

    def get(self, name: str) -> Any:
        if name in self.kwargs:
            return self.kwargs[name]
        i = self.positional.index(name) if name in self.positional else len(self.args)
        return self.args[i] if i < len(self.args) else None

    def set(self, name: str, value: Any) -> None:
        i = self.positional.index(name) if name in self.positional else len(self.args)
        if name not in self.kwargs and i < len(self.args):
            self.args[i] = value
        else:
            self.kwargs[name] = value


def positional_names(module: nn.Module) -> list[str]:
    """The names of the parameters of `module.forward` that can be passed positionally."""
    sig = inspect.signature(module.forward)
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.kind in kinds]
