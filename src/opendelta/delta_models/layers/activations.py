"""OpenDelta 0.3's `opendelta.delta_models.layers.activations` import path: names kept so imports work."""

from __future__ import annotations

from ...replaced import replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.layers.activations",
        {
            "Activations": "adapters take `non_linearity='relu' | 'gelu' | ...` by name",
        },
    )
)
