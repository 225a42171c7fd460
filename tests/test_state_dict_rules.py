"""The state_dict filter of `freeze_module(set_state_dict=True)` never outlives its delta, and `save_pretrained` of a
backbone carrying a delta never writes a folder that `from_pretrained` turns into random weights."""

from __future__ import annotations

import io

import torch
import transformers as T

from opendelta import AutoDeltaConfig, AutoDeltaModel
from tiny import build, inputs_for, run

X = inputs_for("bert")


def _lora(model):
    delta = AutoDeltaModel.from_config(AutoDeltaConfig.from_dict({"delta_type": "lora"}), backbone_model=model)
    with torch.no_grad():
        for _, layer in delta.delta_modules():
            layer.lora_B.normal_()
    return delta


def _full_keys(model) -> set[str]:
    return {k for k in build("bert").state_dict()}


def test_filter_keeps_small_state_dict_files_working_while_attached():
    """OpenDelta 0.3's use: torch.save(model.state_dict()) holds the trainable tensors only."""
    model = build("bert")
    delta = _lora(model)
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=True)
    state = model.state_dict()
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fresh = build("bert")
    AutoDeltaModel.from_config(AutoDeltaConfig.from_dict({"delta_type": "lora"}), backbone_model=fresh)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=False)
    assert torch.equal(run(model, "bert", X), run(fresh, "bert", X))


def test_filter_goes_away_on_detach_merge_and_unfreezing():
    model = build("bert")
    full = _full_keys(model)
    delta = _lora(model)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    delta.detach()
    assert set(model.state_dict()) == full  # the user's model is whole again
    assert "save_pretrained" not in vars(model)
    delta.attach()
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    delta.freeze_module(exclude=["deltas"], set_state_dict=False)
    assert set(model.state_dict()) >= full
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    delta.merge()
    assert set(model.state_dict()) >= full


def test_save_pretrained_after_merge_writes_the_merged_weights(tmp_path):
    model = build("bert")
    delta = _lora(model)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    trained = run(model, "bert", X)
    delta.merge()
    model.save_pretrained(tmp_path / "merged")
    loaded = T.BertForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(run(loaded, "bert", X), trained, rtol=1e-5, atol=1e-5)


def test_save_pretrained_with_filter_is_a_complete_model_and_a_delta(tmp_path):
    reference = build("bert")
    model = build("bert")
    delta = _lora(model)
    delta.freeze_module(exclude=["deltas"], set_state_dict=True)
    model.save_pretrained(tmp_path / "out")
    assert {"config.json", "model.safetensors", "delta_config.json", "delta_model.safetensors"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    plain = T.BertForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    assert torch.equal(run(plain, "bert", X), run(reference, "bert", X))  # every backbone weight came back
    fresh = build("bert")
    AutoDeltaModel.from_finetuned(tmp_path / "out", backbone_model=fresh)  # hash-checked
    assert torch.equal(run(fresh, "bert", X), run(model, "bert", X))
    assert set(model.state_dict()) == {n for n, p in model.named_parameters() if p.requires_grad}  # still filtered
