"""The bad-input corpus: configs, module names, checkpoint folders and files, Hub ids, save options and call orders
that must fail. Every case raises a typed OpenDeltaError subclass whose message says what to do, and leaves the
backbone bit-identical (state_dict, module tree, hooks, requires_grad, outputs). Add a case for every new bug.

A case is (id, family, call, expected error class); `call(model, tmp)` runs against a fresh tiny backbone.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraModel
from opendelta.errors import (
    CheckpointError,
    DeltaConfigError,
    DeltaStateError,
    HashMismatchError,
    ModuleMatchError,
    OpenDeltaError,
    UnsupportedModuleError,
)
from tiny import build, inputs_for, run

CFG, MATCH, UNSUP, STATE, CKPT, HASH = (
    DeltaConfigError,
    ModuleMatchError,
    UnsupportedModuleError,
    DeltaStateError,
    CheckpointError,
    HashMismatchError,
)
#: a message says what to do: one of these words (or a "did you mean")
ADVICE = (
    "use ",
    "pass ",
    "point ",
    "save ",
    "check ",
    "choose ",
    "fix ",
    "load ",
    "expected",
    "did you mean",
    "call ",
    "convert",
    "write ",
    "drop ",
    "detach ",
    "keep ",
    "remove ",
    "must ",
    "valid",
    "flatten",
)
Q = ["attention.self.query"]
LORA_Q = {"delta_type": "lora", "modified_modules": Q, "lora_r": 2}


def attach(model: nn.Module, **config) -> object:
    return AutoDeltaModel.from_config(config, backbone_model=model)


def cfg_case(delta_type: str, family: str = "bert", **config) -> Callable:
    return lambda model, tmp: attach(model, delta_type=delta_type, **config)


# ----- the backbone snapshot --------------------------------------------------------------------------------
def snapshot(model: nn.Module, family: str) -> dict:
    hooks = {
        name: tuple(
            len(getattr(m, attr))
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks")
        )
        for name, m in model.named_modules()
    }
    meta = any(p.device.type == "meta" for p in model.parameters())
    with torch.no_grad():
        out = None if meta else run(model, family, inputs_for(family)).clone()
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()} if not meta else {},
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": hooks,
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "out": out,
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    assert before["hooks"] == after["hooks"]
    assert before["grad"] == after["grad"]
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    if before["out"] is not None:
        assert torch.equal(before["out"], after["out"])


# ----- a trained checkpoint to damage -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good") / "ckpt"
    delta = attach(build("bert"), **LORA_Q)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.fill_(0.1)
    delta.save_finetuned(folder)
    return folder


@pytest.fixture(scope="module")
def good_peft(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good") / "peft"
    attach(build("bert"), **LORA_Q).save_finetuned(folder, format="peft")
    return folder


def edited(src_fixture: str, edit: Callable[[Path], None]) -> Callable:
    """A case: copy the good checkpoint, apply `edit` to the copy, load it onto the backbone."""

    def case(model, tmp):
        folder = tmp / "edited"
        shutil.copytree(_SOURCES[src_fixture], folder, symlinks=True)
        edit(folder)
        AutoDeltaModel.from_finetuned(folder, backbone_model=model)

    return case


_SOURCES: dict[str, Path] = {}


def set_config(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = json.loads((folder / "config.json").read_text())
        for k, v in changes.items():
            if v is _DELETE:
                data.pop(k, None)
            else:
                data[k] = v
        (folder / "config.json").write_text(json.dumps(data))

    return edit


_DELETE = object()


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    return edit


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def tensors(state: dict[str, torch.Tensor], name: str = "delta_model.safetensors") -> Callable[[Path], None]:
    return lambda folder: save_file(state, str(folder / name))


def both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        for e in edits:
            e(folder)

    return edit


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


DEEP = "[" * 100000 + "]" * 100000
KEY_A = "bert.encoder.layer.0.attention.self.query.lora.lora_A"

CASES: list[tuple[str, str, Callable, type]] = []


def add(category: str, name: str, call: Callable, error: type, family: str = "bert") -> None:
    CASES.append((f"{category}/{name}", family, call, error))


# ----- configs: values of every type ------------------------------------------------------------------------
for v, err in [
    (0, CFG),
    (-1, CFG),
    (10**9, CFG),
    (2**63, CFG),
    (4096, CFG),
    (True, CFG),
    ("8", CFG),
    (1.5, CFG),
    (None, CFG),
    ([4], CFG),
]:
    add("config-lora", f"lora_r={v!r}"[:40], cfg_case("lora", modified_modules=Q, lora_r=v), err)
for v in [math.inf, -math.inf, math.nan, 0, -1, "16", None, 1e400]:
    add("config-lora", f"lora_alpha={v!r}", cfg_case("lora", modified_modules=Q, lora_alpha=v), CFG)
for v in [1.0, -0.1, math.nan, math.inf, 2]:
    add("config-lora", f"lora_dropout={v!r}", cfg_case("lora", modified_modules=Q, lora_dropout=v), CFG)
add("config-lora", "lora_scaling=bad", cfg_case("lora", modified_modules=Q, lora_scaling="fast"), CFG)
add("config-lora", "on-embedding", cfg_case("lora", modified_modules=["word_embeddings"]), UNSUP)
add("config-lora", "on-layernorm", cfg_case("lora", modified_modules=["attention.output.LayerNorm"]), UNSUP)
for v in [0, -3, 10**9, 2**63, 129, "4", 2.5]:  # width 32: up to 4x is built with a warning
    add(
        "config-adapter",
        f"bottleneck_dim={v!r}"[:40],
        cfg_case("adapter", modified_modules=["output"], bottleneck_dim=v),
        CFG,
    )
for v in ["nope", 5, None, ""]:
    add(
        "config-adapter", f"non_linearity={v!r}", cfg_case("adapter", modified_modules=["output"], non_linearity=v), CFG
    )
add("config-adapter", "no-size", cfg_case("adapter", modified_modules=["dropout"]), UNSUP)
for k, v in [
    ("reduction_factor", 0),
    ("reduction_factor", 1000),
    ("low_rank_rank", 0),
    ("low_rank_rank", 10**6),
    ("low_rank_w_init", "x"),
    ("reduction_factor", math.inf),
]:
    add(
        "config-low_rank_adapter",
        f"{k}={v!r}",
        cfg_case("low_rank_adapter", modified_modules=["output"], **{k: v}),
        CFG,
    )
for k, v in [
    ("phm_init_range", math.inf),
    ("phm_init_range", math.nan),
    ("phm_init_range", 0),
    ("phm_init_range", -1),
    ("hypercomplex_division", 0),
    ("hypercomplex_division", 3),
    ("phm_rank", 10**9),
    ("phm_rank", 0),
    ("phm_c_init", "x"),
    ("reduction_factor", 10**9),
    ("learn_phm", "yes"),
]:
    add("config-compacter", f"{k}={v!r}", cfg_case("compacter", modified_modules=["output"], **{k: v}), CFG)
PA = {"modified_modules": ["intermediate"], "output_module": "output.dense", "bottleneck_dim": 4}
for k, v, err in [
    ("scaled", math.nan, CFG),
    ("scaled", math.inf, CFG),
    ("scaled", -math.inf, CFG),
    ("bottleneck_dim", 0, CFG),
    ("bottleneck_dim", 10**9, CFG),
    ("output_module", "", CFG),
    ("output_module", "[r]out.*", CFG),
    ("output_module", " output", CFG),
    ("output_module", "output..dense", CFG),
    ("output_module", "nonexistent", MATCH),
]:
    add("config-parallel_adapter", f"{k}={v!r}", cfg_case("parallel_adapter", **{**PA, k: v}), err)


def _output_before_input(model, tmp):
    """`output_module` names a module that runs BEFORE the modified one: the forward says so (and the delta
    comes off again)."""
    delta = attach(
        model,
        delta_type="parallel_adapter",
        modified_modules=[r"[r]layer\.\d+\.output"],
        output_module="intermediate",
        bottleneck_dim=4,
    )
    try:
        model(**inputs_for("bert"))
    finally:
        delta.detach()


add("config-parallel_adapter", "output-before-input", _output_before_input, STATE)
add("config-bitfit", "on-embedding", cfg_case("bitfit", modified_modules=["word_embeddings"]), UNSUP)
add("config-bitfit", "on-block", cfg_case("bitfit", modified_modules=["attention.self"]), UNSUP)
add("config-ia3", "ff-nomatch", cfg_case("ia3", modified_modules=["key"], feedforward_modules=["query"]), MATCH)
add("config-ia3", "ff-empty", cfg_case("ia3", modified_modules=["key"], feedforward_modules=[""]), CFG)
add("config-ia3", "ff-string", cfg_case("ia3", modified_modules=["key"], feedforward_modules="key"), CFG)
add("config-ia3", "on-block", cfg_case("ia3", modified_modules=["attention.self"]), UNSUP)
for k, v in [
    ("prefix_token_num", 0),
    ("prefix_token_num", 10**9),
    ("embed_dim", 0),
    ("mid_dim", 2**40),
    ("reparameterize", "no"),
]:
    add("config-prefix", f"{k}={v!r}", cfg_case("prefix", modified_modules=["attn"], **{k: v}), CFG, "gpt2")
add("config-prefix", "on-linear", cfg_case("prefix", modified_modules=["c_attn"]), UNSUP, "gpt2")
for k, v in [
    ("soft_token_num", 0),
    ("soft_token_num", 10**9),
    ("init_range", math.inf),
    ("init_range", math.nan),
    ("init_range", 0),
    ("init_range", -1),
    ("token_init", 1),
]:
    add("config-soft_prompt", f"{k}={v!r}", cfg_case("soft_prompt", modified_modules=["wte"], **{k: v}), CFG, "gpt2")
add("config-soft_prompt", "two-modules", cfg_case("soft_prompt", modified_modules=["wte", "wpe"]), MATCH, "gpt2")
add("config-soft_prompt", "position-embedding", cfg_case("soft_prompt", modified_modules=["wpe"]), UNSUP, "gpt2")
add("config-soft_prompt", "not-embedding", cfg_case("soft_prompt", modified_modules=["c_attn"]), MATCH, "gpt2")

# ----- configs: the shared keys and the dict itself ---------------------------------------------------------
for name, config, err in [
    ("modified-empty-name", {"modified_modules": [""]}, CFG),
    ("modified-blank-name", {"modified_modules": ["  "]}, CFG),
    ("modified-string", {"modified_modules": "attention.self.query"}, CFG),
    ("modified-int", {"modified_modules": [1]}, CFG),
    ("modified-nested", {"modified_modules": [["query"]]}, CFG),
    ("modified-nomatch", {"modified_modules": ["qeury"]}, MATCH),
    ("modified-bad-regex", {"modified_modules": ["[r]("]}, MATCH),
    ("modified-regex-nomatch", {"modified_modules": ["[r]zzz\\d+"]}, MATCH),
    ("exclude-typo", {"modified_modules": Q, "exclude_modules": ["layer.0.attention.self.qeury"]}, MATCH),
    ("exclude-everything", {"modified_modules": Q, "exclude_modules": ["query"]}, MATCH),
    ("exclude-empty", {"modified_modules": Q, "exclude_modules": [""]}, CFG),
    ("unfrozen-empty", {"modified_modules": Q, "unfrozen_modules": [""]}, CFG),
    ("common-structure-string", {"modified_modules": Q, "common_structure": "yes"}, CFG),
    ("unknown-key", {"modified_modules": Q, "lora_rank": 4}, CFG),
    ("hash-int", {"modified_modules": Q, "backbone_hash": 5}, CFG),
    ("common-on-plain", {"modified_modules": ["attn@.q@"], "common_structure": True}, MATCH),
]:
    fam = "toy" if name == "common-on-plain" else "bert"
    add("config-shared", name, cfg_case("lora", **config), err, fam)
add("config-dict", "delta_type-unknown", lambda m, t: AutoDeltaConfig.from_dict({"delta_type": "lorra"}), CFG)
add("config-dict", "delta_type-missing", lambda m, t: AutoDeltaConfig.from_dict({"lora_r": 4}), CFG)
add("config-dict", "delta_type-int", lambda m, t: AutoDeltaConfig.from_dict({"delta_type": 3}), CFG)
add("config-dict", "not-a-dict", lambda m, t: AutoDeltaConfig.from_dict(["lora"]), CFG)
add(
    "config-dict",
    "class-mismatch",
    lambda m, t: LoraModel.from_config({"delta_type": "adapter", "modified_modules": Q}, m),
    CFG,
)
add(
    "config-dict",
    "json-infinity",
    lambda m, t: attach(
        m, **json.loads('{"delta_type": "lora", "modified_modules": ["query"], "lora_alpha": Infinity}')
    ),
    CFG,
)
add(
    "config-dict",
    "json-nan-scaled",
    lambda m, t: AutoDeltaConfig.from_dict(json.loads('{"delta_type": "parallel_adapter", "scaled": NaN}')),
    CFG,
)

# ----- containers (problem 3) -------------------------------------------------------------------------------


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.items = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.named = nn.ModuleDict({"a": nn.Linear(8, 8)})

    def forward(self, input):
        h = self.seq(input)
        for layer in self.items:
            h = layer(h)
        return self.named["a"](h)


for container in ("seq", "items", "named"):
    for delta_type, extra in [
        ("adapter", {"bottleneck_dim": 2}),
        ("low_rank_adapter", {"reduction_factor": 2}),
        ("parallel_adapter", {"bottleneck_dim": 2}),
        ("compacter", {"reduction_factor": 2, "hypercomplex_division": 2}),
        ("bitfit", {}),
        ("lora", {}),
    ]:
        add(
            "containers",
            f"{delta_type}-on-{container}",
            lambda m, t, c=container, d=delta_type, e=extra: attach(
                HolderModel(m), delta_type=d, modified_modules=[c], **e
            ),
            UNSUP,
            "holder",
        )


def HolderModel(model: nn.Module) -> nn.Module:
    return model


# ----- checkpoint folders and files -------------------------------------------------------------------------
def ck(name: str, edit: Callable[[Path], None], error: type, source: str = "good") -> None:
    add("checkpoint-files", name, edited(source, edit), error)


ck("config-invalid-json", write("config.json", "{not json"), CKPT)
ck("config-empty", write("config.json", ""), CKPT)
ck("config-list", write("config.json", "[1, 2]"), CKPT)
ck("config-string", write("config.json", '"lora"'), CKPT)
ck("config-invalid-utf8", write("config.json", b'{"delta_type": "\xff\xfe"}'), CKPT)
ck("config-deep-nesting", write("config.json", DEEP), CKPT)
ck("config-deep-value", set_config(lora_r=json.loads("[" * 500 + "]" * 500)), CFG)
ck("config-no-delta_type", set_config(delta_type=_DELETE), CKPT)
ck("config-unknown-delta_type", set_config(delta_type="lorax"), CFG)
ck("config-delta_type-int", set_config(delta_type=7), CFG)
ck("config-hf-model-config", write("config.json", '{"model_type": "bert", "hidden_size": 32}'), CKPT)
ck("config-lora_r-huge", set_config(lora_r=10**9), CFG)
ck("config-lora_r-2**63", set_config(lora_r=2**63), CFG)
ck("config-lora_r-other", set_config(lora_r=4), CKPT)


def _alpha_infinity(folder: Path) -> None:
    set_config(lora_alpha="INF")(folder)
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text.replace('"INF"', "Infinity"))


ck("config-alpha-infinity", _alpha_infinity, CFG)
ck("config-unknown-key", set_config(lora_rank=2), CFG)
ck("config-modules-other", set_config(modified_modules=["attention.self.key"]), CKPT)
ck("config-modules-nomatch", set_config(modified_modules=["nothing_here"]), MATCH)
ck("weights-missing", remove("delta_model.safetensors"), CKPT)
ck("weights-garbage", write("delta_model.safetensors", b"\x00garbage" * 10), CKPT)
ck("weights-empty", write("delta_model.safetensors", b""), CKPT)
ck("weights-huge-header", write("delta_model.safetensors", (2**62).to_bytes(8, "little") + b"{}"), CKPT)
ck("weights-wrong-keys", tensors({"x.lora_A": torch.zeros(2, 32)}), CKPT)
ck(
    "weights-extra-key",
    tensors(
        {
            **{
                f"bert.encoder.layer.{i}.attention.self.query.lora.lora_{ab}": torch.zeros(
                    *(2, 32) if ab == "A" else (32, 2)
                )
                for i in range(2)
                for ab in "AB"
            },
            "extra": torch.zeros(1),
        }
    ),
    CKPT,
)
ck(
    "weights-wrong-shape",
    tensors(
        {
            f"bert.encoder.layer.{i}.attention.self.query.lora.lora_{ab}": torch.zeros(3, 3)
            for i in range(2)
            for ab in "AB"
        }
    ),
    CKPT,
)
ck(
    "weights-changed-value",
    tensors(
        {
            f"bert.encoder.layer.{i}.attention.self.query.lora.lora_{ab}": torch.full(
                (2, 32) if ab == "A" else (32, 2), 0.5
            )
            for i in range(2)
            for ab in "AB"
        }
    ),
    HASH,
)
ck(
    "weights-pickle-bin",
    both(
        remove("delta_model.safetensors"),
        remove("fingerprint.json"),
        set_config(format_version=_DELETE),
        write("pytorch_model.bin", pickle.dumps({"x": _Evil()})),
    ),
    CKPT,
)
ck(
    "weights-bin-not-dict",
    both(
        remove("delta_model.safetensors"),
        remove("fingerprint.json"),
        set_config(format_version=_DELETE),
        lambda f: torch.save([torch.zeros(1)], f / "pytorch_model.bin"),
    ),
    CKPT,
)
ck(
    "weights-bin-garbage",
    both(
        remove("delta_model.safetensors"),
        remove("fingerprint.json"),
        set_config(format_version=_DELETE),
        write("pytorch_model.bin", b"PK\x03\x04garbage"),
    ),
    CKPT,
)
CHANGED_EARLY = tensors(
    {
        f"bert.encoder.layer.{i}.attention.self.query.lora.lora_{ab}": torch.full(
            (2, 32) if ab == "A" else (32, 2), 0.3
        )
        for i in range(2)
        for ab in "AB"
    }
)
# the hash check cannot be downgraded by an edit (problem 6)
ck("hash-format_version-deleted", set_config(format_version=_DELETE, backbone_hash=None), HASH)
ck("hash-format_version-deleted-only", set_config(format_version=_DELETE, hash_algorithm=None), HASH)
ck("hash-backbone_hash-null", set_config(backbone_hash=None), HASH)
ck("hash-algorithm-null", set_config(hash_algorithm=None), HASH)
ck("hash-algorithm-md5", set_config(hash_algorithm="md5"), HASH)
ck("hash-backbone_hash-other", set_config(backbone_hash="0" * 32), HASH)
ck("hash-backbone_hash-empty", set_config(backbone_hash=""), HASH)
ck("hash-fingerprint-deleted-changed", both(remove("fingerprint.json"), CHANGED_EARLY), HASH)
ck("hash-fingerprint-deleted-and-null", both(remove("fingerprint.json"), set_config(backbone_hash=None)), HASH)
# a damaged fingerprint.json only loses the per-tensor details: the check still runs (here: a changed delta)
CHANGED = tensors(
    {
        f"bert.encoder.layer.{i}.attention.self.query.lora.lora_{ab}": torch.full(
            (2, 32) if ab == "A" else (32, 2), 0.7
        )
        for i in range(2)
        for ab in "AB"
    }
)
for name, content in [
    ("invalid-utf8", b"\xff\xfe{"),
    ("list", b"[1, 2]"),
    ("malformed-digests", json.dumps({"root": "x", "tensors": {"a": "nocolons", "b": 5}}).encode()),
    ("deep-nesting", DEEP.encode()),
    ("not-json", b"{oops"),
    ("tensors-list", json.dumps({"root": "x", "tensors": [1]}).encode()),
]:
    ck(f"fingerprint-{name}", both(write("fingerprint.json", content), CHANGED), HASH)
ck("peft-config-invalid", write("adapter_config.json", "{"), CKPT, "good_peft")
ck("peft-config-list", write("adapter_config.json", "[]"), CKPT, "good_peft")
ck(
    "peft-dora",
    lambda f: (f / "adapter_config.json").write_text(
        json.dumps({**json.loads((f / "adapter_config.json").read_text()), "use_dora": True})
    ),
    CKPT,
    "good_peft",
)
ck(
    "peft-r-huge",
    lambda f: (f / "adapter_config.json").write_text(
        json.dumps({**json.loads((f / "adapter_config.json").read_text()), "r": 10**9})
    ),
    CFG,
    "good_peft",
)
ck(
    "peft-alpha-inf",
    lambda f: (f / "adapter_config.json").write_text(
        json.dumps({**json.loads((f / "adapter_config.json").read_text()), "lora_alpha": math.inf})
    ),
    CFG,
    "good_peft",
)
ck("peft-weights-missing", remove("adapter_model.safetensors"), CKPT, "good_peft")
ck("peft-weights-garbage", write("adapter_model.safetensors", b"junk"), CKPT, "good_peft")
ck(
    "peft-unknown-type",
    lambda f: (f / "adapter_config.json").write_text(json.dumps({"peft_type": "XYZ"})),
    CKPT,
    "good_peft",
)
ck("peft-type-missing", write("adapter_config.json", "{}"), CKPT, "good_peft")


# ----- paths and Hub ids ------------------------------------------------------------------------------------
def load(path) -> Callable:
    return lambda m, t: AutoDeltaModel.from_finetuned(path(t) if callable(path) else path, backbone_model=m)


for name, path in [
    ("empty-string", ""),
    ("blank", "   "),
    ("nul", "a\0b"),
    ("dot-git", "Org/name.git"),
    ("ipynb", "Org/name.ipynb"),
    ("long-5000", "x" * 5000),
    ("long-id-5000", "Org/" + "n" * 5000),
    ("three-parts", "a/b/c"),
    ("traversal", "../../etc"),
    ("leading-dash", "Org/-name"),
    ("space", "Org/na me"),
    ("double-dot", "Org/na..me"),
    ("double-dash", "Org/na--me"),
    ("trailing-slash", "Org/name/"),
    ("backslash", "Org\\name"),
    ("not-cached-offline", "Nobody/not-in-the-cache-xyz"),
    ("missing-relative", "./no/such/folder"),
    ("missing-absolute", "/no/such/folder/anywhere"),
    ("unicode", "Org/名前"),
    ("int", 5),
    ("none", None),
]:
    add("paths-and-ids", name, load(path), CKPT)
add("paths-and-ids", "empty-folder", load(lambda t: (t / "empty").mkdir() or t / "empty"), CKPT)
add("paths-and-ids", "a-file", load(lambda t: (t / "f.json").write_text("{}") and t / "f.json"), CKPT)
add(
    "paths-and-ids",
    "revision-traversal",
    lambda m, t: AutoDeltaModel.from_finetuned("Org/name", backbone_model=m, revision="../main"),
    CKPT,
)
add(
    "paths-and-ids",
    "revision-double-dot",
    lambda m, t: AutoDeltaModel.from_finetuned("Org/name", backbone_model=m, revision="a..b"),
    CKPT,
)
add("paths-and-ids", "config-from-dot-git", lambda m, t: AutoDeltaConfig.from_finetuned("Org/x.git"), CKPT)


# ----- saving -----------------------------------------------------------------------------------------------
def saving(**kwargs) -> Callable:
    def case(model, tmp):
        delta = attach(model, **LORA_Q)
        try:
            delta.save_finetuned(kwargs.pop("path", tmp / "out"), **kwargs)
        finally:
            delta.detach()

    return case


class _Thing:
    pass


add("saving", "format-unknown", saving(format="onnx"), CFG)
add("saving", "card-tags-object", saving(card_data={"tags": [_Thing()]}), CFG)
add("saving", "card-tags-int", saving(card_data={"tags": 5}), CFG)
add("saving", "card-object-value", saving(card_data={"license": _Thing()}), CFG)
add("saving", "card-set-value", saving(card_data={"datasets": {"a", "b"}}), CFG)
add("saving", "card-nan", saving(card_data={"score": math.nan}), CFG)
add("saving", "card-int-key", saving(card_data={"model-index": {1: "x"}}), CFG)
add("saving", "card-not-a-dict", saving(card_data=["license", "mit"]), CFG)
add("saving", "card-deep", saving(card_data={"x": json.loads("[" * 40 + "]" * 40)}), CFG)
add("saving", "push-bad-repo", saving(push_to_hub=True, repo_id="a/b/c"), CKPT)
add("saving", "push-dot-git", saving(push_to_hub=True, repo_id="Org/x.git"), CKPT)


def _below_file(model, tmp):
    (tmp / "file.txt").write_text("x")
    saving(path=tmp / "file.txt" / "ckpt")(model, tmp)


def _onto_file(model, tmp):
    (tmp / "file.txt").write_text("x")
    saving(path=tmp / "file.txt")(model, tmp)


add("saving", "below-a-file", _below_file, CKPT)
add("saving", "onto-a-file", _onto_file, CKPT)


def _detached(model, tmp):
    delta = attach(model, **LORA_Q)
    delta.detach()
    delta.save_finetuned(tmp / "out")


def _merged(model, tmp):
    delta = attach(model, **LORA_Q)
    delta.merge()
    try:
        delta.save_finetuned(tmp / "out")
    finally:
        delta.detach()


def _meta(model, tmp):
    with torch.device("meta"):
        meta_model = build("bert")
    delta = attach(meta_model, **LORA_Q)
    delta.save_finetuned(tmp / "out")


def _meta_load(model, tmp):
    with torch.device("meta"):
        meta_model = build("bert")
    AutoDeltaModel.from_finetuned(_SOURCES["good"], backbone_model=meta_model)


add("saving", "detached", _detached, STATE)
add("saving", "merged", _merged, STATE)
add("saving", "meta-backbone", _meta, STATE)
add("saving", "meta-backbone-load", _meta_load, STATE)


# ----- call orders ------------------------------------------------------------------------------------------
def _sequence(*steps: str, config=LORA_Q) -> Callable:
    def case(model, tmp):
        delta = attach(model, **config)
        try:
            for s in steps:
                getattr(delta, s)()
        finally:
            if delta.attached:
                delta.detach()

    return case


add("call-order", "merge-twice", _sequence("merge", "merge"), STATE)
add("call-order", "unmerge-unmerged", _sequence("unmerge"), STATE)
add("call-order", "attach-twice", _sequence("attach"), STATE)
add(
    "call-order",
    "merge-adapter",
    _sequence("merge", config={"delta_type": "adapter", "modified_modules": ["output"]}),
    STATE,
)


def _detach_twice(model, tmp):
    delta = attach(model, **LORA_Q)
    delta.detach()
    delta.detach()


def _merge_detached(model, tmp):
    delta = attach(model, **LORA_Q)
    delta.detach()
    delta.merge()


def _ia3_zero(model, tmp):
    delta = attach(model, delta_type="ia3", modified_modules=["key"])
    with torch.no_grad():
        next(iter(delta.delta_parameters()))[0] = 0
    try:
        delta.merge()
    finally:
        delta.detach()


def _same_name_twice(model, tmp):
    delta = AutoDeltaModel.from_config(LORA_Q, backbone_model=model, name="task")
    try:
        AutoDeltaModel.from_config(LORA_Q, backbone_model=model, name="task")
    finally:
        delta.release()


def _state_wrong_keys(model, tmp):
    delta = attach(model, **LORA_Q)
    try:
        delta.load_delta_state_dict({"nope": torch.zeros(1)})
    finally:
        delta.detach()


def _load_wrong_class(model, tmp):
    from opendelta import AdapterModel

    AdapterModel.from_finetuned(_SOURCES["good"], backbone_model=model)


def _load_other_backbone(model, tmp):
    AutoDeltaModel.from_finetuned(_SOURCES["good"], backbone_model=model)


add("call-order", "detach-twice", _detach_twice, STATE)
add("call-order", "merge-detached", _merge_detached, STATE)
add("call-order", "ia3-merge-zero", _ia3_zero, STATE)
add("call-order", "same-name-twice", _same_name_twice, CFG)
add("call-order", "load-state-wrong-keys", _state_wrong_keys, CKPT)
add("call-order", "load-wrong-class", _load_wrong_class, CKPT)
add("call-order", "load-other-backbone", _load_other_backbone, HASH, "bert-seed1")


# ----- the harness ------------------------------------------------------------------------------------------
def _backbone(family: str) -> tuple[nn.Module, str]:
    if family == "holder":
        torch.manual_seed(0)
        return HolderRoot(), "toy-holder"
    if family == "bert-seed1":
        return build("bert", seed=1), "bert"
    return build(family), family


class HolderRoot(Holder):
    pass


def _run_holder(model, inputs):
    return model(inputs["input"])


@pytest.fixture(scope="module", autouse=True)
def _sources(good, good_peft):
    _SOURCES.update(good=good, good_peft=good_peft)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch):
    name, family, call, error = case
    model, fam = _backbone(family)
    if fam == "toy-holder":
        import tiny

        monkeypatch.setattr(tiny, "run", lambda m, f, i: m(i["input"]))
        before = _holder_snapshot(model)
    else:
        before = snapshot(model, fam)
    with pytest.raises(OpenDeltaError) as info:
        call(model, tmp_path)
    assert isinstance(info.value, error), f"{name}: {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert any(word in message.lower() for word in ADVICE), f"{name}: the message gives no advice: {message}"
    after = _holder_snapshot(model) if fam == "toy-holder" else snapshot(model, fam)
    assert_same(before, after)


def _holder_snapshot(model):
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    snap = snapshot_plain(model)
    with torch.no_grad():
        snap["out"] = model(x)
    return snap


def snapshot_plain(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def test_corpus_size():
    assert len(CASES) >= 150
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
