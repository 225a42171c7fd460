"""Inspecting a model with its deltas (`opendelta.inspect`) and a saved checkpoint without any backbone
(`inspect_checkpoint`, what `opendelta inspect CKPT` prints)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from . import io
from ._logging import logger
from .base import DeltaBase
from .errors import CheckpointError
from .formats import CHECKPOINT_FILES, open_checkpoint
from .stats import ModelStats, dtype_name, model_stats


def inspect(model: nn.Module | DeltaBase, log: bool = True) -> ModelStats:
    """Total / trainable / delta parameters, ratios, parameter memory by dtype and peak accelerator memory.

    `model` is a backbone (deltas found by their layers) or a delta model (only its own delta counts).
    The numbers are logged at INFO level when `log` is true, and returned.
    """
    if isinstance(model, DeltaBase):
        return model.log() if log else model_stats(model.backbone_model, model.delta_parameters())
    if not isinstance(model, nn.Module):
        raise TypeError(f"inspect() expects a torch.nn.Module or a delta model, got {type(model).__name__}.")
    stats = model_stats(model)
    if log:
        logger.info("%s: parameters %s; %s", stats.model_class, stats.counts_line(), stats.memory_line())
    return stats


_ST_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}


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
    found = open_checkpoint(path_or_id)
    weights = [f for f in CHECKPOINT_FILES if f.endswith((".safetensors", ".bin")) and (found.folder / f).is_file()]
    if not weights:
        raise CheckpointError(
            f"No weights in {found.source}: expected one of "
            f"{', '.join(f for f in CHECKPOINT_FILES if f.endswith(('.safetensors', '.bin')))}."
        )
    path = found.folder / weights[0]
    if path.suffix == ".safetensors":
        tensors = _safetensors_index(path)
    else:
        tensors = [
            TensorInfo(k, tuple(v.shape), dtype_name(v.dtype), v.numel() * v.element_size())
            for k, v in io.load_legacy_bin(path).items()
        ]
    fp = found.fingerprint()
    recorded = len(fp.get("tensors", {})) if isinstance(fp, dict) else None
    return CheckpointInfo(
        found.source, found.format, found.config, path.name, sorted(tensors, key=lambda t: t.name), recorded
    )
