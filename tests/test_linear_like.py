"""Modules shaped like a Linear but not an nn.Linear (a large LM's own `Linear` class, as OpenDelta 0.3's LoRA
accepted): every type that works on a Linear attaches to them; merging into them is refused, nothing changed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from opendelta import AutoDeltaModel
from opendelta.errors import DeltaStateError, UnsupportedModuleError


class ScaledLinear(nn.Module):
    """A Linear-like layer whose forward scales the product (as cpm_live's Linear does): y = x W^T / sqrt(in)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.in_features, self.out_features = dim_in, dim_out
        self.weight = nn.Parameter(torch.randn(dim_out, dim_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() / math.sqrt(self.in_features)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = ScaledLinear(8, 12)
        self.out = ScaledLinear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.proj(x)))


X = torch.randn(3, 5, 8)


def _perturb(delta):
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.add_(torch.randn_like(p) * 0.1)


def test_lora_on_a_linear_like_module_adds_the_low_rank_update():
    model = Net()
    delta = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["proj"], "lora_r": 2}, model)
    _perturb(delta)
    layer = model.proj.lora
    with torch.no_grad():
        plain = X @ model.proj.weight.t() / math.sqrt(8)
        expected = plain + (X @ layer.lora_A.t() @ layer.lora_B.t()) * layer.scaling
        assert torch.allclose(model.proj(X), expected, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        {"delta_type": "ia3", "modified_modules": ["proj", "out"], "feedforward_modules": ["out"]},
        {"delta_type": "adapter", "modified_modules": ["proj"], "bottleneck_dim": 4},
        {"delta_type": "parallel_adapter", "modified_modules": ["proj"], "bottleneck_dim": 4},
        {"delta_type": "low_rank_adapter", "modified_modules": ["proj"], "reduction_factor": 3},
        {"delta_type": "bitfit", "modified_modules": ["proj", "out"]},
    ],
    ids=lambda c: c["delta_type"],
)
def test_types_that_work_on_a_linear_attach_to_a_linear_like_module(config):
    model = Net()
    with torch.no_grad():
        ref = model(X)
    delta = AutoDeltaModel.from_config(config, model)
    assert delta.modified_module_names
    _perturb(delta)
    out = model(X)
    assert out.shape == ref.shape and (out - ref).abs().max() > 1e-4
    out.square().mean().backward()
    assert all(p.grad is not None for p in delta.delta_parameters() if p.requires_grad)


@pytest.mark.parametrize("delta_type", ["lora", "ia3"])
def test_merge_into_a_linear_like_module_is_refused_and_changes_nothing(delta_type):
    model = Net()
    delta = AutoDeltaModel.from_config({"delta_type": delta_type, "modified_modules": ["proj"]}, model)
    _perturb(delta)
    with torch.no_grad():
        before, w = model(X), model.proj.weight.clone()
    with pytest.raises(DeltaStateError, match=r"test_linear_like\.ScaledLinear is Linear-like.*Nothing was changed"):
        delta.merge()
    assert torch.equal(model.proj.weight, w) and not delta.merged
    with torch.no_grad():
        assert torch.equal(model(X), before)


def test_an_nn_linear_subclass_still_merges():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(8, 8))
    delta = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["0"]}, model)
    _perturb(delta)
    with torch.no_grad():
        before = model(X)
        delta.merge()
        assert torch.allclose(model(X), before, atol=1e-5)


def test_errors_name_the_module_class_by_its_qualified_name():
    model = nn.Sequential(nn.Conv2d(1, 1, 1))
    with pytest.raises(UnsupportedModuleError, match=r"torch\.nn\.modules\.conv\.Conv2d.*Linear-like"):
        AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["0"]}, model)
