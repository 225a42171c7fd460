"""A folded tree of a model's modules, for the terminal, plain text, SVG and HTML.

Identical sibling subtrees share one line (`0-11 (BertLayer)`, `query,key,value (Linear)`); each line shows
its parameters' shapes and dtype. Delta modules, trainable and frozen parameters have their own colours
(explained by a legend), and a footer gives total / trainable / delta parameter counts and ratios.
Tied parameters appear once; later owners point at the first (`weight → model.embed_tokens.weight`).

    Visualization(model).structure_graph()                    # print to the terminal
    Visualization(model).structure_graph(save="model.svg")    # or .html / .txt
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.text import Text
from rich.tree import Tree
from torch import nn

from .dispatch import named_deltas
from .io import atomic_write_text
from .matching import is_delta_layer
from .providers import provide
from .stats import dtype_name, human_bytes, human_count, model_stats, percent
from .structures import common_names

STYLE_DELTA = "bold magenta"
STYLE_TRAINABLE = "green"
STYLE_FROZEN = "grey50"
STYLE_MODULE = "bold"
STYLE_TIED = "italic cyan"
STYLE_NOTE = "dim"

SAVE_FORMATS = (".svg", ".html", ".htm", ".txt")
_MAX_EXPORT_WIDTH = 400


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool
    tied_to: str | None = None  # full name of the parameter this one is the same tensor as

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class _Node:
    name: str
    cls: str
    delta: bool
    params: tuple[_Param, ...]
    children: list[_Node] = field(default_factory=list)
    key: int = 0  # interned signature: siblings with equal keys fold into one line
    total: int = 0  # parameters in the subtree (tied ones counted where they first appear)
    trainable: int = 0
    has_params: bool = False  # owns parameters in its subtree, tied ones included
    tag: str = ""  # the name of the delta a delta layer belongs to, where it differs from the layer's name


class _Builder:
    """Walks the module tree once; signatures are interned to ints so folding stays linear in size."""

    def __init__(self, rename: dict[str, str] | None, delta_names: dict[int, str] | None = None) -> None:
        self.rename = rename or {}  # raw module path -> name to show
        self.delta_names = delta_names or {}  # id(delta layer) -> its delta's name
        self.seen: dict[int, str] = {}
        self.keys: dict[tuple, int] = {}

    def build(self, name: str, path: str, module: nn.Module, in_delta: bool) -> _Node:
        delta = in_delta or is_delta_layer(module)
        params = []
        for pname, p in module.named_parameters(recurse=False):
            full = f"{path}.{pname}" if path else pname
            first = self.seen.setdefault(id(p), full)
            params.append(
                _Param(pname, tuple(p.shape), dtype_name(p.dtype), p.requires_grad, None if first == full else first)
            )
        node = _Node(name, type(module).__name__, delta, tuple(params))
        tag = self.delta_names.get(id(module), "")
        node.tag = tag if tag != name else ""
        for cname, child in module.named_children():
            if child is None:
                continue
            cpath = f"{path}.{cname}" if path else cname
            shown = self.rename.get(cpath, cname)
            node.children.append(self.build(shown, cpath, child, delta))
        own = [p for p in params if p.tied_to is None]
        node.total = sum(p.numel for p in own) + sum(c.total for c in node.children)
        node.trainable = sum(p.numel for p in own if p.trainable) + sum(c.trainable for c in node.children)
        node.has_params = bool(params) or any(c.has_params for c in node.children)
        signature = (node.cls, node.tag, delta, node.params, tuple((c.name, c.key) for c in node.children))
        node.key = self.keys.setdefault(signature, len(self.keys))
        return node


def _compress_names(names: list[str]) -> str:
    """['0','1','2','5'] -> '0-2,5'; other names are joined with commas."""
    if len(names) > 1 and all(re.fullmatch(r"\d+", n) for n in names):
        nums = sorted(int(n) for n in names)
        runs, start, prev = [], nums[0], nums[0]
        for n in nums[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            runs.append(f"{start}-{prev}" if prev != start else str(start))
            if n is not None:
                start = prev = n
        return ",".join(runs)
    return ",".join(names)


def _common_display_names(common: dict[str, str]) -> dict[str, str]:
    """Raw module path -> `raw [role]`: the raw name with its common-structure role next to it.

    Inside a block the role is relative to the block (`query [attn.q]`, `dense [ff.w2]`); outside, it is
    the whole common name (`wte [embeddings]`). Blocks themselves and modules whose role is their raw name
    are shown as they are, so `0-11 (BertLayer)` still folds and reads the same.
    """
    shown = {}
    for raw, name in common.items():
        last = raw.rsplit(".", 1)[-1]
        if _BLOCK_END.search(name):
            continue
        inside = _BLOCK_INSIDE.search(name)
        role = inside.group(1) if inside else name
        if role != last:
            shown[raw] = f"{last} [{role}]"
    return shown


_BLOCK_END = re.compile(r"(^|\.)block\.\d+$")
_BLOCK_INSIDE = re.compile(r"(?:^|\.)block\.\d+\.(.+)$")


@dataclass
class _Options:
    expand_params: bool
    keep_non_params: bool
    max_depth: int | None
    only_trainable: bool
    show_counts: bool


class Visualization:
    """Render the structure of `model` as a folded tree.

    >>> Visualization(model).structure_graph()                   # terminal
    >>> Visualization(model).structure_graph(save="model.svg")   # picture (.svg / .html) or .txt
    >>> text = Visualization(model).to_text()                    # plain text, no colour codes
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Visualization expects a torch.nn.Module, got {type(model).__name__}.")
        self.model = model
        self.tree: Tree | None = None

    # ----- public ----------------------------------------------------------------------------
    def structure_graph(
        self,
        rootname: str = "root",
        expand_params: bool = False,
        keep_non_params: bool = False,
        max_depth: int | None = None,
        common_structure: bool = False,
        only_trainable: bool = False,
        show_counts: bool = False,
        legend: bool = True,
        footer: bool = True,
        printTree: bool = True,
        save: str | Path | None = None,
        width: int | None = None,
        mapping: Any = None,
        only_common: Any = None,
    ) -> Tree:
        """Build the folded tree; print it (`printTree`) and/or write it to `save`. Returns the rich Tree.

        (`mapping=` / `only_common=`, OpenDelta 0.3's common-name options, raise a TypeError naming the
        replacement: `common_structure=True`, whose maps are built in.)

        expand_params: one line per parameter (name, shape, dtype, count) under its module.
        keep_non_params: also show modules without parameters (dropout, activations).
        max_depth: show this many levels below the root (None: all).
        common_structure: show each module's common-structure role next to its name (`query [attn.q]`).
        only_trainable: show only the modules and parameters that train.
        show_counts: add each line's parameter count (`2×1.1K` for a folded pair).
        save: a path ending in .svg, .html or .txt (plain text).
        width: console width for the terminal (default: the terminal's); exports fit the widest line.
        """
        if mapping is not None or only_common is not None:
            raise TypeError(
                "`structure_graph(mapping=..., only_common=...)` is gone: use `structure_graph(common_structure=True)`"
                ", which shows each module's common name next to its own (the maps are built in)"
            )
        if save is not None and Path(save).suffix.lower() not in SAVE_FORMATS:
            raise ValueError(
                f"Cannot save the structure graph as {str(save)!r}: the name must end in {', '.join(SAVE_FORMATS)}."
            )
        tree, graph = self._render(
            rootname,
            _Options(expand_params, keep_non_params, max_depth, only_trainable, show_counts),
            common_structure,
            legend,
            footer,
        )
        if printTree:
            console = Console(width=width)
            if width is None and not console.is_terminal:  # piped: fit the widest line instead of wrapping
                console = Console(width=_fit_width(graph))
            console.print(graph)
        if save is not None:
            self._save(graph, Path(save), rootname)
        return tree

    def to_text(
        self,
        rootname: str = "root",
        expand_params: bool = False,
        keep_non_params: bool = False,
        max_depth: int | None = None,
        common_structure: bool = False,
        only_trainable: bool = False,
        show_counts: bool = False,
        legend: bool = True,
        footer: bool = True,
        width: int | None = None,
    ) -> str:
        """The folded tree (with legend and footer) as plain text without colour codes; options as above."""
        _, graph = self._render(
            rootname,
            _Options(expand_params, keep_non_params, max_depth, only_trainable, show_counts),
            common_structure,
            legend,
            footer,
        )
        return _export(graph, "text", width)

    def _render(
        self, rootname: str, opts: _Options, common_structure: bool, legend: bool, footer: bool
    ) -> tuple[Tree, Group]:
        if opts.max_depth is not None and opts.max_depth < 0:
            raise ValueError(f"max_depth must be None or >= 0, got {opts.max_depth}.")
        rename = _common_display_names(common_names(self.model)) if common_structure else None
        node = _Builder(rename, _delta_names(self.model)).build(rootname, "", self.model, False)
        tree = Tree(self._label([node], opts))
        self._add_children(tree, node, opts, 1)
        parts: list[Any] = [tree]
        if legend:
            parts.append(self._legend())
        if footer:
            parts.append(self._footer())
        self.tree = tree
        return tree, Group(*parts)

    # ----- building the rich tree ------------------------------------------------------------------
    def _visible(self, node: _Node, opts: _Options) -> bool:
        if opts.only_trainable:
            return node.trainable > 0
        return opts.keep_non_params or node.has_params

    def _add_children(self, tree: Tree, node: _Node, opts: _Options, depth: int) -> None:
        if opts.expand_params:
            for p in node.params:
                if not opts.only_trainable or (p.trainable and p.tied_to is None):
                    tree.add(self._param_line(p, opts))
        groups: dict[int, list[_Node]] = {}
        for child in node.children:
            if self._visible(child, opts):
                groups.setdefault(child.key, []).append(child)
        if not groups:
            return
        if opts.max_depth is not None and depth > opts.max_depth:
            tree.label.append(" …", style=STYLE_NOTE)
            return
        for members in groups.values():
            branch = tree.add(self._label(members, opts))
            self._add_children(branch, members[0], opts, depth + 1)

    @staticmethod
    def _label(members: list[_Node], opts: _Options) -> Text:
        node = members[0]
        text = Text()
        text.append(_compress_names([m.name for m in members]), style=STYLE_DELTA if node.delta else STYLE_MODULE)
        text.append(f" ({node.cls})", style=STYLE_DELTA if node.delta else "")
        if node.tag:
            text.append(f" [{node.tag}]", style=STYLE_DELTA)
        params = [p for p in node.params if not opts.only_trainable or (p.trainable and p.tied_to is None)]
        if params and not opts.expand_params:
            dtypes = {p.dtype for p in params if p.tied_to is None}
            for p in params:
                text.append(" ")
                if p.tied_to is not None:
                    text.append(f"{p.name} → {p.tied_to}", style=STYLE_TIED)
                    continue
                shown = f"{p.name}:{list(p.shape)}" + (f":{p.dtype}" if len(dtypes) > 1 else "")
                text.append(shown, style=STYLE_TRAINABLE if p.trainable else STYLE_FROZEN)
            if len(dtypes) == 1:
                text.append(f" {dtypes.pop()}", style=STYLE_NOTE)
        if opts.show_counts and node.total:
            count = human_count(node.total)
            text.append(f" · {len(members)}×{count}" if len(members) > 1 else f" · {count}", style=STYLE_NOTE)
        return text

    @staticmethod
    def _param_line(p: _Param, opts: _Options) -> Text:
        if p.tied_to is not None:
            return Text(f"{p.name} → {p.tied_to} (tied)", style=STYLE_TIED)
        text = Text(f"{p.name} {list(p.shape)} {p.dtype}", style=STYLE_TRAINABLE if p.trainable else STYLE_FROZEN)
        if opts.show_counts:
            text.append(f" · {p.numel:,}", style=STYLE_NOTE)
        return text

    @staticmethod
    def _legend() -> Text:
        text = Text("legend: ")
        for label, style in (
            ("delta module", STYLE_DELTA),
            ("trainable", STYLE_TRAINABLE),
            ("frozen", STYLE_FROZEN),
            ("tied", STYLE_TIED),
        ):
            text.append("■ ", style=style)
            text.append(label, style=style)
            text.append("  ")
        text.rstrip()
        return text

    def _footer(self) -> Text:
        stats = model_stats(self.model)
        text = Text("parameters: ")
        text.append(f"total {stats.total:,}")
        text.append(" · ")
        text.append(f"trainable {stats.trainable:,} ({percent(stats.trainable_ratio)})", style=STYLE_TRAINABLE)
        text.append(" · ")
        text.append(f"delta {stats.delta:,} ({percent(stats.delta_ratio)})", style=STYLE_DELTA)
        memory = ", ".join(f"{dt} {human_bytes(b)}" for dt, b in sorted(stats.memory_by_dtype.items()))
        if memory:
            text.append(f"\nparameter memory: {memory}", style=STYLE_NOTE)
        return text

    # ----- output ------------------------------------------------------------------------------------
    @staticmethod
    def _save(renderable: Any, path: Path, title: str) -> None:
        if not path.parent.exists():
            raise FileNotFoundError(
                f"Cannot save the structure graph to {str(path)!r}: the folder {str(path.parent)!r} does not exist."
            )
        kind = {".svg": "svg", ".html": "html", ".htm": "html", ".txt": "text"}[path.suffix.lower()]
        atomic_write_text(path, _export(renderable, kind, None, title=title))


def _fit_width(renderable: Any) -> int:
    """The console width at which the widest line of `renderable` fits (capped at 400 columns)."""
    probe = Console(file=io.StringIO(), width=_MAX_EXPORT_WIDTH, color_system=None, record=True)
    probe.print(renderable)
    lines = probe.export_text(styles=False).splitlines()
    return max(40, min(_MAX_EXPORT_WIDTH, max((len(line.rstrip()) for line in lines), default=0) + 1))


def _export(renderable: Any, kind: str, width: int | None, title: str = "") -> str:
    """Render off-screen at a width that fits the widest line, then export as text / svg / html."""
    width = width or _fit_width(renderable)
    console = Console(
        file=io.StringIO(),
        width=width,
        record=True,
        color_system=None if kind == "text" else "truecolor",
        force_terminal=kind != "text",
    )
    console.print(renderable)
    if kind == "svg":
        return console.export_svg(title=title)
    if kind == "html":
        return console.export_html(inline_styles=True)
    return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines()) + "\n"


def _delta_names(model: nn.Module) -> dict[int, str]:
    """id(delta layer) -> the name of the delta it belongs to, for every delta on `model`."""
    return {id(layer): d.name for d in named_deltas(model).values() for _, layer in d.delta_modules()}


provide("structure_graph", lambda model: Visualization(model).structure_graph())
