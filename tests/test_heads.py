"""Checkpoints carry the task head their backbone needs: a 3-class `opendelta train` run, its model card's snippet
run as written, `opendelta merge` / `show --delta` on its output, and the error on a backbone with another head."""

from __future__ import annotations

import csv
import re

import pytest
import torch
import transformers

from opendelta import AutoDeltaModel, CheckpointError
from opendelta.app import cli, train_cli
from tiny import bert_config

WORDS = {"pos": ["good", "great"], "neg": ["bad", "awful"], "mid": ["okay", "fine"]}
FILLER = ["the", "movie", "was", "plot"]


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    """A tiny BERT saved with the default 2-label head, and a 3-class lora run of the train app on it."""
    root = tmp_path_factory.mktemp("heads")
    backbone = root / "tiny-bert"
    backbone.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sum(WORDS.values(), []), *FILLER]
    (backbone / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(backbone / "vocab.txt")).save_pretrained(backbone)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(bert_config(vocab_size=len(vocab))).save_pretrained(backbone)
    data = root / "three.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(60):
            label = list(WORDS)[i % 3]
            writer.writerow([f"the movie was {WORDS[label][i % 2]}", label])
    out = root / "run"
    args = ["--backbone", str(backbone), "--data", str(data), "--epochs", "1", "--batch-size", "8"]
    args += ["--text-column", "text", "--label-column", "label"]
    args += ["--max-length", "12", "--output", str(out), "--no-progress", "--lr", "1e-2"]
    assert train_cli.main(args) == 0
    return backbone, out


def test_model_card_snippet_runs_as_written_for_three_labels(three_class_run):
    backbone, out = three_class_run
    card = (out / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert "num_labels=3" in snippet
    scope: dict = {}
    exec(snippet.replace("path/to/this/folder", str(out)), scope)  # noqa: S102 - the card's own code
    model = scope["backbone"]
    assert model.config.num_labels == 3 and set(model.config.id2label.values()) == {"mid", "neg", "pos"}
    assert "base_model:" not in card.split("---")[1]  # a local folder is no Hub base model


def test_loading_onto_a_two_label_backbone_says_which_arguments_to_pass(three_class_run):
    backbone, out = three_class_run
    two = transformers.BertForSequenceClassification.from_pretrained(backbone)
    with pytest.raises(CheckpointError, match=r"num_labels=3.*id2label=\{0: "):
        AutoDeltaModel.from_finetuned(out, backbone_model=two)


def test_cli_merge_and_show_use_the_checkpoints_backbone_class(three_class_run, tmp_path, capsys):
    backbone, out = three_class_run
    merged = tmp_path / "merged"
    assert cli.main(["merge", str(out), "--backbone", str(backbone), "--out", str(merged)]) == 0
    plain = transformers.BertForSequenceClassification.from_pretrained(merged).eval()
    assert plain.config.num_labels == 3
    fresh = transformers.BertForSequenceClassification.from_pretrained(
        backbone, id2label=plain.config.id2label, label2id=plain.config.label2id, ignore_mismatched_sizes=True
    )
    AutoDeltaModel.from_finetuned(out, backbone_model=fresh)
    x = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(plain(**x).logits, fresh.eval()(**x).logits, rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert cli.main(["show", str(backbone), "--delta", str(out), "--only-trainable"]) == 0
    shown = capsys.readouterr().out
    assert "BertForSequenceClassification" in shown and "classifier" in shown and "[3, 32]" in shown
