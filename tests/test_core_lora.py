"""LoRA on every core tiny family: the shared property checks (attach, output, gradients, training, detach, save/load,
hash, merge, dtype), and what is LoRA's own: checkpoint contents, unfrozen modules, half precision, merge and unload,
two deltas on one backbone, addressing, counts and the error paths."""

from __future__ import annotations

import logging

import pytest
import torch

from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraModel, Visualization
from opendelta.errors import (
    CheckpointError,
    DeltaStateError,
    HashMismatchError,
    ModuleMatchError,
    UnsupportedModuleError,
)
from shared_tester import check_all
from tiny import CORE, build, inputs_for, loss_of, run

TARGETS = {
    "t5": ["SelfAttention.q", "SelfAttention.v", "SelfAttention.o"],
    "bert": ["attention.self.query", "attention.self.value"],
    "gpt2": ["attn.c_attn", "mlp.c_proj"],
    "llama": ["self_attn.q_proj", "self_attn.v_proj"],
    "toy": ["0", "2"],
}
assert list(TARGETS) == CORE


def make(family, r=4, **extra):
    model = build(family)
    cfg = AutoDeltaConfig.from_dict({"delta_type": "lora", "modified_modules": TARGETS[family], "lora_r": r, **extra})
    return model, AutoDeltaModel.from_config(cfg, backbone_model=model)


def train_steps(model, family, n=3, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    x = inputs_for(family)
    model.train()
    for _ in range(n):
        opt.zero_grad()
        loss_of(run(model, family, x)).backward()
        opt.step()
    model.eval()


# ----- the shared properties (B starts at zero: the output is exactly the backbone's until training) --------
@pytest.mark.parametrize("family", CORE)
def test_shared_properties(family, tmp_path):
    check_all(family, "lora", {"modified_modules": TARGETS[family], "lora_r": 4}, tmp_path, identity_atol=0)


def test_checkpoint_is_delta_only_and_records_versions(tmp_ckpt):
    import json

    from safetensors.torch import load_file

    model, delta = make("t5")  # no freeze_module: still delta-only
    delta.save_finetuned(tmp_ckpt)
    tensors = load_file(str(tmp_ckpt / "delta_model.safetensors"))
    assert set(tensors) == {k for k in model.state_dict() if ".lora." in k}
    cfg = json.loads((tmp_ckpt / "config.json").read_text())
    assert cfg["delta_type"] == "lora" and cfg["backbone_class"] == "T5ForConditionalGeneration"
    assert cfg["hash_algorithm"] and len(cfg["backbone_hash"]) == 32
    assert cfg["opendelta_version"] and cfg["transformers_version"] and cfg["torch_version"]
    assert cfg["lora_r"] == 4 and cfg["modified_modules"] == TARGETS["t5"]


def test_unfrozen_modules_are_trained_and_saved(tmp_ckpt):
    model, delta = make("bert")
    delta.freeze_module(exclude=["deltas", "classifier"])
    assert all(p.requires_grad == (".lora." in n or n.startswith("classifier.")) for n, p in model.named_parameters())
    train_steps(model, "bert")
    x = inputs_for("bert")
    with torch.no_grad():
        out = run(model, "bert", x)
    assert set(model.state_dict()) == {n for n, p in model.named_parameters() if p.requires_grad}
    delta.save_finetuned(tmp_ckpt)
    from safetensors.torch import load_file

    assert {"classifier.weight", "classifier.bias"} <= set(load_file(str(tmp_ckpt / "delta_model.safetensors")))
    fresh = build("bert")
    AutoDeltaModel.from_finetuned(tmp_ckpt, backbone_model=fresh)
    with torch.no_grad():
        assert torch.equal(run(fresh, "bert", x), out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_roundtrip_and_dtype_change_detected(dtype, tmp_ckpt):
    model = build("llama").to(dtype)
    delta = LoraModel(model, modified_modules=TARGETS["llama"], lora_r=2)
    assert all(p.dtype == torch.float32 for p in delta.delta_parameters())  # float32 deltas on half backbones
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.normal_()
    delta.save_finetuned(tmp_ckpt)
    fresh = build("llama").to(dtype)
    AutoDeltaModel.from_finetuned(tmp_ckpt, backbone_model=fresh)
    x = inputs_for("llama")
    with torch.no_grad():
        assert torch.equal(run(fresh, "llama", x), run(model, "llama", x))
    with pytest.raises(HashMismatchError, match="dtype"):
        AutoDeltaModel.from_finetuned(tmp_ckpt, backbone_model=build("llama"))


def test_merge_twice_and_save_while_merged_are_refused(tmp_path):
    model, delta = make("bert")
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.normal_(std=0.1)
        delta.merge()
    with pytest.raises(DeltaStateError, match="already merged"):
        delta.merge()
    with pytest.raises(DeltaStateError, match="unmerge"):
        delta.save_finetuned(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    delta.unmerge()
    delta.save_finetuned(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "delta_model.safetensors").is_file()


def test_two_delta_models_on_one_backbone():
    model = build("bert")
    x = inputs_for("bert")
    with torch.no_grad():
        ref = run(model, "bert", x)
    d1 = LoraModel(model, modified_modules=["query"], lora_r=2)
    d2 = LoraModel(model, modified_modules=["value"], lora_r=2)
    with torch.no_grad():
        for p in list(d1.delta_parameters()) + list(d2.delta_parameters()):
            p.normal_()
        both = run(model, "bert", x)
        d1.detach()
        only2 = run(model, "bert", x)
        d2.detach()
        assert torch.equal(run(model, "bert", x), ref)
        d1.attach()
        d2.attach()
        assert torch.equal(run(model, "bert", x), both)
        assert not torch.equal(only2, both)
    # a second LoRA on the same modules is allowed: it gets the next name and attribute
    d3 = LoraModel(model, modified_modules=["query"])
    assert (d1.name, d2.name, d3.name) == ("lora", "lora_1", "lora_2")
    assert any(k.endswith("query.lora_1.lora_A") for k in model.state_dict())


def test_addressing_suffix_regex_and_exclude():
    model = build("t5")
    d = LoraModel(model, modified_modules=["q"], lora_r=2)
    assert d.modified_module_names and all(n.endswith(".q") for n in d.modified_module_names)
    d.detach()
    d = LoraModel(
        model,
        modified_modules=[r"[r]encoder\.block\.\d+\.layer\.0\.SelfAttention\.[qv]"],
        exclude_modules=["encoder.block.1.layer.0.SelfAttention.v"],
    )
    assert d.modified_module_names == [
        "encoder.block.0.layer.0.SelfAttention.q",
        "encoder.block.0.layer.0.SelfAttention.v",
        "encoder.block.1.layer.0.SelfAttention.q",
    ]
    d.detach()
    # the regex must start at a component boundary: "elfAttention.q" is not a component
    with pytest.raises(ModuleMatchError):
        LoraModel(model, modified_modules=[r"[r]elfAttention\.q"])


def test_no_match_error_lists_close_names_and_leaves_backbone_untouched():
    model = build("t5")
    keys = list(model.state_dict())
    with pytest.raises(ModuleMatchError, match="SelfAttention.q") as err:
        LoraModel(model, modified_modules=["SelfAttention.qq"])
    assert "closest" in str(err.value)
    with pytest.raises(ModuleMatchError):
        LoraModel(model, modified_modules=["[r]("])
    # a partly valid list fails whole, nothing attached
    with pytest.raises(ModuleMatchError):
        LoraModel(model, modified_modules=["SelfAttention.q", "nope"])
    with pytest.raises(ModuleMatchError, match="exclude"):
        LoraModel(model, modified_modules=["SelfAttention.q"], exclude_modules=["q"])
    assert list(model.state_dict()) == keys
    assert not any(m._forward_hooks for m in model.modules())


def test_unsupported_module_is_a_clear_error_and_nothing_attached():
    model = build("t5")
    keys = list(model.state_dict())
    with pytest.raises(UnsupportedModuleError, match="T5LayerNorm"):
        LoraModel(model, modified_modules=["SelfAttention.q", "layer_norm"])
    assert list(model.state_dict()) == keys
    assert not any(m._forward_hooks for m in model.modules())


def test_load_errors(tmp_path):
    model, delta = make("bert")
    ckpt = tmp_path / "c"
    delta.save_finetuned(ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        AutoDeltaModel.from_finetuned(tmp_path / "missing", backbone_model=build("bert"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        AutoDeltaModel.from_finetuned(tmp_path / "empty", backbone_model=build("bert"))
    # a checkpoint whose keys do not fit: saved with other modules
    with pytest.raises(CheckpointError, match="missing key"):
        AutoDeltaModel.from_finetuned(
            ckpt, backbone_model=build("bert"), modified_modules=["attention.self.query", "attention.self.key"]
        )
    fresh = build("bert")
    keys = list(fresh.state_dict())
    with pytest.raises(CheckpointError, match="shape"):
        AutoDeltaModel.from_finetuned(ckpt, backbone_model=fresh, lora_r=3)
    assert list(fresh.state_dict()) == keys


def test_atomic_save_keeps_old_checkpoint_on_failure(tmp_ckpt, monkeypatch):
    import opendelta.io as ckpt

    model, delta = make("toy")
    delta.save_finetuned(tmp_ckpt)
    (tmp_ckpt / "README.md").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_ckpt.iterdir()}
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.add_(1)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_weights", boom)
    with pytest.raises(OSError, match="disk full"):
        delta.save_finetuned(tmp_ckpt)
    assert {p.name: p.read_bytes() for p in tmp_ckpt.iterdir()} == before
    assert [p.name for p in tmp_ckpt.parent.iterdir()] == [tmp_ckpt.name]  # no temp left behind
    monkeypatch.undo()
    delta.save_finetuned(tmp_ckpt)
    assert (tmp_ckpt / "README.md").read_text() == "mine"  # foreign files are kept
    assert (tmp_ckpt / "delta_model.safetensors").read_bytes() != before["delta_model.safetensors"]


def test_counts_and_log():
    model, delta = make("toy", r=2)
    delta.freeze_module()
    # toy: Linear(8,16) and Linear(16,16): r*(in+out) each
    assert delta.num_delta_parameters() == 2 * (8 + 16) + 2 * (16 + 16)
    assert delta.num_trainable_parameters() == delta.num_delta_parameters()
    base = sum(p.numel() for n, p in model.named_parameters() if ".lora." not in n)
    assert delta.num_total_parameters(model) == base + delta.num_delta_parameters()
    assert delta.num_total_parameters() == delta.num_delta_parameters()  # 0.3: the delta's own, by default
    assert delta.num_trainable_parameters(model) == delta.num_delta_parameters()
    stats = delta.log()
    assert stats["trainable"] == 112 and stats["delta_ratio"] == pytest.approx(112 / (base + 112))


def test_freeze_module_exclude_unknown_warns_with_closest_names(caplog):
    # OpenDelta 0.3 ignored such entries (one exclude list shared across model families is common): a warning
    # naming the closest modules, the rest of the list still applies, and the entry is not remembered
    _, delta = make("toy")
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        delta.freeze_module(exclude=["deltas", "nothing_here", "0"])
    assert any("nothing_here" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
    assert delta.config.unfrozen_modules == ["deltas", "0"]
    assert all(p.requires_grad for p in delta.delta_parameters())


def test_visualization_folds_and_marks_deltas():
    model, delta = make("t5")
    delta.freeze_module()
    text = Visualization(model).to_text()
    assert "q,v,o (Linear)" in text and "lora (LoraLayer)" in text
    assert "\x1b[" not in text
    bert = build("bert")
    text = Visualization(bert).to_text()
    assert "0-1 (BertLayer)" in text
    assert "query,key,value (Linear)" in text


def test_merge_and_unload_leaves_a_plain_model():
    model, delta = make("bert")
    delta.freeze_module()
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.normal_(std=0.1)
    x = inputs_for("bert")
    with torch.no_grad():
        expected = run(model, "bert", x)
    assert delta.merge_and_unload() is model
    assert not any(".lora." in k for k in model.state_dict())
    assert not any(m._forward_hooks for m in model.modules())
    assert "bert.embeddings.word_embeddings.weight" in model.state_dict()  # the trainable-only filter is gone
    with torch.no_grad():
        torch.testing.assert_close(run(model, "bert", x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DeltaStateError):
        delta.detach()
    with pytest.raises(DeltaStateError, match="ia3"):
        from opendelta import AdapterModel

        AdapterModel(build("bert"), modified_modules=["output.dense"]).merge_and_unload()
