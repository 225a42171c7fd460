"""Files: atomic writes of text and whole folders, JSON objects, safetensors and legacy `.bin` tensors.

Everything that writes goes through `atomic_write_text` or `write_folder`, so a reader (or a crash) sees
either the old or the new content, never a partial one. Files and folders get the permissions a plain
`open()` / `mkdir()` would give under the current umask (temporary files start private).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ._logging import logger
from .errors import CheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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
    except Exception:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder(
    target: str | os.PathLike, write: Callable[[Path], None], *, keep: Callable[[Path], bool] = lambda entry: True
) -> Path:
    """Create or replace the folder `target` so that it always holds the old or the new content, even if the
    process is killed at any point.

    `write(tmp_dir)` fills a temporary folder next to the target; entries of an existing target for which
    `keep(entry)` is true and that `write` did not produce (a README, a tokenizer) are carried over (symbolic
    links as links, never as the content they point to). The protocol, with `<id>` one random id per save,
    all siblings of the target in its parent folder, and the parent locked (`flock`) for the whole of it:

    1. recover the leftovers of an earlier save that was killed (see `recover_folder`);
    2. fill `.<name>.<id>.saving` (an unfinished save: deleted by recovery);
    3. rename it to `.<name>.<id>.new`: the commit point (from here on, recovery completes the swap);
    4. rename the target (if any) to `.<name>.<id>.old`;
    5. rename `.<name>.<id>.new` to the target;
    6. delete `.<name>.<id>.old`.

    A failure (an exception) at any step undoes what was done; a kill leaves siblings that the next save or
    load of the target puts right. Raises CheckpointError when the target is a file or cannot be created.
    """
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"Cannot save a checkpoint to {str(target)!r}: it is a file, not a folder.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CheckpointError(
            f"Cannot save a checkpoint to {str(target)!r}: a part of its parent path is a file, not a folder. "
            f"Choose a path under an existing folder."
        ) from None
    with _locked(target.parent):
        _recover(target)
        run = uuid.uuid4().hex[:12]
        tmp, new, old = (_sibling(target, run, kind) for kind in ("saving", "new", "old"))
        try:
            _fault("mkdir")
            tmp.mkdir()
            _publish_mode(tmp, directory=True)
            write(tmp)
            if target.exists():
                for entry in target.iterdir():
                    if not os.path.lexists(tmp / entry.name) and keep(entry):
                        _copy_entry(entry, tmp / entry.name)
            _fault("commit")
            os.replace(tmp, new)
        except Exception:
            _remove_tree(tmp)
            raise
        try:
            if target.exists():
                _fault("move-old")
                os.replace(target, old)
            _fault("move-new")
            os.replace(new, target)
        except Exception:  # put the old folder back and drop the new one
            if not target.exists() and old.exists():
                os.replace(old, target)
            _remove_tree(new)
            raise
        _fault("cleanup")
        _remove_tree(old)
    return target


_SIBLING_KINDS = ("saving", "new", "old")


def _sibling(target: Path, run: str, kind: str) -> Path:
    return target.parent / f".{target.name}.{run}.{kind}"


def _siblings(target: Path) -> list[tuple[str, str, Path]]:
    """(run id, kind, path) of the save leftovers of `target`, oldest first."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.([A-Za-z0-9_]+)\.({'|'.join(_SIBLING_KINDS)})")
    found = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m:
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            found.append((mtime, m.group(1), m.group(2), Path(entry.path)))
    return [(run, kind, path) for _, run, kind, path in sorted(found)]


def recover_folder(target: str | os.PathLike) -> bool:
    """Put right what a killed `write_folder` of `target` left behind; True if there was anything to do.

    An unfinished `.saving` folder is deleted. A committed `.new` folder is swapped in (the target, if any,
    moved aside first). A leftover `.old` folder is deleted when the target exists, else it is the last
    complete copy and becomes the target again. Called by every save and by loading a local folder; a
    parent folder that cannot be written is left alone (the load then reports what it finds).
    """
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    if not _siblings(target):
        return False
    try:
        with _locked(target.parent):
            _recover(target)
    except OSError as exc:
        logger.warning("could not clean up an interrupted save of %s: %s", target, exc)
    return True


def _recover(target: Path) -> None:
    leftovers = _siblings(target)
    if leftovers:
        logger.warning("completing an interrupted save of %s (%d leftover folder(s))", target, len(leftovers))
    for _, kind, path in leftovers:
        if kind == "saving":
            _remove_tree(path)
    olds = [(run, path) for run, kind, path in leftovers if kind == "old"]
    for run, new in [(run, path) for run, kind, path in leftovers if kind == "new"]:
        if os.path.lexists(target):
            if target.is_dir() and not target.is_symlink():
                aside = _sibling(target, run, "old")
                os.replace(target, aside)
                olds.append((run, aside))
            else:
                _remove_tree(new)
                continue
        os.replace(new, target)
    if not os.path.lexists(target) and olds:  # no committed copy: the newest old one is the last complete one
        run, path = olds.pop()
        os.replace(path, target)
    for _, path in olds:
        _remove_tree(path)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _copy_entry(src: Path, dst: Path) -> None:
    """Copy a kept entry: links stay links (their target is never read), folders with their links."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


class _locked:
    """An exclusive lock on a folder (flock on its descriptor) for the saves and recoveries in it; released
    by the kernel if the process dies. Where flock does not exist (Windows) it does nothing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> _locked:
        if fcntl is not None:
            self.fd = os.open(self.folder, os.O_RDONLY)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except OSError:
                os.close(self.fd)
                self.fd = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _fault(step: str) -> None:
    """A named step of `write_folder` (the fault-injection tests stop the protocol here)."""


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else (bad JSON, a list) is a CheckpointError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {exc}. Save the checkpoint again.") from None
    except RecursionError:
        raise CheckpointError(f"{str(path)!r} is nested too deeply to be a checkpoint file; save it again.") from None
    except OSError as exc:
        raise CheckpointError(f"Cannot read {str(path)!r}: {exc}.") from None
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
    found = load_weight_pair(directory / WEIGHTS_NAME, directory / LEGACY_WEIGHTS_NAME)
    if found is None:
        raise CheckpointError(
            f"No weights in {str(directory)!r}: expected {WEIGHTS_NAME} (or a legacy {LEGACY_WEIGHTS_NAME})."
        )
    return found


def load_weight_pair(st: Path, legacy: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of `st` (safetensors) or else `legacy` (.bin); None when neither exists. When both exist they
    must hold the same tensors: otherwise which one is current cannot be told, and a CheckpointError names both."""
    if not st.is_file():
        return load_legacy_bin(legacy) if legacy.is_file() else None
    state = load_safetensors(st)
    if legacy.is_file():
        other = load_legacy_bin(legacy)
        differ = sorted(set(state) ^ set(other)) or [
            k
            for k in state
            if state[k].shape != other[k].shape or not torch.equal(state[k], other[k].to(state[k].dtype))
        ]
        if differ:
            raise CheckpointError(
                f"{str(st.parent)!r} holds both {st.name} and {legacy.name}, and they differ (e.g. {differ[0]!r}): "
                f"one of them is stale and it cannot be told which. Delete the one you do not want and load again."
            )
    return state


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"Cannot read {str(path)!r}: {exc}. The file is damaged or not a safetensors file; save the checkpoint "
            f"again (or download it again)."
        ) from None


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
        raise CheckpointError(f"{str(path)!r} does not hold a name -> tensor mapping; save the checkpoint again.")
    return state


def read_fingerprint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint record of a checkpoint folder, or None when it is missing or unreadable.

    The root digest that is checked lives in config.json; this file only adds per-tensor details for the
    error message, so a damaged one never blocks loading: malformed parts are dropped.
    """
    path = Path(directory) / FINGERPRINT_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # bad JSON, invalid UTF-8, absurd nesting
        logger.warning("%s is not readable JSON; the hash check runs without per-tensor details", path)
        return None
    if not isinstance(data, dict):
        return None
    tensors = data.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _DIGEST.fullmatch(v) for k, v in tensors.items()
    ):
        tensors = {}
    root, algorithm = data.get("root"), data.get("algorithm")
    return {
        "root": root if isinstance(root, str) else None,
        "algorithm": algorithm if isinstance(algorithm, str) else None,
        "tensors": tensors,
    }


_DIGEST = re.compile(r"[a-z0-9_]+:[0-9x]*:[0-9a-f]+")
