"""Numbers about a model and its deltas: parameter counts and ratios, parameter memory by dtype, peak
accelerator memory. The one place that counts parameters (`count_parameters`, `model_stats`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .matching import is_delta_layer


def human_count(n: int | float) -> str:
    """1234 -> '1.2K', 124439808 -> '124.4M'."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def percent(ratio: float) -> str:
    """0.0829 -> '8.29%': three significant digits, so tiny ratios stay readable."""
    return f"{100 * ratio:.3g}%"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----- a live model ------------------------------------------------------------------------------
@dataclass
class ModelStats:
    """Counts are of distinct parameters (tied weights once). Also readable as `stats["total"]`."""

    model_class: str
    total: int
    trainable: int
    delta: int
    memory_by_dtype: dict[str, int] = field(default_factory=dict)  # dtype -> bytes of parameters
    accelerator: str | None = None  # e.g. "cuda" when one is present
    peak_accelerator_memory: int | None = None  # bytes, torch's max_memory_allocated()

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def trainable_ratio(self) -> float:
        return self.trainable / max(self.total, 1)

    @property
    def delta_ratio(self) -> float:
        return self.delta / max(self.total, 1)

    @property
    def parameter_bytes(self) -> int:
        return sum(self.memory_by_dtype.values())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            frozen=self.frozen,
            trainable_ratio=self.trainable_ratio,
            delta_ratio=self.delta_ratio,
            parameter_bytes=self.parameter_bytes,
        )
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def counts_line(self) -> str:
        return (
            f"total {self.total:,} · trainable {self.trainable:,} ({percent(self.trainable_ratio)}) · "
            f"delta {self.delta:,} ({percent(self.delta_ratio)})"
        )

    def memory_line(self) -> str:
        parts = [f"{dt} {human_bytes(b)}" for dt, b in sorted(self.memory_by_dtype.items())]
        line = "parameter memory: " + (", ".join(parts) if parts else "none")
        if self.accelerator is not None and self.peak_accelerator_memory is not None:
            line += f" · peak {self.accelerator} memory allocated {human_bytes(self.peak_accelerator_memory)}"
        return line

    def summary(self) -> str:
        return f"{self.model_class}: parameters {self.counts_line()}\n{self.memory_line()}"


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameter values in `module` (tied weights once); only trainable ones if asked."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def delta_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters that live inside delta layers attached to `model` (any delta)."""
    ids: set[int] = set()
    for module in model.modules():
        if is_delta_layer(module):
            ids.update(id(p) for p in module.parameters())
    return ids


def _peak_accelerator_memory() -> tuple[str | None, int | None]:
    if torch.cuda.is_available():
        return "cuda", int(torch.cuda.max_memory_allocated())
    accel = getattr(torch, "accelerator", None)
    try:
        if accel is not None and accel.is_available():
            device = accel.current_accelerator()
            return device.type, int(accel.max_memory_allocated())
    except (RuntimeError, AttributeError):  # backend without memory statistics
        pass
    return None, None


def model_stats(model: nn.Module, delta_params: Iterable[nn.Parameter] | None = None) -> ModelStats:
    """Count `model`'s parameters. `delta_params` (default: everything inside delta layers) is the delta part."""
    delta_ids = {id(p) for p in delta_params} if delta_params is not None else delta_parameter_ids(model)
    total = trainable = delta = 0
    memory: dict[str, int] = {}
    for p in model.parameters():  # distinct tensors: tied parameters are yielded once
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
        delta += n if id(p) in delta_ids else 0
        key = dtype_name(p.dtype)
        memory[key] = memory.get(key, 0) + n * p.element_size()
    accelerator, peak = _peak_accelerator_memory()
    return ModelStats(type(model).__name__, total, trainable, delta, memory, accelerator, peak)
