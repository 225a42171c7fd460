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

from .. import legacy_structure
from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import DeltaConfigError, DeltaStateError, ModuleMatchError
from ..interop import SELECTION_ARGS, LegacyMapping
from ..matching import REGEX_PREFIX, is_delta_layer
from ..registry import register_delta
from ..site import Site
from ..structures import LEGACY_MARK, find_targets
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
    paired: read `modified_modules` as (input module, output module) pairs, as OpenDelta 0.3 did: the k-th
    module matched by entry 2i gets an adapter that reads its input and adds to the output of the k-th module
    matched by entry 2i + 1 (["attn", "attn", "ff.w1", "ff.w2"]: one around attention, one from w1's input to
    w2's output). None: pairs when an entry uses 0.3's "@" spelling or two consecutive entries are equal.
    """

    positional_keys = ("bottleneck_dim", "non_linearity", "scaled")

    bottleneck_dim: int = 24
    non_linearity: str = "gelu_new"
    scaled: float = 1.0
    output_module: str | None = None
    paired: bool | None = None

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


#: 0.3's default: one adapter around the attention sub-layer, one from the first to the second FFN projection
LEGACY_DEFAULT = ["attn@", "attn@", "ff@.w1@", "ff@.w2@"]
_FC_PARALLEL = {"modified_modules": ["ff.w1"], "output_module": "fc2"}
_BERT_PARALLEL = {"modified_modules": ["intermediate"], "common_structure": False, "output_module": "output.dense"}


@register_delta("parallel_adapter")
class ParallelAdapterModel(DeltaBase):
    """A parallel adapter reading the input of each module addressed by `modified_modules`."""

    config_class = ParallelAdapterConfig
    # on the families OpenDelta 0.3 knew, its default pairs in its meaning (`_legacy_default`: around the attention
    # sub-layer, and from ff.w1's input to ff.w2's output); elsewhere, or with `output_module` / paired=False set:
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
    # 0.3: pairs (see `paired`), paired by a counter over the matched modules in model order; the layer kept its
    # projections in a `modulelist` child; `scaled` never reached the layer (always 1; written as null)
    legacy = LegacyMapping(
        config_keys={"scaled": None},
        tensor_renames=((r"\.parallel_adapter\.modulelist\.", ".parallel_adapter."),),
        layer_keys=((r"^", "modulelist."),),
        fit_config=lambda config, backbone, names, state: {**config, **_legacy_pairs(config, names)},
        positional=("bottleneck_dim", "non_linearity", *SELECTION_ARGS),
    )
    _pair_outputs: dict[str, tuple[str, nn.Module]] = {}

    @property
    def default_modified_modules(self) -> list[str] | dict[str, Any]:
        if legacy_structure.has_tree(self.backbone_model) and _legacy_default(self.backbone_model) is not None:
            return list(LEGACY_DEFAULT)
        return super().default_modified_modules

    def _is_paired(self) -> bool:
        cfg, mm = self.config, self.config.modified_modules or []
        if cfg.paired is not None:
            return cfg.paired and bool(mm)
        return any(LEGACY_MARK in e for e in mm) or any(a == b for a, b in zip(mm, mm[1:]))

    def resolve_targets(self) -> list[tuple[str, nn.Module]]:
        self._pair_outputs = {}
        cfg = self.config
        legacy = None
        if cfg.modified_modules is None and cfg.output_module is None and cfg.paired is not False:
            legacy = _legacy_default(self.backbone_model) if legacy_structure.has_tree(self.backbone_model) else None
        if legacy is not None:
            self.config = cfg.replace(**legacy)
        if not self._is_paired():
            return super().resolve_targets()
        cfg, mm = self.config, self.config.modified_modules
        if len(mm) % 2 or cfg.output_module is not None:
            raise DeltaConfigError(
                f"parallel_adapter: paired `modified_modules` {mm} must list (input module, output module) pairs "
                f"(an even number of entries) and cannot be combined with `output_module`; set paired=False to "
                f"read every entry as its own module."
            )
        targets: list[tuple[str, nn.Module]] = []
        for a, b in zip(mm[::2], mm[1::2]):
            ins = find_targets(self.backbone_model, [a], cfg.exclude_modules, cfg.common_structure)
            outs = ins if a == b else find_targets(self.backbone_model, [b], cfg.exclude_modules, cfg.common_structure)
            if len(ins) != len(outs):
                raise ModuleMatchError(
                    f"parallel_adapter: the pair ({a!r}, {b!r}) matches {len(ins)} input module(s) but {len(outs)} "
                    f"output module(s); each input module needs its own output module."
                )
            for (in_name, in_module), out in zip(ins, outs):
                if in_name in self._pair_outputs:
                    raise ModuleMatchError(f"parallel_adapter: {in_name!r} is the input module of two pairs.")
                self._pair_outputs[in_name] = out
                targets.append((in_name, in_module))
        return targets

    def _output_target(self, site: Site) -> tuple[str, nn.Module]:
        if site.name in self._pair_outputs:
            return self._pair_outputs[site.name]
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
        check_size(
            self.delta_type, site.name, "bottleneck_dim", cfg.bottleneck_dim, max(in_f, out_f), "its sizes", warn=True
        )
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


def _legacy_default(backbone: nn.Module) -> dict[str, Any] | None:
    """OpenDelta 0.3's default modules on a family it knew, as raw (input, output) pairs; None where they do not
    form one attention pair and one feed-forward pair per block (e.g. a gated T5 v1.1 FFN, which 0.3 mis-paired)."""
    found = [legacy_structure.resolve(backbone, [entry], None, True) for entry in ("attn@", "ff@.w1@", "ff@.w2@")]
    if not found[0] or len({len(names) for names in found}) != 1:
        return None
    names = legacy_structure.resolve(backbone, LEGACY_DEFAULT, None, True)
    return {**_legacy_pairs({"modified_modules": LEGACY_DEFAULT}, names), "common_structure": False}


def _legacy_pairs(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """0.3's pairing: a counter over the matched modules (model order) opens a pair on even counts and closes
    it on odd ones, or at once when the entry at the count equals the next entry."""
    entries = config["modified_modules"]
    pairs: list[list[str]] = []
    i = 0
    for name in names:
        if i % 2 == 0:
            pairs.append([name])
        if i % 2 == 1 or (i + 1 < len(entries) and entries[i] == entries[i + 1]):
            pairs[-1].append(name)
            i |= 1
        i = (i + 1) % len(entries)
    flat = [n for pair in pairs if len(pair) == 2 for n in pair]
    return {"modified_modules": flat, "paired": True}
