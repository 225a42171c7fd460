"""Common structure: default targets per delta type on every mapped family, common names, wrappers, errors."""

from __future__ import annotations

import functools
import logging
import re

import pytest
import torch
from torch import nn

from opendelta import AutoDeltaConfig, AutoDeltaModel, Visualization, registered_delta_types
from opendelta.errors import ModuleMatchError, UnsupportedModuleError
from opendelta.registry import get_delta_class
from opendelta.structures import ALL_LINEAR, common_names, default_settings, find_targets
from opendelta.structures import FAMILIES as MAPS
from shared_tester import perturb
from tiny import MAPPED as FAMILIES
from tiny import RAW, SEQ2SEQ, build, inputs_for, run

# Where one block's modules live (raw names, written from each tiny model's named_modules()).
BLOCK = {
    "t5": r"(encoder|decoder)\.block\.\d+\.layer\.\d+",
    "bart": r"model\.(encoder|decoder)\.layers\.\d+",
    "opt": r"model\.decoder\.layers\.\d+",
    "bert": r"bert\.encoder\.layer\.\d+",
    "roberta": r"roberta\.encoder\.layer\.\d+",
    "electra": r"electra\.encoder\.layer\.\d+",
    "deberta-v2": r"deberta\.encoder\.layer\.\d+",
    "distilbert": r"distilbert\.transformer\.layer\.\d+",
    "gpt2": r"transformer\.h\.\d+",
    "llama": r"model\.layers\.\d+",
    "vit": r"vit\.layers\.\d+",
}
BLOCK |= {
    "t5-v1_1": BLOCK["t5"],
    "mt5": BLOCK["t5"],
    "mbart": BLOCK["bart"],
    "xlm-roberta": BLOCK["roberta"],
    "mistral": BLOCK["llama"],
    "qwen2": BLOCK["llama"],
    "gemma": BLOCK["llama"],
}
STACKS = {f: 2 if f in SEQ2SEQ else 1 for f in FAMILIES}
ATTN = {
    "t5": "SelfAttention",
    "bart": "self_attn",
    "opt": "self_attn",
    "llama": "self_attn",
    "gpt2": "attn",
    "bert": "attention.self",
    "electra": "attention.self",
    "roberta": "attention.self",
}
ATTN |= {
    "t5-v1_1": "SelfAttention",
    "mt5": "SelfAttention",
    "mbart": "self_attn",
    "xlm-roberta": "attention.self",
    "mistral": "self_attn",
    "qwen2": "self_attn",
    "gemma": "self_attn",
}
EMBED = {
    "t5": "encoder.embed_tokens",
    "bart": "model.encoder.embed_tokens",
    "opt": "model.decoder.embed_tokens",
    "bert": "bert.embeddings.word_embeddings",
    "electra": "electra.embeddings.word_embeddings",
    "roberta": "roberta.embeddings.word_embeddings",
    "deberta-v2": "deberta.embeddings.word_embeddings",
    "distilbert": "distilbert.embeddings.word_embeddings",
    "gpt2": "transformer.wte",
    "llama": "model.embed_tokens",
    "vit": "vit.embeddings.patch_embeddings",
}
EMBED |= {
    "t5-v1_1": EMBED["t5"],
    "mt5": EMBED["t5"],
    "mbart": EMBED["bart"],
    "xlm-roberta": EMBED["roberta"],
    "mistral": EMBED["llama"],
    "qwen2": EMBED["llama"],
    "gemma": EMBED["llama"],
}

# delta type -> the block roles (keys of tiny.RAW) its defaults modify; GPT-2 fuses q, k, v into qkv
ROLES = {
    "lora": ("q", "v"),
    "ia3": ("k", "v", "w2"),
    "adapter": ("proj", "w2"),
    "low_rank_adapter": ("proj", "w2"),
    "compacter": ("proj", "w2"),
    "parallel_adapter": ("ff",),
}
GPT2_ROLES = {"lora": ("qkv",), "ia3": ("qkv", "w2")}
FINAL_NORM = {
    "t5": ("encoder.final_layer_norm", "decoder.final_layer_norm"),
    "mbart": ("model.encoder.layer_norm", "model.decoder.layer_norm"),
    "opt": ("model.decoder.final_layer_norm",),
    "gpt2": ("transformer.ln_f",),
    "llama": ("model.norm",),
    "vit": ("vit.layernorm",),
}
FINAL_NORM |= {
    "t5-v1_1": FINAL_NORM["t5"],
    "mt5": FINAL_NORM["t5"],
    "mistral": FINAL_NORM["llama"],
    "qwen2": FINAL_NORM["llama"],
    "gemma": FINAL_NORM["llama"],
}
# parallel_adapter on families without one feed-forward module: the module whose input it reads
PARALLEL_INPUT = {f: "intermediate" for f in ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2")}
PARALLEL_INPUT |= {f: "fc1" for f in ("bart", "mbart", "opt")}
# parallel_adapter on the families OpenDelta 0.3 knew: 0.3's default pairs, whose input sides are the attention
# sub-layer and the first feed-forward projection of every block
LEGACY_PARALLEL = {
    "t5": ("", r"DenseReluDense\.wi"),  # BLOCK ends at the sub-layer: layer.0 (attention), layer.1 / 2 (FFN)
    "bert": ("attention", r"intermediate\.dense"),
    "roberta": ("attention", r"intermediate\.dense"),
    "deberta-v2": ("attention", r"intermediate\.dense"),
    "gpt2": ("attn", r"mlp\.c_fc"),
    "opt": ("self_attn", "fc1"),
}
# settings that fit hidden size 32 (the modules stay the defaults)
TINY = {
    "compacter": {"reduction_factor": 4},
    "prefix": {"embed_dim": 16, "mid_dim": 16},
    "soft_prompt": {"soft_token_num": 4},
}
# (delta type, family) pairs whose modules cannot take the delta: a clear UnsupportedModuleError is expected
UNSUPPORTED = {("prefix", "distilbert"), ("prefix", "deberta-v2"), ("prefix", "vit"), ("soft_prompt", "vit")}


def block_modules(model: nn.Module, family: str, suffix: str) -> list[str]:
    rx = re.compile(BLOCK[family] + r"\." + re.escape(suffix))
    return [n for n, _ in model.named_modules() if rx.fullmatch(n)]


def expected_targets(model: nn.Module, family: str, delta_type: str) -> list[str] | None:
    """The raw names a delta type's defaults must modify, from the hand-written tables above (None: unknown)."""
    if delta_type == "prefix":
        return block_modules(model, family, ATTN[family])
    if delta_type == "soft_prompt":
        return [EMBED[family]]
    if delta_type == "bitfit":  # every Linear / Conv1D / norm layer in the blocks, and the final norms
        return [
            n
            for n, m in model.named_modules()
            if re.match(BLOCK[family] + r"\.", n) and _biasable(m) or n in FINAL_NORM.get(family, ())
        ]
    roles = GPT2_ROLES.get(delta_type) if family == "gpt2" else None
    roles = roles or ROLES.get(delta_type)
    if roles is None:
        return None
    if delta_type == "parallel_adapter" and family in LEGACY_PARALLEL:
        attn, w1 = LEGACY_PARALLEL[family]
        attn = (BLOCK[family] + r"\." + attn) if attn else BLOCK[family].removesuffix(r"\d+") + "0"
        rx = re.compile(f"{attn}|{BLOCK[family]}\\.{w1}")
        return [n for n, _ in model.named_modules() if rx.fullmatch(n)]
    if delta_type == "parallel_adapter" and "ff" not in RAW[family]:
        return block_modules(model, family, PARALLEL_INPUT[family])  # the input side; added at w2's output
    names = {n for role in roles for n in block_modules(model, family, RAW[family][role])}
    return [n for n, _ in model.named_modules() if n in names]


def _biasable(module: nn.Module) -> bool:
    kind = type(module).__name__
    return isinstance(module, nn.Linear) or kind == "Conv1D" or "Norm" in kind


@functools.cache
def _reference_output(family: str) -> torch.Tensor:
    """The output of the untouched tiny model (every `build(family)` is a copy of the same weights)."""
    with torch.no_grad():
        return run(build(family), family, inputs_for(family))


def _targets(delta) -> list[str]:
    return [n for n in delta.modified_module_names if n]  # "" is a model-level site (e.g. a shared trunk)


@pytest.mark.parametrize("delta_type", registered_delta_types())
@pytest.mark.parametrize("family", FAMILIES)
def test_default_modules_per_family_and_type(family, delta_type):
    model = build(family)
    x = inputs_for(family)
    ref = _reference_output(family)
    if not get_delta_class(delta_type).default_modules:
        with pytest.raises(ModuleMatchError, match="has no default modules"):
            AutoDeltaModel.from_config(AutoDeltaConfig.from_dict({"delta_type": delta_type}), backbone_model=model)
        return
    cfg = AutoDeltaConfig.from_dict({"delta_type": delta_type, **TINY.get(delta_type, {})})
    if (delta_type, family) in UNSUPPORTED:
        with pytest.raises(UnsupportedModuleError):
            AutoDeltaModel.from_config(cfg, backbone_model=model)
        return
    expected = expected_targets(model, family, delta_type)
    assert expected is not None, f"add the expected targets of {delta_type!r} to this test"
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model)
    assert expected and _targets(delta) == expected
    roles = (GPT2_ROLES.get(delta_type) if family == "gpt2" else None) or ROLES.get(delta_type)
    if roles and not (delta_type == "parallel_adapter" and family in LEGACY_PARALLEL):  # (those: 2 per layer)
        # one module per role in each of the 2 layers of each stack
        assert len(_targets(delta)) == 2 * STACKS[family] * len(roles)
    assert delta.config.common_structure is not None and delta.config.modified_modules
    perturb(delta)
    out = run(model, family, x)
    (out.float() ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in delta.delta_parameters())
    if delta_type == "soft_prompt" and out.shape != ref.shape:  # "keep": the prompt's positions come first
        assert out.shape[1] == ref.shape[1] + cfg.soft_token_num
        out = out[:, cfg.soft_token_num :]
    assert (out.detach() - ref).abs().max() > 1e-6, "a non-zero delta did not change the output"
    if delta_type == "ia3":  # the feed-forward down projection scales its input, k / v their output
        w2 = set(block_modules(model, family, RAW[family]["w2"]))
        assert all(layer.on_input == (site.name in w2) for site in delta.sites for layer in site.layers.values())


COMMON_ROLES = ["q", "k", "v", "qkv", "proj", "w1", "w2", "w3", "ff"]


@pytest.mark.parametrize("family", FAMILIES)
def test_common_names_address_the_same_modules_as_raw_names(family):
    model = build(family)
    for role in COMMON_ROLES:
        if role not in RAW[family]:
            continue
        common = role if role == "ff" else f"ff.{role}" if role.startswith("w") else f"attn.{role}"
        raw = "[r]" + BLOCK[family] + r"\." + re.escape(RAW[family][role])
        by_common = [n for n, _ in find_targets(model, [common], common_structure=True)]
        by_raw = [n for n, _ in find_targets(model, [raw], common_structure=False)]
        assert by_common == by_raw and len(by_raw) == 2 * STACKS[family], (role, by_common, by_raw)


@pytest.mark.parametrize("family", ["t5", "bert", "gpt2", "llama"])
def test_attach_with_common_names_equals_raw_names(family):
    common = {"gpt2": ["attn.qkv", "ff.w2"]}.get(family, ["attn.q", "attn.v", "ff.w2"])
    roles = {"gpt2": ("qkv", "w2")}.get(family, ("q", "v", "w2"))
    raw = ["[r]" + BLOCK[family] + r"\." + re.escape(RAW[family][r]) for r in roles]
    a = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": common}, backbone_model=build(family))
    b = AutoDeltaModel.from_config(
        {"delta_type": "lora", "modified_modules": raw, "common_structure": False}, backbone_model=build(family)
    )
    assert a.modified_module_names == b.modified_module_names
    assert len(a.sites) == 2 * STACKS[family] * len(roles)


def test_every_map_entry_exists_on_some_tiny_model():
    """Catches typos in the maps: each raw name of each family map is found on one of its tiny models."""
    seen: dict[str, set[str]] = {}
    for family in FAMILIES:
        for common in common_names(build(family)).values():
            local = re.sub(r"^(encoder|decoder)\.block\.\d+\.?", "", common)
            seen.setdefault(family, set()).add(local or "block")
    resolved = set().union(*seen.values())
    for fam in MAPS:
        for _, block in fam.stacks.values():
            missing = set(block) - resolved
            assert not missing, f"{fam.name}: {missing} never resolved"


def test_maps_are_one_to_one():
    for family in FAMILIES:
        names = common_names(build(family))
        assert len(set(names.values())) == len(names), family


def test_common_tree_names():
    names = common_names(build("t5"))
    assert names["encoder.block.1.layer.1.DenseReluDense.wo"] == "encoder.block.1.ff.w2"
    assert names["decoder.block.0.layer.1.EncDecAttention.k"] == "decoder.block.0.crossattn.k"
    assert names["decoder.block.0.layer.2.layer_norm"] == "decoder.block.0.ff.layer_norm"
    assert names["encoder.final_layer_norm"] == "encoder.layer_norm" and names["lm_head"] == "lm_head"
    names = common_names(build("roberta"))
    assert names["lm_head.decoder"] == "lm_head" and names["roberta.embeddings.word_embeddings"] == "embeddings"
    assert "lm_head" not in common_names(build("bert")).values()  # a classifier is not an LM head


def test_exclude_and_regex_in_common_names():
    model = build("t5")
    got = [n for n, _ in find_targets(model, ["[r]block\\.[01]\\.attn\\.[qv]"], ["[r]decoder\\..*"], True)]
    assert got == [
        "encoder.block.0.layer.0.SelfAttention.q",
        "encoder.block.0.layer.0.SelfAttention.v",
        "encoder.block.1.layer.0.SelfAttention.q",
        "encoder.block.1.layer.0.SelfAttention.v",
    ]
    with pytest.raises(ModuleMatchError, match="removed by exclude_modules"):
        find_targets(model, ["attn.q"], ["attn.q"], True)


def test_auto_detection_is_logged(caplog):
    model = build("bert")
    with caplog.at_level(logging.INFO, logger="opendelta"):
        delta = AutoDeltaModel.from_config(
            {"delta_type": "lora", "modified_modules": ["attn.q", "query"]}, backbone_model=model
        )
    assert "'attn.q' matches no raw module name; read as a common-structure name" in caplog.text
    assert "'query' matches raw module names; read as a raw name" in caplog.text
    assert len(delta.sites) == 2  # "attn.q" and the raw "query" are the same two modules


def test_raw_interpretation_wins_when_a_raw_module_has_the_suffix():
    model = build("t5")  # raw "layer_norm" exists in T5, so only the sub-layer norms are meant
    raw = find_targets(model, ["layer_norm"])
    common = find_targets(model, ["layer_norm"], common_structure=True)
    assert len(raw) == 10 and len(common) == 12  # + encoder / decoder final_layer_norm


def test_unknown_common_name_lists_common_candidates():
    with pytest.raises(ModuleMatchError, match=r"closest to 'attn\.qq'.*attn\.q"):
        find_targets(build("llama"), ["attn.qq"], common_structure=True)


@pytest.mark.parametrize("entry", ["attn.q", "attn.v", "[r]attn\\.(q|k)"])
def test_fused_qkv_is_a_clear_error(entry):
    model = build("gpt2")
    for common_structure in (True, None):
        with pytest.raises(ModuleMatchError, match=r"fused.*attn\.qkv.*c_attn"):
            AutoDeltaModel.from_config(
                {"delta_type": "lora", "modified_modules": [entry], "common_structure": common_structure},
                backbone_model=model,
            )
    assert not any(".lora" in n for n, _ in model.named_modules())
    d = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": ["attn.qkv"]}, backbone_model=model)
    assert d.modified_module_names == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]


class _Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.body = inner
        self.extra = nn.Linear(4, 4)

    def forward(self, **kwargs):
        return self.body(**kwargs)


@pytest.mark.parametrize("family", ["bert", "llama", "t5"])
def test_backbone_wrapped_two_levels_deep(family):
    plain = build(family)
    model = _Wrapper(_Wrapper(build(family)))
    prefix = "body.body."
    names = common_names(model)
    assert {k.removeprefix(prefix): v for k, v in names.items()} == common_names(plain)
    delta = AutoDeltaModel.from_config({"delta_type": "lora"}, backbone_model=model)
    ref = AutoDeltaModel.from_config({"delta_type": "lora"}, backbone_model=plain)
    assert delta.modified_module_names == [prefix + n for n in ref.modified_module_names]
    perturb(delta)
    out = model(**inputs_for(family)).logits
    (out**2).mean().backward()
    assert all(p.grad is not None for p in delta.delta_parameters())
    assert [n for n, _ in find_targets(model, ["attn.q"], common_structure=True)] == [
        prefix + n for n, _ in find_targets(plain, ["attn.q"], common_structure=True)
    ]


class TinyEncoder(nn.Module):
    """A transformer-like model of no known family (no transformers involved)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {"mix": nn.Linear(16, 16), "norm": nn.LayerNorm(16), "up": nn.Linear(16, 32), "down": nn.Linear(32, 16)}
            )
            for _ in range(2)
        )
        self.out = nn.Linear(16, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for layer in self.layers:
            h = layer["norm"](h + layer["mix"](h))
            h = h + layer["down"](torch.relu(layer["up"](h)))
        return self.out(h.mean(1))


def test_unmapped_model_clear_error_then_all_linear_and_raw_names():
    torch.manual_seed(0)
    model = TinyEncoder()
    ids = torch.randint(0, 20, (2, 6))
    ref = model(ids).detach()
    with pytest.raises(ModuleMatchError, match=r"No default modules are known for TinyEncoder.*'all-linear'") as e:
        AutoDeltaModel.from_config({"delta_type": "lora"}, backbone_model=model)
    suggested = str(e.value).split("some of:", 1)[1]  # the message suggests the model's own module names
    assert all(name in suggested for name in ("mix", "up", "down"))
    assert not any(m._forward_hooks for m in model.modules())
    delta = AutoDeltaModel.from_config({"delta_type": "lora", "modified_modules": [ALL_LINEAR]}, backbone_model=model)
    assert delta.modified_module_names == [f"layers.{i}.{n}" for i in range(2) for n in ("mix", "up", "down")]
    perturb(delta)
    assert (model(ids) - ref).abs().max() > 1e-4
    delta.detach()
    raw = AutoDeltaModel.from_config(
        {
            "delta_type": "lora",
            "modified_modules": ["[r]layers\\.\\d\\.(up|down)", "mix"],
            "exclude_modules": ["layers.1.mix"],
        },
        backbone_model=model,
    )
    assert raw.modified_module_names == ["layers.0.mix", "layers.0.up", "layers.0.down", "layers.1.up", "layers.1.down"]
    with pytest.raises(ModuleMatchError, match="no known common structure"):
        find_targets(model, ["attn.q"], common_structure=True)
    raw.detach()
    for delta_type in ("ia3", "bitfit"):  # the other types that make sense on every linear layer
        d = AutoDeltaModel.from_config(
            {"delta_type": delta_type, "modified_modules": [ALL_LINEAR]}, backbone_model=model
        )
        assert len(d.sites) == 6
        perturb(d)
        assert (model(ids) - ref).abs().max() > 1e-4
        d.detach()


def test_all_linear_on_mapped_families_leaves_out_the_head():
    for family, head in [
        ("gpt2", "lm_head"),
        ("bert", "classifier"),
        ("llama", "lm_head"),
        ("xlm-roberta", "classifier.out_proj"),
    ]:
        model = build(family)
        got = [n for n, _ in find_targets(model, [ALL_LINEAR])]
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]
        assert head in linear and head not in got and got, family
    toy = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in find_targets(toy, [ALL_LINEAR])] == ["0"]


def test_plain_module_raw_names_and_regex():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4)))
    x = torch.randn(3, 8)
    ref = model(x).detach()
    delta = AutoDeltaModel.from_config(
        {"delta_type": "lora", "modified_modules": ["0", "[r]2\\.[01]"]}, backbone_model=model
    )
    assert delta.modified_module_names == ["0", "2.0", "2.1"]
    perturb(delta)
    out = model(x)
    out.sum().backward()
    assert (out - ref).abs().max() > 1e-4 and all(p.grad is not None for p in delta.delta_parameters())
    assert common_names(model) == {}


def test_legacy_at_spelling_from_an_old_config():
    old = {
        "delta_type": "lora",
        "modified_modules": ["attn@.q@", "attn@.v@"],
        "common_structure": True,
        "lora_r": 4,
        "opendelta_version": "0.3.2",
        "transformers_version": "4.27.0",
    }
    cfg = AutoDeltaConfig.from_dict(old)
    model = build("t5")
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model)
    new = AutoDeltaModel.from_config(
        {"delta_type": "lora", "modified_modules": ["attn.q", "attn.v"]}, backbone_model=build("t5")
    )
    assert delta.modified_module_names == new.modified_module_names and len(delta.sites) == 8
    # the "@" marks a common name even when the config does not say common_structure
    cfg = AutoDeltaConfig.from_dict({"delta_type": "lora", "modified_modules": ["[r]block\\.0\\.attn@\\.q@"]})
    d = AutoDeltaModel.from_config(cfg, backbone_model=build("bert"))
    assert d.modified_module_names == ["bert.encoder.layer.0.attention.self.query"]


def test_failed_common_resolution_leaves_model_untouched():
    model = build("llama")
    keys = list(model.state_dict())
    with pytest.raises(ModuleMatchError):
        AutoDeltaModel.from_config(
            {"delta_type": "lora", "modified_modules": ["attn.q", "crossattn.q"], "common_structure": True},
            backbone_model=model,
        )
    assert list(model.state_dict()) == keys and not any(m._forward_hooks for m in model.modules())


def test_structure_graph_shows_common_next_to_raw():
    text = Visualization(build("bert")).to_text(common_structure=True, legend=False, footer=False)
    assert "query [attn.q]" in text and "dense [ff.w2]" in text and "encoder" in text
    assert re.search(r"0-1 \(BertLayer\)", text)
    plain = Visualization(build("bert")).to_text(legend=False, footer=False)
    assert "[attn.q]" not in plain


def test_type_without_defaults_is_a_clear_error():
    with pytest.raises(ModuleMatchError, match=r"'made_up' has no default modules for the bert family.*all-linear"):
        default_settings(build("bert"), "made_up", {})


@pytest.mark.parametrize("family,delta_type", [("t5", "lora"), ("gpt2", "ia3"), ("bert", "parallel_adapter")])
def test_defaults_save_and_load_on_a_fresh_backbone(family, delta_type, tmp_path):
    model = build(family)
    delta = AutoDeltaModel.from_config({"delta_type": delta_type}, backbone_model=model)
    perturb(delta)
    x = inputs_for(family)
    with torch.no_grad():
        out = run(model, family, x)
    delta.save_finetuned(tmp_path / "ckpt")
    fresh = build(family)
    loaded = AutoDeltaModel.from_finetuned(tmp_path / "ckpt", backbone_model=fresh)
    assert loaded.modified_module_names == delta.modified_module_names
    assert loaded.config.to_dict() == delta.config.to_dict()
    with torch.no_grad():
        assert torch.equal(run(fresh, family, x), out)


def test_settings_the_user_gave_are_kept_with_default_modules():
    d = AutoDeltaModel.from_config(
        {"delta_type": "parallel_adapter", "output_module": "output"}, backbone_model=build("bert")
    )
    assert d.config.output_module == "output" and d.config.modified_modules == ["intermediate"]
    d = AutoDeltaModel.from_config({"delta_type": "parallel_adapter", "paired": False}, backbone_model=build("bert"))
    assert d.config.output_module == "output.dense" and d.config.modified_modules == ["intermediate"]
    d = AutoDeltaModel.from_config({"delta_type": "parallel_adapter"}, backbone_model=build("bart"))
    assert d.config.output_module == "fc2" and d.config.modified_modules == ["ff.w1"]
