"""OpenDelta 0.3's `opendelta.utils` helpers that still exist (`opendelta.utils.inspect`)."""
