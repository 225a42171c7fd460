"""The Hugging Face Hub: resolving what a user passes to `from_finetuned` (a folder or `Org/name`) to a folder.

`resolve_checkpoint` turns what a user passes to `from_finetuned` into a local folder: an existing folder
is used as it is; anything else must be a Hub repo id (`Org/name`) and is fetched with
`huggingface_hub.snapshot_download` (only the checkpoint files), through the standard cache
(`HF_HUB_CACHE` / `cache_dir=`), honouring `HF_HUB_OFFLINE=1` and `local_files_only=True`. Ids, revisions
and paths are validated before any cache or network access.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._logging import logger
from .errors import CheckpointError
from .io import recover_folder

#: Names `from_finetuned` reads as Hub options; every other keyword overrides a config key.
HUB_OPTION_NAMES = ("revision", "cache_dir", "force_download", "local_files_only", "token")

_NAME_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")


@dataclass(frozen=True)
class HubOptions:
    """How to fetch a checkpoint from the Hub (ignored for a local folder)."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    force_download: bool = False
    local_files_only: bool = False
    token: str | bool | None = None

    def __post_init__(self) -> None:
        if self.revision is not None:
            validate_revision(self.revision)
        for flag in ("force_download", "local_files_only"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"`{flag}` must be True or False, got {getattr(self, flag)!r}.")

    def given(self) -> list[str]:
        """Names of the options set to something other than their default."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]


def split_hub_options(kwargs: Mapping[str, Any]) -> tuple[HubOptions, dict[str, Any]]:
    """Separate the Hub options from the config overrides in `from_finetuned(**kwargs)`."""
    hub = {k: v for k, v in kwargs.items() if k in HUB_OPTION_NAMES}
    return HubOptions(**hub), {k: v for k, v in kwargs.items() if k not in HUB_OPTION_NAMES}


# ----- validation -----------------------------------------------------------------------------
def validate_repo_id(repo_id: str, *, namespace_required: bool = True) -> str:
    """Return `repo_id` if it is a well-formed Hub id (`Org/name`), else raise CheckpointError.

    Names hold letters, digits, '-', '_' and '.', do not start or end with '-' or '.', and contain no
    '--' or '..'; so an id can never point outside its cache folder.
    """
    if not isinstance(repo_id, str):
        raise CheckpointError(f"A Hub repo id must be a string, got {type(repo_id).__name__}.")
    parts = repo_id.split("/")
    problem = None
    if ".." in parts or repo_id.startswith(("/", "~")) or "\\" in repo_id:
        problem = "it looks like a path that leaves its folder (path traversal is refused)"
    elif len(parts) > 2:
        problem = "it has more than one '/'"
    elif len(parts) < 2 and namespace_required:
        problem = "it has no organisation or user part"
    elif not all(_NAME_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        problem = "each part may only hold letters, digits, '-', '_' and '.', not at its ends, without '--' or '..'"
    elif parts[-1].endswith((".git", ".ipynb")):
        problem = "a repo name may not end with '.git' or '.ipynb' (write the id without the suffix)"
    if problem:
        raise CheckpointError(
            f"{repo_id!r} is not an existing folder, and not a valid Hub repo id: {problem}. Pass the path of "
            f"a checkpoint folder that exists, or a repo id such as 'DeltaHub/lora_t5-base_sst2'."
        )
    return repo_id


def validate_revision(revision: str) -> str:
    """Return `revision` (a branch, tag or commit hash) if it cannot escape the cache, else raise."""
    if (
        not isinstance(revision, str)
        or not _REVISION.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith("/")
    ):
        raise CheckpointError(
            f"Invalid revision {revision!r}: use a branch or tag name (letters, digits, '.', '_', '-', '/', no "
            f"'..') or a commit hash."
        )
    return revision


# ----- resolution -----------------------------------------------------------------------------
def resolve_checkpoint(
    path_or_id: str | os.PathLike, options: HubOptions = HubOptions(), patterns: Iterable[str] | None = None
) -> tuple[Path, str]:
    """A local folder holding the checkpoint, and a description of where it came from (for messages).

    `patterns` limits what is fetched from the Hub (glob patterns of file names); None fetches every file.
    """
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise CheckpointError(
            f"Expected a checkpoint folder or a Hub repo id (a string or path), got {type(path_or_id).__name__}."
        )
    if not os.fspath(path_or_id).strip():
        raise CheckpointError(
            "The checkpoint path is empty; pass the folder save_finetuned() wrote (e.g. 'out/') or a Hub repo id."
        )
    if "\0" in os.fspath(path_or_id):
        raise CheckpointError(f"The checkpoint path {os.fspath(path_or_id)!r} holds a NUL character.")
    # a save killed half-way leaves the folder under another name: finish the save or bring back the old copy
    recovered = recover_folder(os.fspath(path_or_id))
    if isinstance(path_or_id, os.PathLike) or recovered or _exists(str(path_or_id)):
        folder = Path(os.path.expanduser(os.fspath(path_or_id)))
        if not _exists(str(folder)):
            raise CheckpointError(f"Checkpoint folder {str(folder)!r} does not exist.")
        if options.given():
            logger.info("%s is a local folder; the Hub option(s) %s are ignored", folder, options.given())
        return folder, f"folder {str(folder)!r}"
    text = str(path_or_id)
    if text.endswith(("/", os.sep)) or text.startswith((".", os.sep)):
        raise CheckpointError(f"Checkpoint folder {text!r} does not exist.")
    repo_id = validate_repo_id(text)
    return _download(repo_id, options, patterns), f"Hub repo {repo_id!r} (revision {options.revision or 'main'})"


def _exists(path: str) -> bool:
    try:
        return Path(os.path.expanduser(path)).exists()
    except (OSError, ValueError):  # a name too long for the file system, ...
        return False


def _download(repo_id: str, options: HubOptions, patterns: Iterable[str] | None) -> Path:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .version import __version__

    offline = bool(getattr(constants, "HF_HUB_OFFLINE", False)) or _env_true("HF_HUB_OFFLINE")
    revision = options.revision or "main"
    cache = options.cache_dir or constants.HF_HUB_CACHE
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=options.revision,
            cache_dir=options.cache_dir,
            force_download=options.force_download,
            local_files_only=options.local_files_only or offline,
            token=options.token,
            allow_patterns=list(patterns) if patterns is not None else None,
            library_name="opendelta",
            library_version=__version__,
        )
    except GatedRepoError:
        raise CheckpointError(
            f"Hub repo {repo_id!r} is gated: accept its conditions on huggingface.co, then pass `token=` (or run "
            f"`hf auth login`)."
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"Hub repo {repo_id!r} does not exist, or it is private and no valid token was sent. Check the "
            f"spelling; for a private repo pass `token=` (or run `hf auth login`)."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(
            f"Hub repo {repo_id!r} exists but has no revision {revision!r}; pass an existing branch, tag or "
            f"commit hash as `revision=`."
        ) from None
    except LocalEntryNotFoundError as exc:
        if offline or options.local_files_only:
            why = "HF_HUB_OFFLINE=1 is set" if offline else "local_files_only=True was passed"
            raise CheckpointError(
                f"Hub repo {repo_id!r} (revision {revision!r}) is not in the cache at {str(cache)!r} and {why}, "
                f"so it cannot be downloaded. Download it once with network access (or point `cache_dir=` at the "
                f"cache that holds it), or pass a local folder."
            ) from None
        raise CheckpointError(
            f"Could not reach the Hub to fetch {repo_id!r} and it is not in the cache at {str(cache)!r}: "
            f"{exc}. Check the network connection, or pass a local folder."
        ) from None
    except HFValidationError as exc:
        raise CheckpointError(
            f"{repo_id!r} is not a valid Hub repo id: {exc}. Pass a checkpoint folder or an id "
            f"such as 'DeltaHub/lora_t5-base_sst2'."
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"Could not fetch Hub repo {repo_id!r}: {type(exc).__name__}: {exc}.") from None
    logger.info("resolved %s (revision %s) to %s", repo_id, revision, folder)
    return Path(folder)


def _env_true(name: str) -> bool:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import; honour it when it is set later, too."""
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
