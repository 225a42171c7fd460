"""Reliability fixes that need more than "this input fails" (the bad-input corpus has those): exact unmerge, the
hash check after merge cycles, damaged fingerprint files on the right backbone, containers, model cards, and
property-based round trips of configs and module addressing."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from opendelta import AutoDeltaConfig, AutoDeltaModel
from opendelta.errors import DeltaConfigError, UnsupportedModuleError
from opendelta.matching import name_matches
from opendelta.publishing import hub_base_model
from tiny import build, inputs_for, run

MERGEABLE = {
    "lora": {"modified_modules": ["attention.self.query", "attention.self.value"], "lora_r": 2},
    "ia3": {
        "modified_modules": ["key", "value", r"[r]layer\.\d+\.output\.dense"],
        "feedforward_modules": ["output.dense"],
    },
}


def _perturbed(delta_type: str, dtype: torch.dtype):
    model = build("bert").to(dtype)
    delta = AutoDeltaModel.from_config({"delta_type": delta_type, **MERGEABLE[delta_type]}, backbone_model=model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p) * 0.3)
    return model, delta


# ----- exact unmerge (problem 7) ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("delta_type", sorted(MERGEABLE))
def test_unmerge_and_detach_while_merged_are_bit_exact(delta_type, dtype):
    pristine = {k: v.clone() for k, v in build("bert").to(dtype).state_dict().items()}
    model, delta = _perturbed(delta_type, dtype)
    backbone_keys = [k for k in model.state_dict() if k in pristine]
    for _ in range(3):
        delta.merge()
        assert any(not torch.equal(model.state_dict()[k], pristine[k]) for k in backbone_keys)
        delta.unmerge()
        for k in backbone_keys:
            assert torch.equal(model.state_dict()[k], pristine[k]), k
    delta.merge()
    delta.detach()  # detach while merged
    assert model.state_dict().keys() == pristine.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, pristine[k]), k


@pytest.mark.parametrize("delta_type", sorted(MERGEABLE))
def test_checkpoint_after_merge_cycles_verifies_on_the_pristine_backbone(delta_type, tmp_path):
    model, delta = _perturbed(delta_type, torch.bfloat16)
    for _ in range(3):
        delta.merge()
        delta.unmerge()
    delta.save_finetuned(tmp_path / "ck")
    loaded = AutoDeltaModel.from_finetuned(tmp_path / "ck", backbone_model=build("bert").to(torch.bfloat16))
    with torch.no_grad():
        assert torch.equal(
            run(loaded.backbone_model, "bert", inputs_for("bert")), run(model, "bert", inputs_for("bert"))
        )


def test_merged_output_still_matches_and_backup_is_off_the_state_dict():
    model, delta = _perturbed("lora", torch.float32)
    x = inputs_for("bert")
    with torch.no_grad():
        hooked = run(model, "bert", x)
        keys = set(model.state_dict())
        delta.merge()
        assert set(model.state_dict()) == keys  # the kept copy is no tensor of the model
        torch.testing.assert_close(run(model, "bert", x), hooked, rtol=0, atol=1e-5)
        layer = next(iter(delta.sites)).layers["lora"]
        assert all(copy.device.type == "cpu" for _, copy in layer._backup.saved)
        delta.unmerge()
        assert layer._backup.saved is None  # released after unmerge
        assert torch.equal(run(model, "bert", x), hooked)


# ----- damaged fingerprint.json on the right backbone (problem 9) ---------------------------------------------
@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{", b"[1]", b'{"root": 1, "tensors": {"a": "bad"}}', b"[" * 100000 + b"]" * 100000, b"", None],
    ids=["invalid-utf8", "list", "malformed", "deep", "empty", "deleted"],
)
def test_damaged_fingerprint_file_does_not_block_the_right_backbone(content, tmp_path):
    model, delta = _perturbed("lora", torch.float32)
    delta.save_finetuned(tmp_path / "ck")
    if content is None:
        (tmp_path / "ck" / "fingerprint.json").unlink()
    else:
        (tmp_path / "ck" / "fingerprint.json").write_bytes(content)
    loaded = AutoDeltaModel.from_finetuned(tmp_path / "ck", backbone_model=build("bert"))
    with torch.no_grad():
        assert torch.equal(
            run(loaded.backbone_model, "bert", inputs_for("bert")), run(model, "bert", inputs_for("bert"))
        )


def test_check_hash_false_still_loads_an_edited_checkpoint(tmp_path):
    model, delta = _perturbed("lora", torch.float32)
    delta.save_finetuned(tmp_path / "ck")
    data = json.loads((tmp_path / "ck" / "config.json").read_text())
    del data["format_version"]
    data["backbone_hash"] = None
    (tmp_path / "ck" / "config.json").write_text(json.dumps(data))
    AutoDeltaModel.from_finetuned(tmp_path / "ck", backbone_model=build("bert"), check_hash=False)


# ----- containers (problem 3) -------------------------------------------------------------------------------
@pytest.mark.parametrize("delta_type", ["adapter", "low_rank_adapter", "parallel_adapter"])
def test_after_deltas_on_a_sequential_are_refused_and_inside_it_work(delta_type):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 4))
    x = torch.randn(2, 8)
    ref = model(x)
    extra = {"reduction_factor": 2} if delta_type == "low_rank_adapter" else {"bottleneck_dim": 2}
    with pytest.raises(UnsupportedModuleError, match="container"):
        AutoDeltaModel.from_config({"delta_type": delta_type, "modified_modules": ["1"], **extra}, backbone_model=model)
    assert len(model[1]) == 2 and torch.equal(model(x), ref)
    delta = AutoDeltaModel.from_config(
        {"delta_type": delta_type, "modified_modules": ["1.0"], **extra}, backbone_model=model
    )
    assert len(model[1]) == 2  # the Sequential runs exactly its own steps
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.fill_(0.1)
    once = model(x)
    delta.detach()
    assert torch.equal(model(x), ref) and not torch.equal(once, ref)


# ----- model cards (problem 10) -----------------------------------------------------------------------------
def _card(tmp_path, **kwargs) -> str:
    model, delta = _perturbed("lora", torch.float32)
    delta.save_finetuned(tmp_path / "ck", **kwargs)
    return (tmp_path / "ck" / "README.md").read_text()


def test_card_tags_string_is_one_tag(tmp_path):
    card = _card(tmp_path, card_data={"tags": "nlp"})
    front = card.split("---")[1]
    assert "- nlp" in front and "- n\n" not in front and "python/object" not in card


def test_card_base_model_is_a_repo_id_or_left_out(tmp_path):
    local = tmp_path / "site-packages" / "minilm"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"}))
    assert hub_base_model(str(local)) == "sentence-transformers/all-MiniLM-L6-v2"
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(local)}))
    assert hub_base_model(str(local)) is None
    assert hub_base_model("google-t5/t5-small") == "google-t5/t5-small"
    assert hub_base_model("/no/such/folder") is None and hub_base_model(None) is None
    model, delta = _perturbed("lora", torch.float32)
    model.name_or_path = str(local)
    delta.save_finetuned(tmp_path / "ck")
    front = (tmp_path / "ck" / "README.md").read_text().split("---")[1]
    assert "base_model" not in front and str(local) not in front


# ----- property-based: config round trips and name matching ----------------------------------------------------
finite = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)
names = st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), min_size=1, max_size=3)
CONFIGS = {
    "lora": st.fixed_dictionaries(
        {
            "lora_r": st.integers(1, 64),
            "lora_alpha": finite,
            "lora_dropout": st.floats(0, 0.99),
            "lora_scaling": st.sampled_from(["standard", "rslora"]),
        }
    ),
    "adapter": st.fixed_dictionaries({"bottleneck_dim": st.integers(1, 512)}),
    "parallel_adapter": st.fixed_dictionaries({"bottleneck_dim": st.integers(1, 512), "scaled": finite}),
    "compacter": st.fixed_dictionaries({"phm_init_range": finite, "phm_rank": st.integers(1, 8)}),
    "soft_prompt": st.fixed_dictionaries({"soft_token_num": st.integers(1, 4096), "init_range": finite}),
    "prefix": st.fixed_dictionaries({"prefix_token_num": st.integers(1, 512), "mid_dim": st.integers(1, 2048)}),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), delta_type=st.sampled_from(sorted(CONFIGS)))
def test_config_json_round_trip(data, delta_type):
    values = data.draw(CONFIGS[delta_type])
    modules = data.draw(names)
    config = AutoDeltaConfig.from_dict({"delta_type": delta_type, "modified_modules": modules, **values})
    again = AutoDeltaConfig.from_dict(json.loads(config.to_json()))
    assert again == config and type(again) is type(config)


@settings(max_examples=60, deadline=None)
@given(
    delta_type=st.sampled_from(sorted(CONFIGS)),
    bad=st.sampled_from([math.inf, -math.inf, math.nan]),
    data=st.data(),
)
def test_non_finite_settings_are_always_refused(delta_type, bad, data):
    values = data.draw(CONFIGS[delta_type])
    floats = [k for k, v in values.items() if isinstance(v, float)]
    if not floats:
        return
    key = data.draw(st.sampled_from(floats))
    with pytest.raises(DeltaConfigError, match="finite"):
        AutoDeltaConfig.from_dict({"delta_type": delta_type, **values, key: bad})


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(st.from_regex(r"[a-z0-9_]{1,5}", fullmatch=True), min_size=1, max_size=6), data=st.data())
def test_name_matching_is_dotted_suffix_matching(parts, data):
    name = ".".join(parts)
    cut = data.draw(st.integers(0, len(parts) - 1))
    suffix = ".".join(parts[cut:])
    assert name_matches(name, suffix)
    assert name_matches(name, "[r]" + r"\.".join(map(str, parts[cut:])))
    # a partial component never matches: "attention.query" is not addressed by "uery"
    last = parts[-1]
    if len(last) > 1:
        assert not name_matches(name, last[1:])
    assert not name_matches(name, name + ".x")


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=0, max_size=50))
def test_any_text_as_a_checkpoint_id_is_a_typed_error_or_a_load(text, tmp_path_factory):
    from opendelta.errors import OpenDeltaError

    cwd = tmp_path_factory.mktemp("cwd")
    model = build("bert")
    try:
        import os

        old = os.getcwd()
        os.chdir(cwd)
        try:
            AutoDeltaModel.from_finetuned(text, backbone_model=model)
        finally:
            os.chdir(old)
    except OpenDeltaError:
        pass
    shutil.rmtree(cwd, ignore_errors=True)
