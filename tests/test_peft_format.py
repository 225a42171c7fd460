"""PEFT adapters: loading them as OpenDelta deltas and writing ours in PEFT's format, checked against PEFT."""

from __future__ import annotations

import json

import pytest
import torch

from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraModel
from opendelta.errors import CheckpointError, ModuleMatchError
from tiny import build, inputs_for, run

peft = pytest.importorskip("peft")

CASES = {
    # family: PEFT LoraConfig kwargs (a regex string for T5, a list with modules_to_save for BERT)
    "t5": dict(target_modules=r".*(SelfAttention|EncDecAttention)\.(q|v)", r=4, lora_alpha=8),
    "bert": dict(target_modules=["query", "value"], r=4, lora_alpha=16, modules_to_save=["classifier"]),
}


def _randomize(model: torch.nn.Module, seed: int = 3) -> None:
    """Give every trainable tensor (LoRA A/B, modules_to_save copies) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _peft_adapter(family: str, folder, **overrides):
    kwargs = {**CASES[family], **overrides}
    model = peft.get_peft_model(build(family), peft.LoraConfig(**kwargs))
    _randomize(model)
    model.eval()
    with torch.no_grad():
        ref = run(model, family, inputs_for(family))
    model.save_pretrained(folder)
    return ref


def _output_in_peft(folder, family: str) -> torch.Tensor:
    """The output of a fresh backbone with the adapter in `folder` loaded by PEFT itself."""
    model = peft.PeftModel.from_pretrained(build(family), folder)
    model.eval()
    with torch.no_grad():
        return run(model, family, inputs_for(family))


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("family", list(CASES))
def test_round_trip_peft_opendelta_peft(family, rslora, tmp_path):
    ref = _peft_adapter(family, tmp_path / "peft", use_rslora=rslora)
    x = inputs_for(family)
    with torch.no_grad():
        base = run(build(family), family, x)
    assert not torch.allclose(base, ref, atol=1e-3)  # the adapter really changes the output

    model = build(family)
    delta = AutoDeltaModel.from_finetuned(tmp_path / "peft", backbone_model=model)
    assert isinstance(delta, LoraModel)
    assert delta.config.lora_scaling == ("rslora" if rslora else "standard")
    with torch.no_grad():
        torch.testing.assert_close(run(model, family, x), ref, atol=1e-5, rtol=0)

    delta.save_finetuned(tmp_path / "ours-as-peft", format="peft")
    torch.testing.assert_close(_output_in_peft(tmp_path / "ours-as-peft", family), ref, atol=1e-5, rtol=0)
    written = json.loads((tmp_path / "ours-as-peft" / "adapter_config.json").read_text())
    target = written["target_modules"]
    # the user's addressing survives
    assert (sorted(target) if isinstance(target, list) else target) == CASES[family]["target_modules"]
    assert written["use_rslora"] is rslora


def test_regex_is_a_full_match_and_list_entries_matching_nothing_are_ignored(tmp_path):
    ref = _peft_adapter("bert", tmp_path / "a", target_modules=["query", "value", "q_proj"])
    model = build("bert")
    delta = AutoDeltaModel.from_finetuned(tmp_path / "a", backbone_model=model)
    assert sorted(delta.config.modified_modules) == ["query", "value"]  # PEFT stores a set: order varies
    with torch.no_grad():
        torch.testing.assert_close(run(model, "bert", inputs_for("bert")), ref, atol=1e-5, rtol=0)
    cfg = AutoDeltaConfig.from_finetuned(tmp_path / "a")
    assert sorted(cfg.modified_modules) == ["q_proj", "query", "value"]
    assert cfg.unfrozen_modules == ["deltas", "classifier"]

    # PEFT's regex must match the whole name: "SelfAttention\.q" alone selects nothing (ours would match a suffix)
    _peft_adapter("t5", tmp_path / "t5")
    text = (tmp_path / "t5" / "adapter_config.json").read_text()
    (tmp_path / "t5" / "adapter_config.json").write_text(
        text.replace(json.dumps(CASES["t5"]["target_modules"])[1:-1], r"SelfAttention\\.q")
    )
    model = build("t5")
    keys = list(model.state_dict())
    with pytest.raises(ModuleMatchError, match="SelfAttention"):
        AutoDeltaModel.from_finetuned(tmp_path / "t5", backbone_model=model)
    assert list(model.state_dict()) == keys  # left untouched


def test_task_type_heads_are_loaded_as_unfrozen_modules(tmp_path):
    """PEFT picks the heads to save for a task type itself (its list changes between releases): whatever it wrote
    into `modules_to_save`, the modules of that list the backbone has come back trainable, with PEFT's outputs."""
    ref = _peft_adapter("bert", tmp_path, target_modules=["query"], modules_to_save=None, task_type="SEQ_CLS")
    listed = json.loads((tmp_path / "adapter_config.json").read_text())["modules_to_save"] or []
    model = build("bert")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    delta = AutoDeltaModel.from_finetuned(tmp_path, backbone_model=model)
    assert delta.config.unfrozen_modules == ["deltas", *[n for n in listed if n in present]]
    with torch.no_grad():  # the head's trained copy (randomized in _peft_adapter) is what makes `ref` differ
        torch.testing.assert_close(run(model, "bert", inputs_for("bert")), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(_output_in_peft(tmp_path, "bert"), ref, atol=1e-5, rtol=0)


def test_our_lora_saved_as_peft_loads_in_peft(tmp_path):
    model = build("bert")
    delta = LoraModel(model, modified_modules=["[r]layer\\.1\\.attention\\.self\\.(query|key)"], lora_r=2, lora_alpha=4)
    delta.freeze_module(exclude=["deltas", "classifier"])
    _randomize(model, seed=5)
    x = inputs_for("bert")
    with torch.no_grad():
        ref = run(model, "bert", x)
    delta.save_finetuned(tmp_path / "p", format="peft")
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["target_modules"] == delta.modified_module_names  # a regex we cannot hand to PEFT: exact names
    assert cfg["modules_to_save"] == ["classifier"]
    torch.testing.assert_close(_output_in_peft(tmp_path / "p", "bert"), ref, atol=1e-5, rtol=0)
    assert (
        "lora" in (tmp_path / "p" / "README.md").read_text()
        and "library_name: peft" in (tmp_path / "p" / "README.md").read_text()
    )


def test_peft_export_refuses_what_peft_cannot_hold(tmp_path):
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query"], lora_r=2)
    delta.freeze_module(exclude=["deltas", "bias"])  # single parameters, not whole modules
    with pytest.raises(CheckpointError, match="whole modules"):
        delta.save_finetuned(tmp_path / "p", format="peft")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bias": "all"}, "bias='all'"),
        ({"use_dora": True}, "use_dora=True"),
        ({"rank_pattern": {"query": 8}}, "rank_pattern"),
        ({"init_lora_weights": "pissa"}, "changes the base weights"),
        ({"peft_type": "PREFIX_TUNING"}, "PREFIX_TUNING"),
    ],
)
def test_unsupported_peft_settings_are_clear_errors(tmp_path, change, message):
    _peft_adapter("bert", tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    model = build("bert")
    keys = list(model.state_dict())
    with pytest.raises(CheckpointError, match=message):
        AutoDeltaModel.from_finetuned(tmp_path, backbone_model=model)
    assert list(model.state_dict()) == keys


def test_peft_bin_weights_are_read_without_pickles(tmp_path):
    ref = _peft_adapter("bert", tmp_path)
    from safetensors.torch import load_file

    torch.save(load_file(str(tmp_path / "adapter_model.safetensors")), tmp_path / "adapter_model.bin")
    (tmp_path / "adapter_model.safetensors").unlink()
    model = build("bert")
    AutoDeltaModel.from_finetuned(tmp_path, backbone_model=model)
    with torch.no_grad():
        torch.testing.assert_close(run(model, "bert", inputs_for("bert")), ref, atol=1e-5, rtol=0)


IA3_CASES = {
    "t5": dict(target_modules=["k", "v", "wo"], feedforward_modules=["wo"]),
    "bert": dict(
        target_modules=r".*(key|value|output\.dense)",
        feedforward_modules=r".*layer\.\d+\.output\.dense",
        modules_to_save=["classifier"],
    ),
}


@pytest.mark.parametrize("family", list(IA3_CASES))
def test_ia3_round_trip_peft_opendelta_peft(family, tmp_path):
    peft_model = peft.get_peft_model(build(family), peft.IA3Config(**IA3_CASES[family]))
    _randomize(peft_model)
    peft_model.eval()
    x = inputs_for(family)
    with torch.no_grad():
        ref = run(peft_model, family, x)
        assert not torch.allclose(run(build(family), family, x), ref, atol=1e-3)
    peft_model.save_pretrained(tmp_path / "peft")

    model = build(family)
    delta = AutoDeltaModel.from_finetuned(tmp_path / "peft", backbone_model=model)
    assert delta.delta_type == "ia3"
    on_input = [s.name for s in delta.sites if s.layers["ia3"].on_input]
    assert on_input and all(n.endswith(("wo", "output.dense")) and "attention" not in n for n in on_input)
    with torch.no_grad():
        torch.testing.assert_close(run(model, family, x), ref, atol=1e-5, rtol=0)

    delta.save_finetuned(tmp_path / "back", format="peft")
    torch.testing.assert_close(_output_in_peft(tmp_path / "back", family), ref, atol=1e-5, rtol=0)


def test_only_lora_and_ia3_export_to_peft(tmp_path):
    from opendelta import AutoDeltaConfig

    model = build("bert")
    cfg = AutoDeltaConfig.from_dict({"delta_type": "bitfit", "modified_modules": ["query"]})
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model)
    with pytest.raises(CheckpointError, match="'ia3', 'lora'"):
        delta.save_finetuned(tmp_path / "p", format="peft")
    assert not (tmp_path / "p").exists()
