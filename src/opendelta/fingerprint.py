"""Model fingerprint: a fast, reproducible hash over the raw bytes of every parameter.

Each parameter (in sorted name order, tied parameters once) is digested with xxh3-128 over its name,
dtype, shape and raw little-endian bytes; the root digest hashes the list of per-tensor digests. The
result depends only on the values, so the same weights give the same fingerprint on any machine, device
or torch version. It detects any changed value, but it is not a defence against deliberate collisions.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import xxhash
from torch import nn

from .distributed import full_tensor

ALGORITHM = "xxh3-128-tensors-v1"
_CHUNK_BYTES = 64 << 20
_PARALLEL_MIN_BYTES = 256 << 20  # below this, thread start-up costs more than it saves (measured)
_MAX_THREADS = 8


@dataclass(frozen=True)
class Fingerprint:
    root: str
    tensors: dict[str, str]  # parameter name -> "dtype:shape:digest"
    algorithm: str = ALGORITHM

    def diff(self, other: Fingerprint) -> str:
        """A human-readable description of the first difference between two fingerprints."""
        if self.algorithm != other.algorithm:
            return f"they were made with different algorithms ({self.algorithm} vs {other.algorithm})"
        only_self = sorted(set(self.tensors) - set(other.tensors))
        only_other = sorted(set(other.tensors) - set(self.tensors))
        parts = []
        if only_self:
            parts.append(f"{len(only_self)} parameter(s) missing now, e.g. {only_self[0]!r}")
        if only_other:
            parts.append(f"{len(only_other)} parameter(s) not present at save time, e.g. {only_other[0]!r}")
        changed = [n for n in sorted(self.tensors) if n in other.tensors and self.tensors[n] != other.tensors[n]]
        for name in changed[:1]:
            (d0, s0, _), (d1, s1, _) = self.tensors[name].split(":"), other.tensors[name].split(":")
            if d0 != d1:
                parts.append(f"parameter {name!r} changed dtype from {d0} to {d1}")
            elif s0 != s1:
                parts.append(f"parameter {name!r} changed shape from {s0} to {s1}")
            else:
                parts.append(f"parameter {name!r} has different values")
        if len(changed) > 1:
            parts.append(f"{len(changed) - 1} more parameter(s) differ")
        return "; ".join(parts) or "no per-tensor difference found"


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    data = t.view(torch.uint8) if t.dtype != torch.uint8 else t
    if sys.byteorder != "little" and t.element_size() > 1:
        data = t.clone().view(torch.uint8).view(-1, t.element_size()).flip(1).reshape(-1)
    return memoryview(data.numpy())


def tensor_digest(t: torch.Tensor) -> str:
    t = full_tensor(t)  # a sharded (DTensor) parameter is hashed whole, the same on every rank
    if t.device.type == "meta":
        raise ValueError("cannot fingerprint a tensor on the meta device (it has no values)")
    h = xxhash.xxh3_128()
    buf = _tensor_bytes(t)
    for start in range(0, len(buf), _CHUNK_BYTES):
        h.update(buf[start : start + _CHUNK_BYTES])
    dtype = str(t.dtype).removeprefix("torch.")
    shape = "x".join(str(s) for s in t.shape)
    return f"{dtype}:{shape}:{h.hexdigest()}"


def fingerprint_model(model: nn.Module) -> Fingerprint:
    """The fingerprint of every parameter of `model` (frozen, trainable and delta alike).

    Tensors are digested in parallel threads (xxhash releases the GIL), so hashing runs at memory speed.
    """
    named = sorted(model.named_parameters())
    total = sum(p.numel() * p.element_size() for _, p in named)
    workers = min(os.cpu_count() or 1, _MAX_THREADS)
    if workers > 1 and total >= _PARALLEL_MIN_BYTES:
        # the largest tensors first, so one big embedding does not finish last
        order = sorted(range(len(named)), key=lambda i: -named[i][1].numel() * named[i][1].element_size())
        with ThreadPoolExecutor(workers) as pool:
            digests = dict(zip(order, pool.map(lambda i: tensor_digest(named[i][1]), order)))
        tensors = {name: digests[i] for i, (name, _) in enumerate(named)}
    else:
        tensors = {name: tensor_digest(p) for name, p in named}
    root = xxhash.xxh3_128()
    for name, digest in tensors.items():
        root.update(f"{name}={digest};".encode())
    return Fingerprint(root=root.hexdigest(), tensors=tensors)
