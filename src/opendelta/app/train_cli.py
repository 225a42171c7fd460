"""The command line of `opendelta train` (also `python -m opendelta.app.train_cli`): options, summary table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import OpenDeltaError
from .train import FULL, TrainConfig, TrainResult, default_learning_rates, run


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `train` options (shared by `python -m opendelta.app.train_cli` and `opendelta train`)."""
    d = TrainConfig()
    a = parser.add_argument
    a("--backbone", help="local model folder or Hub id (default: the embedded MiniLM-L6, 22.7M parameters)")
    a(
        "--data",
        help="a .csv / .tsv / .jsonl file (optionally .gz/.bz2/.xz), or a Hub dataset name when `datasets` "
        "is installed (default: the embedded Rotten Tomatoes snippets, 12,808 reviews)",
    )
    a("--text-column", default=d.text_column, help="column holding the text (default: %(default)s)")
    a("--label-column", default=d.label_column, help="column holding the label (default: %(default)s)")
    a(
        "--drop-label",
        action="append",
        dest="drop_labels",
        metavar="VALUE",
        help="ignore rows with this label value (repeatable; default data: 'plot')",
    )
    a("--validation-data", help="a separate validation file (default: cut from --data)")
    a("--test-data", help="a separate test file (default: cut from --data)")
    a("--validation-size", type=float, default=d.validation_size, help="fraction (<1) or row count (default: 0.1)")
    a("--test-size", type=float, default=d.test_size, help="fraction (<1) or row count (default: 0.1)")
    a("--split-seed", type=int, default=d.split_seed, help="seed of the train/validation/test split (default: 0)")
    a(
        "--delta",
        default=d.delta,
        help="a registered delta type (lora, adapter, ...) or a JSON config file (default: lora, r=8 on query/value)",
    )
    a("--full", action="store_true", help="full fine-tuning instead of a delta (the baseline)")
    a(
        "--lr",
        type=float,
        help="learning rate (default: per method, chosen on validation: "
        + ", ".join(f"{k} {v:g}" for k, v in default_learning_rates().items())
        + ")",
    )
    a("--epochs", type=_positive_int, default=d.epochs, help="default: %(default)s")
    a("--batch-size", type=_positive_int, default=d.batch_size, help="default: %(default)s")
    a(
        "--max-length",
        type=_positive_int,
        default=d.max_length,
        help="tokens per text, longer ones are cut (default: %(default)s)",
    )
    a("--seed", type=int, default=d.seed, help="training seed: head init, shuffling, dropout (default: %(default)s)")
    a("--train-subset", type=_positive_int, help="use only the first N training rows of the fixed split order")
    a("--bf16", action="store_true", help="bfloat16 autocast (weights stay float32; fast with AMX or a GPU)")
    a(
        "--threads",
        type=_positive_int,
        help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)",
    )
    a(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (less memory, slower)",
    )
    a("--output", default=d.output, help="checkpoint folder (default: %(default)s)")
    a("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        backbone=args.backbone,
        data=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        drop_labels=args.drop_labels,
        validation_data=args.validation_data,
        test_data=args.test_data,
        validation_size=args.validation_size,
        test_size=args.test_size,
        split_seed=args.split_seed,
        delta=FULL if args.full else args.delta,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        train_subset=args.train_subset,
        bf16=args.bf16,
        threads=args.threads,
        output=args.output,
        progress=not args.no_progress,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def summary_table(result: TrainResult) -> Any:
    """A rich table of the run's numbers."""
    from rich.table import Table

    t = Table(title=f"opendelta train: {result.method}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    sizes = result.split_sizes
    t.add_row("data (train / validation / test)", f"{sizes['train']} / {sizes['validation']} / {sizes['test']}")
    t.add_row("labels", ", ".join(result.labels))
    t.add_row("learning rate, epochs", f"{result.lr:g}, {result.epochs}")
    t.add_row(
        "trainable parameters",
        f"{result.trainable_params:,} of {result.total_params:,} ({100 * result.trainable_ratio:.3f}%)",
    )
    if result.method != FULL:
        t.add_row("delta parameters", f"{result.delta_params:,} ({100 * result.delta_ratio:.3f}%)")
    t.add_row(
        "validation accuracy per epoch",
        ", ".join(f"{a:.4f}" for a in result.validation_accuracy) + f" (best: epoch {result.best_epoch})",
    )
    t.add_row("test accuracy (reloaded from disk)", f"[bold green]{result.test_accuracy:.4f}")
    t.add_row(
        "checkpoint size vs backbone",
        f"{_mb(result.checkpoint_bytes)} vs {_mb(result.backbone_bytes)} "
        f"({100 * result.checkpoint_bytes / max(result.backbone_bytes, 1):.3f}%)",
    )
    t.add_row(
        "train time per epoch",
        f"{result.train_seconds_per_epoch:.1f} s ({result.train_examples_per_second:.0f} examples/s)",
    )
    t.add_row("checkpoint", result.output)
    return t


def run_cli(args: argparse.Namespace) -> int:
    """Run `train` from parsed arguments and print the summary table; errors propagate (typed)."""
    import transformers
    from rich.console import Console

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    result = run(config_from_args(args))
    if result is not None:  # under torchrun only rank 0 reports
        Console().print(summary_table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m opendelta.app.train_cli`: like `opendelta train`; a failure prints one `error:` line and returns 1."""
    parser = argparse.ArgumentParser(prog="python -m opendelta.app.train_cli", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except (OpenDeltaError, OSError) as exc:
        print(f"opendelta train: error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
