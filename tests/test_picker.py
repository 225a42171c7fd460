"""The module picker without a browser: compact names, exact counts, selectability, server safety, integration."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import urllib.parse

import pytest
import torch

import opendelta.picker as picker
from opendelta import AutoDeltaConfig, AutoDeltaModel, LoraModel
from opendelta.app.cli import main as cli_main
from opendelta.errors import DeltaConfigError, ModuleMatchError, PickerCancelledError, PickerError, PickerTimeoutError
from opendelta.matching import find_modules, named_backbone_modules
from opendelta.picker import PickerModel, PickerServer, compact_names
from tiny import build


def _names(model):
    return [n for n, _ in named_backbone_modules(model)]


def _addressed(model, patterns):
    return {n for n, _ in find_modules(model, patterns)}


def _picker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("opendelta-picker")]


# ----- compact names -----------------------------------------------------------------------------------
def test_compact_names_shortest_suffixes_and_regexes():
    bert, t5 = build("bert"), build("t5")
    names = _names(bert)
    qv = [n for n in names if n.endswith(("query", "value"))]
    assert compact_names(qv, names) == ["query", "value"]
    q0 = [n for n in names if n.endswith("layer.0.attention.self.query")]
    assert compact_names(q0, names) == ["layer.0.attention.self.query"]
    qv1 = [n for n in names if n.endswith(("query", "value")) and ".layer.1." in n]
    assert compact_names(qv1, names) == [r"[r]layer\.1\.attention\.self\.(?:query|value)"]
    t5_names = _names(t5)
    enc_q = [n for n in t5_names if n.startswith("encoder.") and n.endswith("SelfAttention.q")]
    assert compact_names(enc_q, t5_names) == [r"[r]encoder\.block\.\d+\.layer\.0\.SelfAttention\.q"]
    assert _addressed(t5, compact_names(enc_q, t5_names)) == set(enc_q)


@pytest.mark.parametrize("family", ["bert", "t5", "gpt2"])
def test_compact_names_address_exactly_the_selection(family):
    model = build(family)
    names = _names(model)
    rng = random.Random(0)
    for size in (1, 2, 3, 5, 8, 13, len(names) // 2):
        chosen = rng.sample(names, size)
        compact = compact_names(chosen, names)
        assert _addressed(model, compact) == set(chosen), (chosen, compact)
        assert len(compact) <= len(chosen)


def test_compact_names_rejects_unknown_names():
    with pytest.raises(ModuleMatchError):
        compact_names(["nope"], ["a", "b"])


# ----- exact counts, selectability, the user's model untouched --------------------------------------------
CASES = [
    ("bert", {"delta_type": "lora", "lora_r": 4}),
    ("bert", {"delta_type": "adapter"}),
    ("bert", {"delta_type": "prefix", "embed_dim": 16, "mid_dim": 8}),  # a trunk shared by every module
    ("bert", {"delta_type": "bitfit"}),
    ("bert", {"delta_type": "ia3"}),
    ("bert", {"delta_type": "soft_prompt", "soft_token_num": 5}),
    ("t5", {"delta_type": "lora"}),
    ("t5", {"delta_type": "compacter", "reduction_factor": 4, "hypercomplex_division": 2, "shared_phm_rule": True}),
    ("t5", {"delta_type": "low_rank_adapter", "reduction_factor": 4}),
]


@pytest.mark.parametrize("family,cfg", CASES, ids=[f"{f}-{c['delta_type']}" for f, c in CASES])
def test_counts_equal_num_delta_parameters(family, cfg):
    model = build(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = AutoDeltaConfig.from_dict(cfg)
    pm = PickerModel(model, config)
    tree = pm.tree()
    selected = tree["initial"]
    assert selected, "the family defaults give an initial selection"
    result = pm.evaluate(selected)
    # the user's model is untouched: same tensors, no delta layers, no hooks
    assert set(model.state_dict()) == set(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    delta = AutoDeltaModel.from_config(
        config.replace(modified_modules=result["modified_modules"]), backbone_model=model
    )
    assert sorted(delta.modified_module_names) == sorted(selected)
    assert result["delta_parameters"] == delta.num_delta_parameters()
    stats = delta.log()
    assert (result["total"], result["modules"]) == (stats.total, len(selected))
    assert result["share"] == pytest.approx(stats.delta_ratio)


def _find(node, name):
    if name in node["names"]:
        return node
    for kid in node["children"]:
        hit = _find(kid, name)
        if hit is not None:
            return hit
    return None


def test_tree_folds_and_says_why_a_module_is_not_selectable():
    pm = PickerModel(build("bert"), AutoDeltaConfig.from_dict({"delta_type": "lora", "lora_r": 4}))
    root = pm.tree()["root"]
    layers = _find(root, "0")
    assert layers["names"] == ["0", "1"] and layers["cls"] == "BertLayer"
    qkv = _find(root, "query")
    assert qkv["names"] == ["query", "key", "value"] and qkv["ok"] and qkv["delta"] == 4 * 32 * 2
    norm = _find(root, "LayerNorm")
    assert not norm["ok"] and "supports Linear" in norm["why"]
    container = _find(root, "layer")
    assert not container["ok"] and "ModuleList" in container["why"]
    assert _find(root, "dropout") is None  # modules without parameters are left out, as in the terminal tree


def test_evaluate_reports_the_delta_types_own_error():
    pm = PickerModel(build("bert"), AutoDeltaConfig.from_dict({"delta_type": "lora"}))
    with pytest.raises(Exception, match="supports Linear"):
        pm.evaluate(["bert.embeddings.LayerNorm"])
    with pytest.raises(ModuleMatchError, match="select at least one"):
        pm.evaluate([])
    with pytest.raises(ModuleMatchError, match="reload"):
        pm.evaluate(["bert.nothing"])


# ----- the server ------------------------------------------------------------------------------------------
def _request(server, method, path, body=None, token=None, host=None, ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{server.port}"}
    if token is not None:
        headers["X-Picker-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = ctype
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload


@pytest.fixture
def server():
    srv = PickerServer(PickerModel(build("bert"), AutoDeltaConfig.from_dict({"delta_type": "lora"}))).start()
    yield srv
    srv.close()


def test_server_binds_loopback_only_on_a_random_port(server):
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert server.port > 0 and server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
    other = PickerServer(server.model).start()
    try:
        assert other.port != server.port and other.token != server.token
    finally:
        other.close()


def test_server_refuses_a_wrong_or_missing_token(server):
    good = server.token
    assert _request(server, "GET", f"/?token={good}")[0] == 200
    assert _request(server, "GET", "/?token=wrong")[0] == 403
    assert _request(server, "GET", "/")[0] == 403
    assert _request(server, "GET", "/api/model", token="wrong")[0] == 403
    assert _request(server, "GET", "/api/model")[0] == 403
    status, body = _request(server, "POST", "/api/submit", {"selected": ["bert.pooler.dense"]}, token="wrong")
    assert status == 403 and b"token" in body
    assert _request(server, "POST", "/api/cancel", {}, token=good[:-1] + ("A" if good[-1] != "A" else "B"))[0] == 403
    assert _request(server, "GET", "/api/model", token=good, host="evil.example:80")[0] == 403  # DNS rebinding
    assert _request(server, "POST", "/api/count", {"selected": []}, token=good, ctype="text/plain")[0] == 415
    assert _request(server, "GET", "/static/../server.py")[0] == 404
    status, body = _request(server, "GET", "/api/model", token=good)
    assert status == 200 and json.loads(body)["delta_type"] == "lora"
    # nothing was submitted by the refused requests
    assert not server._done.is_set()


def test_server_count_submit_and_clean_shutdown(server):
    status, body = _request(server, "POST", "/api/count", {"selected": ["bert.pooler.dense"]}, token=server.token)
    assert status == 200 and json.loads(body)["delta_parameters"] == 2 * 8 * 32
    status, body = _request(
        server, "POST", "/api/submit", {"selected": ["bert.embeddings.LayerNorm"]}, token=server.token
    )
    assert status == 422 and b"supports Linear" in body and not server._done.is_set()
    status, body = _request(server, "POST", "/api/submit", {"selected": ["bert.pooler.dense"]}, token=server.token)
    assert status == 200 and json.loads(body)["modified_modules"] == ["pooler.dense"]
    assert server.wait(1) == ["pooler.dense"]
    server.close()
    assert not _picker_threads()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


def test_pick_modules_timeout_is_typed_and_leaves_nothing_running():
    urls = []
    with pytest.raises(PickerTimeoutError, match="timeout"):
        picker.pick_modules(build("bert"), {"delta_type": "lora"}, timeout=0.3, on_url=urls.append)
    assert urls and not _picker_threads()
    port = urllib.parse.urlsplit(urls[0]).port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_pick_modules_cancel_and_ctrl_c():
    def cancel(url):
        srv = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(srv.query)["token"][0]
        threading.Thread(target=lambda: _post(srv.port, "/api/cancel", token, {})).start()

    with pytest.raises(PickerCancelledError):
        picker.pick_modules(build("bert"), {"delta_type": "lora"}, timeout=20, on_url=cancel)

    def interrupt(url):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        picker.pick_modules(build("bert"), {"delta_type": "lora"}, timeout=20, on_url=interrupt)
    assert not _picker_threads()


def _post(port, path, token, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", path, body=json.dumps(body), headers={"X-Picker-Token": token, "Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def _submitting(monkeypatch, selected):
    """Make the picker's browser opener submit `selected` from another thread instead of opening a browser."""

    def fake_open(url):
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        threading.Thread(target=lambda: _post(parts.port, "/api/submit", token, {"selected": selected})).start()
        return False

    monkeypatch.setattr(picker, "_open_browser", fake_open)


def test_interactive_modify_on_auto_and_delta_classes(monkeypatch, tmp_path):
    model = build("t5")
    chosen = [n for n in _names(model) if n.endswith(("SelfAttention.q", "SelfAttention.v"))]
    _submitting(monkeypatch, chosen)
    cfg = AutoDeltaConfig.from_dict({"delta_type": "lora", "lora_r": 2})
    delta = AutoDeltaModel.from_config(cfg, backbone_model=model, interactive_modify=True)
    assert sorted(delta.modified_module_names) == sorted(chosen)
    assert delta.config.modified_modules == ["SelfAttention.q", "SelfAttention.v"] and delta.config.lora_r == 2
    delta.save_finetuned(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["modified_modules"] == ["SelfAttention.q", "SelfAttention.v"]
    assert not _picker_threads()

    other = build("bert")
    _submitting(monkeypatch, ["bert.pooler.dense"])
    delta = LoraModel(other, interactive_modify=True, lora_r=3)
    assert delta.modified_module_names == ["bert.pooler.dense"] and delta.config.lora_r == 3


def test_interactive_modify_bad_values_and_busy_port():
    with pytest.raises(DeltaConfigError, match="interactive_modify"):
        LoraModel(build("bert"), interactive_modify="yes")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        with pytest.raises(PickerError, match="another port"):
            LoraModel(build("bert"), interactive_modify=busy.getsockname()[1])
    finally:
        busy.close()
    assert not _picker_threads()


def test_cli_pick_prints_and_writes_the_config(monkeypatch, tmp_path, capsys):
    _submitting(monkeypatch, ["bert.encoder.layer.0.attention.self.query"])
    out = tmp_path / "picked.json"
    assert cli_main(["pick", "--config", "bert", "--delta", "adapter", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed == {"delta_type": "adapter", "modified_modules": ["layer.0.attention.self.query"]}
    assert cli_main(["pick", "--config", "bert", "--delta", "lroa"]) == 1
    assert "did you mean 'lora'" in capsys.readouterr().err.lower()
