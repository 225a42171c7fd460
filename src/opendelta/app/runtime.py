"""What the train app's loop runs on: the process group under torchrun, bf16 autocast, evaluation, the
progress bar."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .data import DataError


def process_group() -> tuple[int, int]:
    """(rank, world size) under `torchrun` / `accelerate launch` (the process group is started here), else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def end_world() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def autocast(model: nn.Module, enabled: bool) -> Any:
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Any, bf16: bool = False) -> float:
    """Accuracy of `model` over the batches of a DataLoader (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            with autocast(model, bf16):
                logits = model(**batch).logits
            correct += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise DataError("Cannot evaluate on an empty split; give it some rows (--validation-size / --test-size).")
    return correct / total


class Bar:
    """A rich progress bar with loss and throughput (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} ex/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.progress.add_task("train", total=total, loss=float("nan"), rate=0.0)

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, description: str, loss: float, rate: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=description, loss=loss, rate=rate)
