"""OpenDelta 0.3's `opendelta.utils.decorate` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ..replaced import CUSTOM_DELTA, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.decorate",
        {
            "fix": CUSTOM_DELTA,
            "decorate": CUSTOM_DELTA,
        },
    )
)
