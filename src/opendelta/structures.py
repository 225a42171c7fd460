"""Common structure: one vocabulary of module names for every supported model family, and default targets.

The vocabulary and each family's map of it are in `families.py`. The base model is found
by class anywhere inside the model (task heads, user wrappers), and raw names are prefixed with its path.
Names are matched with the usual suffix / "[r]regex" rules, so "attn.q" addresses every block's query.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._logging import logger
from .errors import ModuleMatchError
from .families import FAMILIES, Family, Raw
from .matching import find_modules, name_matches, named_backbone_modules, suffixes

ALL_LINEAR = "all-linear"
LEGACY_MARK = "@"  # OpenDelta 0.3 wrote common names as "attn@.q@"

# ----- finding the base model and naming its modules ----------------------------------------------------


@dataclass(frozen=True)
class Backbone:
    """A known family's base model found inside a model, at `path` ("" when it is the model itself)."""

    family: Family
    path: str
    module: nn.Module

    def raw(self, rel: str) -> str:
        return f"{self.path}.{rel}" if self.path and rel else (self.path or rel)


def _family_of(module: nn.Module) -> Family | None:
    names = {c.__name__ for c in type(module).__mro__}
    return next((f for f in FAMILIES if names.intersection(f.classes)), None)


def find_backbone(model: nn.Module) -> Backbone | None:
    """The shallowest submodule of `model` (or `model` itself) that is a known family's base model."""
    found = [
        (name, m, fam)
        for name, m in [("", model), *named_backbone_modules(model)]
        if (fam := _family_of(m)) is not None
    ]
    if not found:
        return None
    found.sort(key=lambda t: t[0].count(".") + bool(t[0]))
    name, module, fam = found[0]
    others = [n for n, _, _ in found[1:] if not (name == "" or n.startswith(name + "."))]
    if others:
        logger.warning(
            "Several known backbones in %s; common names refer to %r, not %s",
            type(model).__name__,
            name or "<root>",
            others,
        )
    return Backbone(fam, name, module)


def _existing(modules: Mapping[str, nn.Module], backbone: Backbone, base: str, raw: Raw) -> str | None:
    for alt in (raw,) if isinstance(raw, str) else raw:
        full = backbone.raw(f"{base}.{alt}" if base and alt else base or alt)
        if full in modules:
            return full
    return None


def _block_indices(modules: Mapping[str, nn.Module], list_path: str) -> list[str]:
    blocks = modules.get(list_path)
    return [] if blocks is None else [n for n, _ in blocks.named_children() if n.isdigit()]


def _structure(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """(raw name -> common name, fused common name -> common name of the layer that holds it)."""
    backbone = find_backbone(model)
    if backbone is None:
        return {}, {}
    fam = backbone.family
    modules = dict(named_backbone_modules(model))
    names: dict[str, str] = {}
    fused: dict[str, str] = {}

    def put(raw: str | None, common: str) -> None:
        if raw is not None and raw not in names:
            names[raw] = common

    for common, raw in fam.top.items():
        put(_existing(modules, backbone, "", raw), common)
    for stack, (list_path, block) in fam.stacks.items():
        for i in _block_indices(modules, backbone.raw(list_path)):
            prefix = f"{stack}.block.{i}"
            put(_existing(modules, backbone, f"{list_path}.{i}", ""), prefix)
            for common, raw in block.items():
                put(_existing(modules, backbone, f"{list_path}.{i}", raw), f"{prefix}.{common}")
            for part, holder in fam.fused.items():
                fused[f"{prefix}.{part}"] = f"{prefix}.{holder}"
    head = _output_head(model, backbone)
    if head is not None:
        put(head, "lm_head")
    return {n: names[n] for n in modules if n in names}, fused


def _output_head(model: nn.Module, backbone: Backbone) -> str | None:
    """Raw name of the output embeddings of the nearest model around (or at) the backbone that has them."""
    path = backbone.path.split(".") if backbone.path else []
    for depth in range(len(path), -1, -1):
        owner_path = ".".join(path[:depth])
        owner = model.get_submodule(owner_path)
        getter = getattr(owner, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        if isinstance(head, nn.Module):
            found = [n for n, m in named_backbone_modules(owner) if m is head]
            if found:
                return f"{owner_path}.{found[0]}" if owner_path else found[0]
    return None


def common_names(model: nn.Module) -> dict[str, str]:
    """Raw module name -> common-structure name, for every mapped module of `model` ({} if no known family)."""
    return _structure(model)[0]


# ----- defaults and resolution ---------------------------------------------------------------------------


# ----- defaults and resolution ---------------------------------------------------------------------------


def _available(names: Iterable[str], entry: str) -> bool:
    return any(name_matches(n, entry) for n in names)


def default_settings(
    model: nn.Module, delta_type: str, table: Mapping[str, list[str] | dict[str, Any]]
) -> dict[str, Any]:
    """The config values a delta of `delta_type` gets on `model` when the config names no modules.

    `table` (the delta class's `default_modules`) maps a family name, or "*" for any family, to a list of
    common names or to a dict of config values (with "modified_modules"; "common_structure": False when
    those are raw names). The result always holds "modified_modules" and "common_structure" (True: the
    entries are common names), plus any other settings of the entry (e.g. parallel_adapter's `output_module`).
    """
    backbone = find_backbone(model)
    if backbone is None:
        names = [n for n, _ in named_backbone_modules(model)]
        examples = [s for s in suffixes(names, depth=2) if not s.split(".")[-1].isdigit()][:12]
        known = ", ".join(sorted({c for f in FAMILIES for c in f.classes}))
        raise ModuleMatchError(
            f"No default modules are known for {type(model).__name__} (it contains none of the known base "
            f"models: {known}). Set `modified_modules` to module names, e.g. some of: {', '.join(examples)}; "
            f"or '[r]<regex>'; or {ALL_LINEAR!r} (every nn.Linear / Conv1D except the output head)."
        )
    entry = table.get(backbone.family.name, table.get("*"))
    settings = dict(entry) if isinstance(entry, dict) else {"modified_modules": entry}
    settings.setdefault("common_structure", True)
    wanted = settings["modified_modules"]
    common = list(common_names(model).values())
    names = common if settings["common_structure"] else [n for n, _ in named_backbone_modules(model)]
    settings["modified_modules"] = [e for e in wanted or [] if _available(names, e)]
    for key, value in settings.items():
        if key != "modified_modules" and isinstance(value, list) and settings["common_structure"]:
            settings[key] = [n for n, _ in find_targets(model, value, common_structure=True)]
    if not settings["modified_modules"]:
        why = "has no default modules" if wanted is None else f"defaults {wanted} match nothing on this model"
        raise ModuleMatchError(
            f"delta_type {delta_type!r} {why} for the {backbone.family.name} family; set `modified_modules`, "
            f"e.g. to common names such as {', '.join(suffixes(common, depth=2)[:12])}, raw module names, "
            f"or {ALL_LINEAR!r}."
        )
    logger.info("%s: defaults for the %s family: %s", delta_type, backbone.family.name, settings)
    return settings


def _strip_legacy(entry: str) -> str:
    return entry.replace(LEGACY_MARK, "")


def _interpret(
    model_names: list[str],
    common: Mapping[str, str],
    fused: Mapping[str, str],
    entry: str,
    common_structure: bool | None,
) -> bool:
    """Whether `entry` is read as a common-structure name (True) or a raw module name (False)."""
    if LEGACY_MARK in entry:
        return True
    if common_structure is not None:
        return common_structure
    if not common:
        return False
    if _available(model_names, entry):
        logger.info("modified_modules entry %r matches raw module names; read as a raw name", entry)
        return False
    if _available(common.values(), entry) or _available(fused, entry):
        logger.info("modified_modules entry %r matches no raw module name; read as a common-structure name", entry)
        return True
    return False


def _check_fused(entry: str, common: Mapping[str, str], fused: Mapping[str, str]) -> None:
    parts = [f for f in fused if name_matches(f, entry)]
    holders = sorted({fused[p] for p in parts})
    if not parts or any(name_matches(h, entry) for h in holders):
        return
    local = sorted({p.split(".block.", 1)[-1].split(".", 1)[-1] for p in parts})
    holder_local = sorted({h.split(".block.", 1)[-1].split(".", 1)[-1] for h in holders})
    raw = sorted({r.rsplit(".", 1)[-1] for r, c in common.items() if c in holders})
    raise ModuleMatchError(
        f"{entry!r} names {', '.join(local)}, which this model computes inside one fused layer "
        f"({', '.join(holder_local)} = raw {', '.join(raw)}); a delta cannot modify a slice of it. Use "
        f"{', '.join(repr(h) for h in holder_local)} (or the raw name {', '.join(repr(r) for r in raw)}) "
        f"to modify the whole projection."
    )


def all_linear(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every nn.Linear / GPT-2 Conv1D of `model` except the output head.

    The head is the output embeddings of a known backbone's model (or everything outside a known backbone),
    else `model.get_output_embeddings()`, else the last linear layer registered in `model`.
    """
    linear = [(n, m) for n, m in named_backbone_modules(model) if _is_linear(m)]
    backbone = find_backbone(model)
    if backbone is not None:
        if backbone.path:  # a task head or wrapper around the backbone is not adapted
            linear = [(n, m) for n, m in linear if n.startswith(backbone.path + ".")]
        head = _output_head(model, backbone)
    else:
        getter = getattr(model, "get_output_embeddings", None)
        out = getter() if callable(getter) else None
        head = next((n for n, m in linear if m is out), linear[-1][0] if linear else None)
    if head is not None:
        logger.info("%r: leaving out the output head %r", ALL_LINEAR, head)
    return [(n, m) for n, m in linear if n != head]


def _excluded(name: str, common: str | None, exclude: list[str]) -> bool:
    """Exclude entries match the raw name or the common name (whichever the user wrote)."""
    return any(name_matches(name, e) or (common is not None and name_matches(common, e)) for e in exclude)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def find_targets(
    model: nn.Module, patterns: list[str], exclude: list[str] | None = None, common_structure: bool | None = None
) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs addressed by `patterns` minus `exclude`, in model order.

    Each entry is a raw name, a common-structure name (`common_structure=True`, an OpenDelta 0.3 "attn@.q@"
    spelling, or -- when `common_structure` is None -- an entry that matches no raw module but a common
    name), a "[r]regex" over either kind of name, or "all-linear".
    """
    common, fused = _structure(model)
    model_names = [n for n, _ in named_backbone_modules(model)]
    selected: list[str] = []
    common_entries: set[str] = set()
    extra: list[tuple[str, nn.Module]] = []
    for entry in patterns:
        if entry == ALL_LINEAR:
            extra = all_linear(model)
            if not extra:
                raise ModuleMatchError(f"{ALL_LINEAR!r}: {type(model).__name__} has no nn.Linear / Conv1D layer.")
            continue
        is_common = _interpret(model_names, common, fused, entry, common_structure)
        entry = _strip_legacy(entry)
        if is_common:
            if not common:
                raise ModuleMatchError(
                    f"{entry!r} is read as a common-structure name, but {type(model).__name__} has no known "
                    f"common structure; use raw module names (see Visualization(model).structure_graph())."
                )
            _check_fused(entry, common, fused)
            common_entries.add(entry)
        selected.append(entry)
    found = find_modules(model, selected, aliases=common, common=common_entries) if selected else []
    chosen = {n for n, _ in found} | {n for n, _ in extra}
    excl = [_strip_legacy(e) for e in exclude or []]
    unused = [e for e in excl if not any(_excluded(n, common.get(n), [e]) for n in model_names)]
    if unused:
        close = difflib.get_close_matches(unused[0].split(".")[-1], {n.split(".")[-1] for n in model_names}, n=3)
        raise ModuleMatchError(
            f"exclude_modules entr{'y' if len(unused) == 1 else 'ies'} {unused} match no module of "
            f"{type(model).__name__}, so they would exclude nothing"
            + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
            + "; fix the spelling (see Visualization(model).structure_graph()) or drop the entry."
        )
    kept = [(n, m) for n, m in named_backbone_modules(model) if n in chosen and not _excluded(n, common.get(n), excl)]
    if not kept:
        raise ModuleMatchError(
            f"Every module matched by `modified_modules`={patterns} is removed by "
            f"exclude_modules={exclude}; nothing would be modified. Remove entries from `exclude_modules`."
        )
    return kept
