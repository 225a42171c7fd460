"""LoRA: a trainable low-rank update B·A parallel to a Linear (or GPT-2 Conv1D) layer.

y = W x + b + (B A dropout(x)) * lora_alpha / lora_r (or / sqrt(lora_r) with lora_scaling="rslora"), with A
kaiming-uniform and B zero (so the model is unchanged at initialisation). `merge()` adds the update to W for
inference without any overhead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import CheckpointError, DeltaStateError
from ..interop import LegacyMapping, PeftMapping
from ..registry import register_delta
from ..site import Site
from ._common import (
    MergeBackup,
    check_mixed_batch,
    check_size,
    is_linear_like,
    linear_features,
    stack_slots,
    weight_layout_problem,
)


@dataclass(repr=False)
class LoraConfig(DeltaConfig):
    """lora_r: rank of the update; lora_alpha: scale numerator; lora_dropout: dropout on the LoRA input;
    lora_scaling: "standard" scales the update by lora_alpha / lora_r, "rslora" by lora_alpha / sqrt(lora_r)
    (rank-stabilised LoRA, PEFT's `use_rslora=True`)."""

    positional_keys = ("lora_r", "lora_alpha", "lora_dropout")

    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_scaling: Literal["standard", "rslora"] = "standard"

    def _validate(self) -> None:
        super()._validate()
        self._require(self.lora_r >= 1, "lora_r", "an integer >= 1")
        self._require(self.lora_alpha > 0, "lora_alpha", "a number > 0")
        self._require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "a probability in [0, 1)")


class LoraLayer(nn.Module):
    """The low-rank update B A, scaled, added to the output of the layer it sits beside."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int,
        alpha: float,
        dropout: float,
        device=None,
        dtype=None,
        rslora: bool = False,
    ) -> None:
        super().__init__()
        self.r, self.alpha = r, alpha
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self._backup = MergeBackup()
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """`output + (B A dropout(x)) * scaling`, the final matmul fused with the addition (one pass)."""
        if self.dropout is not None:
            x = self.dropout(x)
        # scaling the rank-r intermediate is far cheaper than scaling the full-width output
        h = F.linear(x, self.lora_A) * self.scaling
        flat = torch.addmm(output.reshape(-1, output.shape[-1]), h.reshape(-1, self.r), self.lora_B.t())
        return flat.view(output.shape)

    @staticmethod
    def mixed(entries: list, index: torch.Tensor, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Mixed batch: example i gets the update of `entries[index[i]]` (none for index len(entries)), from
        per-example gathered A / B (zero-padded to the largest rank) and two batched matrix products."""
        layers = [e.layer for e in entries]
        if any(la.dropout is not None and la.training for la in layers):
            raise DeltaStateError("Mixed batches run LoRA without dropout; call model.eval() first.")
        x = args[0]
        check_mixed_batch(x, index)
        r = max(la.r for la in layers)
        a = stack_slots([la.lora_A * la.scaling for la in layers], (r, x.shape[-1]))[index]
        b = stack_slots([la.lora_B for la in layers], (output.shape[-1], r))[index]
        h = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype), a.transpose(1, 2))
        out = torch.baddbmm(output.reshape(output.shape[0], -1, output.shape[-1]), h.to(b.dtype), b.transpose(1, 2))
        return out.view(output.shape)

    def delta_weight(self) -> torch.Tensor:
        """The update in Linear layout (out_features, in_features)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merge_into(self, module: nn.Module) -> None:
        self._backup.keep(module.weight)  # unmerge restores this copy: exact, no rounding drift
        dw = self.delta_weight().to(module.weight.dtype)
        module.weight.add_(dw.T if isinstance(module, Conv1D) else dw)

    def unmerge_from(self, module: nn.Module) -> None:
        if self._backup.restore():
            return
        dw = self.delta_weight().to(module.weight.dtype)
        module.weight.sub_(dw.T if isinstance(module, Conv1D) else dw)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


# ----- PEFT's LoRA --------------------------------------------------------------------------------------
# PEFT settings that change what an adapter computes in ways we do not reproduce: value(s) accepted.
_PEFT_MUST_BE = {
    "use_dora": (False, None),
    "lora_bias": (False, None),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layers_to_transform": (None, []),
    "layer_replication": (None, []),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, {}, []),
    "use_qalora": (False, None),
    "alora_invocation_tokens": (None, []),
    "megatron_config": (None, {}),
    "loftq_config": ({}, None),
    "use_bdlora": (None, False),
}
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")
_PEFT_TENSOR = re.compile(r"(.+)\.lora_([AB])(?:\.default)?\.weight")


def _read_peft_config(pc: dict[str, Any]) -> dict[str, Any]:
    problems = [f"{k}={pc[k]!r}" for k, ok in _PEFT_MUST_BE.items() if k in pc and pc[k] not in ok]
    if pc.get("bias", "none") != "none":
        problems.append(f"bias={pc['bias']!r} (only 'none' is supported: the adapter would also train biases)")
    init = pc.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(f"init_lora_weights={init!r} (it changes the base weights the adapter expects)")
    if problems:
        raise CheckpointError(
            f"This PEFT LoRA adapter uses setting(s) OpenDelta does not reproduce: {'; '.join(problems)}. Load it "
            f"with PEFT (PeftModel.from_pretrained), or re-train without them."
        )
    return {
        "lora_r": pc["r"],
        "lora_alpha": pc.get("lora_alpha", 8),
        "lora_dropout": pc.get("lora_dropout", 0.0),
        "lora_scaling": "rslora" if pc.get("use_rslora") else "standard",
    }


def _write_peft_config(delta: DeltaBase, cfg: DeltaConfig) -> dict[str, Any]:
    return {
        "r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "use_rslora": cfg.lora_scaling == "rslora",
        "bias": "none",
        "init_lora_weights": True,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": None,
        "layers_pattern": None,
    }


def _read_peft_tensor(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    m = _PEFT_TENSOR.fullmatch(name)
    if m:
        return f"{m.group(1)}.lora.lora_{m.group(2)}", tensor
    if ".lora_" in name:
        raise CheckpointError(
            f"PEFT tensor {name!r} is not a LoRA A/B matrix of a Linear layer (e.g. an "
            f"embedding LoRA or DoRA magnitude); OpenDelta cannot load it."
        )
    return None


def _write_peft_tensor(site: Site, attr: str, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"{site.name}.{key}.weight": tensor}  # lora_A / lora_B


@register_delta("lora")
class LoraModel(DeltaBase):
    """LoRA on Linear / Conv1D layers addressed by `modified_modules`."""

    config_class = LoraConfig
    supported_modules = (nn.Linear, Conv1D)
    supported_also = " and Linear-like modules (in_features, out_features, a 2-D weight)"

    def supports_module(self, module: nn.Module) -> bool:
        return is_linear_like(module)

    def merge_problem(self, site: Site) -> str | None:
        return weight_layout_problem(site.module)

    mergeable = True
    default_modules = {"*": ["attn.q", "attn.v"], "gpt2": ["attn.qkv"]}
    default_learning_rate = 4e-3
    app_settings = {"lora_r": 8, "lora_alpha": 16}
    peft = PeftMapping("LORA", _read_peft_config, _write_peft_config, _read_peft_tensor, _write_peft_tensor)
    # 0.3's LoRA layer also carried an unused `lin` Linear whose tensors were saved; they never entered the output
    # (0.3's LoraModel did not pass `exclude_modules` on: it was ignored)
    legacy = LegacyMapping(
        tensor_renames=((r"\.lora\.lin\.(weight|bias)$", None),),
        layer_keys=(),
        honours_exclude=False,
        positional=(
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "modified_modules",
            "unfrozen_modules",
            "exclude_modules",
            "common_structure",
            "interactive_modify",
            "backend",
        ),
    )

    def build_site(self, site: Site) -> None:
        cfg = self.config
        in_f, out_f = linear_features(site.module)
        check_size(self.delta_type, site.name, "lora_r", cfg.lora_r, max(in_f, out_f), "the layer's features")
        layer = site.add_layer(
            "lora",
            LoraLayer(
                in_f,
                out_f,
                cfg.lora_r,
                cfg.lora_alpha,
                cfg.lora_dropout,
                rslora=cfg.lora_scaling == "rslora",
                **site.factory_kwargs(),
            ),
        )

        def add_update(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            return layer(args[0], output)

        site.on_output(add_update, mixed=LoraLayer.mixed)
