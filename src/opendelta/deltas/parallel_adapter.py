"""Parallel adapter (He et al. 2022): a bottleneck MLP beside a module, reading its input.

out = f(x) + scaled * up(act(down(x))), where x is the input of each modified module A and f(x) the output
of A, or, with `output_module`, the output of a later module B in the same block: x is taken when A runs
and the update is added when B returns (e.g. read BERT's `intermediate` input, add to `output.dense`).
`up` starts at zero, so the backbone is exactly unchanged until training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import DeltaStateError, ModuleMatchError
from ..matching import REGEX_PREFIX, is_delta_layer
from ..registry import register_delta
from ..site import Site
from ._common import (
    CallSlot,
    activation,
    check_activation,
    check_last_dim,
    check_size,
    first_input,
    input_dim,
    map_first_output,
    output_dim,
)


@dataclass(repr=False)
class ParallelAdapterConfig(DeltaConfig):
    """bottleneck_dim: bottleneck width; scaled: factor on the update; non_linearity: ACT2FN name.

    output_module: where the update is added, as a dotted path relative to the parent of each modified
    module (e.g. "output.dense" for BERT's "intermediate"); None adds it to the modified module's output.
    """

    bottleneck_dim: int = 24
    non_linearity: str = "gelu_new"
    scaled: float = 1.0
    output_module: str | None = None

    def _validate(self) -> None:
        super()._validate()
        self._require(self.bottleneck_dim >= 1, "bottleneck_dim", "an integer >= 1")
        check_activation(self)
        om = self.output_module
        self._require(
            om is None or (om.strip() == om and om != "" and not om.startswith(REGEX_PREFIX) and all(om.split("."))),
            "output_module",
            "a dotted module path relative to the modified module's parent (no regex), or None",
        )


class ParallelAdapterLayer(nn.Module):
    """`forward(x)` returns scaled * up(act(down(x))) (the update only)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bottleneck_dim: int,
        non_linearity: str,
        scaled: float,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.scaled = scaled
        self.down_proj = nn.Linear(in_features, bottleneck_dim, device=device, dtype=dtype)
        self.non_linear = activation(non_linearity)
        self.up_proj = nn.Linear(bottleneck_dim, out_features, device=device, dtype=dtype)
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_proj(self.non_linear(self.down_proj(x))) * self.scaled

    def extra_repr(self) -> str:
        return f"scaled={self.scaled}"


_FC_PARALLEL = {"modified_modules": ["ff.w1"], "output_module": "fc2"}
_BERT_PARALLEL = {"modified_modules": ["intermediate"], "common_structure": False, "output_module": "output.dense"}


@register_delta("parallel_adapter")
class ParallelAdapterModel(DeltaBase):
    """A parallel adapter reading the input of each module addressed by `modified_modules`."""

    config_class = ParallelAdapterConfig
    default_modules = {
        "*": ["ff"],
        # where no module holds the whole feed-forward block: read the input of the first projection (BERT:
        # of `intermediate`) and add the update to the output of the second
        "bart": _FC_PARALLEL,
        "opt": _FC_PARALLEL,
        "bert": _BERT_PARALLEL,
        "deberta-v2": _BERT_PARALLEL,
    }
    default_learning_rate = 1e-2
    app_settings = {"bottleneck_dim": 8}

    def _output_target(self, site: Site) -> tuple[str, nn.Module]:
        path = self.config.output_module
        if path is None:
            return site.name, site.module
        parent_name = site.name.rsplit(".", 1)[0] if "." in site.name else ""
        parent = self.backbone_model.get_submodule(parent_name)
        full = f"{parent_name}.{path}" if parent_name else path
        try:
            target = parent.get_submodule(path)
        except AttributeError:
            children = [n for n, c in parent.named_children() if not is_delta_layer(c)]
            raise ModuleMatchError(
                f"parallel_adapter: output_module={path!r} does not exist next to {site.name!r} (looked for "
                f"{full!r}); it is a path relative to {parent_name or 'the model root'!r}, whose children are: "
                f"{', '.join(children)}. Use a path to one of them (or below one)."
            ) from None
        if target is site.module:
            return site.name, site.module
        return full, target

    def build_site(self, site: Site) -> None:
        cfg = self.config
        out_name, out_module = self._output_target(site)
        in_f, out_f = input_dim(site.name, site.module), output_dim(out_name, out_module)
        check_size(self.delta_type, site.name, "bottleneck_dim", cfg.bottleneck_dim, max(in_f, out_f), "its sizes")
        layer = site.add_layer(
            "parallel_adapter",
            ParallelAdapterLayer(
                in_f, out_f, cfg.bottleneck_dim, cfg.non_linearity, cfg.scaled, **site.factory_kwargs()
            ),
        )
        pending = CallSlot()  # the input of A, waiting for B to return (per thread: concurrent forwards)

        def read_input(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            x, _ = first_input(args, kwargs)
            check_last_dim(site.name, x, in_f, self.delta_type, "input")
            pending.set(x)

        def add_update(module: nn.Module, args: tuple, output: Any) -> Any:
            x = pending.take()
            if x is None:
                raise DeltaStateError(
                    f"parallel_adapter: {out_name!r} returned before {site.name!r} ran in this forward pass; "
                    f"`output_module` must name a module that runs after the modified one."
                )

            def add(h: torch.Tensor) -> torch.Tensor:
                check_last_dim(out_name, h, out_f, self.delta_type, "output")
                return h + layer(x)

            return map_first_output(output, add)

        site.on_input(read_input, with_kwargs=True)
        site.on_output(add_update, target=out_module)
