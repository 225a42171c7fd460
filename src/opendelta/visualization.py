"""A folded tree of a model's modules: identical sibling subtrees share one line (`0-11 (BertLayer)`)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.text import Text
from rich.tree import Tree
from torch import nn

from .matching import is_delta_layer

STYLE_DELTA = "bold magenta"
STYLE_TRAINABLE = "green"
STYLE_FROZEN = "grey50"
STYLE_MODULE = "bold"


@dataclass
class _Node:
    name: str
    cls: str
    delta: bool
    params: list[tuple[str, tuple[int, ...], str, bool]]  # (name, shape, dtype, trainable)
    children: list["_Node"] = field(default_factory=list)
    signature: tuple = ()
    has_params: bool = False


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _build(name: str, module: nn.Module, seen: set[int], in_delta: bool) -> _Node:
    delta = in_delta or is_delta_layer(module)
    params = []
    for pname, p in module.named_parameters(recurse=False):
        if id(p) in seen:  # tied parameter: shown where it first appears
            continue
        seen.add(id(p))
        params.append((pname, tuple(p.shape), _dtype(p), p.requires_grad))
    node = _Node(name, type(module).__name__, delta, params)
    node.children = [_build(cname, child, seen, delta) for cname, child in module.named_children()
                     if child is not None]
    node.has_params = bool(params) or any(c.has_params for c in node.children)
    node.signature = (node.cls, node.delta, tuple(params),
                      tuple((c.name, c.signature) for c in node.children))
    return node


def _compress_names(names: list[str]) -> str:
    """['0','1','2','5'] -> '0-2,5'; other names are joined with commas."""
    if all(re.fullmatch(r"\d+", n) for n in names) and len(names) > 1:
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


class Visualization:
    """Render the structure of `model` as a folded rich tree.

    >>> Visualization(model).structure_graph()
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def structure_graph(self, rootname: str = "root", expand_params: bool = False, keep_non_params: bool = False,
                        max_depth: int | None = None, printTree: bool = True, width: int = 120) -> Tree:
        """Build (and by default print) the folded tree. Returns the rich Tree."""
        node = _build(rootname, self.model, set(), False)
        tree = Tree(self._label([rootname], node, expand_params))
        self._add_children(tree, node, expand_params, keep_non_params, max_depth, 1)
        if printTree:
            Console(width=width).print(tree)
        self.tree = tree
        return tree

    def to_text(self, **kwargs) -> str:
        """The tree as plain text (no colour codes)."""
        kwargs["printTree"] = False
        tree = self.structure_graph(**kwargs)
        console = Console(file=io.StringIO(), width=kwargs.get("width", 120), color_system=None, record=True)
        console.print(tree)
        return console.export_text(styles=False)

    def _add_children(self, tree: Tree, node: _Node, expand_params: bool, keep_non_params: bool,
                      max_depth: int | None, depth: int) -> None:
        if max_depth is not None and depth > max_depth:
            return
        groups: dict[tuple, list[_Node]] = {}
        for child in node.children:
            if not keep_non_params and not child.has_params:
                continue
            groups.setdefault(child.signature[:3] + (tuple(s for _, s in child.signature[3]),
                                                     tuple(n for n, _ in child.signature[3])), []).append(child)
        for members in groups.values():
            first = members[0]
            branch = tree.add(self._label([m.name for m in members], first, expand_params))
            self._add_children(branch, first, expand_params, keep_non_params, max_depth, depth + 1)

    @staticmethod
    def _label(names: list[str], node: _Node, expand_params: bool) -> Text:
        text = Text()
        text.append(_compress_names(names), style=STYLE_DELTA if node.delta else STYLE_MODULE)
        text.append(f" ({node.cls})", style=STYLE_DELTA if node.delta else "")
        if node.params:
            if expand_params:
                for pname, shape, dtype, trainable in node.params:
                    text.append(f"\n  {pname}: {list(shape)} {dtype}",
                                style=STYLE_TRAINABLE if trainable else STYLE_FROZEN)
            else:
                for pname, shape, _, trainable in node.params:
                    text.append(f" {pname}:{list(shape)}", style=STYLE_TRAINABLE if trainable else STYLE_FROZEN)
        return text
