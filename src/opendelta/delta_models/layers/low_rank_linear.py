"""OpenDelta 0.3's `opendelta.delta_models.layers.low_rank_linear` import path: names kept so imports work."""

from __future__ import annotations

from ...replaced import replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.layers.low_rank_linear",
        {
            "LowRankLinear": "the low-rank adapter's layers are built by `LowRankAdapterModel`",
        },
    )
)
