"""OpenDelta 0.3's process-wide setting `set_axis_order` (the layout of the hidden states its adapters saw)."""

from __future__ import annotations

from .errors import LegacyAPIError


class GlobalSetting:
    """0.3's holder of `axis_order` (batch, sequence, hidden by default)."""

    def __init__(self) -> None:
        self.axis_order = [0, 1, 2]


global_setting = GlobalSetting()


def set_axis_order(axis_order: list[int] | tuple[int, ...] = (0, 1, 2)) -> None:
    """0.3 permuted hidden states to `axis_order` around its adapters. An adapter acts on each position's hidden
    vector, so any order that keeps the hidden size last ((0, 1, 2), (1, 0, 2): sequence-first models) computes
    the same here and is accepted; an order that moves the hidden axis cannot be honoured."""
    order = list(axis_order)
    if sorted(order) != [0, 1, 2] or order[-1] != 2:
        raise LegacyAPIError(
            f"set_axis_order({order}): adapters here act on the last axis of the hidden states, which must be "
            "the hidden size; an order that moves it is not supported (orders ending in 2 need no call)"
        )
    global_setting.axis_order = order
