"""The `opendelta` command on tiny models saved to temp folders: every subcommand runs as a `python -m opendelta`
subprocess; further error cases call `cli.main([...])` in process to keep the suite fast.

Exit statuses: 0 success, 1 failure, 2 bad command line; a failure is one `opendelta <cmd>: error:` line on
stderr and no traceback unless --debug.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch
from safetensors import safe_open

from opendelta import AutoDeltaModel, LoraModel
from opendelta.app import cli
from opendelta.registry import get_delta_class, registered_delta_types
from tiny import build, inputs_for, run

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "COLUMNS": "200"}


def opendelta(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opendelta", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(autouse=True)
def cli_logging():
    """main() configures the package logger for a terminal; put it back for the other tests."""
    from opendelta._logging import logger

    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def inprocess(capsys, *args: str) -> subprocess.CompletedProcess:
    """`cli.main(args)` in this process (no interpreter start-up), reported like a subprocess."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, command: str, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"opendelta {command}: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny BERT, a trained-looking LoRA checkpoint for it (classifier unfrozen), and its outputs."""
    root = tmp_path_factory.mktemp("cli")
    model = build("bert")
    model.save_pretrained(root / "bert")
    delta = LoraModel(model, modified_modules=["query", "value"], lora_r=2)
    with torch.no_grad():
        for p in delta.delta_parameters():
            p.normal_(0, 0.2)
        model.classifier.bias.add_(0.5)
    delta.freeze_module(exclude=["deltas", "classifier"])
    delta.save_finetuned(root / "ckpt")
    with torch.no_grad():
        expected = run(model, "bert", inputs_for("bert"))
    ia3_model = build("bert")
    ia3 = AutoDeltaModel.from_config({"delta_type": "ia3"}, backbone_model=ia3_model)
    with torch.no_grad():
        for p in ia3.delta_parameters():
            p.add_(torch.randn_like(p))
        expected_ia3 = run(ia3_model, "bert", inputs_for("bert"))
    ia3.save_finetuned(root / "ia3")
    (root / "gpt2_lora.json").write_text(
        json.dumps({"delta_type": "lora", "modified_modules": ["c_attn"], "lora_r": 4})
    )
    return {
        "root": root,
        "bert": root / "bert",
        "ckpt": root / "ckpt",
        "expected": expected,
        "ia3": root / "ia3",
        "expected_ia3": expected_ia3,
        "delta_state": delta.delta_state_dict(),
        "model": model,
    }


# ----- help and usage ----------------------------------------------------------------------------------
def test_help_lists_the_commands(capsys):
    proc = opendelta("--help")
    assert proc.returncode == 0
    for word in ("show", "inspect", "merge", "-v, --verbose", "-q, --quiet", "--debug", "Exit status"):
        assert word in proc.stdout
    assert inprocess(capsys, "merge", "--help").stdout.count("--backbone") >= 2


def test_usage_errors_exit_2(capsys):
    assert inprocess(capsys).returncode == 2
    proc = inprocess(capsys, "show", "--no-such-flag")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


# ----- show ------------------------------------------------------------------------------------------------
def test_show_model_folder_prints_folded_tree(files):
    proc = opendelta("show", files["bert"], "--counts")
    assert proc.returncode == 0, proc.stderr
    assert "bert (BertForSequenceClassification)" in proc.stdout
    assert "0-1 (BertLayer) · 2×" in proc.stdout and "query,key,value (Linear)" in proc.stdout
    total = sum(p.numel() for n, p in files["model"].named_parameters() if ".lora." not in n)
    assert f"parameters: total {total:,} · trainable {total:,} (100%) · delta 0 (0%)" in proc.stdout


def test_show_config_with_delta_saves_svg(files, tmp_path):
    out = tmp_path / "gpt2.svg"
    proc = opendelta(
        "show", "--config", "gpt2", "--size", "tiny", "--delta", files["root"] / "gpt2_lora.json", "--save", out
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    root = ET.parse(out).getroot()
    text = "".join(root.itertext()).replace("\xa0", " ")
    assert "gpt2-tiny (GPT2LMHeadModel)" in text and "lora (LoraLayer)" in text and "0-1 (GPT2Block)" in text
    # LoRA r=4 on c_attn (32 -> 96) in 2 blocks: trainable = delta = 2 * 4 * (32 + 96)
    assert "trainable 1,024" in text and "delta 1,024" in text


def test_show_delta_checkpoint_folder_and_only_trainable(files, capsys):
    proc = inprocess(capsys, "show", files["bert"], "--delta", files["ckpt"], "--only-trainable")
    assert proc.returncode == 0, proc.stderr
    assert "lora (LoraLayer)" in proc.stdout and "classifier (Linear)" in proc.stdout
    assert "key" not in proc.stdout and "embeddings" not in proc.stdout


def test_show_errors(files, tmp_path, capsys):
    assert_one_line_error(opendelta("show", files["root"] / "missing"), 2, "show", "does not exist")
    assert_one_line_error(inprocess(capsys, "show", files["ckpt"]), 1, "show", "is a delta checkpoint", "--delta")
    assert_one_line_error(inprocess(capsys, "show", files["root"]), 1, "show", "not a transformers model folder")
    assert_one_line_error(inprocess(capsys, "show", files["bert"], "--config", "bert"), 2, "show", "not both")
    png = tmp_path / "x.png"
    assert_one_line_error(inprocess(capsys, "show", "--config", "bert", "--save", png), 2, "show", ".svg")
    assert not png.exists()


def test_verbosity_flags_before_or_after_the_command(tmp_path, capsys):
    config = tmp_path / "lora.json"
    config.write_text(json.dumps({"delta_type": "lora", "modified_modules": ["query"]}))
    loud = inprocess(capsys, "-v", "show", "--config", "bert", "--delta", config, "--max-depth", "1")
    assert loud.returncode == 0 and "opendelta: lora attached to 2 module(s)" in loud.stderr
    assert "lora attached" in inprocess(capsys, "show", "--config", "bert", "--delta", config, "-v").stderr
    quiet = inprocess(capsys, "show", "--config", "bert", "--delta", config, "-q")
    assert quiet.returncode == 0 and quiet.stderr == "" and "bert-tiny (BertForSequenceClassification)" in quiet.stdout


# ----- inspect ----------------------------------------------------------------------------------------------
def test_inspect_prints_config_tensors_and_hash(files):
    proc = opendelta("inspect", files["ckpt"])
    assert proc.returncode == 0, proc.stderr
    config = json.loads((files["ckpt"] / "config.json").read_text())
    out = proc.stdout
    assert "delta type     lora" in out and "BertForSequenceClassification" in out
    assert config["backbone_hash"] in out and "lora_r = 2" in out
    state = files["delta_state"]
    n = sum(t.numel() for t in state.values())
    assert f"{len(state)} tensors, {n:,} parameters" in out
    assert "bert.encoder.layer.1.attention.self.value.lora.lora_B  [32, 2]" in out


def test_inspect_json_matches_the_saved_tensors(files, capsys):
    proc = inprocess(capsys, "inspect", files["ckpt"], "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    state = files["delta_state"]
    assert {t["name"]: (tuple(t["shape"]), t["dtype"], t["nbytes"]) for t in info["tensors"]} == {
        k: (tuple(v.shape), "float32", 4 * v.numel()) for k, v in state.items()
    }
    assert info["format"] == "opendelta" and info["delta_type"] == "lora"
    assert info["fingerprint_tensors"] == len(list(files["model"].parameters()))


def test_inspect_errors(files, tmp_path, capsys):
    assert_one_line_error(inprocess(capsys, "inspect", tmp_path / "nothing"), 2, "inspect", "does not exist")
    assert_one_line_error(inprocess(capsys, "inspect", files["bert"]), 1, "inspect", "No delta checkpoint")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((files["ckpt"] / "config.json").read_text())
    (broken / "delta_model.safetensors").write_bytes(b"not a safetensors file")
    assert_one_line_error(inprocess(capsys, "inspect", broken), 1, "inspect", "Cannot read")
    debug = opendelta("inspect", broken, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# ----- merge -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_merge_writes_a_plain_model_with_the_same_outputs(files, tmp_path, kind):
    from transformers import AutoModelForSequenceClassification

    ckpt, expected = (files["ckpt"], files["expected"]) if kind == "lora" else (files["ia3"], files["expected_ia3"])
    out = tmp_path / "merged"
    proc = opendelta("merge", ckpt, "--backbone", files["bert"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"merged {kind} (" in proc.stdout
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(kind in k for k in keys)
    config = json.loads((out / "config.json").read_text())
    assert "delta_type" not in config and config["architectures"] == ["BertForSequenceClassification"]
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert not any(kind in n for n, _ in merged.named_modules())
    with torch.no_grad():
        got = run(merged, "bert", inputs_for("bert"))
        plain = run(build("bert"), "bert", inputs_for("bert"))
    assert (plain - expected).abs().max() > 1e-4  # the delta changes the outputs (10x the tolerance below)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_merge_refuses_non_mergeable_and_occupied_out(files, tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert_one_line_error(
        inprocess(capsys, "merge", files["ckpt"], "--backbone", files["bert"], "--out", occupied),
        1,
        "merge",
        "--overwrite",
    )
    assert (occupied / "keep.txt").read_text() == "mine"
    stuck = [t for t in registered_delta_types() if not get_delta_class(t).mergeable]
    if not stuck:
        pytest.skip("every registered delta type is mergeable")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"delta_type": stuck[0], "format_version": 1}))
    assert_one_line_error(
        inprocess(capsys, "merge", other, "--backbone", files["bert"], "--out", tmp_path / "o"),
        1,
        "merge",
        "cannot be merged",
        "lora",
    )
    assert not (tmp_path / "o").exists()


def test_merge_missing_arguments_are_usage_errors(files, tmp_path, capsys):
    assert inprocess(capsys, "merge", files["ckpt"], "--out", tmp_path / "x").returncode == 2  # no --backbone
    assert_one_line_error(
        inprocess(capsys, "merge", files["ckpt"], "--backbone", tmp_path / "none", "--out", tmp_path / "x"),
        2,
        "merge",
        "does not exist",
    )


# ----- extending ----------------------------------------------------------------------------------------------
def test_a_subcommand_is_one_function_and_one_registration(monkeypatch, capsys):
    from opendelta.app import command

    monkeypatch.setattr(command, "_COMMANDS", dict(command._COMMANDS))

    def hello(args):
        print(f"hello {args.name}")
        if args.name == "fail":
            raise cli.CliError("it failed")

    cli.register_command("hello", hello, help="say hello", arguments=lambda p: p.add_argument("name"))
    assert cli.main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    assert cli.main(["hello", "fail"]) == 1
    assert capsys.readouterr().err == "opendelta hello: error: it failed\n"
    with pytest.raises(ValueError, match="already registered"):
        cli.register_command("hello", hello, help="again")


def test_merge_hash_mismatch_names_the_command_flag(files, tmp_path, capsys):
    other = tmp_path / "other-bert"
    build("bert", seed=1).save_pretrained(other)
    proc = inprocess(capsys, "merge", files["ckpt"], "--backbone", other, "--out", tmp_path / "o")
    assert_one_line_error(proc, 1, "merge", "--no-check-hash", "does not match")
    assert "check_hash=False" not in proc.stderr and not (tmp_path / "o").exists()
    ok = inprocess(capsys, "merge", files["ckpt"], "--backbone", other, "--out", tmp_path / "o", "--no-check-hash")
    assert ok.returncode == 0, ok.stderr
