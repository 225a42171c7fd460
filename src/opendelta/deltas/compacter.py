"""Compacter (Mahabadi et al. 2021): an adapter whose down / up layers are PHM (hypercomplex) layers.

A PHM layer with n = `hypercomplex_division` has weight W = sum_i kron(C_i, W_i) (shape in x out), with
C_i: (n, n) the "rule" matrices and W_i: (in/n, out/n); y = x W + b.
- factorized_phm: W_i = s_i t_i with s_i: (in/n, phm_rank), t_i: (phm_rank, out/n).
- factorized_phm_rule: C_i = a_i b_i^T with a_i, b_i: (n,).
- shared_phm_rule: one set of C_i for every PHM layer of the delta (stored once, in the first layer).
- shared_W_phm: the W_i are shared by every PHM layer of the same shape (stored once, in the first one).
- learn_phm=False: the C_i stay fixed (buffers, saved with the delta but not trained).
C starts at the scale `phm_init_range` (normal: std, uniform: bound), so the adapter starts near the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..base import DeltaBase
from ..config import DeltaConfig
from ..errors import DeltaConfigError
from ..interop import SELECTION_ARGS, LegacyMapping
from ..registry import register_delta
from ..site import Site
from ._common import activation, bottleneck_of, check_activation, check_size, init_glorot, output_dim, route_output

C_INITS = ("normal", "uniform")


@dataclass(repr=False)
class CompacterConfig(DeltaConfig):
    """See the module docstring for the PHM keys; bottleneck = hidden // reduction_factor."""

    # 0.3's order; bottleneck_dim, sequential, kronecker_prod and hypercomplex_nonlinearity configured nothing there
    positional_keys = (
        "bottleneck_dim",
        "non_linearity",
        "sequential",
        "reduction_factor",
        "phm_c_init",
        "hypercomplex_division",
        "learn_phm",
        "hypercomplex_nonlinearity",
        "shared_phm_rule",
        "factorized_phm",
        "shared_W_phm",
        "factorized_phm_rule",
        "phm_rank",
        "phm_init_range",
        "kronecker_prod",
        "use_bias_up_sampler",
        "use_bias_down_sampler",
    )
    ignored_keys = frozenset({"bottleneck_dim", "sequential", "kronecker_prod", "hypercomplex_nonlinearity"})

    reduction_factor: int = 16
    non_linearity: str = "gelu_new"
    hypercomplex_division: int = 4
    phm_c_init: str = "normal"
    learn_phm: bool = True
    shared_phm_rule: bool = False
    factorized_phm: bool = True
    shared_W_phm: bool = False
    factorized_phm_rule: bool = False
    phm_rank: int = 1
    phm_init_range: float = 1e-4
    use_bias_up_sampler: bool = True
    use_bias_down_sampler: bool = True

    def _validate(self) -> None:
        super()._validate()
        self._require(self.reduction_factor >= 1, "reduction_factor", "an integer >= 1")
        self._require(self.hypercomplex_division >= 1, "hypercomplex_division", "an integer >= 1")
        self._require(self.phm_rank >= 1, "phm_rank", "an integer >= 1")
        self._require(self.phm_init_range > 0, "phm_init_range", "a number > 0")
        self._require(self.phm_c_init in C_INITS, "phm_c_init", f"one of {', '.join(C_INITS)}")
        check_activation(self)


def _tensor(module: nn.Module, name: str, shape: tuple[int, ...], trainable: bool, kw: dict[str, Any]) -> torch.Tensor:
    t = torch.zeros(shape, **kw)
    if trainable:
        module.register_parameter(name, nn.Parameter(t))
    else:
        module.register_buffer(name, t)
    return getattr(module, name)


class PHMRule(nn.Module):
    """The n rule matrices C: (n, n, n), or factorized as C_i = a_i b_i^T (a: (n, n, 1), b: (n, 1, n))."""

    def __init__(
        self, n: int, factorized: bool, c_init: str, init_range: float, learn: bool, device=None, dtype=None
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.factorized = factorized
        names = {"C_left": (n, n, 1), "C_right": (n, 1, n)} if factorized else {"C": (n, n, n)}
        scale = init_range**0.5 if factorized else init_range  # the product a_i b_i^T is then ~init_range
        for name, shape in names.items():
            t = _tensor(self, name, shape, learn, kw)
            if t.device.type == "meta":
                continue
            with torch.no_grad():
                if c_init == "normal":
                    t.normal_(0.0, scale)
                else:
                    t.uniform_(-scale, scale)

    def forward(self) -> torch.Tensor:
        return self.C_left @ self.C_right if self.factorized else self.C


class PHMWeights(nn.Module):
    """The n blocks W_i: (n, in/n, out/n), or factorized as W_i = s_i t_i with rank `rank`."""

    def __init__(
        self, n: int, in_features: int, out_features: int, factorized: bool, rank: int, device=None, dtype=None
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        p, q = in_features // n, out_features // n
        self.factorized = factorized
        shapes = {"W_left": (n, p, rank), "W_right": (n, rank, q)} if factorized else {"W": (n, p, q)}
        for name, shape in shapes.items():
            t = _tensor(self, name, shape, True, kw)
            for block in t.data:
                init_glorot(block, "glorot-uniform")

    def forward(self) -> torch.Tensor:
        return self.W_left @ self.W_right if self.factorized else self.W


class PHMLinear(nn.Module):
    """y = x (sum_i kron(C_i, W_i)) + b. A shared rule / weight module is referenced, not registered,
    unless this layer owns it (then its tensors are saved under this layer's name)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n: int,
        rule: PHMRule,
        weights: PHMWeights,
        own_rule: bool,
        own_weights: bool,
        bias: bool,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.n = in_features, out_features, n
        self._shared: dict[str, nn.Module] = {}  # a plain dict: its modules are not children of this one
        for attr, module, own in (("phm_rule", rule, own_rule), ("phm_weights", weights, own_weights)):
            if own:
                self.add_module(attr, module)
            else:
                self._shared[attr] = module
        self.b = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    def _part(self, attr: str) -> nn.Module:
        return self._modules[attr] if attr in self._modules else self._shared[attr]

    def full_weight(self) -> torch.Tensor:
        """The full (in, out) weight sum_i kron(C_i, W_i)."""
        c, w = self._part("phm_rule")(), self._part("phm_weights")()
        n, p, q = self.n, w.shape[1], w.shape[2]
        # kron(C_i, W_i)[a*p + b, c*q + d] = C_i[a, c] * W_i[b, d]
        return torch.einsum("iac,ibd->abcd", c, w).reshape(n * p, n * q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.full_weight()
        return y + self.b if self.b is not None else y

    def extra_repr(self) -> str:
        shared = ", ".join(f"shared {k}" for k in self._shared)
        return f"in={self.in_features}, out={self.out_features}, n={self.n}" + (f", {shared}" if shared else "")


class CompacterLayer(nn.Module):
    """`forward(h)` returns h + up(act(down(h))) with PHM down / up samplers."""

    def __init__(self, down: PHMLinear, non_linearity: str, up: PHMLinear) -> None:
        super().__init__()
        self.down_sampler = down
        self.activation = activation(non_linearity)
        self.up_sampler = up

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up_sampler(self.activation(self.down_sampler(h)))


@register_delta("compacter")
class CompacterModel(DeltaBase):
    """A Compacter adapter after each module addressed by `modified_modules` (a layer or a whole block)."""

    config_class = CompacterConfig
    default_modules = {"*": ["attn.proj", "ff.w2"]}
    default_learning_rate = 1e-2
    # 0.3 named the layer `compactor` and its tensors W_left / W_right / phm_rule directly on each sampler; its
    # config carried keys that configure nothing here (written as null, or the PHM weight init), and
    # CompacterConfig's default activation was relu (what AutoDeltaConfig-built compacters used). 0.3's
    # CompacterModel ignored `exclude_modules`.
    legacy = LegacyMapping(
        config_keys=dict.fromkeys(CompacterConfig.ignored_keys),
        tensor_renames=(
            (r"\.compactor\.", ".compacter."),
            (r"_sampler\.(W_left|W_right)$", r"_sampler.phm_weights.\1"),
            (r"_sampler\.phm_rule$", "_sampler.phm_rule.C"),
        ),
        defaults={"non_linearity": "relu"},
        layer_keys=((r"phm_weights\.(W_left|W_right)$", r"\1"), (r"phm_rule\.C$", "phm_rule")),
        honours_exclude=False,
        positional=(
            *SELECTION_ARGS,
            *(k for k in CompacterConfig.positional_keys if k not in ("bottleneck_dim", "sequential")),
        ),
    )

    def __init__(self, backbone_model: nn.Module, *args: Any, **kwargs: Any) -> None:
        self._shared_rule: PHMRule | None = None
        self._shared_weights: dict[tuple[int, int], PHMWeights] = {}
        super().__init__(backbone_model, *args, **kwargs)

    def build_site(self, site: Site) -> None:
        cfg = self.config
        n = cfg.hypercomplex_division
        dim = output_dim(site.name, site.module)
        bottleneck = bottleneck_of(site.name, dim, cfg.reduction_factor, self.delta_type)
        bad = [f"{label} {size}" for label, size in (("output size", dim), ("bottleneck", bottleneck)) if size % n]
        if bad:
            raise DeltaConfigError(
                f"'compacter' on {site.name!r}: {' and '.join(bad)} not divisible by hypercomplex_division={n} "
                f"(bottleneck = {dim} // reduction_factor {cfg.reduction_factor}). Choose a hypercomplex_division "
                f"that divides both, or another reduction_factor."
            )
        check_size(self.delta_type, site.name, "phm_rank", cfg.phm_rank, dim, "its output size")
        kw = site.factory_kwargs()
        down = self._phm(dim, bottleneck, cfg.use_bias_down_sampler, kw)
        up = self._phm(bottleneck, dim, cfg.use_bias_up_sampler, kw)
        layer = site.add_layer("compacter", CompacterLayer(down, cfg.non_linearity, up))
        route_output(site, layer, dim, self.delta_type)

    def _phm(self, in_f: int, out_f: int, bias: bool, kw: dict[str, Any]) -> PHMLinear:
        cfg = self.config
        n = cfg.hypercomplex_division
        own_rule = not (cfg.shared_phm_rule and self._shared_rule is not None)
        if own_rule:
            rule = PHMRule(n, cfg.factorized_phm_rule, cfg.phm_c_init, cfg.phm_init_range, cfg.learn_phm, **kw)
            if cfg.shared_phm_rule:
                self._shared_rule = rule
        else:
            rule = self._shared_rule
        own_weights = not (cfg.shared_W_phm and (in_f, out_f) in self._shared_weights)
        if own_weights:
            weights = PHMWeights(n, in_f, out_f, cfg.factorized_phm, cfg.phm_rank, **kw)
            if cfg.shared_W_phm:
                self._shared_weights[(in_f, out_f)] = weights
        else:
            weights = self._shared_weights[(in_f, out_f)]
        return PHMLinear(in_f, out_f, n, rule, weights, own_rule, own_weights, bias, **kw)
