"""(IA)^3 (Liu et al. 2022): learned vectors that rescale activations.

On a Linear / Conv1D target, y = l * f(x) with l over the output features (keys, values); on a target that
is also listed in `feedforward_modules`, y = f(l * x) with l over the input features (the second
feed-forward projection). l starts at ones, so the backbone is unchanged until training. `merge()` folds l
into the weight rows (output scaling, and the bias) or columns (input scaling); `unmerge()` divides it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import DeltaStateError, ModuleMatchError
from ..interop import PeftMapping
from ..matching import name_matches
from ..registry import register_delta
from ..site import Site
from ._common import (
    MergeBackup,
    check_mixed_batch,
    first_input,
    is_linear_like,
    linear_features,
    stack_slots,
    weight_layout_problem,
)


@dataclass(repr=False)
class IA3Config(DeltaConfig):
    """feedforward_modules: addresses (same rules as `modified_modules`) of the targets whose INPUT is
    scaled; each must match at least one modified module. The other targets scale their output."""

    feedforward_modules: list[str] | None = None

    def _validate(self) -> None:
        super()._validate()
        ff = self.feedforward_modules
        self._require(ff is None or all(v.strip() for v in ff), "feedforward_modules", "non-empty module names")


class IA3Layer(nn.Module):
    """The scaling vector `scale` (ones at init), over output features, or input features if `on_input`."""

    def __init__(self, features: int, on_input: bool, device=None, dtype=None) -> None:
        super().__init__()
        self.on_input = on_input
        self.scale = nn.Parameter(torch.ones(features, device=device, dtype=dtype))
        self._backup = MergeBackup()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.scale

    @staticmethod
    def mixed_scales(entries: list, index: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mixed batch: example i scaled by `entries[index[i]]`'s vector (ones for index len(entries))."""
        check_mixed_batch(t, index)
        s = stack_slots([e.layer.scale for e in entries], (t.shape[-1],), fill=1.0)[index]
        return t * s.view(t.shape[0], *([1] * (t.dim() - 2)), t.shape[-1])

    def _weight_factor(self, module: nn.Module) -> torch.Tensor:
        """`scale` shaped to broadcast over the module's weight (Linear: (out, in); Conv1D: (in, out))."""
        s = self.scale.to(module.weight.dtype)
        scales_rows = self.on_input == isinstance(module, Conv1D)  # the axis of the scaled features
        return s[:, None] if scales_rows else s[None, :]

    def merge_into(self, module: nn.Module) -> None:
        self._backup.keep(module.weight, None if self.on_input else module.bias)  # unmerge restores it exactly
        module.weight.mul_(self._weight_factor(module))
        if not self.on_input and module.bias is not None:
            module.bias.mul_(self.scale.to(module.bias.dtype))

    def unmerge_from(self, module: nn.Module) -> None:
        if self._backup.restore():
            return
        module.weight.div_(self._weight_factor(module))
        if not self.on_input and module.bias is not None:
            module.bias.div_(self.scale.to(module.bias.dtype))

    def extra_repr(self) -> str:
        return f"features={self.scale.shape[0]}, on={'input' if self.on_input else 'output'}"


# ----- PEFT's IA3 ---------------------------------------------------------------------------------------
_PEFT_TENSOR = re.compile(r"(.+)\.ia3_l(?:\.default)?")


def _read_peft_config(pc: dict[str, Any]) -> dict[str, Any]:
    ff = pc.get("feedforward_modules")
    if isinstance(ff, str):
        ff = [f"[r]^(?:{ff})"]
    return {"feedforward_modules": list(ff or [])}


def _write_peft_config(delta: DeltaBase, cfg: DeltaConfig) -> dict[str, Any]:
    """target_modules / feedforward_modules for PEFT, which wants the second a subset of the first (lists)."""
    from_sites = [s.name for s in delta.sites]
    ff_sites = [s.name for s in delta.sites if s.layers["ia3"].on_input]
    ours = list(cfg.feedforward_modules or [])
    targets = list(cfg.modified_modules or [])
    plain = all(not e.startswith("[r]") and "@" not in e and e != "all-linear" for e in targets + ours)
    chosen = [n for n in from_sites if any(name_matches(n, e) for e in ours)]
    if (
        plain
        and set(ours) <= set(targets)
        and chosen == ff_sites
        and {n for n in from_sites if any(name_matches(n, e) for e in targets)} == set(from_sites)
    ):
        return {"init_ia3_weights": True, "target_modules": targets, "feedforward_modules": ours}
    return {"init_ia3_weights": True, "target_modules": from_sites, "feedforward_modules": ff_sites}


def _read_peft_tensor(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    m = _PEFT_TENSOR.fullmatch(name)
    return (f"{m.group(1)}.ia3.scale", tensor.reshape(-1)) if m else None  # PEFT: (out, 1) or (1, in)


def _write_peft_tensor(site: Site, attr: str, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    on_input = site.layers[attr].on_input  # PEFT: (1, in) scales the input, (out, 1) the output
    return {f"{site.name}.ia3_l": tensor[None, :] if on_input else tensor[:, None]}


def _mixed_input(entries: list, index: torch.Tensor, module: nn.Module, args: tuple, kwargs: dict) -> Any:
    x, replace = first_input(args, kwargs)
    return replace(IA3Layer.mixed_scales(entries, index, x))


def _mixed_output(entries: list, index: torch.Tensor, module: nn.Module, args: tuple, output: Any) -> Any:
    return IA3Layer.mixed_scales(entries, index, output)


@register_delta("ia3")
class IA3Model(DeltaBase):
    """(IA)^3 scaling vectors on Linear / Conv1D layers; mergeable into their weights."""

    config_class = IA3Config
    supported_modules = (nn.Linear, Conv1D)
    supported_also = " and Linear-like modules (in_features, out_features, a 2-D weight)"

    def supports_module(self, module: nn.Module) -> bool:
        return is_linear_like(module)

    def merge_problem(self, site: Site) -> str | None:
        return weight_layout_problem(site.module)

    mergeable = True
    default_modules = {
        "*": {"modified_modules": ["attn.k", "attn.v", "ff.w2"], "feedforward_modules": ["ff.w2"]},
        "gpt2": {"modified_modules": ["attn.qkv", "ff.w2"], "feedforward_modules": ["ff.w2"]},
    }
    default_learning_rate = 1.5e-2
    peft = PeftMapping("IA3", _read_peft_config, _write_peft_config, _read_peft_tensor, _write_peft_tensor)

    def resolve_targets(self) -> list[tuple[str, nn.Module]]:
        targets = super().resolve_targets()
        names = [n for n, _ in targets]
        unused = [p for p in self.config.feedforward_modules or [] if not any(name_matches(n, p) for n in names)]
        if unused:
            raise ModuleMatchError(
                f"ia3: feedforward_modules {unused} match none of the modified modules; each entry must name "
                f"(a suffix of) a module that `modified_modules` selects, e.g. one of: {', '.join(names[:6])}."
            )
        return targets

    def _is_feedforward(self, name: str) -> bool:
        return any(name_matches(name, p) for p in self.config.feedforward_modules or [])

    def build_site(self, site: Site) -> None:
        on_input = self._is_feedforward(site.name)
        in_f, out_f = linear_features(site.module)
        layer = site.add_layer("ia3", IA3Layer(in_f if on_input else out_f, on_input, **site.factory_kwargs()))
        layer.mix_key = on_input
        if on_input:

            def scale_input(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
                x, replace = first_input(args, kwargs)
                return replace(layer(x))

            site.on_input(scale_input, with_kwargs=True, mixed=_mixed_input)
        else:
            site.on_output(lambda module, args, output: layer(output), mixed=_mixed_output)

    def merge(self) -> None:
        """Fold every scaling vector into its layer's weight (and bias); refused if any entry is zero."""
        if self.attached and not self.merged:
            zeros = [s.name for s in self.sites for layer in s.layers.values() if (layer.scale == 0).any()]
            if zeros:
                raise DeltaStateError(
                    f"ia3: cannot merge, the scaling vector of {zeros[0]!r} has zero entries, so unmerge() could "
                    f"not divide it out again. Keep the delta unmerged (it still runs with hooks)."
                )
        super().merge()
