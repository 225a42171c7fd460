"""OpenDelta 0.3's `opendelta.utils.delta_hub` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ..replaced import DELTA_CENTER, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.delta_hub",
        {
            "create_hub_repo_name": DELTA_CENTER,
        },
    )
)
