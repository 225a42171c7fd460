"""Concurrent forwards: one model with a delta, called from 4 threads at once (as an inference server does), gives
each call exactly the output a serial call gives. Per-call state (the prefix cache, the parallel adapter's input,
the soft prompt's sequence length) lives with the thread running the call, never in a shared closure."""

from __future__ import annotations

import threading

import pytest
import torch

from opendelta import AutoDeltaModel
from shared_tester import perturb
from tiny import build
from zoo_configs import ZOO

CONFIGS = {
    "lora": {"modified_modules": ["c_attn"], "lora_r": 2},
    "prefix": {"modified_modules": ["attn"], "prefix_token_num": 3},
    "soft_prompt": {"modified_modules": ["wte"], "soft_token_num": 3},
    **{t: ZOO[t]["gpt2"] for t in ZOO},
}
THREADS, ROUNDS = 4, 6


def _inputs(i: int) -> dict:
    """A different batch size and length per thread, so a call mixed up with another one shows."""
    g = torch.Generator().manual_seed(i)
    batch, seq = 1 + i % 3, 3 + 2 * i
    return {"input_ids": torch.randint(2, 99, (batch, seq), generator=g), "attention_mask": torch.ones(batch, seq)}


@pytest.mark.parametrize("delta_type", sorted(CONFIGS))
def test_concurrent_forwards_match_serial(delta_type):
    model = build("gpt2")
    delta = AutoDeltaModel.from_config({"delta_type": delta_type, **CONFIGS[delta_type]}, backbone_model=model)
    perturb(delta, scale=0.3)
    inputs = [_inputs(i) for i in range(THREADS)]
    with torch.no_grad():
        serial = [model(**x).logits for x in inputs]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], torch.Tensor] = {}
    barrier = threading.Barrier(THREADS)

    def work(i: int) -> None:
        try:
            barrier.wait()
            with torch.no_grad():
                for r in range(ROUNDS):
                    results[i, r] = model(**inputs[i]).logits
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{delta_type}: {errors[0]!r}"
    for (i, r), out in results.items():
        assert out.shape == serial[i].shape, f"{delta_type}: thread {i} round {r} got {tuple(out.shape)}"
        torch.testing.assert_close(out, serial[i], rtol=0, atol=1e-6)
    assert len(results) == THREADS * ROUNDS
