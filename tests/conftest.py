"""pytest setup only: environment, thread count, fixtures. Tiny backbones and helpers are in tests/tiny.py."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Tiny models gain nothing from intra-op threads, and on a busy CPU the thread pool makes every op far slower
# (measured: the six zoo types on GPT-2 take 1.9 s with 1 thread, 29 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture
def tmp_ckpt(tmp_path):
    return tmp_path / "ckpt"
