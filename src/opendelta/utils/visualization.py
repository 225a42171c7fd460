"""OpenDelta 0.3's `opendelta.utils.visualization` import path: `Visualization(plm).structure_graph()`; 0.3's
tree-building internals raise LegacyAPIError."""

from __future__ import annotations

from torch import nn

from .._logging import logger  # noqa: F401
from ..replaced import Replaced, replaced_names
from ..visualization import Visualization as _Visualization

_TREE = "`Visualization(model).structure_graph()` prints the tree (and returns its text)"
_INTERNALS = (
    "check_mode", "is_leaf_module", "build_tree", "has_parameter", "build_common_tree", "find_or_insert",
    "find_not_insert", "fold_param_node", "prune_tree", "extract_common_and_join", "neat_expr", "ranges",
    "add_param_info_node",
)  # fmt: skip


class Visualization(_Visualization):
    """This version's Visualization, built as 0.3 spelled it (`Visualization(plm)`)."""

    def __init__(self, plm: nn.Module) -> None:
        super().__init__(plm)


for _name in _INTERNALS:
    setattr(Visualization, _name, Replaced(f"opendelta.utils.visualization.Visualization.{_name}", _TREE))

globals().update(replaced_names("opendelta.utils.visualization", {"ModuleTree": _TREE}))

__all__ = ["Visualization"]
