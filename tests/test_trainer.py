"""The transformers Trainer with a delta: OpenDeltaCallback checkpoints, resume, best model, and what a plain
`save_model()` writes without the callback (a complete model that also loads with from_finetuned)."""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
import torch
import transformers as T

from opendelta import AutoDeltaConfig, AutoDeltaModel
from opendelta.integrations.trainer import OpenDeltaCallback
from tiny import build

pytestmark = pytest.mark.filterwarnings("ignore")


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 99, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def _model_and_delta(delta_type: str = "lora"):
    model = build("bert")
    delta = AutoDeltaModel.from_config(AutoDeltaConfig.from_dict({"delta_type": delta_type}), backbone_model=model)
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=True)
    return model, delta


def _args(out, **changes) -> T.TrainingArguments:
    settings = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-2,
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    settings.update(changes)
    return T.TrainingArguments(**settings)


def _trainer(model, out, callbacks=(), **changes) -> T.Trainer:
    return T.Trainer(
        model=model,
        args=_args(out, **changes),
        train_dataset=_Rows(24, 0),
        eval_dataset=_Rows(8, 1),
        callbacks=list(callbacks),
    )


def _trained(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def _transformers_warnings():
    """Collect what transformers logs at WARNING level (the test suite runs it at ERROR)."""
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Keep(level=logging.WARNING)
    before = T.logging.get_verbosity()
    T.logging.set_verbosity_warning()
    logging.getLogger("transformers").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("transformers").removeHandler(handler)
        T.logging.set_verbosity(before)


def test_callback_checkpoints_are_delta_folders_and_best_model_reloads(tmp_path):
    model, delta = _model_and_delta()
    callback = OpenDeltaCallback(delta)
    trainer = _trainer(model, tmp_path / "run", [callback], load_best_model_at_end=True, metric_for_best_model="loss")
    try:
        with _transformers_warnings() as warnings:
            trainer.train()
    finally:
        callback.close()
    assert not [w for w in warnings if "missing keys" in w], warnings
    best = trainer.state.best_model_checkpoint
    assert best is not None
    for ckpt in sorted((tmp_path / "run").glob("checkpoint-*")):
        config = json.loads((ckpt / "config.json").read_text())
        assert config["delta_type"] == "lora" and (ckpt / "delta_model.safetensors").is_file()
        assert (ckpt / "model.safetensors").stat().st_size < 20_000  # only what trains, not the backbone
    # the model at the end is the best checkpoint, and that checkpoint loads hash-checked on a fresh backbone
    fresh = build("bert")
    AutoDeltaModel.from_finetuned(best, backbone_model=fresh)
    x = {"input_ids": torch.randint(5, 99, (2, 8))}
    with torch.no_grad():
        assert torch.equal(model.eval()(**x).logits, fresh(**x).logits)
    out = tmp_path / "final"
    trainer.save_model(str(out))
    assert json.loads((out / "config.json").read_text())["delta_type"] == "lora"
    fresh2 = build("bert")
    AutoDeltaModel.from_finetuned(out, backbone_model=fresh2)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, fresh2.eval()(**x).logits)


def test_callback_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    model, delta = _model_and_delta()
    callback = OpenDeltaCallback(delta)
    try:
        _trainer(model, tmp_path / "a", [callback], eval_strategy="no").train()
    finally:
        callback.close()
    uninterrupted = _trained(model)

    model2, delta2 = _model_and_delta()  # a fresh process: new model, same delta init, resumed at step 4
    callback2 = OpenDeltaCallback(delta2)
    try:
        with _transformers_warnings() as warnings:
            _trainer(model2, tmp_path / "b", [callback2], eval_strategy="no").train(
                resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4")
            )
    finally:
        callback2.close()
    assert not [w for w in warnings if "missing keys" in w], warnings
    resumed = _trained(model2)
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        torch.testing.assert_close(resumed[k], uninterrupted[k], rtol=0, atol=1e-6)


def test_plain_save_model_without_callback_is_complete_and_loads_both_ways(tmp_path):
    reference = build("bert")
    model, delta = _model_and_delta("adapter")
    trainer = _trainer(model, tmp_path / "run", eval_strategy="no", save_strategy="no")
    trainer.train()
    out = tmp_path / "final"
    trainer.save_model(str(out))
    # from_pretrained gets every backbone weight (the frozen ones as they were), not random ones
    plain = T.BertForSequenceClassification.from_pretrained(out)
    ref_state = reference.state_dict()
    for k, v in plain.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(v, ref_state[k]), k
    assert torch.equal(plain.classifier.weight, model.classifier.weight)
    # and the delta loads, hash-checked, onto a fresh backbone with the trained outputs
    fresh = build("bert")
    AutoDeltaModel.from_finetuned(out, backbone_model=fresh)
    x = {"input_ids": torch.randint(5, 99, (2, 8))}
    with torch.no_grad():
        assert torch.equal(model.eval()(**x).logits, fresh(**x).logits)


def test_callback_refuses_a_trained_weight_outside_the_delta(tmp_path):
    from opendelta import DeltaStateError

    model, delta = _model_and_delta()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(True)
    callback = OpenDeltaCallback(delta)
    try:
        with pytest.raises(DeltaStateError, match="not part of the delta"):
            model.save_pretrained(tmp_path / "x")
    finally:
        callback.close()


def test_enable_input_require_grads_lets_a_checkpointed_delta_learn():
    from torch.utils.checkpoint import checkpoint

    from opendelta.integrations.checkpointing import enable_input_require_grads

    torch.manual_seed(0)
    embed, block = torch.nn.Embedding(10, 8), torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    model = torch.nn.ModuleDict({"embed": embed, "block": block})
    delta = AutoDeltaModel.from_config(
        AutoDeltaConfig.from_dict({"delta_type": "lora", "modified_modules": ["block.0"]}), backbone_model=model
    )
    delta.freeze_module(exclude=["deltas"], set_state_dict=False)

    def loss() -> torch.Tensor:
        return checkpoint(block, embed(torch.tensor([[1, 2, 3]])), use_reentrant=True).sum()

    with pytest.raises(RuntimeError, match="does not require grad"):  # reentrant: the delta is cut off
        loss().backward()
    handle = enable_input_require_grads(embed)
    loss().backward()
    handle.remove()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in delta.delta_parameters())
