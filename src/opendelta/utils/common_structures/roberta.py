"""OpenDelta 0.3's `opendelta.utils.common_structures.roberta` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ...replaced import STRUCTURES, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.common_structures.roberta",
        {
            "Mappings": STRUCTURES,
        },
    )
)
