"""OpenDelta 0.3's `opendelta.utils.model_md5` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ..replaced import FINGERPRINT, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.model_md5",
        {
            "gen_model_hash": FINGERPRINT,
            "gen_parameter_hash": FINGERPRINT,
        },
    )
)
