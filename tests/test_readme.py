"""The README quickstart runs as written (on a tiny T5 instead of t5-base)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tiny import build, inputs_for, loss_of, run

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_code() -> str:
    text = README.read_text()
    block = text.split("<!-- quickstart", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


class _TinyT5:
    @staticmethod
    def from_pretrained(name):
        assert name == "t5-base"
        return build("t5")


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = quickstart_code().replace("from transformers import T5ForConditionalGeneration\n", "")

    def train(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            loss_of(run(model, "t5", inputs_for("t5"))).backward()
            opt.step()

    ns = {"T5ForConditionalGeneration": _TinyT5, "train": train}
    exec(compile(code, str(README), "exec"), ns)
    x = inputs_for("t5")
    with torch.no_grad():
        assert torch.equal(run(ns["t5"], "t5", x), run(ns["fresh_t5"], "t5", x))
    assert (tmp_path / "ckpt" / "config.json").is_file()
    assert ns["delta2"].config.lora_r == 4
