"""OpenDelta 0.3's `opendelta.utils.data_parallel` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ..replaced import DISTRIBUTED, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.data_parallel",
        {
            "sequential_caller": DISTRIBUTED,
            "before_caller": DISTRIBUTED,
            "after_caller": DISTRIBUTED,
            "parallel_caller": DISTRIBUTED,
            "caller_map": DISTRIBUTED,
            "new_replicate_for_data_parallel": DISTRIBUTED,
        },
    )
)
