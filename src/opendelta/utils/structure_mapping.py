"""OpenDelta 0.3's `opendelta.utils.structure_mapping` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from .._logging import logger  # noqa: F401
from ..replaced import STRUCTURES, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.structure_mapping",
        {
            "CommonStructureMap": STRUCTURES,
            "transform": STRUCTURES,
            "MAPPINGERROR_MSG": STRUCTURES,
        },
    )
)
