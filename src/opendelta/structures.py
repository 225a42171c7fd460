"""Default module addresses per model family (extended by the common-structure maps)."""

from __future__ import annotations

from torch import nn

from .errors import ModuleMatchError
from .matching import named_backbone_modules, suffixes


def default_modified_modules(model: nn.Module, delta_type: str) -> list[str]:
    """The modules a delta of `delta_type` modifies on `model` when the config names none."""
    names = [n for n, _ in named_backbone_modules(model)]
    examples = [s for s in suffixes(names, depth=2) if not s.split(".")[-1].isdigit()][:15]
    raise ModuleMatchError(
        f"No default modules are known for {delta_type!r} on {type(model).__name__}; set `modified_modules`, "
        f"e.g. to some of: {', '.join(examples)}.")
