"""Several deltas on one backbone: names, composition, fingerprint scope, switching, hot-swap, mixed batches."""

from __future__ import annotations

import pytest
import torch

import opendelta
from opendelta import (
    AdapterModel,
    AutoDeltaModel,
    BitFitModel,
    CheckpointError,
    DeltaConfigError,
    DeltaStateError,
    HashMismatchError,
    IA3Model,
    LoraModel,
    ModuleMatchError,
    UnsupportedModuleError,
    Visualization,
)
from opendelta import fingerprint as fpmod
from opendelta.dispatch import dispatchers_of
from tiny import build, inputs_for, run


def perturb(delta, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * scale + (1.0 if p.dim() == 1 and delta.delta_type == "ia3" else 0)
            )


def out(model, x):
    with torch.no_grad():
        return run(model, "bert", x)


# ----- names --------------------------------------------------------------------------------------------
def test_default_names_custom_names_and_the_backbone_view():
    model = build("toy")
    a = LoraModel(model, modified_modules=["0"])
    b = LoraModel(model, modified_modules=["0", "2"], lora_r=2)
    c = AutoDeltaModel.from_config(
        {"delta_type": "adapter", "modified_modules": ["2"], "bottleneck_dim": 8}, model, name="task"
    )
    d = BitFitModel(model, modified_modules=["0"])
    assert list(opendelta.deltas_of(model)) == ["lora", "lora_1", "task", "bitfit"]
    assert opendelta.get_delta(model, "lora_1") is b and opendelta.active_deltas(model) == [
        "lora",
        "lora_1",
        "task",
        "bitfit",
    ]
    assert (a.name, c.name, d.name) == ("lora", "task", "bitfit")
    keys = set(model.state_dict())
    assert {"0.lora.lora_A", "0.lora_1.lora_A", "2.lora_1.lora_A", "2.adapter.down_proj.weight"} <= keys
    # checkpoint keys stay canonical (`lora`), whatever attribute the layer got on the module
    assert set(b.delta_state_dict()) == {"0.lora.lora_A", "0.lora.lora_B", "2.lora.lora_A", "2.lora.lora_B"}
    text = Visualization(model).to_text()
    assert "[task]" not in text.split("adapter (AdapterLayer)")[0] and "adapter (AdapterLayer) [task]" in text
    with pytest.raises(DeltaConfigError, match="already has a delta named 'task'"):
        LoraModel(model, modified_modules=["0"], name="task")
    with pytest.raises(ModuleMatchError, match="lora_1"):
        opendelta.get_delta(model, "nope")
    a.merge_and_unload()  # releases the name
    assert "lora" not in opendelta.deltas_of(model)
    b.release()  # detached and forgotten: its layers, hooks and name leave the backbone
    assert "lora_1" not in opendelta.deltas_of(model) and not any(".lora_1." in k for k in model.state_dict())
    assert all(e.owner is not b for d in dispatchers_of(model) for e in d.entries)
    assert LoraModel(model, modified_modules=["4"]).name == "lora"


def test_order_of_application_is_attach_order_and_additive_deltas_commute():
    x = inputs_for("bert")
    outs = []
    for order in (("lora", "bitfit"), ("bitfit", "lora")):
        model = build("bert")
        for t in order:
            cls = LoraModel if t == "lora" else BitFitModel
            perturb(cls(model, modified_modules=["attention.output.dense"]), seed=len(t))
        outs.append(out(model, x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)


# ----- fingerprint scope ---------------------------------------------------------------------------------
def test_composed_deltas_save_separately_and_reload_in_any_order_with_the_hash_check(tmp_path):
    model = build("bert")
    x = inputs_for("bert")
    lora = LoraModel(model, modified_modules=["query", "value"], lora_r=2, name="l")
    adapter = AdapterModel(model, modified_modules=["attention.output.dense"], bottleneck_dim=4, name="a")
    lora2 = LoraModel(model, modified_modules=["query"], lora_r=2, name="l2")  # same type, same module
    for i, d in enumerate((lora, adapter, lora2)):
        perturb(d, seed=i)
    expected = out(model, x)
    for d in (lora, adapter, lora2):
        d.save_finetuned(tmp_path / d.name)
    for order in (("l", "a", "l2"), ("l2", "a", "l"), ("a", "l2", "l")):
        fresh = build("bert")
        for n in order:
            AutoDeltaModel.from_finetuned(tmp_path / n, backbone_model=fresh, name=n)  # check_hash=True
        torch.testing.assert_close(out(fresh, x), expected, rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match="already loaded on this backbone as delta 'l'"):
        AutoDeltaModel.from_finetuned(tmp_path / "l", backbone_model=fresh)
    assert list(opendelta.deltas_of(fresh)) == list(order)


def test_fingerprint_covers_persistent_buffers_and_not_other_deltas(tmp_path):
    model = build("bart")
    delta = LoraModel(model, modified_modules=["q_proj"], lora_r=2)
    perturb(delta)
    delta.save_finetuned(tmp_path / "c")
    changed = build("bart")
    with torch.no_grad():
        changed.final_logits_bias += 1.0  # a persistent buffer
    with pytest.raises(HashMismatchError, match="final_logits_bias"):
        AutoDeltaModel.from_finetuned(tmp_path / "c", backbone_model=changed)
    assert not opendelta.deltas_of(changed)  # the failed load left nothing behind
    other = build("bart")
    perturb(BitFitModel(other, modified_modules=["fc1"]))  # another delta already there: not in the scope
    AutoDeltaModel.from_finetuned(tmp_path / "c", backbone_model=other)


def test_digest_cache_reads_only_changed_tensors_and_catches_in_place_changes(monkeypatch):
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query"], lora_r=2)
    delta.freeze_module(exclude=["deltas"], set_state_dict=False)
    trainable = {id(p) for p in delta.delta_parameters()}  # always re-read (fused optimizers skip versions)
    first = delta.fingerprint()
    read = []
    real = fpmod.tensor_digest
    monkeypatch.setattr(fpmod, "tensor_digest", lambda t: read.append(t) or real(t))
    again = delta.fingerprint()
    assert again == first and {id(t) for t in read} == trainable  # the frozen backbone: nothing re-read
    read.clear()
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    old = w[0, 0].item()
    with torch.no_grad():
        w[0, 0] += 1.0  # in place, through a view: torch's version counter moves
    changed = delta.fingerprint()
    assert [t for t in read if id(t) not in trainable] == [w] and changed.root != first.root
    with torch.no_grad():
        w[0, 0] = old
    assert delta.fingerprint().tensors == first.tensors
    fpmod.clear_digest_cache()
    assert delta.fingerprint() == first


def test_scoped_fingerprint_is_pinned():
    m = torch.nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        m.bias.copy_(torch.tensor([0.25, -1.0]))
    m.register_buffer("kept", torch.tensor([1.0, 2.0]))
    m.register_buffer("dropped", torch.tensor([7.0]), persistent=False)
    named = fpmod.backbone_tensors(m, skip=lambda _: False)
    assert list(named) == ["weight", "bias", "kept"]
    assert fpmod.ALGORITHM == "xxh3-128-scoped-v2"
    fp = fpmod.fingerprint_tensors(named)
    import xxhash

    root = xxhash.xxh3_128(
        ("xxh3-128-scoped-v2;" + "".join(f"{k}={v};" for k, v in sorted(fp.tensors.items()))).encode()
    )
    assert fp.root == root.hexdigest()


# ----- switching -----------------------------------------------------------------------------------------
def test_activate_deactivate_and_using():
    model = build("bert")
    x = inputs_for("bert")
    base = out(model, x)
    a = LoraModel(model, modified_modules=["query"], lora_r=2, name="a")
    b = IA3Model(model, modified_modules=["value"], name="b")
    perturb(a, seed=1)
    perturb(b, seed=2)
    both = out(model, x)
    opendelta.activate(model, "a")
    only_a = out(model, x)
    assert opendelta.active_deltas(model) == ["a"] and not b.active and b.attached
    opendelta.activate(model, ["b"])
    only_b = out(model, x)
    opendelta.activate(model, None)
    assert torch.equal(out(model, x), base)
    with opendelta.using(model, ["a", "b"]):
        assert torch.equal(out(model, x), both)
    assert opendelta.active_deltas(model) == []
    opendelta.activate(model, ["a", "b"])
    opendelta.deactivate(model, "b")
    assert torch.equal(out(model, x), only_a)
    b.detach()
    with pytest.raises(DeltaStateError, match="detached"):
        opendelta.activate(model, "b")
    b.attach()  # keeps its switched-off state
    assert torch.equal(out(model, x), only_a)
    b.set_active(True)
    a.set_active(False)
    assert torch.equal(out(model, x), only_b) and not torch.equal(only_a, only_b)
    a.set_active(True)
    a.merge()
    with pytest.raises(DeltaStateError, match="merged"):
        opendelta.activate(model, "b")


def test_hot_swap_loads_another_checkpoint_in_place(tmp_path):
    model = build("bert")
    x = inputs_for("bert")
    d = LoraModel(model, modified_modules=["query"], lora_r=2)
    perturb(d, seed=1)
    d.save_finetuned(tmp_path / "one")
    one = out(model, x)
    perturb(d, seed=2)
    d.save_finetuned(tmp_path / "two")
    two = out(model, x)
    params = list(d.delta_parameters())
    d.load_weights(tmp_path / "one")
    assert torch.equal(out(model, x), one) and list(d.delta_parameters()) == params  # same tensors, new values
    d.load_weights(d.delta_state_dict() | {"bert.encoder.layer.0.attention.self.query.lora.lora_B": torch.zeros(32, 2)})
    d.load_weights(tmp_path / "two")
    assert torch.equal(out(model, x), two)
    other = LoraModel(build("bert"), modified_modules=["query"], lora_r=4)
    with pytest.raises(CheckpointError, match="lora_r: 2"):
        other.load_weights(tmp_path / "one")
    # a changed backbone fails the check and the delta keeps its values
    with torch.no_grad():
        model.bert.pooler.dense.bias += 1
    with pytest.raises(HashMismatchError):
        d.load_weights(tmp_path / "one")
    with torch.no_grad():
        model.bert.pooler.dense.bias -= 1
    assert torch.equal(out(model, x), two)


# ----- mixed batches -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lora", "ia3", "adapter"])
def test_mixed_batch_equals_each_example_alone(kind):
    model = build("bert")
    make = {
        "lora": lambda n, r: LoraModel(model, modified_modules=["query", "value"], lora_r=r, name=n),
        "ia3": lambda n, r: IA3Model(model, modified_modules=["key", "output.dense"], name=n),
        "adapter": lambda n, r: AdapterModel(model, modified_modules=["attention.output"], bottleneck_dim=r, name=n),
    }[kind]
    for i, (n, r) in enumerate((("a", 2), ("b", 4), ("c", 3))):
        perturb(make(n, r), seed=i)
    names = ["b", None, "a", "b", "c", "a"]
    x = inputs_for("bert", batch=len(names), seed=3)
    with opendelta.mixed_batch(model, names):
        mixed = out(model, x)
        # one batched computation per module for the three deltas there, not one per delta
        groups = [g for d in dispatchers_of(model) for g in d.plan or []]
        assert groups and all(len(g.entries) == 3 for g in groups)
    for i, n in enumerate(names):
        xi = {k: v[i : i + 1] for k, v in x.items()}
        with opendelta.using(model, n):
            torch.testing.assert_close(mixed[i : i + 1], out(model, xi), rtol=0, atol=1e-5)
    with opendelta.mixed_batch(model, names[:2]), pytest.raises(UnsupportedModuleError, match="batch of 2"):
        out(model, x)


def test_mixed_batch_errors():
    model = build("bert")
    LoraModel(model, modified_modules=["query"], name="a")
    BitFitModel(model, modified_modules=["query"], name="bias")
    with pytest.raises(UnsupportedModuleError, match="'bias'"):
        with opendelta.mixed_batch(model, ["a", "bias"]):
            pass
    with pytest.raises(ModuleMatchError):
        with opendelta.mixed_batch(model, ["a", "zzz"]):
            pass
    x = inputs_for("bert", batch=2)
    with opendelta.mixed_batch(model, ["a", None]):  # deltas not named act on no example
        mixed = out(model, x)
    opendelta.activate(model, "a")
    torch.testing.assert_close(mixed[:1], out(model, {k: v[:1] for k, v in x.items()}), rtol=0, atol=1e-5)


# ----- the README example --------------------------------------------------------------------------------
def _readme_block() -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text.split("<!-- several-deltas", 1)[1], re.S).group(1)


def test_readme_several_deltas_example_runs(tmp_path, monkeypatch):
    from functools import partial

    import transformers

    from tiny import loss_of

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager"))
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", lambda name: build("bert"))
    batch = inputs_for("bert", batch=3)

    def train(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            loss_of(run(model, "bert", batch)).backward()
            opt.step()

    ns = {"train": train, "batch": batch}
    exec(compile(_readme_block(), "README.md", "exec"), ns)
    fresh, model = ns["fresh"], ns["model"]
    assert list(opendelta.deltas_of(fresh)) == ["lora", "served"]
    opendelta.activate(model, ["sst2", "mnli"])  # fresh: mnli + sst2-v2 swapped into "served"
    torch.testing.assert_close(ns["out"].logits, out(model, batch), rtol=0, atol=1e-5)


def test_fingerprint_sees_a_fused_optimizer_step():
    """torch's fused AdamW (the Trainer's default) does not bump version counters: trainable tensors are
    never served from the digest cache."""
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query", "value"])
    delta.freeze_module(exclude=["deltas", "classifier"], set_state_dict=False)
    before = delta.fingerprint().root
    params = [p for p in model.parameters() if p.requires_grad]
    model(input_ids=torch.randint(5, 99, (2, 8))).logits.sum().backward()
    torch.optim.AdamW(params, lr=0.1, fused=True).step()
    after = delta.fingerprint().root
    fpmod.clear_digest_cache()
    assert after == delta.fingerprint().root != before
