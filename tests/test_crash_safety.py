"""Crash-safe checkpoint writes: a save stopped at any step of the write protocol (each file written, each rename,
each cleanup), or killed with SIGKILL at a random time, leaves the folder holding exactly the old or the new
checkpoint, loadable and verified; the next load or save puts the leftovers right. Also: saving one format over
another leaves no stale file of the other, and links in a checkpoint folder stay links."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tiny
from opendelta import AutoDeltaModel, LoraModel
from opendelta import io as odio
from opendelta.errors import CheckpointError

LORA = {"modified_modules": ["attention.self.query", "attention.self.value"], "lora_r": 2}


class _Kill(BaseException):
    """Stands for the process dying: not an Exception, so no `except Exception` clean-up runs."""


def _delta(seed: float):
    model = tiny.build("bert")
    delta = LoraModel(model, **LORA)
    with torch.no_grad():
        for i, p in enumerate(delta.delta_parameters()):
            p.fill_(seed + i / 100)
    return delta


def _state(delta) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in delta.delta_state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _leftovers(ck: Path) -> list[str]:
    return sorted(p.name for p in ck.parent.iterdir() if p.name.startswith(f".{ck.name}."))


def _load_state(ck: Path) -> dict[str, torch.Tensor]:
    loaded = AutoDeltaModel.from_finetuned(ck, backbone_model=tiny.build("bert"))  # hash-checked
    return _state(loaded)


# Everything the save path does to the file system, one event each; the k-th event "kills" the process.
_EVENTS = [
    (odio, "_fault"),
    (odio, "save_weights"),
    (Path, "write_text"),
    (Path, "mkdir"),
    (os, "replace"),
    (os, "unlink"),
    (os, "rmdir"),
    (shutil, "copy2"),
    (os, "symlink"),
]


def _inject(monkeypatch, kill_at: int) -> list[str]:
    seen: list[str] = []
    for owner, name in _EVENTS:
        real = getattr(owner, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            seen.append(_name if _name != "_fault" else f"step:{args[0]}")
            if len(seen) == kill_at:
                raise _Kill(seen[-1])
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
    return seen


@pytest.mark.parametrize("recover_by", ["load", "save"])
def test_save_stopped_at_every_step_leaves_old_or_new(tmp_path, monkeypatch, recover_by):
    ck = tmp_path / "ckpt"
    old = _delta(0.1)
    old.save_finetuned(ck)
    (ck / "notes.txt").write_text("kept across saves")  # a foreign file: copied into every new save
    old_state = _state(old)
    new = _delta(0.7)
    new_state = _state(new)
    outcomes = set()
    steps = []
    k = 0
    while True:
        k += 1
        with monkeypatch.context() as m:
            seen = _inject(m, k)
            try:
                new.save_finetuned(ck)
                finished = True
            except _Kill:
                finished = False
        if finished:
            break
        steps.append(seen[-1])
        if recover_by == "load":
            got = _load_state(ck)
            assert _same(got, old_state) or _same(got, new_state), f"killed at {seen[-1]} (event {k})"
            outcomes.add("new" if _same(got, new_state) else "old")
            assert _leftovers(ck) == [], f"killed at {seen[-1]}: the load left {_leftovers(ck)}"
        else:
            old.save_finetuned(ck)  # the next save completes the protocol and leaves nothing behind
            assert _leftovers(ck) == []
            assert _same(_load_state(ck), old_state)
        assert (ck / "notes.txt").read_text() == "kept across saves"
        # put the old checkpoint back for the next round
        old.save_finetuned(ck)
        assert _same(_load_state(ck), old_state) and _leftovers(ck) == []
    assert k > 10  # the protocol really was stopped at many points
    for step in ("step:mkdir", "step:commit", "step:move-old", "step:move-new", "step:cleanup"):
        assert step in steps
    assert {"save_weights", "write_text", "replace", "unlink", "copy2"} <= set(steps)
    if recover_by == "load":
        assert outcomes == {"old", "new"}  # before the commit point the old one, after it the new one


def test_old_protocol_leftovers_are_recovered(tmp_path):
    """The state the issue found: the old copy in `.ckpt.<hex>.old`, the new one unfinished in `.saving`."""
    ck = tmp_path / "ckpt"
    delta = _delta(0.3)
    delta.save_finetuned(ck)
    state = _state(delta)
    os.replace(ck, tmp_path / ".ckpt.1a2b3c4d.old")
    (tmp_path / ".ckpt.x_9k2pq1.saving").mkdir()
    (tmp_path / ".ckpt.x_9k2pq1.saving" / "config.json").write_text("{")
    assert _same(_load_state(ck), state)
    assert _leftovers(ck) == []


def test_leftovers_of_other_folders_are_left_alone(tmp_path):
    ck = tmp_path / "ckpt"
    _delta(0.3).save_finetuned(ck)
    other = tmp_path / ".ckpt2.abcdef.saving"  # belongs to the target "ckpt2", not "ckpt"
    other.mkdir()
    _delta(0.4).save_finetuned(ck)
    _load_state(ck)
    assert other.exists()


# A helper process imports everything once, then per trial forks a child that saves in a loop (alternating all-0
# and all-1 weights) and SIGKILLs it at a random time; the test checks the folder after each kill.
_KILLER = textwrap.dedent(
    """
    import os, random, signal, sys, time, torch
    sys.path.insert(0, {tests!r})
    import tiny
    from opendelta import LoraModel
    torch.set_num_threads(1)
    delta = LoraModel(tiny.build("bert"), **{lora!r})
    rng = random.Random(0)
    for line in sys.stdin:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            i = 0
            while True:
                with torch.no_grad():
                    for p in delta.delta_parameters():
                        p.fill_(i % 2)
                delta.save_finetuned({ck!r})
                if i == 0:
                    os.write(w, b"x")
                i += 1
        os.close(w)
        os.read(r, 1)  # the first save is done
        os.close(r)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("killed", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_at_random_times(tmp_path):
    ck = tmp_path / "ckpt"
    script = _KILLER.format(tests=str(Path(__file__).parent), lora=LORA, ck=str(ck))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    killer = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        for trial in range(4):
            killer.stdin.write("go\n")
            killer.stdin.flush()
            assert killer.stdout.readline().strip() == "killed"
            state = _load_state(ck)  # verified; recovers the folder if the kill hit the swap
            values = {float(v.flatten()[0]) for v in state.values()}
            assert values in ({0.0}, {1.0}), f"trial {trial}: a mix of two saves {values}"
            assert _leftovers(ck) == []
    finally:
        killer.stdin.close()
        killer.wait(timeout=60)


# ----- formats over formats (problem 2) ------------------------------------------------------------------
def test_peft_over_ours_removes_our_files(tmp_path):
    ck = tmp_path / "ckpt"
    first = _delta(0.2)
    first.save_finetuned(ck)
    second = _delta(0.6)
    second.save_finetuned(ck, format="peft")
    names = {p.name for p in ck.iterdir()}
    assert not names & {"config.json", "delta_model.safetensors", "fingerprint.json"}
    assert _same(_load_state(ck), _state(second))  # the PEFT adapter, not the stale delta


def test_ours_over_peft_removes_the_adapter(tmp_path):
    ck = tmp_path / "ckpt"
    _delta(0.2).save_finetuned(ck, format="peft")
    (ck / "tokenizer.json").write_text("{}")  # foreign files stay
    second = _delta(0.6)
    second.save_finetuned(ck)
    names = {p.name for p in ck.iterdir()}
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    assert "tokenizer.json" in names
    assert _same(_load_state(ck), _state(second))


# ----- links in a checkpoint folder (problem 8) ----------------------------------------------------------
def test_links_stay_links_and_are_not_pushed(tmp_path):
    from opendelta.publishing import links_outside

    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    ck = tmp_path / "ckpt"
    delta = _delta(0.2)
    delta.save_finetuned(ck)
    (ck / "key.txt").symlink_to(secret)
    (ck / "loop").symlink_to(ck / "loop")  # a link to itself
    (ck / "sub").mkdir()
    (ck / "sub" / "inner").symlink_to(ck / "sub")  # a loop through a folder
    delta.save_finetuned(ck)
    assert (ck / "key.txt").is_symlink() and os.readlink(ck / "key.txt") == str(secret)
    assert (ck / "loop").is_symlink() and (ck / "sub" / "inner").is_symlink()
    assert links_outside(ck) == ["key.txt", "loop"]
    assert _same(_load_state(ck), _state(delta))


def test_save_below_a_file_is_a_checkpoint_error(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        _delta(0.1).save_finetuned(f / "ckpt")
