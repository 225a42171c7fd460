"""OpenDelta 0.3's `opendelta.utils.common_structures.t5` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ...replaced import STRUCTURES, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.common_structures.t5",
        {
            "Mappings": STRUCTURES,
            "t5encoder": STRUCTURES,
            "t5decoder": STRUCTURES,
        },
    )
)
