"""OpenDelta 0.3's `opendelta.utils.backend` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ..replaced import BACKEND, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.backend",
        {
            "BackendMapping": BACKEND,
        },
    )
)
