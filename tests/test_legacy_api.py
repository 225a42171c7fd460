"""OpenDelta 0.3 scripts on this version: 0.3 spellings work or raise naming the replacement, and none of 0.3's
meanings silently changed (parallel_adapter pairs, unfrozen_modules, modified_modules=[], 0.3 common names in
0.3 checkpoints). Ported from 0.3's documented usage (quickstart, save / load, unified names), on tiny models."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opendelta import (
    AdapterModel,
    AutoDeltaConfig,
    AutoDeltaModel,
    LegacyAPIError,
    LoraConfig,
    LoraModel,
    ParallelAdapterModel,
    SoftPromptModel,
    Visualization,
)
from opendelta.errors import CheckpointError, DeltaConfigError
from opendelta.utils.inspect import inspect_module_statistics, inspect_optimizer_statistics
from tiny import build, inputs_for, run

CORPUS = Path(__file__).parent / "fixtures" / "legacy03" / "ckpt"


# ----- silent meaning changes ------------------------------------------------------------------------------
def test_parallel_adapter_0_3_pair_syntax_builds_pairs():
    model = build("t5")
    delta = ParallelAdapterModel(model, modified_modules=["attn@", "attn@", "ff@.w1@", "ff@.w2@"], bottleneck_dim=4)
    # one adapter around each self-attention and one from wi's input to wo's output per block (4 blocks): 8, not 12
    assert len(delta.sites) == 8
    wi = [s for s in delta.sites if s.name.endswith("DenseReluDense.wi")]
    assert len(wi) == 4
    with torch.no_grad():
        for p in delta.parameters():
            p.add_(0.3)
    seen = {}
    name = wi[0].name
    module = model.get_submodule(name)
    out_module = model.get_submodule(name.rsplit(".", 1)[0] + ".wo")
    h1 = module.register_forward_hook(lambda m, a, o: seen.__setitem__("wi", o.clone()))
    h2 = out_module.register_forward_hook(lambda m, a, o: seen.__setitem__("wo", o.clone()))
    run(model, "t5", inputs_for("t5"))
    h1.remove(), h2.remove()
    # the update is added to wo's output, never to wi's
    x = {}
    h = module.register_forward_pre_hook(lambda m, a: x.__setitem__("in", a[0]))
    run(model, "t5", inputs_for("t5"))
    h.remove()
    assert torch.allclose(seen["wi"], torch.nn.functional.linear(x["in"], module.weight))
    assert delta.config.paired is None and delta._is_paired()


def test_parallel_adapter_plain_entries_stay_independent():
    delta = ParallelAdapterModel(build("t5"), modified_modules=["DenseReluDense.wi"], bottleneck_dim=4)
    assert not delta._is_paired() and len(delta.sites) == 4


def test_freeze_module_honours_config_unfrozen_modules():
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query"], unfrozen_modules=["deltas", "classifier"])
    delta.freeze_module()
    assert model.classifier.weight.requires_grad and model.classifier.bias.requires_grad
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    assert all(p.requires_grad for p in delta.parameters())


def test_empty_modified_modules_modifies_nothing(caplog):
    model = build("bert")
    before = run(model, "bert", inputs_for("bert"))
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        delta = AdapterModel(model, modified_modules=[])
    assert delta.sites == [] and "modifies no module" in caplog.text
    torch.testing.assert_close(run(model, "bert", inputs_for("bert")), before)


def test_0_3_common_names_in_a_0_3_checkpoint_keep_their_0_3_meaning(tmp_path):
    # 0.3's "attn@" on T5 is the whole `layer.0` sub-layer (this version's "attn" is SelfAttention)
    model = build("t5")
    delta = AutoDeltaModel.from_finetuned(CORPUS / "adapter-t5-common", model, check_hash=False)
    assert delta.modified_module_names[0] == "encoder.block.0.layer.0"
    assert all(n.endswith(("layer.0", "layer.1", "layer.2")) for n in delta.modified_module_names)


def test_0_3_whole_model_bin_loads_the_delta_and_says_so_once(caplog):
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        AutoDeltaModel.from_finetuned(CORPUS / "lora-bert-full_state_dict", build("bert"), check_hash=False)
    assert sum("whole model" in r.getMessage() for r in caplog.records) == 1


def test_0_3_trained_classifier_becomes_an_unfrozen_module():
    model = build("bert")
    delta = AutoDeltaModel.from_finetuned(CORPUS / "lora-bert-classifier", model, check_hash=False)
    assert "bert.classifier" not in delta.config.unfrozen_modules and "classifier" in delta.config.unfrozen_modules
    assert not model.training  # from_finetuned leaves the backbone in eval mode, as 0.3 did


# ----- 0.3 scripts ------------------------------------------------------------------------------------------
def test_from_dict_of_script_arguments(caplog):
    """0.3 scripts pass `vars(args)`: keys that are not settings are dropped with one warning naming them all."""
    args = argparse.Namespace(delta_type="lora", lora_r=4, learning_rate=1e-3, output_dir="out")
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        config = AutoDeltaConfig.from_dict(vars(args))
    assert config.lora_r == 4 and not hasattr(config, "learning_rate")
    (warned,) = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert "learning_rate" in warned and "output_dir" in warned
    config, unused = AutoDeltaConfig.from_dict(vars(args), return_unused_kwargs=True)
    assert config.lora_r == 4 and unused == {"learning_rate": 1e-3, "output_dir": "out"}
    with pytest.raises(DeltaConfigError, match="learning_rate.*strict=True"):
        AutoDeltaConfig.from_dict(vars(args), strict=True)


@pytest.mark.parametrize(
    "delta_type, typo, meant",
    [("lora", "lora_rank", "lora_r"), ("adapter", "bottleneck_dims", "bottleneck_dim"),
     ("bitfit", "modified_module", "modified_modules"), ("prefix", "prefix_token_nums", "prefix_token_num")],
)  # fmt: skip
def test_near_miss_of_a_setting_stays_an_error(delta_type, typo, meant):
    """Dropping a typo of a real setting would silently build another delta: it is an error naming the key."""
    with pytest.raises(DeltaConfigError, match=f"`{typo}` \\(did you mean `{meant}`\\?\\)"):
        AutoDeltaConfig.from_dict({"delta_type": delta_type, typo: 4, "learning_rate": 0.1})


def test_quickstart_log_save_and_load(tmp_path, capsys):
    model = build("t5")
    delta = LoraModel(backbone_model=model, modified_modules=["SelfAttention.q"], interactive_modify=False,
                      backend="hf", unfrozen_modules=None, lora_r=4)  # fmt: skip
    delta.freeze_module(exclude=["deltas", "layernorm_embedding"])  # a name from another family: warned
    stats = delta.log(delta_ratio=True, trainable_ratio=True, visualization=True, cuda_memory=True)
    printed = capsys.readouterr().out
    assert "trainable parameters" in printed and "lora" in printed and delta.stat["trainable"] == stats.trainable
    delta.log(module=model.encoder, visualization=False)
    folder = delta.save_finetuned(finetuned_delta_path=tmp_path / "d", save_config=True, push_to_dc=False)
    with pytest.raises(LegacyAPIError, match=r"DeltaCenter.*push_to_hub=True, repo_id="):
        delta.save_finetuned(tmp_path / "e", push_to_dc=True)
    assert not (tmp_path / "e").exists()  # refused before anything was written
    with pytest.raises(TypeError, match="use `token=...`"):
        delta.save_finetuned(tmp_path / "e", use_auth_token="x")
    with pytest.raises(TypeError, match="load_delta_state_dict"):
        AutoDeltaModel.from_finetuned(folder, build("t5"), state_dict={})
    with pytest.raises(DeltaConfigError, match="backend"):
        LoraModel(build("t5"), modified_modules=["q"], backend="bmt")
    loaded = AutoDeltaModel.from_finetuned(folder, build("t5"))
    assert loaded.delta_state_dict().keys() == delta.delta_state_dict().keys()


def test_delta_object_is_module_like():
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query", "value"], lora_r=4)
    names = [n for n, _ in delta.named_parameters()]
    assert names and all(".lora." in n for n in names)
    assert sum(p.numel() for p in delta.parameters()) == delta.num_delta_parameters()
    assert {p.data_ptr() for p in delta.state_dict().values()} <= {
        p.data_ptr() for p in delta.delta_state_dict().values()
    }
    assert delta.to(torch.float64) is delta and all(p.dtype == torch.float64 for p in delta.parameters())
    assert delta.modified_modules == delta.modified_module_names and delta.unfrozen_modules == ["deltas"]
    assert delta.default_modified_modules == ["attn.q", "attn.v"]
    delta.freeze_module()
    assert set(delta.trainable_parameters_names()) == set(names)
    assert set(delta.frozen_parameters_names()).isdisjoint(names)


def test_soft_prompt_root_spelling():
    delta = SoftPromptModel(build("bert"), modified_modules=["root"], soft_token_num=3)
    assert delta.modified_module_names == ["bert.embeddings.word_embeddings"]


def test_utils_inspect_helpers():
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query"], lora_r=4)
    delta.freeze_module()
    stats = inspect_module_statistics(model, verbose=False)
    assert stats["trainable_parameters"] == delta.num_delta_parameters() and stats["cudamem"] >= 0
    opt = torch.optim.AdamW(delta.parameters(), lr=1e-3)
    assert inspect_optimizer_statistics(opt, verbose=False)["parameters"] == delta.num_delta_parameters()


def test_partial_detach_and_old_graph_options_name_their_replacement():
    model = build("bert")
    delta = LoraModel(model, modified_modules=["query"])
    for call in (lambda: delta.detach(module=model.bert), lambda: delta.attach(module=model.bert)):
        with pytest.raises(TypeError, match=r"is gone: .*opendelta.deactivate\(model, name\)"):
            call()
    assert delta.attached  # nothing changed
    viz = Visualization(model)
    for kwargs in ({"mapping": {}}, {"only_common": True}):
        with pytest.raises(TypeError, match=r"structure_graph\(common_structure=True\)"):
            viz.structure_graph(printTree=False, **kwargs)


# ----- 0.3's import paths and helpers ----------------------------------------------------------------------
def test_0_3_import_paths_build_the_same_classes():
    from opendelta.auto_delta import DELTA_MODEL_MAPPING
    from opendelta.auto_delta import AutoDeltaConfig as A
    from opendelta.auto_delta import AutoDeltaModel as M
    from opendelta.basemodel import DeltaBase as B
    from opendelta.delta_configs import BaseDeltaConfig
    from opendelta.delta_models.lora import LoraConfig as LC
    from opendelta.delta_models.lora import LoraModel as LM

    assert (A, M, LC, LM) == (AutoDeltaConfig, AutoDeltaModel, LoraConfig, LoraModel)
    assert issubclass(LM, B) and issubclass(LC, BaseDeltaConfig) and DELTA_MODEL_MAPPING["lora"] is LoraModel
    model = build("bert")
    delta = LM(model, 4, 8, 0.0, ["query"])  # 0.3's positional order: lora_r, lora_alpha, lora_dropout, modules
    assert (delta.config.lora_r, delta.config.lora_alpha, delta.config.modified_modules) == (4, 8, ["query"])


def test_replaced_names_import_and_raise_naming_the_replacement():
    from opendelta import LegacyAPIError
    from opendelta.utils.structure_mapping import CommonStructureMap

    with pytest.raises(LegacyAPIError, match="modified_modules"):
        CommonStructureMap(build("bert"))


def test_delta_counts_and_trainable_parameters_mean_the_delta_itself():
    model = build("bert")
    delta = LoraModel(model, lora_r=4, modified_modules=["query"])
    own = list(delta.delta_parameters())
    assert delta.trainable_parameters() == own and delta.num_trainable_parameters() == sum(p.numel() for p in own)
    assert delta.num_total_parameters(model) == sum(p.numel() for p in model.parameters())
    parent, child, module = delta.find_module(model, "bert.encoder.layer.0.attention.self.query")
    assert getattr(parent, child) is module and child == "query"
    assert delta.find_key("bert.encoder.layer.0.attention.self.query", ["query"])
    delta.mark_as_delta()
    assert all(p._is_delta for p in own)


def test_config_json_helpers(tmp_path):
    config = LoraConfig(4, 8)
    config.update({"lora_dropout": 0.1})
    assert config.lora_dropout == 0.1
    with pytest.raises(DeltaConfigError):
        config.update({"lora_r": -1})
    assert config.lora_r == 4  # a bad update changes nothing
    config.save_finetuned(tmp_path)
    assert AutoDeltaConfig.from_finetuned(tmp_path).to_dict() == config.to_dict()


def test_set_axis_order_keeps_the_hidden_axis_last():
    import opendelta

    opendelta.set_axis_order([1, 0, 2])  # sequence-first: an adapter computes the same per position
    assert opendelta.global_setting.axis_order == [1, 0, 2]
    with pytest.raises(opendelta.LegacyAPIError, match="hidden"):
        opendelta.set_axis_order([0, 2, 1])
    opendelta.set_axis_order([0, 1, 2])


def test_0_3_logging_helpers():
    from opendelta.utils.logging import get_logger, get_verbosity, set_verbosity_error, set_verbosity_warning

    set_verbosity_error()
    assert get_verbosity() == logging.ERROR
    set_verbosity_warning()
    assert get_logger("opendelta.x").name == "opendelta.x"


def test_0_3_delta_center_keywords_go_into_the_model_card(tmp_path, monkeypatch):
    model = build("bert")
    delta = LoraModel(model, lora_r=4, modified_modules=["query"])
    folder = delta.save_finetuned(
        tmp_path / "d", push_to_dc=False, list_tags=["NLI"], dict_tags={"dataset": "mnli"},
        center_args={"name": "lora-bert-mnli"}, usage="load it with from_finetuned", test_result={"acc": 0.81},
        delay_push=True, save_function=torch.save,
    )  # fmt: skip
    card = (folder / "README.md").read_text()
    for text in ("NLI", "dataset:mnli", "lora-bert-mnli", "load it with from_finetuned", "0.81"):
        assert text in card, text
    monkeypatch.chdir(tmp_path)
    delta.save_finetuned()  # 0.3's default folder
    assert (tmp_path / "delta_checkpoints" / "delta_model.safetensors").is_file()


def test_a_folder_with_differing_bin_and_safetensors_is_refused(tmp_path):
    delta = LoraModel(backbone_model=build("t5"), modified_modules=["SelfAttention.q"], lora_r=4)
    folder = delta.save_finetuned(tmp_path / "d")
    state = load_file(str(folder / "delta_model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")  # the same tensors: fine
    AutoDeltaModel.from_finetuned(folder, build("t5"))
    stale = {k: v + 1 for k, v in state.items()}
    torch.save(stale, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"both delta_model\.safetensors and pytorch_model\.bin.*differ"):
        AutoDeltaModel.from_finetuned(folder, build("t5"))


@pytest.mark.parametrize("delta_type", ["adapter", "parallel_adapter"])
def test_a_bottleneck_wider_than_the_module_is_built_with_a_warning(delta_type, caplog):
    model = build("t5")  # d_model 32
    with caplog.at_level(logging.WARNING, logger="opendelta"):
        delta = AutoDeltaModel.from_config(
            {"delta_type": delta_type, "modified_modules": ["SelfAttention.o"], "bottleneck_dim": 48}, model
        )
    layer = next(layer for _, layer in delta.delta_modules())
    assert layer.down_proj.out_features == 48
    assert sum("larger than" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(DeltaConfigError, match="lora_r"):  # a rank above the features is still an error
        LoraModel(build("t5"), modified_modules=["q"], lora_r=64)


LAYOUTS = json.loads((Path(__file__).parent / "fixtures" / "legacy03" / "layouts.json").read_text())


@pytest.mark.parametrize("delta_type", sorted(LAYOUTS))
def test_delta_state_dict_has_0_3_layout_and_loads_back(delta_type, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "real_usages"))
    import _tiny

    config = dict(LAYOUTS[delta_type]["config"])
    if delta_type == "parallel_adapter":
        config["paired"] = True  # 0.3 always read pairs (here: `@` entries, repeats, or paired=True)
    delta = AutoDeltaModel.from_config(AutoDeltaConfig.from_dict(config), backbone_model=_tiny.tiny_t5())
    state = delta.state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == dict(LAYOUTS[delta_type]["state_dict"])
    changed = {k: v + 1 for k, v in state.items()}
    result = delta.load_state_dict(changed)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(delta.state_dict()[k], v) for k, v in changed.items())
    with pytest.raises(CheckpointError, match="Nothing was loaded"):
        delta.load_state_dict({**state, "delta_modules.999.x": torch.zeros(1)})
    assert all(torch.equal(delta.state_dict()[k], v) for k, v in changed.items())
