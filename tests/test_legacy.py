"""OpenDelta 0.3 checkpoints, built by hand the way 0.3 wrote them: config.json + pytorch_model.bin."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraModel
from opendelta.errors import CheckpointError, DeltaConfigError
from tiny import build, inputs_for, run

MD5 = "8c7dd922ad47494fc02c388e12c00eac"  # 0.3 stored an md5 of the model this version cannot recompute


def legacy_config(**changes) -> dict:
    """A LoRA config as OpenDelta 0.3 wrote it (version keys, interactive_modify, md5 backbone_hash)."""
    return {
        "backbone_checkpoint_name": "t5-base",
        "backbone_class": "T5ForConditionalGeneration",
        "backbone_hash": MD5,
        "common_structure": False,
        "delta_type": "lora",
        "interactive_modify": False,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_r": 4,
        "modified_modules": ["SelfAttention.q", "SelfAttention.v"],
        "opendelta_version": "0.3.2",
        "transformers_version": "4.26.1",
        "unfrozen_modules": ["deltas", "final_layer_norm"],
        **changes,
    }


def legacy_state(model: torch.nn.Module, r: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors 0.3 saved: every trainable one. Its LoRA layer also held an unused `lin` Linear."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if name.endswith(("SelfAttention.q", "SelfAttention.v")):
            out_f, in_f = module.weight.shape
            state[f"{name}.lora.lora_A"] = torch.randn(r, in_f, generator=g) * 0.1
            state[f"{name}.lora.lora_B"] = torch.randn(out_f, r, generator=g) * 0.1
            state[f"{name}.lora.lin.weight"] = torch.randn(out_f, in_f, generator=g)
            state[f"{name}.lora.lin.bias"] = torch.randn(out_f, generator=g)
    for stack in ("encoder", "decoder"):
        state[f"{stack}.final_layer_norm.weight"] = 1 + torch.randn(model.config.d_model, generator=g) * 0.1
    return state


def write_legacy(folder: Path, config: dict, state: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def expected_output(state: dict) -> torch.Tensor:
    """The 0.3 model's output, computed independently: y = W x + b + B A x * alpha / r on q and v."""
    model = build("t5")
    handles = []
    with torch.no_grad():
        for stack in ("encoder", "decoder"):
            getattr(model, stack).final_layer_norm.weight.copy_(state[f"{stack}.final_layer_norm.weight"])
    for name, module in model.named_modules():
        if name.endswith(("SelfAttention.q", "SelfAttention.v")):
            a, b = state[f"{name}.lora.lora_A"], state[f"{name}.lora.lora_B"]
            handles.append(
                module.register_forward_hook(lambda m, args, out, a=a, b=b: out + (args[0] @ a.T @ b.T) * (16 / 4))
            )
    with torch.no_grad():
        out = run(model, "t5", inputs_for("t5"))
    for h in handles:
        h.remove()
    return out


def test_legacy_checkpoint_loads_with_its_trainable_tensors(tmp_path, caplog):
    model = build("t5")
    state = legacy_state(model)
    folder = write_legacy(tmp_path / "legacy", legacy_config(), state)
    with caplog.at_level(logging.INFO, logger="opendelta"):
        delta = AutoDeltaModel.from_finetuned(folder, backbone_model=model)
    assert isinstance(delta, LoraModel) and len(delta.sites) == 8
    with torch.no_grad():
        torch.testing.assert_close(run(model, "t5", inputs_for("t5")), expected_output(state), atol=1e-6, rtol=0)
    # 0.3 saved the modules the user unfroze, too
    assert torch.equal(model.encoder.final_layer_norm.weight, state["encoder.final_layer_norm.weight"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "OpenDelta 0.3" in warnings[0].message and MD5 in warnings[0].message
    assert "cannot recompute" in warnings[0].message and "check_hash=False" in warnings[0].message
    assert "interactive_modify" in caplog.text  # dropped, and said so
    assert "no computation used" in caplog.text and ".lora.lin.weight" in caplog.text

    # saved again, it is a checkpoint of this version with a verifiable fingerprint
    delta.save_finetuned(tmp_path / "new")
    fresh = build("t5")
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        caplog.clear()
        AutoDeltaModel.from_finetuned(tmp_path / "new", backbone_model=fresh)
    assert caplog.records == []
    assert not (tmp_path / "new" / "pytorch_model.bin").exists()


def test_check_hash_false_is_silent(tmp_path, caplog):
    model = build("t5")
    folder = write_legacy(tmp_path, legacy_config(), legacy_state(model))
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        LoraModel.from_finetuned(folder, model, check_hash=False)
    assert caplog.records == []


def test_really_unknown_keys_are_still_errors(tmp_path):
    model = build("t5")
    keys = list(model.state_dict())
    folder = write_legacy(tmp_path, legacy_config(lora_rank=8), legacy_state(model))
    with pytest.raises(DeltaConfigError, match=r"`lora_rank` \(did you mean `lora_r`\?\)"):
        AutoDeltaModel.from_finetuned(folder, backbone_model=model)
    with pytest.raises(DeltaConfigError, match="lora_rank"):
        AutoDeltaConfig.from_finetuned(folder)
    assert list(model.state_dict()) == keys


def test_config_overrides_and_0_3_defaults(tmp_path):
    config = legacy_config()
    del config["common_structure"]  # 0.3 wrote only keys that differ from its defaults
    cfg_dir = write_legacy(tmp_path, config, {})
    cfg = AutoDeltaConfig.from_finetuned(cfg_dir, lora_dropout=0.1)
    assert cfg.lora_dropout == 0.1 and cfg.backbone_hash == MD5 and cfg.hash_algorithm is None
    assert cfg.common_structure is False  # 0.3's default: raw module names


def test_legacy_common_structure_names(tmp_path):
    model = build("t5")
    state = {k: v for k, v in legacy_state(model).items() if ".SelfAttention." in k or "final_layer_norm" in k}
    folder = write_legacy(
        tmp_path, legacy_config(modified_modules=["attn@.q@", "attn@.v@"], common_structure=True), state
    )
    delta = AutoDeltaModel.from_finetuned(folder, backbone_model=model, check_hash=False)
    assert all(n.endswith(("SelfAttention.q", "SelfAttention.v")) for n in delta.modified_module_names)
    with torch.no_grad():
        torch.testing.assert_close(run(model, "t5", inputs_for("t5")), expected_output(state), atol=1e-6, rtol=0)


class _Payload:
    """A pickled object that would create a file if unpickling ran its code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bin_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    model = build("t5")
    state = legacy_state(model)
    write_legacy(tmp_path / "a", legacy_config(), {**state, "extra": _Payload(marker)})
    keys = list(model.state_dict())
    with pytest.raises(CheckpointError, match="Refusing to load .*pickled code is never executed"):
        AutoDeltaModel.from_finetuned(tmp_path / "a", backbone_model=model)
    assert not marker.exists() and list(model.state_dict()) == keys

    write_legacy(tmp_path / "b", legacy_config(), {**state, "step": 3})  # allowed by weights_only, not a tensor
    with pytest.raises(CheckpointError, match="name -> tensor mapping"):
        AutoDeltaModel.from_finetuned(tmp_path / "b", backbone_model=model)
    assert list(model.state_dict()) == keys
