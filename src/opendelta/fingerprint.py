"""Model fingerprint: a fast, reproducible hash over the raw bytes of named tensors.

Each tensor (in sorted name order, tied tensors once) is digested with xxh3-128 over its dtype, shape and
raw little-endian bytes; the root digest hashes the list of (name, per-tensor digest). The result depends
only on the values, so the same weights give the same fingerprint on any machine, device or torch version.
It detects any changed value, but it is not a defence against deliberate collisions.

Scope (`ALGORITHM`, "scoped-v2"): a delta's fingerprint covers the backbone's own parameters and persistent
buffers (no delta layer) plus that delta's saved tensors (`backbone_tensors` + the delta's own), so deltas
compose. "tensors-v1" (`fingerprint_model`) covered every parameter of the model, deltas included; it is
still computed to verify checkpoints saved with it.

Per-tensor digests are remembered, keyed by the tensor object and what identifies its unchanged contents
(data pointer, storage offset, shape, strides, dtype, device and torch's in-place version counter, which
every in-place operation on the tensor or a view of it bumps), so verifying an unchanged backbone again
costs O(number of tensors). Writes that bypass autograd's version counter (through `.data`, or a numpy view)
are not seen: `clear_digest_cache()` forces a full re-read.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import xxhash
from torch import nn

from .distributed import full_tensor

ALGORITHM = "xxh3-128-scoped-v2"
MODEL_ALGORITHM = "xxh3-128-tensors-v1"  # every parameter of the model (checkpoints saved before "scoped-v2")
ALGORITHMS = (ALGORITHM, MODEL_ALGORITHM)
_CHUNK_BYTES = 64 << 20
_PARALLEL_MIN_BYTES = 8 << 20  # below this, thread start-up costs more than it saves (measured)
_MAX_THREADS = 8
# id(tensor) -> (weak reference to it, identity of its contents, digest); entries leave with their tensor
_CACHE: dict[int, tuple[weakref.ref, tuple, str]] = {}
_CACHE_LOCK = threading.Lock()


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


def _identity(t: torch.Tensor) -> tuple:
    """What identifies a tensor's unchanged contents (see the module docstring)."""
    return (t.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device, t._version)


def _lookup(t: torch.Tensor) -> str | None:
    if t.requires_grad:  # see cached_digest
        return None
    hit = _CACHE.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] == _identity(t):
        return hit[2]
    return None


def _forget(key: int, ref: weakref.ref) -> None:
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is ref:
            del _CACHE[key]


def cached_digest(t: torch.Tensor) -> str:
    """`tensor_digest(t)`, reused while `t` is unchanged (same storage, layout and version counter).

    Only frozen tensors are remembered: fused optimizer kernels (torch's `AdamW(fused=True)`, the Trainer's
    default) write trainable parameters without bumping their version counter, so a trainable tensor is read
    again every time.
    """
    if t.requires_grad:
        return tensor_digest(t)
    with _CACHE_LOCK:
        digest = _lookup(t)
    if digest is not None:
        return digest
    identity = _identity(t)
    digest = tensor_digest(t)
    key = id(t)
    ref = weakref.ref(t, lambda r, key=key: _forget(key, r))
    with _CACHE_LOCK:
        _CACHE[key] = (ref, identity, digest)
    return digest


def clear_digest_cache() -> None:
    """Forget every remembered digest (the next fingerprint re-reads every byte)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def fingerprint_tensors(named: dict[str, torch.Tensor], algorithm: str = ALGORITHM) -> Fingerprint:
    """The fingerprint of `named` tensors (name -> tensor).

    Digests of tensors seen unchanged before are reused; the others are read in parallel threads (xxhash
    releases the GIL), the largest first, so hashing runs at memory speed.
    """
    items = sorted(named.items())
    todo = []
    with _CACHE_LOCK:
        for i, (_, t) in enumerate(items):
            if _lookup(t) is None:
                todo.append(i)
    total = sum(items[i][1].numel() * items[i][1].element_size() for i in todo)
    workers = min(os.cpu_count() or 1, _MAX_THREADS, len(todo))
    if workers > 1 and total >= _PARALLEL_MIN_BYTES:
        order = sorted(todo, key=lambda i: -items[i][1].numel() * items[i][1].element_size())
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: cached_digest(items[i][1]), order))
    tensors = {name: cached_digest(t) for name, t in items}
    root = xxhash.xxh3_128()
    if algorithm != MODEL_ALGORITHM:
        root.update(f"{algorithm};".encode())
    for name, digest in tensors.items():
        root.update(f"{name}={digest};".encode())
    return Fingerprint(root=root.hexdigest(), tensors=tensors, algorithm=algorithm)


def backbone_tensors(model: nn.Module, skip: Callable[[nn.Module], bool]) -> dict[str, torch.Tensor]:
    """Name -> tensor of `model`'s parameters and persistent buffers, tied tensors once, leaving out the
    subtrees of modules for which `skip(module)` is true (delta layers)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str) -> None:
        for name, p in module._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out[prefix + name] = p
        for name, b in module._buffers.items():
            if b is not None and name not in module._non_persistent_buffers_set and id(b) not in seen:
                seen.add(id(b))
                out[prefix + name] = b
        for name, child in module._modules.items():
            if child is not None and not skip(child):
                walk(child, f"{prefix}{name}.")

    walk(model, "")
    return out


def fingerprint_model(model: nn.Module) -> Fingerprint:
    """The "tensors-v1" fingerprint: every parameter of `model` (frozen, trainable and delta alike)."""
    return fingerprint_tensors(dict(model.named_parameters()), algorithm=MODEL_ALGORITHM)
