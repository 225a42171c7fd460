"""The delta zoo (adapter, low_rank_adapter, compacter, parallel_adapter, bitfit, ia3) on every tiny family:
the shared property checks, exact parameter counts by hand, and every documented error path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opendelta import (
    AdapterModel,
    AutoDeltaConfig,
    AutoDeltaModel,
    BitFitModel,
    CompacterModel,
    IA3Model,
    LowRankAdapterModel,
    ParallelAdapterModel,
)
from opendelta.errors import DeltaConfigError, DeltaStateError, ModuleMatchError, UnsupportedModuleError
from shared_tester import check_all, make, perturb
from tiny import build, inputs_for, run
from zoo_configs import ZOO

CASES = [(t, f) for t, fams in ZOO.items() for f in fams]


@pytest.mark.parametrize("delta_type,family", CASES, ids=[f"{t}-{f}" for t, f in CASES])
def test_shared_properties(delta_type, family, tmp_path):
    # compacter starts near (not exactly at) the identity: C ~ N(0, 1e-4)
    check_all(
        family, delta_type, ZOO[delta_type][family], tmp_path, identity_atol=1e-3 if delta_type == "compacter" else 0
    )


# ----- exact parameter counts, by hand ------------------------------------------------------------------------
# toy = Sequential(Linear(8,16), ReLU, Linear(16,16), LayerNorm(16), Linear(16,4)); "0" and "2" output 16 features


def _count(delta_type, family, config):
    _, delta = make(family, delta_type, config)
    delta.freeze_module()
    assert delta.num_trainable_parameters() == delta.num_delta_parameters()
    return delta.num_delta_parameters()


def test_count_adapter():
    # per site (dim 16, bottleneck 4): down 16*4 + 4 = 68, up 4*16 + 16 = 80 -> 148; two sites
    assert _count("adapter", "toy", {"modified_modules": ["0", "2"], "bottleneck_dim": 4}) == 2 * (68 + 80) == 296


def test_count_low_rank_adapter():
    # dim 16, reduction 4 -> bottleneck 4, rank 3: down W_left 16*3 + W_right 3*4 + b 4 = 64;
    # up W_left 4*3 + W_right 3*16 + b 16 = 76 -> 140 per site; two sites
    cfg = {"modified_modules": ["0", "2"], "reduction_factor": 4, "low_rank_rank": 3}
    assert _count("low_rank_adapter", "toy", cfg) == 2 * (64 + 76) == 280


def test_count_compacter_default_and_variants():
    base = {"modified_modules": ["0", "2"], "reduction_factor": 4, "hypercomplex_division": 2}
    # dim 16 -> bottleneck 4, n = 2. Per PHM layer: rule C n^3 = 8; factorized W (rank 1):
    # down n*(16/2*1 + 1*4/2) = 2*(8+2) = 20, up 2*(2+8) = 20; biases down 4, up 16.
    # per site: (8 + 20 + 4) + (8 + 20 + 16) = 76; two sites
    assert _count("compacter", "toy", base) == 2 * 76 == 152
    # shared_phm_rule: one C (8) for the four PHM layers: 152 - 4*8 + 8 = 128
    assert _count("compacter", "toy", {**base, "shared_phm_rule": True}) == 152 - 32 + 8 == 128
    # shared_W_phm: both sites have the same (16->4) and (4->16) shapes, so the W are stored once: 152 - 2*20
    assert _count("compacter", "toy", {**base, "shared_W_phm": True}) == 152 - 40 == 112
    # factorized_phm_rule: C_left n*n*1 + C_right n*1*n = 8 per layer instead of 8 (n=2: same count) ->
    # use n = 4 to see it: dim 16, reduction 4 -> bottleneck 4; C full 64 vs factorized 32;
    # W rank 1: down 4*(4 + 1) = 20, up 4*(1 + 4) = 20; per site full: (64+20+4) + (64+20+16) = 188
    n4 = {**base, "hypercomplex_division": 4}
    assert _count("compacter", "toy", n4) == 2 * 188 == 376
    assert _count("compacter", "toy", {**n4, "factorized_phm_rule": True}) == 376 - 4 * 32 == 248
    # full (not factorized) W: n * (in/n) * (out/n) = in*out/n: down 16*4/4 = 16, up 16 -> per site 188 - 40 + 32
    assert _count("compacter", "toy", {**n4, "factorized_phm": False}) == 2 * (188 - 40 + 32) == 360
    # learn_phm=False: C are fixed buffers, not parameters: 376 - 4*64
    assert _count("compacter", "toy", {**n4, "learn_phm": False}) == 376 - 256 == 120


def test_count_parallel_adapter():
    # reads Linear "0"'s input (8), adds to "2"'s output (16), bottleneck 4: down 8*4 + 4, up 4*16 + 16
    cfg = {"modified_modules": ["0"], "output_module": "2", "bottleneck_dim": 4}
    assert _count("parallel_adapter", "toy", cfg) == (32 + 4) + (64 + 16) == 116


def test_count_bitfit():
    # Linear(8,16) -> 16, LayerNorm(16) -> 16, Linear(16,4) -> 4
    assert _count("bitfit", "toy", {"modified_modules": ["0", "3", "4"]}) == 16 + 16 + 4 == 36


def test_count_ia3():
    # "0" scales its 16 outputs; "2" is feed-forward: scales its 16 inputs; "4" scales its 4 outputs
    cfg = {"modified_modules": ["0", "2", "4"], "feedforward_modules": ["2"]}
    assert _count("ia3", "toy", cfg) == 16 + 16 + 4 == 36


def test_count_t5_adapter_on_blocks():
    # tiny T5: d_model 32, 2 encoder + 2 decoder blocks -> 4 DenseReluDense (output 32 via `wo`)
    # per site (bottleneck 4): 32*4 + 4 + 4*32 + 32 = 292
    assert _count("adapter", "t5", {"modified_modules": ["DenseReluDense"], "bottleneck_dim": 4}) == 4 * 292


# ----- sizes read from blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,module,expected",
    [
        ("bert", "encoder.layer.0.intermediate", 64),  # BertIntermediate: its dense layer, 32 -> 64
        ("bert", "encoder.layer.0.attention.output", 32),  # BertSelfOutput: dense + LayerNorm
        ("t5", "encoder.block.0.layer.1", 32),  # T5LayerFF: ends with its layer_norm
        ("gpt2", "h.0.mlp", 32),  # GPT2MLP: c_proj Conv1D (64 -> 32)
        ("llama", "layers.0.mlp", 32),  # LlamaMLP: down_proj
    ],
)
def test_output_size_of_blocks(family, module, expected):
    model = build(family)
    delta = AdapterModel(model, modified_modules=[module], bottleneck_dim=2)
    (site,) = delta.sites
    assert site.layers["adapter"].down_proj.in_features == expected
    perturb(delta)
    with torch.no_grad():
        run(model, family, inputs_for(family))


# ----- errors -------------------------------------------------------------------------------------------------


def _untouched(model, keys):
    return list(model.state_dict()) == keys and not any(
        m._forward_hooks or m._forward_pre_hooks for m in model.modules()
    )


@pytest.mark.parametrize(
    "delta_type,bad,match",
    [
        ("adapter", {"bottleneck_dim": 0}, "bottleneck_dim"),
        ("adapter", {"non_linearity": "gelu_nwe"}, "gelu_new"),  # lists the valid activations
        ("low_rank_adapter", {"low_rank_rank": 0}, "low_rank_rank"),
        ("low_rank_adapter", {"low_rank_w_init": "kaiming"}, "glorot-uniform"),
        ("low_rank_adapter", {"reduction_factor": 0}, "reduction_factor"),
        ("compacter", {"hypercomplex_division": 0}, "hypercomplex_division"),
        ("compacter", {"phm_c_init": "zeros"}, "normal"),
        ("compacter", {"phm_init_range": 0.0}, "phm_init_range"),
        ("compacter", {"phm_rank": 0}, "phm_rank"),
        ("parallel_adapter", {"output_module": "[r]out.*"}, "output_module"),
        ("parallel_adapter", {"output_module": "output..dense"}, "output_module"),
        ("parallel_adapter", {"non_linearity": "nope"}, "relu"),
        ("ia3", {"feedforward_modules": [" "]}, "feedforward_modules"),
        ("bitfit", {"modified_module": ["y"]}, "did you mean `modified_modules`"),
    ],
)
def test_config_errors(delta_type, bad, match):
    with pytest.raises(DeltaConfigError, match=match):
        AutoDeltaConfig.from_dict({"delta_type": delta_type, "modified_modules": ["x"], **bad})


def test_compacter_indivisible_dims_name_module_and_sizes():
    model = build("toy")
    keys = list(model.state_dict())
    # Linear "0": 16 outputs, bottleneck 16 // 8 = 2, n = 4 does not divide 2
    with pytest.raises(DeltaConfigError, match=r"'0'.*bottleneck 2 not divisible by hypercomplex_division=4"):
        CompacterModel(model, modified_modules=["0"], reduction_factor=8, hypercomplex_division=4)
    # Linear "2" is fine with n = 8 (16, 16); Linear "4": 4 outputs, n = 8 divides neither 4 nor 4 // 1
    with pytest.raises(DeltaConfigError, match=r"'4'.*output size 4 and bottleneck 4 not divisible"):
        CompacterModel(model, modified_modules=["2", "4"], reduction_factor=1, hypercomplex_division=8)
    assert _untouched(model, keys)


def test_reduction_factor_too_large_names_module():
    model = build("toy")
    with pytest.raises(DeltaConfigError, match=r"'4'.*output size 4 // reduction_factor 32 = 0"):
        LowRankAdapterModel(model, modified_modules=["4"])
    assert _untouched(model, list(build("toy").state_dict()))


def test_after_delta_on_module_without_size_is_clear_error():
    model = build("toy")
    with pytest.raises(
        UnsupportedModuleError, match=r"'1' \(torch\.nn\.modules\.activation\.ReLU\).*Point `modified_modules`"
    ):
        AdapterModel(model, modified_modules=["1"])


def test_block_whose_output_size_is_misread_fails_clearly():
    class Odd(nn.Module):  # registers its output layer first: the size rule reads the wrong one
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(6, 3)
            self.inp = nn.Linear(3, 6)

        def forward(self, x):
            return self.out(self.inp(x))

    model = nn.Sequential(Odd())
    AdapterModel(model, modified_modules=["0"], bottleneck_dim=2)
    with pytest.raises(UnsupportedModuleError, match="built for output size 6"):
        model(torch.randn(2, 3))


def test_bitfit_refuses_blocks():
    model = build("bert")
    keys = list(model.state_dict())
    with pytest.raises(
        UnsupportedModuleError, match=r"modeling_bert\.BertSelfOutput\).*Linear\(-like\), Conv1D and norm"
    ):
        BitFitModel(model, modified_modules=["query", "attention.output"])
    assert _untouched(model, keys)


def test_ia3_errors():
    model = build("t5")
    keys = list(model.state_dict())
    with pytest.raises(ModuleMatchError, match=r"feedforward_modules \['wi'\] match none"):
        IA3Model(model, modified_modules=["k", "wo"], feedforward_modules=["wi"])
    with pytest.raises(UnsupportedModuleError, match="T5LayerNorm"):
        IA3Model(model, modified_modules=["k", "layer_norm"])
    assert _untouched(model, keys)


def test_ia3_merge_refused_with_zero_scale_and_model_untouched():
    model, delta = make("toy", "ia3", ZOO["ia3"]["toy"])
    with torch.no_grad():
        delta.sites[1].layers["ia3"].scale[3] = 0.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DeltaStateError, match="zero entries"):
        delta.merge()
    assert not delta.merged and all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_parallel_adapter_output_module_errors():
    model = build("bert")
    keys = list(model.state_dict())
    with pytest.raises(ModuleMatchError, match=r"output_module='outptu.dense'.*attention, intermediate, output"):
        ParallelAdapterModel(model, modified_modules=["intermediate"], output_module="outptu.dense")
    assert _untouched(model, keys)
    # a module that runs before the one whose input is read
    delta = ParallelAdapterModel(model, modified_modules=["intermediate"], output_module="attention")
    with pytest.raises(DeltaStateError, match="returned before"):
        run(model, "bert", inputs_for("bert"))
    delta.detach()
    assert _untouched(model, keys)


@pytest.mark.parametrize("delta_type", ["adapter", "low_rank_adapter", "compacter", "parallel_adapter", "bitfit"])
def test_not_mergeable(delta_type):
    _, delta = make("toy", delta_type, ZOO[delta_type]["toy"])
    assert not delta.mergeable
    with pytest.raises(DeltaStateError, match="cannot be merged"):
        delta.merge()
    with pytest.raises(DeltaStateError, match="cannot be merged"):
        delta.unmerge()


def test_same_delta_type_twice_on_a_module_composes_in_attach_order():
    model = build("toy")
    a1 = AdapterModel(model, modified_modules=["0"], bottleneck_dim=2)
    a2 = AdapterModel(model, modified_modules=["2", "0"], bottleneck_dim=2)
    assert (a1.name, a2.name) == ("adapter", "adapter_1")
    assert model[0].adapter is a1.sites[0].layers["adapter"]
    assert model[0].adapter_1 is dict(a2.delta_modules())["0.adapter"]
    perturb(a1)
    perturb(a2)
    x = torch.randn(2, 8)
    with torch.no_grad():
        h = torch.nn.functional.linear(x, model[0].weight, model[0].bias)
        expected = model[0].adapter_1(model[0].adapter(h))  # "after" deltas apply in attach order
        a2.set_active(False)
        a2.set_active(True)
        torch.testing.assert_close(model[0](x), expected, rtol=0, atol=0)
    # another delta type on the same module stacks
    d = BitFitModel(model, modified_modules=["0"])
    perturb(d)
    assert torch.isfinite(model(torch.randn(2, 8))).all()


@pytest.mark.parametrize("delta_type", list(ZOO))
def test_meta_device_build(delta_type):
    """Parameters follow the backbone's device: a meta-device backbone gets meta deltas, no forward needed."""
    with torch.device("meta"):
        model = build("toy")
    delta = AutoDeltaModel.from_config(
        AutoDeltaConfig.from_dict({"delta_type": delta_type, **ZOO[delta_type]["toy"]}), backbone_model=model
    )
    assert all(p.device.type == "meta" for p in delta.delta_parameters())
