"""State changes in a model compiled before them give the compiled model's outputs = eager outputs."""

from __future__ import annotations

import pytest
import torch

import opendelta
from opendelta import AdapterModel, AutoDeltaModel, IA3Model, LoraModel
from tiny import build, inputs_for, run

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.utils import counters  # noqa: E402


def _perturb(delta, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    dynamo.reset()
    counters.clear()
    yield
    dynamo.reset()


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
def test_every_state_change_reaches_a_model_compiled_before_it(backend):
    model = build("toy")
    x = torch.randn(3, 8)
    compiled = torch.compile(model, backend=backend)

    def check(what):
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=1e-5, msg=f"stale after {what}")

    check("compile")
    lora = LoraModel(model, modified_modules=["0", "2"], lora_r=2, name="lora")  # first hook after compiling
    _perturb(lora, 1)
    check("attach")
    ia3 = IA3Model(model, modified_modules=["2"], name="ia3")
    adapter = AdapterModel(model, modified_modules=["2"], bottleneck_dim=3, name="adapter")
    _perturb(ia3, 2)
    _perturb(adapter, 3)
    check("three deltas")
    opendelta.activate(model, "ia3")
    check("activate")
    opendelta.deactivate(model)
    check("deactivate")
    opendelta.activate(model, ["lora", "adapter"])
    check("activate two")
    lora.detach()
    check("detach")
    lora.attach()
    check("attach again")
    lora.merge()
    check("merge")
    lora.unmerge()
    check("unmerge")
    graphs = counters["stats"]["unique_graphs"]
    state = lora.delta_state_dict()
    lora.load_weights({k: torch.randn_like(v) for k, v in state.items()})  # hot-swap, same shapes
    check("hot-swap")
    with torch.no_grad():
        for p in ia3.delta_parameters():
            p.mul_(1.5)  # new weights, in place
    opendelta.activate(model, ["lora", "ia3", "adapter"])
    check("new weights")
    opendelta.activate(model, ["lora", "adapter"])
    check("back to a state compiled before")
    assert counters["stats"]["unique_graphs"] == graphs + 1  # only the new combination compiled


def test_detach_then_attach_on_a_transformers_model():
    model = build("bert")
    x = inputs_for("bert")
    delta = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["query", "value"]}, model)
    _perturb(delta, 0)
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        with_delta = run(compiled, "bert", x)
        delta.detach()
        torch.testing.assert_close(run(compiled, "bert", x), run(model, "bert", x), rtol=0, atol=1e-6)
        delta.attach()
        torch.testing.assert_close(run(compiled, "bert", x), with_delta, rtol=0, atol=1e-6)


@pytest.mark.parametrize("delta_type", ["lora", "ia3", "adapter"])
def test_no_graph_breaks(delta_type):
    model = build("bert")
    x = inputs_for("bert")
    base = dynamo.explain(model)(**x).graph_break_count
    AutoDeltaModel.from_config({"delta_type": delta_type}, model)
    dynamo.reset()
    explained = dynamo.explain(model)(**x)
    assert explained.graph_break_count == base == 0, explained.break_reasons
