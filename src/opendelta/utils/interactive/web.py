"""OpenDelta 0.3's `opendelta.utils.interactive.web` import path:
its names stay importable and raise LegacyAPIError, naming the replacement, when used."""

from __future__ import annotations

from ...replaced import PICKER, replaced_names

globals().update(
    replaced_names(
        "opendelta.utils.interactive.web",
        {
            "space": PICKER,
            "prefix0": PICKER,
            "prefix1": PICKER,
            "prefix2": PICKER,
            "prefix3": PICKER,
            "colorfy": PICKER,
            "compressed_pattern_1": PICKER,
            "compressed_pattern_2": PICKER,
            "expand_part": PICKER,
            "dfs": PICKER,
            "urls": PICKER,
            "PortApplication": PICKER,
            "app": PICKER,
            "render": PICKER,
            "names": PICKER,
            "hello": PICKER,
            "submit": PICKER,
            "interactive": PICKER,
        },
    )
)
