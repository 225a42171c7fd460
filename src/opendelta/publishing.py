"""Publishing a delta: its model card (README.md with Hub front matter) and the upload to the Hub."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._logging import logger
from .base import DeltaBase
from .config import DeltaConfig
from .errors import CheckpointError, DeltaConfigError
from .hub import validate_repo_id, validate_revision

CARD_NAME = "README.md"
#: Written right after the front matter (which the Hub needs on the first line) of every card this library
#: writes: such a README.md may be regenerated, any other is kept.
CARD_MARKER = "<!-- opendelta:model-card -->"


# ----- publishing -----------------------------------------------------------------------------
def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Create `repo_id` on the Hub if needed (a bare name goes to your namespace) and upload `folder`.

    Returns huggingface_hub's CommitInfo (its `.commit_url` links to the commit).
    """
    from huggingface_hub import HfApi

    validate_repo_id(repo_id, namespace_required=False)
    if revision is not None:
        validate_revision(revision)
    outside = links_outside(folder)
    if outside:
        logger.warning(
            "not uploading %d symbolic link(s) of %s that point outside it (e.g. %s): their content is not part of "
            "the checkpoint",
            len(outside),
            folder,
            outside[0],
        )
    api = HfApi(token=token)
    url = api.create_repo(repo_id=repo_id, private=private, repo_type="model", exist_ok=True)
    target = getattr(url, "repo_id", None) or repo_id
    info = api.upload_folder(
        repo_id=target,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload delta checkpoint with OpenDelta",
        create_pr=create_pr,
        ignore_patterns=outside or None,
    )
    logger.info("pushed %s to the Hub repo %s: %s", folder, target, getattr(info, "commit_url", info))
    return info


def links_outside(folder: str | os.PathLike) -> list[str]:
    """Paths (relative, '/'-separated) of the symbolic links in `folder` whose target lies outside it (or
    does not resolve): a push must never upload what they point to (e.g. a key file linked in by hand)."""
    root = Path(folder).resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                continue
            try:
                inside = path.resolve(strict=True).is_relative_to(root)
            except (OSError, RuntimeError):  # dangling link or a loop
                inside = False
            if not inside:
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


# ----- model card -----------------------------------------------------------------------------
def is_generated_card(path: str | os.PathLike) -> bool:
    """Whether the README.md at `path` was written by this library (and may be regenerated)."""
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.strip() == CARD_MARKER for line in f.read(16384).splitlines())
    except (OSError, UnicodeDecodeError):
        return False


def model_card(
    delta: DeltaBase,
    *,
    config: DeltaConfig | None = None,
    repo_id: str | None = None,
    format: str = "opendelta",
    card_data: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
) -> str:
    """The README.md text of a shared delta: Hub front matter, how to load it, parameter counts, results.

    config: the config being saved (default: the delta's). card_data: extra front-matter fields (e.g.
    license, datasets, language); they may also override `base_model` and add `tags`. results: metric
    name -> value, shown as a table.
    """
    from huggingface_hub import ModelCardData

    cfg = config if config is not None else delta.config
    data = _plain_card_data(card_data)
    base = data.pop("base_model", None) or cfg.backbone_checkpoint_name
    hub_base = hub_base_model(base)  # the Hub's base_model must be a repo id: none for a local folder
    tags = ["opendelta", "delta-tuning", delta.delta_type] + (["peft"] if format == "peft" else [])
    extra_tags = data.pop("tags", None) or []
    tags += [t for t in ([extra_tags] if isinstance(extra_tags, str) else extra_tags) if t not in tags]
    library = "peft" if format == "peft" else "opendelta"
    yaml = ModelCardData(library_name=library, base_model=hub_base, tags=tags, **data).to_yaml()
    total, trainable, n_delta = (
        delta.num_total_parameters(delta.backbone_model),
        delta.num_trainable_parameters(delta.backbone_model),
        delta.num_delta_parameters(),
    )
    where = repo_id or "path/to/this/folder"
    body = [
        "---",
        yaml.strip(),
        "---",
        CARD_MARKER,
        "",
        f"# {repo_id.split('/')[-1] if repo_id else f'{delta.delta_type} delta'}",
        "",
        f"A `{delta.delta_type}` delta (parameter-efficient fine-tuning) for "
        f"`{base or cfg.backbone_class or 'its backbone model'}`, saved with "
        f"OpenDelta. It modifies {len(delta.sites)} module(s), e.g. "
        f"`{delta.modified_module_names[0] if delta.sites else '-'}`.",
        "",
        "## Usage",
        "",
        "```python",
        *_usage(cfg.backbone_class, base, where, format, cfg.backbone_kwargs),
        "```",
        "",
        "## Parameters",
        "",
        "| | count | share of the model |",
        "|---|---:|---:|",
        f"| delta parameters | {n_delta:,} | {_share(n_delta, total)} |",
        f"| trainable parameters | {trainable:,} | {_share(trainable, total)} |",
        f"| whole model (backbone + delta) | {total:,} | 100% |",
        "",
        "## Configuration",
        "",
        "```json",
        cfg.to_json(),
        "```",
        "",
    ]
    if results:
        body += ["## Results", "", "| metric | value |", "|---|---|"]
        body += [f"| {name} | {_fmt(value)} |" for name, value in results.items()] + [""]
    return "\n".join(body)


def _plain_card_data(card_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """`card_data` checked to hold only what YAML front matter can carry as plain data (strings, numbers,
    booleans, None, lists and string-keyed dicts of those): no object is ever written as a python tag."""
    if card_data is None:
        return {}
    if not isinstance(card_data, Mapping):
        raise DeltaConfigError(f"card_data must be a dict of front-matter fields, got {type(card_data).__name__}.")

    def check(value: Any, where: str, depth: int = 0) -> None:
        if depth > 20:
            raise DeltaConfigError(f"card_data{where} is nested too deeply for a model card; flatten it.")
        if value is None or isinstance(value, (str, bool, int)):
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise DeltaConfigError(
                    f"card_data{where}={value!r} is not a finite number; use a finite one or a string."
                )
            return
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                check(v, f"{where}[{i}]", depth + 1)
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise DeltaConfigError(f"card_data{where} has a non-string key {k!r}; use string keys.")
                check(v, f"{where}[{k!r}]", depth + 1)
            return
        raise DeltaConfigError(
            f"card_data{where} is a {type(value).__name__}; the model card's front matter holds only strings, "
            f"numbers, booleans, lists and dicts. Convert it (e.g. str(value)) first."
        )

    check(dict(card_data), "")
    data = dict(card_data)
    tags = data.get("tags")
    if tags is not None and not isinstance(tags, (str, list, tuple)):
        raise DeltaConfigError(f"card_data['tags'] must be a string or a list of strings, got {tags!r}.")
    if isinstance(tags, (list, tuple)) and not all(isinstance(t, str) for t in tags):
        raise DeltaConfigError(f"card_data['tags'] must hold strings only, got {tags!r}.")
    return data


def hub_base_model(name: str | None) -> str | None:
    """The Hub repo id the backbone came from, for the card's `base_model` (which the Hub checks): the name
    itself if it is a repo id, else the `_name_or_path` the local folder's config.json records when that is
    one, else None (a local path means nothing on the Hub)."""
    if not name:
        return None
    folder = Path(os.path.expanduser(name))
    try:
        is_folder = folder.is_dir()
    except OSError:
        is_folder = False
    if not is_folder:
        return name if _is_repo_id(name) else None
    try:
        origin = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, RecursionError, AttributeError):
        return None
    return origin if isinstance(origin, str) and _is_repo_id(origin) and not Path(origin).exists() else None


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name, namespace_required=False)
    except CheckpointError:
        return False
    return not name.startswith((".", "/", "~"))


def _usage(
    backbone_class: str | None, base: str | None, where: str, format: str, kwargs: dict[str, Any] | None = None
) -> list[str]:
    cls = backbone_class or "AutoModel"
    name = base or "<the base model>"
    lines = [f"from transformers import {cls}"]
    extra = ""
    for key, value in (kwargs or {}).items():  # the task head the delta was trained with
        value = {int(k): v for k, v in value.items()} if key == "id2label" else value
        extra += f", {key}={value!r}"
    if format == "peft":
        return lines + [
            "from peft import PeftModel",
            "",
            f"backbone = {cls}.from_pretrained({name!r}{extra})",
            f"model = PeftModel.from_pretrained(backbone, {where!r})",
            f"# or with OpenDelta: AutoDeltaModel.from_finetuned({where!r}, backbone_model=backbone)",
        ]
    return lines + [
        "from opendelta import AutoDeltaModel",
        "",
        f"backbone = {cls}.from_pretrained({name!r}{extra})",
        f"delta = AutoDeltaModel.from_finetuned({where!r}, backbone_model=backbone)",
        "# `backbone` now carries the delta; use it as usual",
    ]


def _share(part: int, total: int) -> str:
    return f"{100 * part / max(total, 1):.4f}%"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
