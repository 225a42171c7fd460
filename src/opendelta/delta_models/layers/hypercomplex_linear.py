"""OpenDelta 0.3's `opendelta.delta_models.layers.hypercomplex_linear` import path: names kept so imports work."""

from __future__ import annotations

from ...replaced import replaced_names

globals().update(
    replaced_names(
        "opendelta.delta_models.layers.hypercomplex_linear",
        {
            "kronecker_product": "Compacter's PHM layers are built by `CompacterModel`",
            "kronecker_product_einsum_batched": "Compacter's PHM layers are built by `CompacterModel`",
            "matvec_product": "Compacter's PHM layers are built by `CompacterModel`",
            "PHMLinear": "Compacter's PHM layers are built by `CompacterModel`",
        },
    )
)
