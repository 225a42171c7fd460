"""What the picker page shows and computes: a backbone's folded module tree for one delta type and its
settings, which modules that type can modify (and why not), and exact delta parameter counts.

Everything is computed on a meta-device copy of the backbone (the "skeleton": same modules, shapes, dtypes and
tied parameters, no memory), so deltas can really be built and attached to count their parameters while the
user's model is never touched.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..base import DeltaBase, Site
from ..config import DeltaConfig
from ..errors import ModuleMatchError, OpenDeltaError
from ..matching import REGEX_PREFIX, is_delta_layer, name_matches, named_backbone_modules
from ..stats import dtype_name, model_stats

_CONTAINERS = (nn.ModuleList, nn.ModuleDict)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers live on the meta device (tying is kept)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _probe_class(cls: type[DeltaBase]) -> type[DeltaBase]:
    """`cls` with attaching switched off: its constructor validates the config and sets up state only."""
    return type(f"_Probe{cls.__name__}", (cls,), {"_attach_new": lambda self: None})


class PickerModel:
    """The data behind the picker page for `model` and the delta described by `config`.

    tree(): the folded tree as JSON-ready dicts; evaluate(paths): exact counts for a selection, by attaching
    the delta to the skeleton and taking it off again; compact(paths): the shortest `modified_modules` list.
    """

    def __init__(self, model: nn.Module, config: DeltaConfig) -> None:
        from ..registry import get_delta_class

        if not isinstance(model, nn.Module):
            raise TypeError(f"The picker needs a torch.nn.Module, got {type(model).__name__}.")
        self.delta_class = get_delta_class(config.delta_type)
        if not isinstance(config, self.delta_class.config_class):
            config = self.delta_class.config_class.from_dict(config.to_dict())
        self.config = config
        self.model_class = type(model).__name__
        self.skeleton = meta_copy(model)
        self.modules = dict(named_backbone_modules(self.skeleton))
        self.names = list(self.modules)
        self._probe_cls = _probe_class(self.delta_class)
        self._lock = threading.Lock()  # the skeleton is shared by the server's request threads
        self.total = sum(p.numel() for p in self.skeleton.parameters())

    # ----- the tree ------------------------------------------------------------------------------
    def tree(self) -> dict[str, Any]:
        """{"root": node, ...}: node = {i, names, cls, params, total, ok, why, delta, children}.

        Identical siblings fold into one node whose `names` lists them all; a node's children are those of
        its first member (the same for every member). `ok` / `why` say whether the delta type can modify the
        module (checked by building the delta on it); `delta` is the delta parameters it would get there.
        """
        keys: dict[tuple, int] = {}
        seen: dict[int, str] = {}
        counter = [0]

        def build(name: str, path: str, module: nn.Module) -> dict[str, Any] | None:
            params, own = [], 0
            for pname, p in module.named_parameters(recurse=False):
                full = f"{path}.{pname}" if path else pname
                first = seen.setdefault(id(p), full)
                tied = None if first == full else first
                params.append([pname, list(p.shape), dtype_name(p.dtype), tied])
                own += 0 if tied else p.numel()
            kids: list[dict[str, Any]] = []
            for cname, child in module._modules.items():
                if child is None or is_delta_layer(child):
                    continue
                node = build(cname, f"{path}.{cname}" if path else cname, child)
                if node is not None:
                    kids.append(node)
            if not params and not kids:
                return None  # no parameters below: dropout, activations (as in the folded terminal tree)
            groups: dict[int, dict[str, Any]] = {}
            for kid in kids:
                if kid["_key"] in groups:
                    groups[kid["_key"]]["names"].append(kid["names"][0])
                else:
                    groups[kid["_key"]] = kid
            signature = (
                type(module).__name__,
                tuple((p[0], tuple(p[1]), p[2], p[3] is not None) for p in params),
                tuple((k["names"][0], k["_key"]) for k in kids),
            )
            key = keys.setdefault(signature, len(keys))
            total = own + sum(k["total"] for k in kids)
            return {
                "names": [name],
                "cls": type(module).__name__,
                "params": params,
                "total": total,
                "children": list(groups.values()),
                "_key": key,
                "_path": path,
                "_module": module,
            }

        root = build("", "", self.skeleton) or {
            "names": [""],
            "cls": self.model_class,
            "params": [],
            "total": 0,
            "children": [],
            "_path": "",
            "_module": self.skeleton,
        }

        def finish(node: dict[str, Any]) -> None:
            node.pop("_key", None)
            path, module = node.pop("_path"), node.pop("_module")
            node["i"] = counter[0]
            counter[0] += 1
            if path:
                node["ok"], node["why"], node["delta"] = self._check(path, module)
            for kid in node["children"]:
                finish(kid)

        finish(root)
        settings = {
            k: v
            for k, v in self.config.to_diff_dict().items()
            if k not in ("delta_type", "modified_modules", "exclude_modules", "common_structure")
        }
        return {
            "root": root,
            "model_class": self.model_class,
            "delta_type": self.config.delta_type,
            "settings": settings,
            "total": self.total,
            "initial": self.initial_selection(),
        }

    def _check(self, path: str, module: nn.Module) -> tuple[bool, str, int]:
        """(can modify, why not, delta parameters on this module alone), by building the delta on it."""
        if isinstance(module, _CONTAINERS):
            return (
                False,
                (
                    f"{path!r} is a {type(module).__name__}: a container that is never called itself; "
                    f"select the modules inside it."
                ),
                0,
            )
        try:
            probe = self._probe_cls(self.skeleton, self.config)
            probe.check_module(path, module)
            site = Site(path, module)
            probe.build_site(site)
        except (OpenDeltaError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
            return False, str(exc), 0
        params = {id(p): p for layer in site.layers.values() for p in layer.parameters()}
        return True, "", sum(p.numel() for p in params.values())

    def initial_selection(self) -> list[str]:
        """The modules the config addresses now (the family defaults when it names none); [] if it cannot tell."""
        try:
            with self._lock:
                probe = self._probe_cls(self.skeleton, self.config)
                return [name for name, _ in probe.resolve_targets()]
        except (OpenDeltaError, ValueError, TypeError, KeyError, AttributeError):
            return []

    # ----- a selection -----------------------------------------------------------------------------
    def _known(self, paths: Iterable[str]) -> list[str]:
        paths = list(dict.fromkeys(paths))
        if not paths:
            raise ModuleMatchError("Nothing is selected: select at least one module to modify.")
        unknown = [p for p in paths if p not in self.modules]
        if unknown:
            raise ModuleMatchError(f"No module of the backbone is named {unknown[:3]}; reload the page.")
        return paths

    def compact(self, paths: Iterable[str]) -> list[str]:
        """The shortest `modified_modules` list that addresses exactly `paths` (see `compact_names`)."""
        return compact_names(self._known(paths), self.names)

    def config_for(self, paths: Iterable[str]) -> DeltaConfig:
        """The config with `modified_modules` set to the compact names of `paths` (raw names, no excludes)."""
        changes: dict[str, Any] = {"modified_modules": self.compact(paths), "exclude_modules": None}
        if self.config.common_structure:
            changes["common_structure"] = False
        return self.config.replace(**changes)

    def evaluate(self, paths: Iterable[str]) -> dict[str, Any]:
        """Attach the delta for `paths` to the skeleton, count, and detach: the numbers `delta.log()` gives.

        Returns {"modules", "delta_parameters", "total", "share", "modified_modules"}; raises the delta's own
        error (UnsupportedModuleError, DeltaConfigError, ...) when it cannot be attached there.
        """
        paths = self._known(paths)
        config = self.config_for(paths)
        with self._lock:
            delta = self.delta_class(self.skeleton, config=config)
            try:
                attached = [s.name for s in delta.sites if s.name]
                stats = model_stats(self.skeleton, delta.delta_parameters())
            finally:
                delta.detach()
        if set(attached) != set(paths):  # pragma: no cover - compact_names verifies its result
            raise ModuleMatchError(
                f"The names {config.modified_modules} address {len(attached)} module(s), not the {len(paths)} selected."
            )
        return {
            "modules": len(attached),
            "delta_parameters": stats.delta,
            "total": stats.total,
            "share": stats.delta_ratio,
            "modified_modules": list(config.modified_modules),
        }


# ----- compact names ------------------------------------------------------------------------------------
def _matches(pattern: str, names: Sequence[str]) -> set[str]:
    rx = re.compile(pattern[len(REGEX_PREFIX) :]) if pattern.startswith(REGEX_PREFIX) else None
    return {n for n in names if name_matches(n, pattern, rx)}


def _numbers(alts: set[str]) -> str:
    nums = sorted(int(a) for a in alts)
    if len(nums) > 1 and nums[-1] < 10 and nums == list(range(nums[0], nums[-1] + 1)):
        return f"[{nums[0]}-{nums[-1]}]"
    return "(?:" + "|".join(str(n) for n in nums) + ")"


def _anchored(name: str) -> str:
    return REGEX_PREFIX + "^" + re.escape(name)


def _render(parts: list[set[str]]) -> str:
    if all(len(p) == 1 and "*" not in p for p in parts):
        return ".".join(next(iter(p)) for p in parts)
    out = []
    for alts in parts:
        if alts == {"*"}:
            out.append(r"\d+")
        elif len(alts) == 1:
            out.append(re.escape(next(iter(alts))))
        elif all(a.isdigit() for a in alts):
            out.append(_numbers(alts))
        else:
            out.append("(?:" + "|".join(re.escape(a) for a in sorted(alts)) + ")")
    return REGEX_PREFIX + r"\.".join(out)


def compact_names(selected: Iterable[str], names: Sequence[str]) -> list[str]:
    """A short `modified_modules` list that addresses exactly the modules `selected` among `names`.

    Each selected module gets its shortest dotted suffix that addresses selected modules only (`query`,
    `SelfAttention.q`); entries that then still differ only in layer numbers, or in one name, are merged into a
    `[r]` regex (`[r]layer\\.[0-5]\\.attention\\.self\\.query`). The result is checked against `names`; if it
    ever addressed anything else, the full names are returned instead.
    """
    sel = set(selected)
    order = [n for n in names if n in sel]
    if len(order) != len(sel):
        missing = sorted(sel - set(order))
        raise ModuleMatchError(f"No module is named {missing[:3]}.")
    index: dict[str, set[str]] = {}
    for n in names:
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            index.setdefault(".".join(parts[-k:]), set()).add(n)
    entries: list[tuple[str, set[str]]] = []
    covered: set[str] = set()
    for n in order:
        if n in covered:
            continue
        parts = n.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if parts[-k].isdigit() and k < len(parts):
                continue  # a bare number ("0", "0.q") reads badly and rarely means what it seems
            if index[suffix] <= sel:
                entries.append((suffix, index[suffix]))
                covered |= index[suffix]
                break
        else:  # a top-level name that also ends other names ("dropout"): only an anchored regex says "this one"
            entries.append((_anchored(n), {n}))

    # merge entries that differ in one component, where one of them holds a layer number
    def numbered_entry(e: str) -> bool:
        return not e.startswith(REGEX_PREFIX) and any(c.isdigit() for c in e.split("."))

    plain = [e for e, _ in entries if not numbered_entry(e)]
    numbered = [[{c} for c in e.split(".")] for e, _ in entries if numbered_entry(e)]
    merged = True
    while merged and 1 < len(numbered) <= 512:  # quadratic: huge hand-made selections stay as they are
        merged = False
        for i in range(len(numbered)):
            for j in range(i + 1, len(numbered)):
                a, b = numbered[i], numbered[j]
                if len(a) != len(b):
                    continue
                diff = [k for k in range(len(a)) if a[k] != b[k]]
                if len(diff) == 1:
                    a[diff[0]] = a[diff[0]] | b[diff[0]]
                    del numbered[j]
                    merged = True
                    break
            if merged:
                break
    for parts in numbered:  # every layer number the model has there: `\d+` reads better than the list
        for k, alts in enumerate(parts):
            if len(alts) > 1 and all(a.isdigit() for a in alts):
                wider = parts[:k] + [{"*"}] + parts[k + 1 :]
                if _matches(_render(wider), names) <= sel:
                    parts[k] = {"*"}
    result = plain + [_render(parts) for parts in numbered]
    hit: set[str] = set()
    for pattern in result:
        hit |= _matches(pattern, names)
    if hit != sel:  # pragma: no cover - defensive: never hand back names that address something else
        return [n if index[n] == {n} else _anchored(n) for n in order]
    first = {n: i for i, n in enumerate(names)}
    return sorted(result, key=lambda p: min(first[n] for n in _matches(p, names)))


__all__ = ["PickerModel", "compact_names", "meta_copy"]
