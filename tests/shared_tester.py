"""Reusable property checks for any delta type on any tiny backbone family (see tiny.build). A plain module.

API (every function takes the same three leading arguments and raises AssertionError on failure):

    family      one of tiny.CORE: "t5", "bert", "gpt2", "llama", "toy" (any tiny.FAMILIES entry works)
    delta_type  a registered delta type, e.g. "adapter"
    config      the rest of the config dict, WITH explicit "modified_modules"

    make(family, delta_type, config, dtype=None) -> (model, delta)   build a backbone, attach the delta
    perturb(delta, scale=0.5, seed=0)            add seeded noise to every delta parameter (in place)
    check_attaches(...)            classes and backbone state_dict keys kept; new keys only inside delta
                                   layers; delta parameters on the backbone's device and dtype; forward runs;
                                   `identity_atol` (0 = exactly, None = skip) pins the output at init
    check_output_changes(...)      after `perturb`, the output differs from the backbone's
    check_gradients(...)           after freeze_module, gradients reach delta parameters only
    check_training(...)            AdamW steps (after a small `perturb`): frozen weights bit-identical, every
                                   delta tensor changed
    check_trains_from_init(...)    AdamW steps from the delta's own initialisation change the output
    check_detach_attach(...)       detach gives exactly the original output and keys; attach puts it back
    check_roundtrip(..., tmp_path) save_finetuned -> from_finetuned on a fresh backbone: equal outputs
    check_hash_mismatch(..., tmp_path)  loading on a backbone with one changed weight raises
                                   HashMismatchError (naming the weight and check_hash=False) and leaves that
                                   backbone untouched; check_hash=False then loads it
    check_merge(...)               merge() equals the unmerged output (atol 1e-5) and unmerge() restores;
                                   for non-mergeable types, merge() raises DeltaStateError
    check_dtype(...)   half-precision backbones: float32 deltas, finite AdamW step; delta_dtype="backbone"
    check_all(family, delta_type, config, tmp_path, identity_atol=None)  all of the above

Example:  check_all("bert", "adapter", {"modified_modules": ["output.dense"]}, tmp_path, identity_atol=0)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from opendelta import AutoDeltaConfig, AutoDeltaModel, DeltaBase
from opendelta.errors import DeltaStateError, HashMismatchError
from tiny import build, inputs_for, loss_of, run

__all__ = [
    "make",
    "perturb",
    "check_attaches",
    "check_output_changes",
    "check_gradients",
    "check_training",
    "check_trains_from_init",
    "check_detach_attach",
    "check_roundtrip",
    "check_hash_mismatch",
    "check_merge",
    "check_dtype",
    "check_all",
]

CHANGE_TOL = 1e-6  # an output "changed" when some element moved by more than this (tiny BERT logits are ~1e-2)


def make(family: str, delta_type: str, config: dict, dtype: torch.dtype | None = None) -> tuple[nn.Module, DeltaBase]:
    """A fresh tiny backbone of `family` (optionally cast to `dtype`) with the delta attached."""
    assert config.get("modified_modules"), "shared_tester: pass explicit modified_modules"
    model = build(family)
    if dtype is not None:
        model = model.to(dtype)
    cfg = AutoDeltaConfig.from_dict({"delta_type": delta_type, **config})
    return model, AutoDeltaModel.from_config(cfg, backbone_model=model)


def perturb(delta: DeltaBase, scale: float = 0.5, seed: int = 0) -> None:
    """Add seeded Gaussian noise to every delta parameter, so the delta is neither zero nor identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.add_((torch.randn(p.shape, generator=g) * scale).to(p))


def _inputs(model: nn.Module, family: str) -> dict:
    """tiny.inputs_for, with floating inputs cast to the model's dtype."""
    dtype = next(model.parameters()).dtype
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs_for(family).items()}


def _out(model: nn.Module, family: str) -> torch.Tensor:
    with torch.no_grad():
        return run(model, family, _inputs(model, family))


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or (a.float() - b.float()).abs().max().item() > CHANGE_TOL


def _delta_ids(delta: DeltaBase) -> set[int]:
    return {id(p) for p in delta.delta_parameters()}


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def _assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = model.state_dict(keep_vars=True)
    assert list(now) == list(before), "state_dict keys changed"
    for k, v in before.items():
        assert torch.equal(now[k].detach(), v), f"{k} changed"


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def check_attaches(family: str, delta_type: str, config: dict, identity_atol: float | None = None) -> None:
    model = build(family)
    ref = _out(model, family)
    keys = list(model.state_dict())
    classes = {n: type(m) for n, m in model.named_modules()}
    cfg = AutoDeltaConfig.from_dict({"delta_type": delta_type, **config})
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model)
    assert delta.attached and delta.sites, "nothing attached"
    assert delta.num_delta_parameters() > 0
    assert {n: type(m) for n, m in model.named_modules() if n in classes} == classes
    now = list(model.state_dict())
    assert [k for k in now if k in set(keys)] == keys, "backbone keys changed or reordered"
    delta_keys = {f"{prefix}.{k}" for prefix, layer in delta.delta_modules() for k in layer.state_dict()}
    assert set(now) - set(keys) == delta_keys
    ref_p = next(model.parameters())
    for p in delta.delta_parameters():
        assert p.device == ref_p.device and p.dtype == ref_p.dtype
    out = _out(model, family)
    added = getattr(cfg, "soft_token_num", 0) if getattr(cfg, "prompt_positions", "trim") == "keep" else 0
    if added and out.dim() == 3 and out.shape[1] == ref.shape[1] + added:  # a soft prompt's positions are kept
        out = out[:, added:]
    assert out.shape == ref.shape and torch.isfinite(out).all()
    if identity_atol is not None:
        torch.testing.assert_close(out, ref, rtol=0, atol=identity_atol)


def check_output_changes(family: str, delta_type: str, config: dict) -> None:
    model = build(family)
    ref = _out(model, family)
    delta = AutoDeltaModel.from_config(
        AutoDeltaConfig.from_dict({"delta_type": delta_type, **config}), backbone_model=model
    )
    perturb(delta)
    out = _out(model, family)
    assert torch.isfinite(out).all()
    assert _differs(out, ref), "perturbing the delta parameters did not change the output"


def check_gradients(family: str, delta_type: str, config: dict) -> None:
    model, delta = make(family, delta_type, config)
    perturb(delta, scale=0.1)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    ids = _delta_ids(delta)
    for n, p in model.named_parameters():
        assert p.requires_grad == (id(p) in ids), f"{n}: requires_grad={p.requires_grad}"
    assert set(model.state_dict()) == {n for n, p in model.named_parameters() if p.requires_grad}
    loss_of(run(model, family, _inputs(model, family))).backward()
    for n, p in model.named_parameters():
        if id(p) in ids:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached delta parameter {n}"
        else:
            assert p.grad is None, f"frozen parameter {n} got a gradient"


def check_training(family: str, delta_type: str, config: dict, steps: int = 3) -> None:
    model, delta = make(family, delta_type, config)
    perturb(delta, scale=0.1)  # so that every delta tensor gets a gradient (zero / tiny inits would not)
    delta.freeze_module(exclude=["deltas"])
    ids = _delta_ids(delta)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in ids}
    tuned = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in ids}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    x = _inputs(model, family)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(run(model, family, x)).backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
        else:
            assert not torch.equal(p, tuned[n]), f"delta parameter {n} did not train"


def check_trains_from_init(family: str, delta_type: str, config: dict, steps: int = 5, lr: float = 1e-2) -> None:
    model, delta = make(family, delta_type, config)
    ref = _out(model, family)
    delta.freeze_module(exclude=["deltas"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    x = _inputs(model, family)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(run(model, family, x)).backward()
        opt.step()
    assert _differs(_out(model, family), ref), "training from the initial delta did not change the output"


def check_detach_attach(family: str, delta_type: str, config: dict) -> None:
    model = build(family)
    ref = _out(model, family)
    before = _snapshot(model)
    delta = AutoDeltaModel.from_config(
        AutoDeltaConfig.from_dict({"delta_type": delta_type, **config}), backbone_model=model
    )
    perturb(delta)
    out = _out(model, family)
    delta.detach()
    assert torch.equal(_out(model, family), ref), "detach did not restore the original output"
    _assert_same_state(model, before)
    assert _no_hooks(model)
    with pytest.raises(DeltaStateError):
        delta.detach()
    delta.attach()
    assert torch.equal(_out(model, family), out), "attach did not put the delta back"


def check_roundtrip(family: str, delta_type: str, config: dict, tmp_path: Path) -> None:
    model, delta = make(family, delta_type, config)
    perturb(delta)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    out = _out(model, family)
    ckpt = Path(tmp_path) / f"{delta_type}-{family}"
    delta.save_finetuned(ckpt)
    fresh = build(family)
    loaded = AutoDeltaModel.from_finetuned(ckpt, backbone_model=fresh)
    assert type(loaded) is type(delta)
    assert loaded.config.to_dict() == delta.config.to_dict()
    assert torch.equal(_out(fresh, family), out), "the loaded delta does not reproduce the outputs"


def check_hash_mismatch(family: str, delta_type: str, config: dict, tmp_path: Path) -> None:
    model, delta = make(family, delta_type, config)
    perturb(delta)
    ckpt = Path(tmp_path) / f"{delta_type}-{family}-hash"
    delta.save_finetuned(ckpt)
    changed = build(family)
    name, p = next((n, p) for n, p in changed.named_parameters() if p.dim() == 2)
    with torch.no_grad():
        p.view(-1)[0] += 1.0
    before = _snapshot(changed)
    with pytest.raises(HashMismatchError, match=name.replace(".", r"\.")) as err:
        AutoDeltaModel.from_finetuned(ckpt, backbone_model=changed)
    assert "check_hash=False" in str(err.value), "the error does not say how to load anyway"
    _assert_same_state(changed, before)
    assert _no_hooks(changed)
    loaded = AutoDeltaModel.from_finetuned(ckpt, backbone_model=changed, check_hash=False)
    assert loaded.attached and type(loaded) is type(delta)


def check_merge(family: str, delta_type: str, config: dict, atol: float = 1e-5) -> None:
    model, delta = make(family, delta_type, config)
    perturb(delta, scale=0.2)
    unmerged = _out(model, family)
    if not delta.mergeable:
        with pytest.raises(DeltaStateError, match="cannot be merged"):
            delta.merge()
        assert torch.equal(_out(model, family), unmerged)
        return
    with torch.no_grad():
        delta.merge()
        assert all(not s.handles for s in delta.sites), "hooks left after merge"
        torch.testing.assert_close(_out(model, family), unmerged, rtol=0, atol=atol)
        delta.unmerge()
        torch.testing.assert_close(_out(model, family), unmerged, rtol=0, atol=atol)


def check_dtype(family: str, delta_type: str, config: dict, dtype: torch.dtype = torch.bfloat16) -> None:
    """Half-precision backbones: float32 delta parameters by default (the forward casts), a default AdamW step in
    float16 and bfloat16 stays finite; `delta_dtype="backbone"` makes the delta follow the backbone's dtype."""
    for half in (torch.float16, torch.bfloat16):
        model, delta = make(family, delta_type, config, dtype=half)
        assert all(p.dtype == torch.float32 for p in delta.delta_parameters())
        perturb(delta, scale=0.1)
        out = _out(model, family)
        assert out.dtype == half and torch.isfinite(out.float()).all()
        params = list(delta.delta_parameters())
        for p in model.parameters():
            p.requires_grad_(any(p is q for q in params))
        optimizer = torch.optim.AdamW(params)  # defaults: eps 1e-8 underflows in float16, not in float32
        loss_of(run(model, family, _inputs(model, family))).backward()
        optimizer.step()
        assert all(torch.isfinite(p).all() for p in params), f"{delta_type} on {half} backbone: non-finite step"
        assert torch.isfinite(_out(model, family).float()).all()
    model, delta = make(family, delta_type, {**config, "delta_dtype": "backbone"}, dtype=dtype)
    assert all(p.dtype == dtype for p in delta.delta_parameters())
    perturb(delta, scale=0.1)
    out = _out(model, family)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


def check_all(family: str, delta_type: str, config: dict, tmp_path: Path, identity_atol: float | None = None) -> None:
    """Every property above, in order."""
    check_attaches(family, delta_type, config, identity_atol)
    check_output_changes(family, delta_type, config)
    check_gradients(family, delta_type, config)
    check_training(family, delta_type, config)
    check_trains_from_init(family, delta_type, config)
    check_detach_attach(family, delta_type, config)
    check_roundtrip(family, delta_type, config, tmp_path)
    check_hash_mismatch(family, delta_type, config, tmp_path)
    check_merge(family, delta_type, config)
    check_dtype(family, delta_type, config)
