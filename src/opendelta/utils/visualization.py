"""OpenDelta 0.3's `opendelta.utils.visualization` import path: `Visualization(model).structure_graph()`."""

from __future__ import annotations

from .._logging import logger  # noqa: F401
from ..replaced import replaced_names
from ..visualization import Visualization

globals().update(
    replaced_names(
        "opendelta.utils.visualization",
        {"ModuleTree": "`Visualization(model).structure_graph()` prints the tree (and returns its text)"},
    )
)

__all__ = ["Visualization"]
