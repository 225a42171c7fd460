"""Files: atomic writes of text and whole folders, JSON objects, safetensors and legacy `.bin` tensors.

Everything that writes goes through `atomic_write_text` or `write_folder`, so a reader (or a crash) sees
either the old or the new content, never a partial one. Files and folders get the permissions a plain
`open()` / `mkdir()` would give under the current umask (temporary files start private).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "delta_model.safetensors"
FINGERPRINT_NAME = "fingerprint.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
#: the delta config inside a transformers model folder (`save_pretrained` of a backbone carrying a delta)
EMBEDDED_CONFIG_NAME = "delta_config.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, directory: bool) -> None:
    """Give a file or folder made private by mkstemp / mkdtemp the mode open() / mkdir() would give."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _publish_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder(
    target: str | os.PathLike, write: Callable[[Path], None], *, keep: Callable[[Path], bool] = lambda entry: True
) -> Path:
    """Create or replace the folder `target` atomically.

    `write(tmp_dir)` fills a temporary folder next to the target; only when it returns is the folder
    swapped in. Entries of an existing target for which `keep(entry)` is true and that `write` did not
    produce (a README, a tokenizer) are carried over. A failure at any point leaves the old folder as it was.
    """
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"Cannot save a checkpoint to {str(target)!r}: it is a file, not a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".saving", dir=target.parent))
    _publish_mode(tmp, directory=True)
    try:
        write(tmp)
        if target.exists():
            for entry in target.iterdir():
                if not (tmp / entry.name).exists() and keep(entry):
                    if entry.is_dir():
                        shutil.copytree(entry, tmp / entry.name)
                    else:
                        shutil.copy2(entry, tmp / entry.name)
            old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else (bad JSON, a list) is a CheckpointError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object, found {type(data).__name__}.")
    return data


def save_weights(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
    _publish_mode(path, directory=False)  # safetensors creates the file private


def load_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder: safetensors, or a legacy `.bin` read without running pickles."""
    directory = Path(directory)
    st = directory / WEIGHTS_NAME
    if st.is_file():
        return load_safetensors(st)
    legacy = directory / LEGACY_WEIGHTS_NAME
    if legacy.is_file():
        return load_legacy_bin(legacy)
    raise CheckpointError(
        f"No weights in {str(directory)!r}: expected {WEIGHTS_NAME} (or a legacy {LEGACY_WEIGHTS_NAME})."
    )


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"Cannot read {str(path)!r}: {exc}.") from None


def load_legacy_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"Refusing to load {str(path)!r}: it is not a plain tensor file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Only tensors are read; pickled code is never "
            f"executed."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a name -> tensor mapping.")
    return state


def read_fingerprint(directory: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(directory) / FINGERPRINT_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
