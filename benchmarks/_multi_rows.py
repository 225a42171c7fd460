"""benchmarks/perf.py rows for several deltas on one backbone: switching, mixed batches, hot-swap, loading."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _pairs import Table, paired

LORA_TARGETS = ["query", "value"]
N_DELTAS, MIXED_BATCH, MIXED_SEQ = 8, 32, 16


def _randomize(params, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def _ours_many(load: Callable[[], torch.nn.Module], n: int):
    from opendelta import LoraModel

    model = load().eval()
    for i in range(n):
        d = LoraModel(model, modified_modules=LORA_TARGETS, lora_r=8, name=f"d{i}")
        _randomize(d.delta_parameters(), i)
    return model


def _peft_many(load: Callable[[], torch.nn.Module], n: int, peft):
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS)
    model = peft.get_peft_model(load(), cfg, adapter_name="d0")
    for i in range(1, n):
        model.add_adapter(f"d{i}", cfg)
    for i in range(n):
        _randomize([p for k, p in model.named_parameters() if f".d{i}." in k + "."], i)
    return model.eval()


def row_switch(table: Table, load, peft, pairs: int) -> None:
    import opendelta

    ours, theirs = _ours_many(load, 2), _peft_many(load, 2, peft)
    state = {"ours": 0, "peft": 0}

    def switch_ours():
        state["ours"] ^= 1
        opendelta.activate(ours, f"d{state['ours']}")

    def switch_peft():
        state["peft"] ^= 1
        theirs.set_adapter(f"d{state['peft']}")

    p = paired(switch_ours, switch_peft, pairs, inner=20)
    table.add_paired("switch active delta", ("ours", "PEFT"), p, "ours activate / PEFT set_adapter", "<= 0.2")


def row_mixed(table: Table, load, peft, pairs: int) -> None:
    import opendelta

    ours, theirs = _ours_many(load, N_DELTAS), _peft_many(load, N_DELTAS, peft)
    names = [f"d{i % N_DELTAS}" for i in range(MIXED_BATCH)]  # 4 examples per delta
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (MIXED_BATCH, MIXED_SEQ), generator=g)
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad(), opendelta.mixed_batch(ours, names):
        a = ours(**x).logits
    with torch.no_grad():
        b = theirs(**x, adapter_names=names).logits
    assert torch.allclose(a, b, atol=1e-4), "ours and PEFT disagree on the mixed batch"

    def mixed_ours():
        with torch.no_grad(), opendelta.mixed_batch(ours, names):
            ours(**x)

    def mixed_peft():
        with torch.no_grad():
            theirs(**x, adapter_names=names)

    def single_ours():
        with torch.no_grad():
            ours(**x)

    p = paired(mixed_ours, mixed_peft, pairs)
    label = f"mixed batch ({N_DELTAS} LoRAs, {MIXED_BATCH}x{MIXED_SEQ})"
    table.add_paired(label, ("ours", "PEFT"), p, "ours / PEFT adapter_names", "<= 0.6")
    opendelta.activate(ours, "d0")
    p = paired(mixed_ours, single_ours, pairs)
    table.add_paired(label, ("mixed", "one delta"), p, "ours mixed / ours one-delta batch", "<= 1.3")


def row_hot_swap(table: Table, load, pairs: int, backend: str) -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from opendelta import LoraModel

    model = load().eval()
    delta = LoraModel(model, modified_modules=LORA_TARGETS, lora_r=8)
    states = []
    for seed in (1, 2):
        _randomize(delta.delta_parameters(), seed)
        states.append({k: v.clone() for k, v in delta.delta_state_dict().items()})
    compiled = torch.compile(model, backend=backend)
    ids = torch.randint(1000, 20000, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        compiled(input_ids=ids)
    graphs = counters["stats"]["unique_graphs"]
    targets = [p for _, p in sorted(delta.delta_state_dict().items())]
    flip = {"ours": 0, "copy": 0}

    def swap():
        flip["ours"] ^= 1
        delta.load_weights(states[flip["ours"]])

    def copy():
        flip["copy"] ^= 1
        with torch.no_grad():
            for dst, (_, src) in zip(targets, sorted(states[flip["copy"]].items())):
                dst.copy_(src)

    p = paired(swap, copy, pairs, inner=20)
    with torch.no_grad():
        delta.load_weights(states[0])
        out = compiled(input_ids=ids).logits
        expected = model(input_ids=ids).logits
    recompiled = counters["stats"]["unique_graphs"] - graphs
    row = f"hot-swap (compiled, {backend})"
    table.add_paired(row, ("load_weights", "raw copy_"), p, "swap / copying the tensors", "<= 1.1")
    same = torch.allclose(out, expected, atol=1e-5)
    table.add(row, f"outputs after the swap equal eager: {same}", "recompilations", float(recompiled), "== 0")
    torch._dynamo.reset()


def row_load_verified(table: Table, load, peft, pairs: int) -> None:
    from opendelta import AutoDeltaModel, LoraModel
    from opendelta.fingerprint import clear_digest_cache

    tmp = Path(tempfile.mkdtemp())
    for i in range(2):
        m = load()
        d = LoraModel(m, modified_modules=LORA_TARGETS, lora_r=8)
        _randomize(d.delta_parameters(), i)
        d.save_finetuned(tmp / f"ours{i}")
        pm = peft.get_peft_model(load(), peft.LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS))
        _randomize([p for p in pm.parameters() if p.requires_grad], i)
        pm.save_pretrained(tmp / f"peft{i}")
    ours_bb = load()
    peft_model = peft.PeftModel.from_pretrained(load(), tmp / "peft0")
    AutoDeltaModel.from_finetuned(tmp / "ours0", backbone_model=ours_bb, name="first")  # verifies the backbone
    pool = [load() for _ in range(3)]  # backbones go back to the pool once their delta is removed again
    held: dict[str, object] = {}

    def ours_first():  # nothing remembered about the backbone: every byte is read
        clear_digest_cache()
        bb = pool.pop()
        held["o"] = (bb, AutoDeltaModel.from_finetuned(tmp / "ours1", backbone_model=bb))

    def ours_undo():
        bb, delta = held.pop("o")
        delta.release()
        pool.insert(0, bb)

    def peft_first():
        held["p"] = peft.PeftModel.from_pretrained(pool.pop(), tmp / "peft1")

    def peft_undo():
        pool.insert(0, held.pop("p").unload())

    p = paired(ours_first, peft_first, pairs, after_a=ours_undo, after_b=peft_undo)
    table.add_paired("load, hash check, first", ("ours", "PEFT"), p, "ours / PEFT from_pretrained", "<= 1.1")

    def ours_again():  # a second delta onto a backbone verified before
        held["o2"] = AutoDeltaModel.from_finetuned(tmp / "ours1", backbone_model=ours_bb, name="second")

    def peft_again():
        peft_model.load_adapter(tmp / "peft1", adapter_name="second")

    p = paired(
        ours_again,
        peft_again,
        pairs,
        after_a=lambda: held.pop("o2").release(),
        after_b=lambda: peft_model.delete_adapter("second"),
    )
    table.add_paired("load onto verified backbone", ("ours", "PEFT"), p, "ours / PEFT load_adapter", "<= 1.0")
