"""OpenDelta 0.3's `opendelta.utils.common_structures`: its per-family name tables are built into this version
(`opendelta.structures`); the names stay importable and raise LegacyAPIError when used."""

from __future__ import annotations

from ...replaced import STRUCTURES, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.common_structures",
        {
            "CoreMappings": STRUCTURES,
            "cur_path": STRUCTURES,
            "filelist": STRUCTURES,
        },
    )
)
