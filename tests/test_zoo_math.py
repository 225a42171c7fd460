"""Each zoo delta against a direct reference computation of its formula (outer / Kronecker products by hand)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opendelta import AdapterModel, BitFitModel, CompacterModel, IA3Model, LowRankAdapterModel, ParallelAdapterModel
from shared_tester import make, perturb
from tiny import build, inputs_for, loss_of, run
from zoo_configs import ZOO


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def outer_sum(left, right):
    """left @ right written as a sum of rank-one outer products (an independent reference)."""
    return sum(torch.outer(left[:, r], right[r, :]) for r in range(left.shape[1]))


def raw_linear(module, x):
    """The Linear layer's own function, without any hook."""
    return F.linear(x, module.weight, module.bias)


def toy_input(dim=16, seed=3):
    return torch.randn(5, dim, generator=torch.Generator().manual_seed(seed))


def test_adapter_formula():
    model = build("toy")
    delta = AdapterModel(model, modified_modules=["2"], bottleneck_dim=3)
    perturb(delta)
    lin, a = model[2], model[2].adapter
    x = toy_input()
    h = raw_linear(lin, x)
    ref = h + F.linear(gelu_new(F.linear(h, a.down_proj.weight, a.down_proj.bias)), a.up_proj.weight, a.up_proj.bias)
    torch.testing.assert_close(lin(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_low_rank_adapter_any_rank(rank):
    model = build("toy")
    # dim 16, reduction 2 -> bottleneck 8: rank 4 < 8, so the factors really limit the rank
    delta = LowRankAdapterModel(
        model, modified_modules=["2"], reduction_factor=2, low_rank_rank=rank, non_linearity="relu"
    )
    perturb(delta)
    lin, layer = model[2], model[2].low_rank_adapter
    down, up = layer.down_sampler, layer.up_sampler
    assert down.W_left.shape == (16, rank) and down.W_right.shape == (rank, 8)
    assert up.W_left.shape == (8, rank) and up.W_right.shape == (rank, 16)
    w_down, w_up = outer_sum(down.W_left, down.W_right), outer_sum(up.W_left, up.W_right)
    assert torch.linalg.matrix_rank(w_down).item() == rank and torch.linalg.matrix_rank(w_up).item() == rank
    torch.testing.assert_close(down.full_weight(), w_down, rtol=1e-6, atol=1e-6)
    x = toy_input()
    h = raw_linear(lin, x)
    ref = h + torch.relu(h @ w_down + down.b) @ w_up + up.b
    torch.testing.assert_close(lin(x), ref, rtol=1e-5, atol=1e-5)


def test_low_rank_adapter_glorot_normal_and_identity_init():
    model = build("toy")
    x = toy_input()
    before = model[2](x)
    LowRankAdapterModel(
        model, modified_modules=["2"], reduction_factor=2, low_rank_rank=2, low_rank_w_init="glorot-normal"
    )
    assert torch.equal(model[2](x), before)  # W_right of the up sampler starts at zero


# ----- compacter ------------------------------------------------------------------------------------------------


def phm_reference(phm):
    """sum_i kron(C_i, W_i) from the raw factors, with torch.kron and outer products."""
    rule = phm._modules.get("phm_rule") or phm._shared["phm_rule"]
    weights = phm._modules.get("phm_weights") or phm._shared["phm_weights"]
    n = phm.n
    if rule.factorized:
        cs = [torch.outer(rule.C_left[i, :, 0], rule.C_right[i, 0, :]) for i in range(n)]
    else:
        cs = [rule.C[i] for i in range(n)]
    if weights.factorized:
        ws = [outer_sum(weights.W_left[i], weights.W_right[i]) for i in range(n)]
    else:
        ws = [weights.W[i] for i in range(n)]
    return sum(torch.kron(cs[i], ws[i]) for i in range(n))


def compacter_reference(layer, h):
    def phm(p, x):
        y = x @ phm_reference(p)
        return y + p.b if p.b is not None else y

    return h + phm(layer.up_sampler, gelu_new(phm(layer.down_sampler, h)))


VARIANTS = {
    "default": {},
    "full_W": {"factorized_phm": False},
    "rank2": {"phm_rank": 2},
    "factorized_rule": {"factorized_phm_rule": True},
    "shared_rule": {"shared_phm_rule": True},
    "shared_W": {"shared_W_phm": True},
    "all_shared_factorized": {
        "shared_phm_rule": True,
        "shared_W_phm": True,
        "factorized_phm_rule": True,
        "phm_rank": 2,
    },
    "fixed_rule_uniform_no_bias": {
        "learn_phm": False,
        "phm_c_init": "uniform",
        "use_bias_up_sampler": False,
        "use_bias_down_sampler": False,
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compacter_against_kron_reference(variant):
    model = build("toy")
    # two sites with the same shapes ("0": 8->16, "2": 16->16; outputs 16, bottleneck 4, n = 2)
    delta = CompacterModel(
        model, modified_modules=["0", "2"], reduction_factor=4, hypercomplex_division=2, **VARIANTS[variant]
    )
    perturb(delta)
    if not delta.config.learn_phm:  # fixed rules are buffers: give them visible values too
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "C"):
                    m.C.add_(torch.randn(m.C.shape, generator=torch.Generator().manual_seed(5)))
    for idx, dim_in in (("0", 8), ("2", 16)):
        lin = model[int(idx)]
        x = toy_input(dim_in)
        ref = compacter_reference(lin.compacter, raw_linear(lin, x))
        torch.testing.assert_close(lin(x), ref, rtol=1e-5, atol=1e-5)
        for p in (lin.compacter.down_sampler, lin.compacter.up_sampler):
            torch.testing.assert_close(p.full_weight(), phm_reference(p), rtol=1e-6, atol=1e-6)


def _rules(model):
    layers = [model[i].compacter for i in (0, 2)]
    return [
        p._modules.get("phm_rule") or p._shared["phm_rule"]
        for layer in layers
        for p in (layer.down_sampler, layer.up_sampler)
    ]


def test_compacter_sharing_is_real_sharing():
    model = build("toy")
    delta = CompacterModel(
        model,
        modified_modules=["0", "2"],
        reduction_factor=4,
        hypercomplex_division=2,
        shared_phm_rule=True,
        shared_W_phm=True,
    )
    rules = _rules(model)
    assert all(r is rules[0] for r in rules)
    d0, d2 = model[0].compacter.down_sampler, model[2].compacter.down_sampler
    assert "phm_weights" in d0._modules and d2._shared["phm_weights"] is d0.phm_weights
    # the shared tensors are stored once, under the first layer that uses them
    keys = [k for k in model.state_dict() if "compacter" in k]
    assert sum(k.endswith("phm_rule.C") for k in keys) == 1
    assert "0.compacter.down_sampler.phm_rule.C" in keys
    assert sum(".phm_weights." in k for k in keys) == 4  # (W_left, W_right) for 16->4 and for 4->16
    # one gradient step on the shared rule moves every layer's weight
    before = [
        p.full_weight().detach().clone()
        for s in ("0", "2")
        for p in (model[int(s)].compacter.down_sampler, model[int(s)].compacter.up_sampler)
    ]
    delta.freeze_module()
    loss_of(model(torch.randn(3, 8))).backward()
    assert rules[0].C.grad is not None and rules[0].C.grad.abs().sum() > 0
    with torch.no_grad():
        rules[0].C.add_(1.0)
    after = [
        p.full_weight()
        for s in ("0", "2")
        for p in (model[int(s)].compacter.down_sampler, model[int(s)].compacter.up_sampler)
    ]
    assert all(not torch.allclose(a, b) for a, b in zip(after, before))


def test_compacter_shared_roundtrip_and_half_precision(tmp_path):
    cfg = {
        "modified_modules": ["0", "2"],
        "reduction_factor": 4,
        "hypercomplex_division": 2,
        "shared_phm_rule": True,
        "shared_W_phm": True,
    }
    from opendelta import AutoDeltaModel

    model, delta = make("toy", "compacter", cfg, dtype=torch.bfloat16)
    perturb(delta)
    x = toy_input(8).to(torch.bfloat16)
    out = model(x)
    delta.save_finetuned(tmp_path / "c")
    fresh = build("toy").to(torch.bfloat16)
    AutoDeltaModel.from_finetuned(tmp_path / "c", backbone_model=fresh)
    assert torch.equal(fresh(x), out)
    assert _rules(fresh)[0].C.dtype == torch.float32  # float32 deltas on half-precision backbones


# ----- parallel adapter -----------------------------------------------------------------------------------------


def test_parallel_adapter_same_module_formula():
    model = build("toy")
    delta = ParallelAdapterModel(model, modified_modules=["2"], bottleneck_dim=3, scaled=0.5)
    perturb(delta)
    lin, a = model[2], model[2].parallel_adapter
    x = toy_input()
    update = F.linear(gelu_new(F.linear(x, a.down_proj.weight, a.down_proj.bias)), a.up_proj.weight, a.up_proj.bias)
    torch.testing.assert_close(lin(x), raw_linear(lin, x) + 0.5 * update, rtol=1e-6, atol=1e-6)


def test_parallel_adapter_reads_a_adds_to_b_in_bert():
    model = build("bert")
    layer0 = model.bert.encoder.layer[0]
    delta = ParallelAdapterModel(
        model, modified_modules=["layer.0.intermediate"], output_module="output.dense", bottleneck_dim=4, scaled=2.0
    )
    (site,) = delta.sites
    assert site.name.endswith("layer.0.intermediate")  # the layer lives on A, the update lands on B
    a = layer0.intermediate.parallel_adapter
    assert a.down_proj.in_features == 32 and a.up_proj.out_features == 32
    perturb(delta)
    seen = {}  # observers registered after the delta's hooks, so they see what the next module sees
    layer0.intermediate.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    layer0.output.dense.register_forward_hook(lambda m, args, out: seen.__setitem__("y", out))
    x = inputs_for("bert")
    with torch.no_grad():
        model(**x)
        x_a, y_with = seen["x"], seen["y"]
        delta.detach()  # nothing before `intermediate` is modified, so the plain run sees the same x
        model(**x)
        assert torch.equal(seen["x"], x_a)
        update = a.up_proj(gelu_new(a.down_proj(x_a)))
        torch.testing.assert_close(y_with, seen["y"] + 2.0 * update, rtol=1e-5, atol=1e-6)


# ----- bitfit -----------------------------------------------------------------------------------------------------


def test_bitfit_on_bias_free_t5_linears_and_norms():
    model = build("t5")
    attn = model.encoder.block[0].layer[0]
    assert attn.SelfAttention.q.bias is None
    delta = BitFitModel(model, modified_modules=["q", "wo", "layer_norm"])
    # q: 4 self-attentions + 2 cross-attentions; wo: 4 feed-forwards; layer_norm: 2 encoder blocks x 2 layers
    # + 2 decoder blocks x 3 layers ("final_layer_norm" is another name, not matched)
    assert len(delta.sites) == (4 + 2) + 4 + (2 * 2 + 2 * 3) == 20
    perturb(delta)
    q = attn.SelfAttention.q
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(q(x), F.linear(x, q.weight) + q.bitfit.bias, rtol=1e-6, atol=1e-6)
    ln = attn.layer_norm
    assert ln.bitfit.bias.shape == (32,)
    delta.detach()
    plain = ln(x)
    delta.attach()
    torch.testing.assert_close(ln(x), plain + ln.bitfit.bias, rtol=1e-6, atol=1e-6)


def test_bitfit_equals_training_the_existing_bias():
    """d loss / d b' equals d loss / d b for a layer that has a bias b: the two parametrisations train alike."""
    model = build("bert")
    delta = BitFitModel(model, modified_modules=["layer.0.attention.self.query"])
    delta.freeze_module()
    (site,) = delta.sites
    site.module.bias.requires_grad_(True)
    loss_of(run(model, "bert", inputs_for("bert"))).backward()
    torch.testing.assert_close(site.module.bitfit.bias.grad, site.module.bias.grad, rtol=0, atol=0)
    with torch.no_grad():  # and y = W x + b + b' is the layer with bias b + b'
        site.module.bitfit.bias.normal_()
        x = torch.randn(2, 32)
        torch.testing.assert_close(
            site.module(x), F.linear(x, site.module.weight, site.module.bias + site.module.bitfit.bias)
        )


# ----- ia3 ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family,ff_name", [("toy", None), ("gpt2", "c_proj")])
def test_ia3_formula_linear_and_conv1d(family, ff_name):
    if family == "toy":
        model = build("toy")
        delta = IA3Model(model, modified_modules=["0", "2"], feedforward_modules=["2"])
        out_mod, ff_mod, x_out, x_ff = model[0], model[2], toy_input(8), toy_input(16)
        plain = raw_linear
    else:
        model = build("gpt2")
        mlp = model.transformer.h[0].mlp
        delta = IA3Model(model, modified_modules=["h.0.mlp.c_fc", "h.0.mlp.c_proj"], feedforward_modules=["c_proj"])
        out_mod, ff_mod, x_out, x_ff = mlp.c_fc, mlp.c_proj, torch.randn(3, 32), torch.randn(3, 128)

        def plain(m, x):  # Conv1D: x @ W + b with W (in, out)
            return x @ m.weight + m.bias

    perturb(delta)
    torch.testing.assert_close(out_mod(x_out), out_mod.ia3.scale * plain(out_mod, x_out), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ff_mod(x_ff), plain(ff_mod, ff_mod.ia3.scale * x_ff), rtol=1e-5, atol=1e-6)
    assert out_mod.ia3.scale.shape[0] == (16 if family == "toy" else 128)
    assert ff_mod.ia3.scale.shape[0] == (16 if family == "toy" else 128)


@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama", "toy"])
def test_ia3_merge_folds_into_weights(family):
    model, delta = make(family, "ia3", ZOO["ia3"][family])
    perturb(delta, scale=0.3)
    weights = {
        s.name: (s.module.weight.detach().clone(), None if s.module.bias is None else s.module.bias.detach().clone())
        for s in delta.sites
    }
    x = inputs_for(family)
    with torch.no_grad():
        unmerged = run(model, family, x)
        delta.merge()
        torch.testing.assert_close(run(model, family, x), unmerged, rtol=0, atol=1e-5)
        for s in delta.sites:
            w, b = weights[s.name]
            layer = s.layers["ia3"]
            assert torch.equal(s.module.weight, w * layer._weight_factor(s.module))
            if b is not None and not layer.on_input:
                torch.testing.assert_close(s.module.bias, b * layer.scale)
        delta.unmerge()
        for s in delta.sites:
            torch.testing.assert_close(s.module.weight, weights[s.name][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(run(model, family, x), unmerged, rtol=0, atol=1e-5)


def test_ia3_merge_explicit_rows_and_columns():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    delta = IA3Model(model, modified_modules=["0", "1"], feedforward_modules=["1"])
    with torch.no_grad():
        model[0].ia3.scale.copy_(torch.tensor([2.0, 3.0]))  # scales outputs: rows of W, and b
        model[1].ia3.scale.copy_(torch.tensor([5.0, 7.0]))  # scales inputs: columns of W
    w0, b0, w1, b1 = (t.detach().clone() for t in (model[0].weight, model[0].bias, model[1].weight, model[1].bias))
    delta.merge()
    assert torch.equal(model[0].weight, torch.stack([2 * w0[0], 3 * w0[1]]))
    assert torch.equal(model[0].bias, torch.stack([2 * b0[0], 3 * b0[1]]))
    assert torch.equal(model[1].weight, torch.stack([5 * w1[:, 0], 7 * w1[:, 1]], dim=1))
    assert torch.equal(model[1].bias, b1)


@pytest.mark.parametrize(
    "family,targets,ff",
    [
        ("llama", ["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ("gpt2", ["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),  # Conv1D
    ],
)
def test_ia3_matches_peft(family, targets, ff):
    """The same scaling vectors give the same outputs as PEFT's IA3, unmerged and merged."""
    peft = pytest.importorskip("peft")
    model, delta = make(family, "ia3", {"modified_modules": targets, "feedforward_modules": ff})
    perturb(delta, scale=0.3)
    theirs = peft.get_peft_model(
        build(family), peft.IA3Config(target_modules=targets, feedforward_modules=ff, fan_in_fan_out=family == "gpt2")
    )
    ours = {s.name: s.layers["ia3"].scale for s in delta.sites}
    copied = 0
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if ".ia3_l." in name:
                site = name.split("base_model.model.", 1)[1].rsplit(".ia3_l.", 1)[0]
                p.copy_(ours[site].reshape(p.shape))
                copied += 1
    assert copied == len(ours)
    x = inputs_for(family)
    with torch.no_grad():
        expected = theirs(**x).logits
        torch.testing.assert_close(run(model, family, x), expected, rtol=1e-5, atol=1e-5)
        delta.merge()
        torch.testing.assert_close(run(model, family, x), expected, rtol=1e-5, atol=1e-5)
