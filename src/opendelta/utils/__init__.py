"""OpenDelta 0.3's `opendelta.utils` package: its helpers where they still mean something (`logging`, `inspect`,
`name_based_addressing`, `signature`, `cuda`, ...), and its other names kept importable, raising LegacyAPIError
that names the replacement when used."""
