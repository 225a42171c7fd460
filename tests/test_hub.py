"""Loading `Org/name` through a Hugging Face cache laid out as huggingface_hub writes it, offline; publishing
(model card, push_to_hub with the Hub API mocked); every error path of resolution."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
import transformers
from huggingface_hub import HfApi, constants

from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraConfig, LoraModel
from opendelta.errors import CheckpointError
from opendelta.hub import split_hub_options
from opendelta.publishing import CARD_MARKER
from tiny import build, inputs_for, run

TARGETS = ["SelfAttention.q", "SelfAttention.v"]


# ----- helpers --------------------------------------------------------------------------------
def trained_delta(seed: int = 0):
    """A tiny T5 with a LoRA delta whose parameters are non-zero (seeded)."""
    model = build("t5")
    model.config._name_or_path = "google-t5/t5-small"
    delta = LoraModel(model, modified_modules=TARGETS, lora_r=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, delta


def output(model):
    with torch.no_grad():
        return run(model, "t5", inputs_for("t5"))


def put_in_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> str:
    """Store `folder`'s files as one commit of `repo_id` in huggingface_hub's cache layout:
    blobs/<sha256>, snapshots/<commit>/<file> symlinked to the blob, refs/<revision> holding the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return commit


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    """Hub access allowed, but every call that would reach the network fails the test unless mocked."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the Hub")

    for name in ("repo_info", "model_info", "list_repo_tree", "create_repo", "upload_folder"):
        monkeypatch.setattr(HfApi, name, no_network)


@pytest.fixture
def downloads(monkeypatch):
    """Records every snapshot_download call (and still runs the real one)."""
    calls = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    return calls


# ----- resolution through the cache --------------------------------------------------------------
def test_load_repo_id_from_cache_offline(tmp_path, offline, downloads):
    model, delta = trained_delta()
    ref = output(model)
    delta.save_finetuned(tmp_path / "saved")
    (tmp_path / "saved" / "unrelated.txt").write_text("not needed")
    put_in_cache(tmp_path / "cache", "Org/name", tmp_path / "saved")

    fresh = build("t5")
    loaded = AutoDeltaModel.from_finetuned("Org/name", backbone_model=fresh, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(output(fresh), ref, atol=0, rtol=0)
    assert loaded.config.backbone_hash == delta.config.backbone_hash  # the hash check ran and passed
    ((args, kwargs),) = downloads
    assert args == ("Org/name",) and kwargs["cache_dir"] == tmp_path / "cache"
    assert kwargs["local_files_only"] is True  # offline: the cache only
    assert "unrelated.txt" not in kwargs["allow_patterns"] and "delta_model.safetensors" in kwargs["allow_patterns"]

    cfg = AutoDeltaConfig.from_finetuned("Org/name", cache_dir=tmp_path / "cache", lora_dropout=0.1)
    assert cfg.lora_r == 2 and cfg.lora_dropout == 0.1  # hub options and config overrides kept apart
    assert "delta_model.safetensors" not in downloads[-1][1]["allow_patterns"]  # config only


def test_default_cache_and_revisions(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    outputs = {}
    for seed, revision in [(0, "main"), (1, "v2")]:
        model, delta = trained_delta(seed)
        outputs[revision] = output(model)
        delta.save_finetuned(tmp_path / revision)
        commit = put_in_cache(tmp_path / "hf-cache", "Org/name", tmp_path / revision, revision=revision)
    assert not torch.allclose(outputs["main"], outputs["v2"])
    for revision in ["main", "v2", commit]:
        fresh = build("t5")
        LoraModel.from_finetuned("Org/name", fresh, revision=revision)
        expected = outputs["main" if revision == "main" else "v2"]
        torch.testing.assert_close(output(fresh), expected, atol=0, rtol=0)


def test_local_folder_wins_and_hub_options_are_ignored_there(tmp_path, offline, downloads, monkeypatch):
    model, delta = trained_delta()
    delta.save_finetuned(tmp_path / "Org" / "name")
    monkeypatch.chdir(tmp_path)
    fresh = build("t5")
    AutoDeltaModel.from_finetuned("Org/name", backbone_model=fresh, revision="v2")
    assert downloads == []
    torch.testing.assert_close(output(fresh), output(model), atol=0, rtol=0)


# ----- error paths ---------------------------------------------------------------------------------
def test_offline_and_not_cached(tmp_path, offline):
    model = build("t5")
    keys = list(model.state_dict())
    with pytest.raises(CheckpointError, match=r"not in the cache .* HF_HUB_OFFLINE=1"):
        AutoDeltaModel.from_finetuned("Org/absent", backbone_model=model, cache_dir=tmp_path)
    put_in_cache(tmp_path, "Org/name", _saved(tmp_path / "s"))
    with pytest.raises(CheckpointError, match=r"revision 'v9'.*not in the cache"):
        AutoDeltaModel.from_finetuned("Org/name", backbone_model=model, cache_dir=tmp_path, revision="v9")
    assert list(model.state_dict()) == keys


def test_offline_set_after_huggingface_hub_was_imported(tmp_path, online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # constants.HF_HUB_OFFLINE stays False
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1"):
        LoraConfig.from_finetuned("Org/absent", cache_dir=tmp_path)
    put_in_cache(tmp_path, "Org/name", _saved(tmp_path / "s"))
    assert LoraConfig.from_finetuned("Org/name", cache_dir=tmp_path, lora_r=3).lora_r == 3


def test_local_files_only_and_not_cached(tmp_path, online):
    with pytest.raises(CheckpointError, match="local_files_only=True"):
        AutoDeltaConfig.from_finetuned("Org/absent", cache_dir=tmp_path, local_files_only=True)


def test_missing_repo(tmp_path, online, monkeypatch):
    import httpx2
    from huggingface_hub.errors import RepositoryNotFoundError

    seen = []

    def not_found(self, repo_id, **kwargs):
        seen.append(repo_id)
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise RepositoryNotFoundError("404 Repository Not Found", response=response)

    monkeypatch.setattr(HfApi, "repo_info", not_found)
    with pytest.raises(CheckpointError, match=r"'Org/nope' does not exist, or it is private.*token="):
        AutoDeltaModel.from_finetuned("Org/nope", backbone_model=build("t5"), cache_dir=tmp_path)
    assert seen == ["Org/nope"]


def test_revision_not_found(tmp_path, online, monkeypatch):
    import httpx2
    from huggingface_hub.errors import RevisionNotFoundError

    def no_revision(self, repo_id, **kwargs):
        response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))
        raise RevisionNotFoundError("404 Revision Not Found", response=response)

    monkeypatch.setattr(HfApi, "repo_info", no_revision)
    with pytest.raises(CheckpointError, match=r"has no revision 'nope'"):
        AutoDeltaConfig.from_finetuned("Org/name", cache_dir=tmp_path, revision="nope")


def _saved(folder: Path) -> Path:
    _, delta = trained_delta()
    return delta.save_finetuned(folder)


def test_folder_or_repo_without_checkpoint(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"No delta checkpoint in folder .*notes.txt.*save_finetuned"):
        AutoDeltaModel.from_finetuned(tmp_path / "empty", backbone_model=build("t5"))
    (tmp_path / "model").mkdir()
    transformers.T5Config().save_pretrained(tmp_path / "model")  # a model, not a delta
    with pytest.raises(CheckpointError, match=r"has no `delta_type`.*model_type='t5'"):
        AutoDeltaConfig.from_finetuned(tmp_path / "model")
    put_in_cache(tmp_path / "cache", "Org/model-only", tmp_path / "model")
    with pytest.raises(CheckpointError, match=r"No delta checkpoint in Hub repo 'Org/model-only'"):
        AutoDeltaModel.from_finetuned("Org/model-only", backbone_model=build("t5"), cache_dir=tmp_path / "cache")
    with pytest.raises(CheckpointError, match="does not exist"):
        AutoDeltaModel.from_finetuned(tmp_path / "absent", backbone_model=build("t5"))
    with pytest.raises(CheckpointError, match="does not exist"):
        AutoDeltaModel.from_finetuned("./absent/", backbone_model=build("t5"))
    shutil.copy(tmp_path / "empty" / "notes.txt", tmp_path / "file")
    with pytest.raises(CheckpointError, match="is a file"):
        AutoDeltaModel.from_finetuned(tmp_path / "file", backbone_model=build("t5"))


@pytest.mark.parametrize(
    "bad, message",
    [
        ("Org/../../etc", "path traversal"),
        ("../../etc/passwd", "does not exist"),
        ("Org/name/extra", "more than one '/'"),
        ("name-without-org", "no organisation"),
        ("Org/na me", "letters, digits"),
        ("-Org/name", "letters, digits"),
        ("Org/name.", "letters, digits"),
        ("Org/na--me", "without '--'"),
        ("~/x", "path traversal"),
        ("Org\\name", "path traversal"),
    ],
)
def test_malformed_ids_are_refused_before_any_io(bad, message, tmp_path, downloads, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        AutoDeltaModel.from_finetuned(bad, backbone_model=build("toy"))
    assert downloads == []


@pytest.mark.parametrize("revision", ["../../x", "/etc", "a//b", "main/", "", "ma in"])
def test_bad_revisions_are_refused_before_any_io(revision, tmp_path, downloads):
    with pytest.raises(CheckpointError, match="Invalid revision"):
        AutoDeltaConfig.from_finetuned("Org/name", cache_dir=tmp_path, revision=revision)
    assert downloads == []


def test_split_hub_options():
    options, overrides = split_hub_options({"revision": "v1", "token": "t", "lora_r": 4})
    assert (options.revision, options.token, overrides) == ("v1", "t", {"lora_r": 4})
    with pytest.raises(TypeError, match="local_files_only"):
        split_hub_options({"local_files_only": "yes"})


# ----- model card ------------------------------------------------------------------------------
def _front_matter(text: str) -> dict:
    card = huggingface_hub.ModelCard(text)
    return card.data.to_dict()


def test_model_card_front_matter_counts_results_and_runnable_snippet(tmp_path, offline, monkeypatch):
    model, delta = trained_delta()
    delta.freeze_module(exclude=["deltas"])
    path = delta.save_finetuned(
        tmp_path / "d",
        repo_id="Org/name",
        card_data={"license": "apache-2.0", "datasets": ["glue"], "tags": ["sst2"]},
        results={"accuracy": 0.9312, "epochs": 3},
    )
    text = (path / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "opendelta" and meta["base_model"] == "google-t5/t5-small"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["glue"]
    assert {"opendelta", "lora", "sst2"} <= set(meta["tags"])
    n = delta.num_delta_parameters()
    assert f"| delta parameters | {n:,} |" in text and f"| trainable parameters | {n:,} |" in text
    assert "| accuracy | 0.9312 |" in text and "| epochs | 3 |" in text

    # the usage snippet runs as written against the published repo (from_pretrained served locally)
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "AutoDeltaModel.from_finetuned('Org/name', backbone_model=backbone)" in snippet
    put_in_cache(tmp_path / "cache", "Org/name", path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        transformers.T5ForConditionalGeneration,
        "from_pretrained",
        classmethod(lambda cls, name: build("t5") if name == "google-t5/t5-small" else None),
    )
    ns: dict = {}
    exec(snippet, ns)
    torch.testing.assert_close(output(ns["backbone"]), output(model), atol=0, rtol=0)


def test_user_readme_is_kept_unless_asked_and_generated_card_is_refreshed(tmp_path, caplog):
    _, delta = trained_delta()
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "README.md").write_text("# My own notes\n")
    with caplog.at_level(logging.INFO, logger="opendelta"):
        delta.save_finetuned(folder)
    assert (folder / "README.md").read_text() == "# My own notes\n"
    assert "overwrite_card=True" in caplog.text
    delta.save_finetuned(folder, overwrite_card=True)
    assert (folder / "README.md").read_text().startswith("---\n") and CARD_MARKER in (folder / "README.md").read_text()
    delta.save_finetuned(folder, results={"f1": 0.5})  # our own card: regenerated
    assert "| f1 | 0.5 |" in (folder / "README.md").read_text()


# ----- push_to_hub (Hub API mocked) ------------------------------------------------------------
@pytest.fixture
def hub_calls(online, monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls.append(("upload_folder", repo_id, {**kwargs, "files": files}, self.token))
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_from_memory(hub_calls):
    _, delta = trained_delta()
    info = delta.push_to_hub(
        "Org/name", private=True, token="hf_x", commit_message="first delta", card_data={"license": "mit"}
    )
    assert info == "commit-info"
    (c_name, c_repo, c_kwargs, c_token), (u_name, u_repo, u_kwargs, u_token) = hub_calls
    assert (c_name, c_repo, c_token) == ("create_repo", "Org/name", "hf_x")
    assert c_kwargs["private"] is True and c_kwargs["exist_ok"] is True and c_kwargs["repo_type"] == "model"
    assert (u_name, u_repo, u_token) == ("upload_folder", "Org/name", "hf_x")
    assert u_kwargs["commit_message"] == "first delta"
    assert u_kwargs["files"] == ["README.md", "config.json", "delta_model.safetensors", "fingerprint.json"]


def test_save_finetuned_push_to_hub(tmp_path, hub_calls):
    _, delta = trained_delta()
    delta.save_finetuned(tmp_path / "my-delta", push_to_hub=True, format="peft")
    (_, c_repo, c_kwargs, _), (_, u_repo, u_kwargs, _) = hub_calls
    assert c_repo == "my-delta" and c_kwargs["private"] is None  # the folder name, in the user's namespace
    assert u_repo == "me/my-delta"  # uploaded where create_repo says the repo is
    assert u_kwargs["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert u_kwargs["commit_message"]


def test_push_refuses_bad_repo_ids_before_any_call(tmp_path, hub_calls):
    _, delta = trained_delta()
    with pytest.raises(CheckpointError, match="not a valid Hub repo id"):
        delta.push_to_hub("Org/../x")
    with pytest.raises(CheckpointError, match="not a valid Hub repo id"):
        delta.save_finetuned(tmp_path / "d", push_to_hub=True, repo_id="a/b/c")
    assert hub_calls == [] and not (tmp_path / "d").exists()


# ----- fingerprint of shared checkpoints -------------------------------------------------------
def _integer_model() -> torch.nn.Module:
    """Parameters built from small integers (exact in every dtype used), in three dtypes."""
    m = torch.nn.Module()
    m.w32 = torch.nn.Parameter(torch.arange(-6, 6, dtype=torch.float32).reshape(3, 4) / 4)
    m.h16 = torch.nn.Parameter(torch.arange(10, dtype=torch.float16) * 3 - 7)
    m.b16 = torch.nn.Parameter(torch.arange(8, dtype=torch.bfloat16).reshape(2, 2, 2) / 8)
    m.sub = torch.nn.Linear(2, 3)
    with torch.no_grad():
        m.sub.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5], [-0.25, 8.0]]))
        m.sub.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    return m


def test_fingerprint_digest_is_pinned():
    """A change of algorithm (or of its byte layout) would make shared checkpoints unverifiable: it must show."""
    from opendelta.fingerprint import MODEL_ALGORITHM, fingerprint_model

    fp = fingerprint_model(_integer_model())
    assert MODEL_ALGORITHM == "xxh3-128-tensors-v1"
    assert fp.tensors == {
        "b16": "bfloat16:2x2x2:e98d19e93cec65a81746f13d9172d5fe",
        "h16": "float16:10:3673e4448860be7a4ecde082e2696f5c",
        "sub.bias": "float32:3:3b49d80df844e09325f9ccb870b445b5",
        "sub.weight": "float32:3x2:b772ad7aad512b8f1627a2c51ab85d67",
        "w32": "float32:3x4:bc55b55b88e6f73c0f35a1fea48b6c43",
    }
    assert fp.root == "89e7858e022f592e044ea8bd36456b8a"


def test_fingerprint_follows_its_documented_byte_layout():
    """Recomputed without torch: xxh3-128 of little-endian values; root over 'name=dtype:shape:digest;'."""
    import struct

    import numpy as np
    import xxhash

    from opendelta.fingerprint import fingerprint_model

    def bf16(values):  # the upper half of each float32 (exact for these values)
        return b"".join(struct.pack("<f", v)[2:] for v in values)

    raw = {
        "b16": ("bfloat16", "2x2x2", bf16([i / 8 for i in range(8)])),
        "h16": ("float16", "10", np.array([i * 3 - 7 for i in range(10)], dtype="<f2").tobytes()),
        "sub.bias": ("float32", "3", np.array([0, 1, -1], dtype="<f4").tobytes()),
        "sub.weight": ("float32", "3x2", np.array([1, -2, 3, 0.5, -0.25, 8], dtype="<f4").tobytes()),
        "w32": ("float32", "3x4", np.array([i / 4 for i in range(-6, 6)], dtype="<f4").tobytes()),
    }
    tensors = {k: f"{d}:{s}:{xxhash.xxh3_128(b).hexdigest()}" for k, (d, s, b) in raw.items()}
    root = xxhash.xxh3_128("".join(f"{k}={v};" for k, v in sorted(tensors.items())).encode()).hexdigest()
    fp = fingerprint_model(_integer_model())
    assert fp.tensors == tensors and fp.root == root


def test_peft_adapter_from_the_hub_cache(tmp_path, offline, downloads):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(build("t5"), peft.LoraConfig(target_modules=["q", "v"], r=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    model.eval()
    ref = output(model)
    model.save_pretrained(tmp_path / "adapter")
    put_in_cache(tmp_path / "cache", "Org/t5-lora-peft", tmp_path / "adapter")
    fresh = build("t5")
    delta = AutoDeltaModel.from_finetuned("Org/t5-lora-peft", backbone_model=fresh, cache_dir=tmp_path / "cache")
    assert delta.delta_type == "lora" and len(delta.sites) == 3 * 2 * 2  # q, v in 3 attentions x 2 layers
    torch.testing.assert_close(output(fresh), ref, atol=1e-5, rtol=0)
    assert "adapter_model.safetensors" in downloads[0][1]["allow_patterns"]
