"""OpenDelta 0.3's `opendelta.utils.interactive` package (its module picker is `opendelta.picker` here)."""
