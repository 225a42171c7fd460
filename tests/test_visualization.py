"""The folded structure tree: golden plain-text output on tiny T5 / BERT / GPT-2 with and without deltas,
footer counts checked against sums computed here, options, colours, SVG / HTML / text export, and inspect().

Golden files live in tests/golden/; after an intended change of the output, regenerate them with
`OPENDELTA_UPDATE_GOLDEN=1 pytest tests/test_visualization.py` and review the diff.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import opendelta
from opendelta import LoraModel, Visualization
from opendelta.stats import percent
from opendelta.visualization import STYLE_DELTA, STYLE_FROZEN, STYLE_TRAINABLE, _compress_names
from tiny import build

GOLDEN = Path(__file__).parent / "golden"
FOOTER = re.compile(r"parameters: total ([\d,]+) · trainable ([\d,]+) \((.+?)\) · delta ([\d,]+) \((.+?)\)")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("OPENDELTA_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}; run with OPENDELTA_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8")


def tree_part(text: str) -> str:
    """The text before the legend (the tree itself)."""
    return text.split("legend:")[0]


def expected_counts(model: torch.nn.Module) -> tuple[int, int, int]:
    """(total, trainable, delta) over every parameter object (tied weights once), independently of opendelta."""
    unique = {id(p): (name, p) for name, p in model.named_parameters(remove_duplicate=False)}
    total = sum(p.numel() for _, p in unique.values())
    trainable = sum(p.numel() for _, p in unique.values() if p.requires_grad)
    delta = sum(p.numel() for name, p in unique.values() if ".lora." in name)
    return total, trainable, delta


def check_footer(text: str, model: torch.nn.Module) -> None:
    total, trainable, delta = expected_counts(model)
    m = FOOTER.search(text)
    assert m, text
    assert [int(g.replace(",", "")) for g in m.group(1, 2, 4)] == [total, trainable, delta]
    assert m.group(3) == percent(trainable / total) and m.group(5) == percent(delta / total)
    assert f"parameter memory: float32 {opendelta.stats.human_bytes(4 * total)}" in text


def with_lora(family: str, targets: list[str], r: int = 2):
    model = build(family)
    delta = LoraModel(model, modified_modules=targets, lora_r=r)
    delta.freeze_module()
    return model, delta


# ----- golden outputs ----------------------------------------------------------------------------------
def test_golden_bert_plain():
    model = build("bert")
    text = Visualization(model).to_text()
    check_golden("bert.txt", text)
    assert "0-1 (BertLayer)" in text and "query,key,value (Linear) weight:[32, 32] bias:[32] float32" in text
    assert "legend: ■ delta module  ■ trainable  ■ frozen  ■ tied" in text
    check_footer(text, model)


def test_golden_bert_lora_counts():
    model, delta = with_lora("bert", ["query", "value"])
    text = Visualization(model).to_text(show_counts=True)
    check_golden("bert_lora_counts.txt", text)
    assert "query,value (Linear) weight:[32, 32] bias:[32] float32 · 2×1.2K" in text  # 1,056 + 128 of LoRA
    assert "lora (LoraLayer) lora_A:[2, 32] lora_B:[32, 2] float32 · 128" in text
    check_footer(text, model)
    assert delta.num_delta_parameters() == 2 * 2 * (2 * 32 + 32 * 2)  # layers x sites x (A + B)


def test_golden_gpt2_plain_shows_tied_head_once():
    model = build("gpt2")
    text = Visualization(model).to_text()
    check_golden("gpt2.txt", text)
    assert "lm_head (Linear) weight → transformer.wte.weight" in text
    assert text.count("[99, 32]") == 1  # the tied matrix is described once
    check_footer(text, model)


def test_golden_gpt2_lora():
    model, _ = with_lora("gpt2", ["attn.c_attn", "mlp.c_proj"], r=4)
    text = Visualization(model).to_text()
    check_golden("gpt2_lora.txt", text)
    assert "0-1 (GPT2Block)" in text and "lora (LoraLayer) lora_A:[4, 32] lora_B:[96, 4] float32" in text
    check_footer(text, model)


def test_golden_t5_lora():
    model, _ = with_lora("t5", ["SelfAttention.q", "SelfAttention.v", "SelfAttention.o"])
    text = Visualization(model).to_text()
    check_golden("t5_lora.txt", text)
    assert "q,v,o (Linear) weight:[32, 32] float32" in text and "q,k,v,o (Linear)" in text
    check_footer(text, model)


def test_golden_t5_max_depth():
    model = build("t5")
    text = Visualization(model).to_text(max_depth=2, show_counts=True)
    check_golden("t5_depth2.txt", text)
    encoder_blocks = opendelta.stats.human_count(sum(p.numel() for p in model.encoder.block.parameters()))
    assert f"block (ModuleList) · {encoder_blocks} …" in text and "T5Block" not in text
    check_footer(text, model)


# ----- options ---------------------------------------------------------------------------------------
def test_compress_names():
    assert _compress_names(["0", "1", "2", "5", "7", "8"]) == "0-2,5,7-8"
    assert _compress_names(["3"]) == "3"
    assert _compress_names(["q", "k", "v"]) == "q,k,v"


def test_original_api_prints_to_terminal(capsys):
    tree = Visualization(build("bert")).structure_graph()
    out = capsys.readouterr().out
    assert "0-1 (BertLayer)" in out and "parameters: total" in out and "\x1b[" not in out
    assert tree.label.plain == "root (BertForSequenceClassification)"
    Visualization(build("toy")).structure_graph(rootname="toy", printTree=False)
    assert capsys.readouterr().out == ""


def test_expand_params_and_counts():
    model, _ = with_lora("bert", ["query", "value"])
    text = Visualization(model).to_text(expand_params=True, show_counts=True, legend=False, footer=False)
    assert "│   │   │   ├── weight [32, 32] float32 · 1,024" in text
    assert "lora_A [2, 32] float32 · 64" in text
    assert "legend" not in text and "parameters:" not in text


def test_only_trainable_shows_the_delta_path_only():
    model, delta = with_lora("bert", ["query", "value"])
    text = Visualization(model).to_text(only_trainable=True)
    assert "lora (LoraLayer)" in text and "query,value (Linear)" in text
    assert "key" not in text and "embeddings" not in text and "classifier" not in text
    assert "weight:[32, 32]" not in text  # frozen parameters of shown modules are left out too
    delta.freeze_module(exclude=["deltas", "classifier"])
    assert "classifier (Linear) weight:[2, 32] bias:[2]" in Visualization(model).to_text(only_trainable=True)


def test_keep_non_params_shows_dropout():
    model = build("bert")
    assert "Dropout" not in Visualization(model).to_text()
    assert "dropout (Dropout)" in Visualization(model).to_text(keep_non_params=True)


def test_common_structure_names():
    text = Visualization(build("bert")).to_text(common_structure=True)
    assert "query [attn.q],key [attn.k],value [attn.v] (Linear)" in text and "0-1 (BertLayer)" in text
    assert "self [attn.core] (BertSelfAttention)" in text and "intermediate (BertIntermediate)" in text
    text = Visualization(build("gpt2")).to_text(common_structure=True)
    assert "ln_1 [attn.layer_norm],ln_2 [ff.layer_norm] (LayerNorm)" in text
    assert "transformer [decoder] (GPT2Model)" in text and "c_attn [attn.qkv] (Conv1D)" in text


def test_bad_arguments(tmp_path):
    viz = Visualization(build("toy"))
    with pytest.raises(ValueError, match="max_depth"):
        viz.to_text(max_depth=-1)
    with pytest.raises(ValueError, match=r"\.svg"):
        viz.structure_graph(printTree=False, save=tmp_path / "graph.png")
    assert not (tmp_path / "graph.png").exists()
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Visualization("not a model")


def test_colours_tell_delta_trainable_and_frozen_apart():
    model, _ = with_lora("bert", ["query", "value"])
    tree = Visualization(model).structure_graph(printTree=False)
    labels = []

    def walk(t):
        labels.append(t.label)
        for c in t.children:
            walk(c)

    walk(tree)
    lora = next(lbl for lbl in labels if lbl.plain.startswith("lora (LoraLayer)"))
    key = next(lbl for lbl in labels if lbl.plain.startswith("key (Linear)"))

    def styles_of(label, word):
        return {str(s.style) for s in label.spans if word in label.plain[s.start : s.end]}

    assert STYLE_DELTA in styles_of(lora, "lora")
    assert styles_of(lora, "lora_A") == {STYLE_TRAINABLE}
    assert styles_of(key, "weight") == {STYLE_FROZEN}
    assert len({STYLE_DELTA, STYLE_TRAINABLE, STYLE_FROZEN}) == 3


def test_meta_device_model_renders_without_memory():
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
        LoraModel(model, modified_modules=["q_proj", "v_proj"], lora_r=8).freeze_module()
    text = Visualization(model).to_text()
    assert "0-5 (LlamaDecoderLayer)" in text and "lm_head (Linear) weight → model.embed_tokens.weight" in text
    assert "lora (LoraLayer) lora_A:[8, 64]" in text
    check_footer(text, model)


# ----- export ------------------------------------------------------------------------------------------
def test_save_svg_is_valid_xml_with_module_names(tmp_path):
    model, _ = with_lora("bert", ["query", "value"])
    path = tmp_path / "bert.svg"
    Visualization(model).structure_graph(printTree=False, save=path)
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = "".join(root.itertext()).replace("\xa0", " ")
    for name in ("BertLayer", "query,value", "LoraLayer", "classifier", "legend", "parameters: total"):
        assert name in text, name


def test_save_html_and_txt(tmp_path):
    model, _ = with_lora("t5", ["q", "v"])
    viz = Visualization(model)
    viz.structure_graph(printTree=False, save=tmp_path / "t5.html")
    html = (tmp_path / "t5.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>") and "T5Block" in html and "LoraLayer" in html
    viz.structure_graph(printTree=False, save=str(tmp_path / "t5.txt"))
    assert (tmp_path / "t5.txt").read_text(encoding="utf-8") == viz.to_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.structure_graph(printTree=False, save=tmp_path / "missing" / "t5.svg")


# ----- inspect / log ------------------------------------------------------------------------------------
def test_inspect_counts_memory_and_log(caplog):
    model, delta = with_lora("gpt2", ["attn.c_attn"])
    model.lm_head.to(torch.float16)  # tied: wte becomes float16 too
    total, trainable, delta_n = expected_counts(model)
    stats = opendelta.inspect(model, log=False)
    assert (stats.total, stats.trainable, stats.delta) == (total, trainable, delta_n)
    assert stats.memory_by_dtype == {"float16": 2 * 99 * 32, "float32": 4 * (total - 99 * 32)}
    assert stats["delta_ratio"] == pytest.approx(delta_n / total) and stats.frozen == total - trainable
    assert stats.accelerator is None and stats.peak_accelerator_memory is None  # CPU-only here
    with caplog.at_level("INFO", logger="opendelta"):
        logged = delta.log()
    assert logged.delta == delta.num_delta_parameters() and logged["trainable"] == trainable
    assert f"delta {delta_n:,}" in caplog.text and "float16" in caplog.text
    assert set(stats.to_dict()) >= {
        "total",
        "trainable",
        "delta",
        "trainable_ratio",
        "delta_ratio",
        "memory_by_dtype",
        "peak_accelerator_memory",
    }


def test_inspect_reports_peak_cuda_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 << 30)
    stats = opendelta.inspect(build("toy"), log=False)
    assert stats.accelerator == "cuda" and stats.peak_accelerator_memory == 3 << 30
    assert "peak cuda memory allocated 3.0 GiB" in stats.memory_line()


def test_inspect_rejects_non_models():
    with pytest.raises(TypeError, match="nn.Module"):
        opendelta.inspect(42)
