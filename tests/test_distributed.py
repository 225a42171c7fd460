"""Multi-process training on CPU (gloo, 2 processes on 127.0.0.1): DDP and FSDP2 (`fully_shard`) train a LoRA on a
tiny BERT to the same weights as one process on the same global batch, and `save_finetuned` writes one checkpoint of
whole tensors (gathered from the FSDP2 shards) that loads, hash-checked, onto an unwrapped model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from opendelta import AutoDeltaConfig, AutoDeltaModel
from tiny import build

STEPS, BATCH = 3, 8


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 99, (STEPS, BATCH, 8), generator=g)
    return ids, (ids[..., 0] > 50).long()


def _setup():
    model = build("bert")
    delta = AutoDeltaModel.from_config(AutoDeltaConfig.from_dict({"delta_type": "lora"}), backbone_model=model)
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=True)
    return model, delta


def _train(model, step_model, rows: slice) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    ids, labels = _data()
    for s in range(STEPS):
        loss = F.cross_entropy(step_model(input_ids=ids[s, rows]).logits, labels[s, rows])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        # DDP: only the trainable tensors are synchronised
        model, delta = _setup()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        _train(model, ddp, rows)
        delta.save_finetuned(Path(out) / "ddp")
        # FSDP2: parameters become DTensor shards; save_finetuned gathers them
        from torch.distributed.fsdp import fully_shard

        model, delta = _setup()
        fully_shard(model)
        _train(model, model, rows)
        delta.save_finetuned(Path(out) / "fsdp2")
        if rank == 0:
            (Path(out) / "done.json").write_text(json.dumps({"ok": True}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    out = tmp_path_factory.mktemp("dist")
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    assert json.loads((out / "done.json").read_text())["ok"]
    return out


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    model, delta = _setup()
    _train(model, model, slice(0, BATCH))
    return delta.delta_state_dict()


@pytest.mark.parametrize("engine", ["ddp", "fsdp2"])
def test_two_processes_equal_one_and_the_checkpoint_loads(engine, two_process_run, one_process):
    from safetensors.torch import load_file

    saved = load_file(str(two_process_run / engine / "delta_model.safetensors"))
    assert saved.keys() == one_process.keys()
    diff = max((saved[k] - one_process[k]).abs().max().item() for k in saved)
    assert all(saved[k].shape == one_process[k].shape for k in saved)  # whole tensors, not shards
    assert diff < 1e-5, f"{engine}: max |diff| vs one process = {diff:.2e}"
    print(f"{engine}: max |diff| vs one process = {diff:.2e}")
    # onto an unwrapped model, hash-checked against the fingerprint of the model as trained (gathered whole)
    loaded = AutoDeltaModel.from_finetuned(two_process_run / engine, backbone_model=build("bert"))
    assert all(torch.equal(v, saved[k]) for k, v in loaded.delta_state_dict().items())


def test_train_app_under_torchrun_equals_one_process(tmp_path):
    """`opendelta train` unchanged under torchrun: 2 ranks split each global batch; no dropout, so the delta equals
    the one-process run's."""
    import csv
    import subprocess
    import sys

    import transformers
    from safetensors.torch import load_file

    from tiny import bert_config

    backbone = tmp_path / "tiny-bert"
    backbone.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "the", "movie", "was"]
    (backbone / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(backbone / "vocab.txt")).save_pretrained(backbone)
    torch.manual_seed(0)
    config = bert_config(vocab_size=len(words), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertForSequenceClassification(config).save_pretrained(backbone)
    data = tmp_path / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(80):
            writer.writerow([f"the movie was {words[5 + i % 4]}", "pos" if i % 4 < 2 else "neg"])
    common = ["--backbone", str(backbone), "--data", str(data), "--text-column", "text", "--label-column", "label"]
    common += ["--epochs", "1", "--batch-size", "8", "--max-length", "8", "--no-progress", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    app = ["-m", "opendelta.app.train_cli"]
    one = subprocess.run([sys.executable, *app, *common, "--output", str(tmp_path / "one")], env=env)
    assert one.returncode == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(_free_port())]
    two = subprocess.run([*launcher, *app, *common, "--output", str(tmp_path / "two")], env=env)
    assert two.returncode == 0
    a = load_file(str(tmp_path / "one" / "delta_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "delta_model.safetensors"))
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"opendelta train, torchrun 2 ranks: max |diff| vs one process = {diff:.2e}")
    assert diff < 1e-4
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two")]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
