"""OpenDelta 0.3's `opendelta.delta_models.layers` package (its building blocks are not public here)."""
