"""Numbers about a model and its deltas: parameter counts and ratios, parameter memory by dtype, peak
accelerator memory; and the contents of a saved delta checkpoint, read without any backbone.

`opendelta.inspect(model)` and `delta.log()` return a `ModelStats`; `inspect_checkpoint(path)` returns a
`CheckpointInfo` (what `opendelta inspect CKPT` prints).
"""

from __future__ import annotations

import math
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from ._logging import logger
from .errors import CheckpointError
from .matching import is_delta_layer

if TYPE_CHECKING:  # pragma: no cover
    from .base import DeltaBase


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
        out.update(frozen=self.frozen, trainable_ratio=self.trainable_ratio, delta_ratio=self.delta_ratio,
                   parameter_bytes=self.parameter_bytes)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def counts_line(self) -> str:
        return (f"total {self.total:,} · trainable {self.trainable:,} ({percent(self.trainable_ratio)}) · "
                f"delta {self.delta:,} ({percent(self.delta_ratio)})")

    def memory_line(self) -> str:
        parts = [f"{dt} {human_bytes(b)}" for dt, b in sorted(self.memory_by_dtype.items())]
        line = "parameter memory: " + (", ".join(parts) if parts else "none")
        if self.accelerator is not None and self.peak_accelerator_memory is not None:
            line += f" · peak {self.accelerator} memory allocated {human_bytes(self.peak_accelerator_memory)}"
        return line

    def summary(self) -> str:
        return f"{self.model_class}: parameters {self.counts_line()}\n{self.memory_line()}"


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


def inspect(model: "nn.Module | DeltaBase", log: bool = True) -> ModelStats:
    """Total / trainable / delta parameters, ratios, parameter memory by dtype and peak accelerator memory.

    `model` is a backbone (deltas found by their layers) or a delta model (only its own delta counts).
    The numbers are logged at INFO level when `log` is true, and returned.
    """
    from .base import DeltaBase

    if isinstance(model, DeltaBase):
        stats = model_stats(model.backbone_model, model.delta_parameters())
        where = f"{model.delta_type} delta on {stats.model_class} ({len(model.sites)} modified module(s))"
    elif isinstance(model, nn.Module):
        stats = model_stats(model)
        where = stats.model_class
    else:
        raise TypeError(f"inspect() expects a torch.nn.Module or a delta model, got {type(model).__name__}.")
    if log:
        logger.info("%s: parameters %s; %s", where, stats.counts_line(), stats.memory_line())
    return stats


# ----- a saved checkpoint ------------------------------------------------------------------------
_ST_DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
              "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "I64": ("int64", 8),
              "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1)}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class CheckpointInfo:
    """What a delta checkpoint holds, read from its config and tensor headers only (no backbone needed)."""

    source: str  # "folder '...'" or "Hub repo 'Org/name' (revision main)"
    format: str  # "opendelta", "opendelta-0.3" or "peft"
    config: dict[str, Any]  # in this version's vocabulary (translated from older formats)
    weights_file: str
    tensors: list[TensorInfo]  # as stored in the file
    fingerprint_tensors: int | None  # parameters recorded in fingerprint.json (None: no such file)

    @property
    def delta_type(self) -> str | None:
        return self.config.get("delta_type")

    @property
    def num_parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(delta_type=self.delta_type, num_parameters=self.num_parameters, nbytes=self.nbytes)
        return out


def _safetensors_index(path: Path) -> list[TensorInfo]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # reads the header only
            out = []
            for key in f.keys():
                piece = f.get_slice(key)
                shape = tuple(int(s) for s in piece.get_shape())
                name, size = _ST_DTYPES.get(piece.get_dtype(), (piece.get_dtype().lower(), 0))
                numel = 1
                for s in shape:
                    numel *= s
                out.append(TensorInfo(key, shape, name, numel * size))
            return out
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"Cannot read {str(path)!r} as safetensors: {exc}.") from None


def inspect_checkpoint(path_or_id: str | os.PathLike) -> CheckpointInfo:
    """Config, tensors (name, shape, dtype, bytes) and fingerprint record of a delta checkpoint.

    Takes what `from_finetuned` takes: a folder of any supported format or a Hub repo id. Safetensors
    files are read through their header only; a legacy `.bin` is loaded as plain tensors (no pickled code).
    """
    from . import checkpoint as ckpt
    from .formats import CHECKPOINT_FILES, open_checkpoint

    found = open_checkpoint(path_or_id)
    weights = [f for f in CHECKPOINT_FILES if f.endswith((".safetensors", ".bin")) and (found.folder / f).is_file()]
    if not weights:
        raise CheckpointError(f"No weights in {found.source}: expected one of "
                              f"{', '.join(f for f in CHECKPOINT_FILES if f.endswith(('.safetensors', '.bin')))}.")
    path = found.folder / weights[0]
    if path.suffix == ".safetensors":
        tensors = _safetensors_index(path)
    else:
        tensors = [TensorInfo(k, tuple(v.shape), dtype_name(v.dtype), v.numel() * v.element_size())
                   for k, v in ckpt.load_legacy_bin(path).items()]
    fp = found.fingerprint()
    recorded = len(fp.get("tensors", {})) if isinstance(fp, dict) else None
    return CheckpointInfo(found.source, found.format, found.config, path.name,
                          sorted(tensors, key=lambda t: t.name), recorded)
