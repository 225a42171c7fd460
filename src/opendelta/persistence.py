"""Saving and loading deltas: our checkpoint folder (or a PEFT adapter), the fingerprint check, rollback.

`DeltaBase.save_finetuned`, `push_to_hub` and `from_finetuned` are implemented here (registered with
`providers`, since `base` sits below this layer).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io, publishing
from ._logging import logger
from .base import DeltaBase
from .config import DeltaConfig
from .dispatch import named_deltas
from .distributed import barrier, full_tensor, is_writer
from .errors import CheckpointError, DeltaConfigError, DeltaStateError, HashMismatchError
from .fingerprint import ALGORITHM, ALGORITHMS, Fingerprint
from .formats import CHECKPOINT_FILES, OPENDELTA, PEFT, Checkpoint, open_checkpoint, peft
from .hub import split_hub_options, validate_repo_id
from .providers import provide
from .registry import get_delta_class
from .version import __version__

FORMATS = ("opendelta", "peft")


# ----- saving ------------------------------------------------------------------------------------------
def backbone_identity(delta: DeltaBase) -> dict[str, Any]:
    """The config keys that name the backbone a delta was trained on."""
    bb = delta.backbone_model
    name = getattr(bb, "name_or_path", None) or getattr(getattr(bb, "config", None), "_name_or_path", None)
    return {
        "backbone_class": type(bb).__name__,
        "backbone_checkpoint_name": name or None,
        "backbone_kwargs": head_kwargs(delta),
    }


def head_kwargs(delta: DeltaBase) -> dict[str, Any] | None:
    """The `from_pretrained` keywords of a trained task head (num_labels, id2label, label2id), or None when the
    delta trains no module besides its own layers or the backbone has no labels."""
    cfg = getattr(delta.backbone_model, "config", None)
    id2label = getattr(cfg, "id2label", None)
    if not id2label or not [m for m in delta.config.unfrozen_modules if m != "deltas"]:
        return None
    id2label = {int(k): str(v) for k, v in id2label.items()}
    return {
        "num_labels": len(id2label),
        "id2label": {str(k): v for k, v in sorted(id2label.items())},
        "label2id": {v: k for k, v in sorted(id2label.items())},
        # a saved model with another head size loads anyway: the checkpoint brings the trained head
        "ignore_mismatched_sizes": True,
    }


def save_delta(
    delta: DeltaBase,
    save_directory: str | os.PathLike,
    *,
    format: str = "opendelta",
    push_to_hub: bool = False,
    repo_id: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    card_data: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    overwrite_card: bool = False,
) -> Path:
    """`DeltaBase.save_finetuned` (see there)."""
    if format not in FORMATS:
        raise DeltaConfigError(
            f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}; use one of them."
        )
    if not delta.attached:
        raise DeltaStateError("Cannot save a detached delta; call attach() first.")
    if delta.merged:
        raise DeltaStateError("Cannot save while merged (the backbone weights hold the delta); call unmerge() first.")
    _check_materialized(delta.backbone_model, "save")
    if push_to_hub:
        validate_repo_id(repo_id or Path(save_directory).resolve().name, namespace_required=False)
    if format == "peft":
        config = delta.config.replace(**backbone_identity(delta))
        write_files = _peft_writer(delta, config)
    else:
        config, write_files = _opendelta_writer(delta)
    card = publishing.model_card(
        delta, config=config, repo_id=repo_id, format=format, card_data=card_data, results=results
    )
    existing = Path(save_directory) / publishing.CARD_NAME
    keep_card = existing.is_file() and not overwrite_card and not publishing.is_generated_card(existing)
    if keep_card:
        logger.info(
            "kept the README.md already in %s (not written by OpenDelta); pass overwrite_card=True "
            "to replace it with a generated model card",
            save_directory,
        )

    def write(tmp: Path) -> None:
        write_files(tmp)
        if not keep_card:
            (tmp / publishing.CARD_NAME).write_text(card, encoding="utf-8")

    # the files of the other formats go: a stale config.json or adapter next to the new files would be loaded
    if is_writer():  # under torch.distributed every rank gathers, rank 0 writes
        path = io.write_folder(save_directory, write, keep=lambda entry: entry.name not in CHECKPOINT_FILES)
    else:
        path = Path(save_directory).resolve()
    barrier()
    if format == "opendelta":
        delta.config = config
    logger.info("saved %s delta in %s format to %s", delta.delta_type, format, path)
    if push_to_hub:
        publishing.push_folder(path, repo_id or path.name, private=private, token=token, commit_message=commit_message)
    return path


def _check_materialized(model: nn.Module, what: str) -> None:
    """A backbone on the meta device has no values to save, fingerprint or load into."""
    meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"), None)
    if meta is not None:
        raise DeltaStateError(
            f"Cannot {what} a delta on a backbone whose tensors are on the meta device (e.g. {meta!r}): they hold "
            f"no values. Load the real weights first (e.g. from_pretrained(...), or model.to_empty(device=...) "
            f"followed by load_state_dict)."
        )


def _opendelta_writer(
    delta: DeltaBase, config_name: str = io.CONFIG_NAME
) -> tuple[DeltaConfig, Callable[[Path], None]]:
    fp = delta.fingerprint()
    config = delta.config.replace(**backbone_identity(delta), backbone_hash=fp.root, hash_algorithm=fp.algorithm)
    meta = {
        "opendelta_version": __version__,
        "transformers_version": _transformers_version(),
        "torch_version": torch.__version__.split("+")[0],
        "format_version": 1,
    }
    state = {k: full_tensor(v) for k, v in delta.delta_state_dict().items()}  # whole tensors under FSDP2

    def write(tmp: Path) -> None:
        io.save_weights(state, tmp / io.WEIGHTS_NAME)
        (tmp / io.FINGERPRINT_NAME).write_text(
            io.json_text({"algorithm": fp.algorithm, "root": fp.root, "tensors": fp.tensors}), encoding="utf-8"
        )
        (tmp / config_name).write_text(io.json_text({**config.to_dict(), **meta}), encoding="utf-8")

    return config, write


def _peft_writer(delta: DeltaBase, config: DeltaConfig) -> Callable[[Path], None]:
    adapter_config, state = peft.export(delta, config)
    return lambda tmp: peft.write(tmp, adapter_config, state)


def push_delta(
    delta: DeltaBase,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    format: str = "opendelta",
    card_data: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """`DeltaBase.push_to_hub` (see there)."""
    validate_repo_id(repo_id, namespace_required=False)
    with tempfile.TemporaryDirectory(prefix="opendelta-push-") as tmp:
        folder = save_delta(
            delta,
            Path(tmp) / repo_id.split("/")[-1],
            format=format,
            repo_id=repo_id,
            card_data=card_data,
            results=results,
        )
        return publishing.push_folder(
            folder,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )


# ----- loading -----------------------------------------------------------------------------------------
def load_delta(
    cls: type[DeltaBase],
    path_or_id: str | os.PathLike,
    backbone_model: nn.Module,
    check_hash: bool,
    kwargs: dict[str, Any],
) -> DeltaBase:
    """`DeltaBase.from_finetuned` / `AutoDeltaModel.from_finetuned`: the class comes from the checkpoint when
    `cls` is DeltaBase itself."""
    name = kwargs.pop("name", None)
    options, overrides = split_hub_options(kwargs)
    checkpoint = open_checkpoint(path_or_id, options)
    if cls is DeltaBase:
        cls = get_delta_class(checkpoint.delta_type)
    elif checkpoint.delta_type != cls.delta_type:
        raise CheckpointError(
            f"{checkpoint.source} holds a {checkpoint.delta_type!r} delta, not "
            f"{cls.delta_type!r}; load it with AutoDeltaModel.from_finetuned."
        )
    return _attach_checkpoint(cls, checkpoint, backbone_model, check_hash, overrides, name)


def _checkpoint_identity(checkpoint: Checkpoint, config: DeltaConfig) -> str:
    """What makes two loads the same delta: its recorded fingerprint, else where it came from."""
    return f"hash:{config.backbone_hash}" if config.backbone_hash else f"source:{checkpoint.source}"


def _attach_checkpoint(
    cls: type[DeltaBase],
    checkpoint: Checkpoint,
    backbone_model: nn.Module,
    check_hash: bool,
    overrides: dict[str, Any],
    name: str | None = None,
) -> DeltaBase:
    _check_materialized(backbone_model, "load")
    config = cls.config_class.from_dict(checkpoint.config_for(backbone_model), **overrides)
    identity = _checkpoint_identity(checkpoint, config)
    for other in named_deltas(backbone_model).values():
        if getattr(other, "loaded_from", None) == identity and other.attached:
            raise CheckpointError(
                f"{checkpoint.source} is already loaded on this backbone as delta {other.name!r}; loading it twice "
                f"would apply it twice. Use that delta (opendelta.activate(model, {other.name!r})), or remove it "
                f"first (merge_and_unload() or detach())."
            )
    state = checkpoint.load_weights()
    delta = cls.from_config(config, backbone_model, name=name)
    delta.loaded_from = identity
    try:
        state = checkpoint.fit_state(delta, state)
    except BaseException:
        delta.detach()
        delta.release()
        raise
    params = dict(backbone_model.named_parameters())
    backup = {k: params[k].detach().clone() for k in state if k in params}
    try:
        try:
            delta.load_delta_state_dict(state)
        except CheckpointError as exc:
            if "has shape" not in str(exc):
                raise
            raise CheckpointError(f"{exc}{_head_advice(config)}") from None
        if not check_hash:
            logger.info("hash check skipped (check_hash=False)")
        elif checkpoint.format == PEFT:
            logger.info("%s is a PEFT adapter: it stores no model fingerprint to verify", checkpoint.source)
        else:
            verify_hash(delta, checkpoint.fingerprint(), required=checkpoint.format == OPENDELTA)
    except BaseException:
        with torch.no_grad():
            for k, v in backup.items():
                params[k].copy_(v)
        delta.detach()
        delta.release()
        raise
    _restore_labels(backbone_model, config.backbone_kwargs)
    backbone_model.eval()  # loaded for inference, as OpenDelta 0.3 left it (call .train() to train on)
    logger.info("loaded a %s delta from %s (%s format)", delta.delta_type, checkpoint.source, checkpoint.format)
    return delta


def _head_advice(config: DeltaConfig) -> str:
    kwargs = config.backbone_kwargs
    if not kwargs:
        return ""
    args = ", ".join(f"{k}={_literal(k, v)}" for k, v in kwargs.items())
    return (
        f" This delta was trained with a task head of {kwargs.get('num_labels')} labels: load the backbone with "
        f"{config.backbone_class or 'its class'}.from_pretrained(..., {args})."
    )


def _literal(key: str, value: Any) -> str:
    if key == "id2label" and isinstance(value, dict):
        return repr({int(k): v for k, v in value.items()})
    return repr(value)


def _restore_labels(backbone: nn.Module, kwargs: dict[str, Any] | None) -> None:
    """Give the backbone's config the label names the delta was trained with (same number of labels)."""
    cfg = getattr(backbone, "config", None)
    if not kwargs or cfg is None or getattr(cfg, "num_labels", None) != kwargs.get("num_labels"):
        return
    cfg.id2label = {int(k): v for k, v in kwargs["id2label"].items()}
    cfg.label2id = dict(kwargs["label2id"])


def load_weights(
    delta: DeltaBase, source: str | os.PathLike | Mapping[str, torch.Tensor], check_hash: bool, kwargs: dict[str, Any]
) -> None:
    """`DeltaBase.load_weights` (see there)."""
    if not delta.attached or delta.merged:
        raise DeltaStateError(f"Delta {delta.name!r} must be attached and unmerged to load weights into it.")
    if isinstance(source, dict) or isinstance(source, Mapping):
        delta.load_delta_state_dict(source if isinstance(source, dict) else dict(source))
        delta.loaded_from = None
        return
    options, overrides = split_hub_options(kwargs)
    if overrides:
        raise TypeError(f"load_weights() got unexpected keyword(s) {sorted(overrides)}; only Hub options apply.")
    checkpoint = open_checkpoint(source, options)
    if checkpoint.delta_type != delta.delta_type:
        raise CheckpointError(f"{checkpoint.source} holds a {checkpoint.delta_type!r} delta, not {delta.delta_type!r}.")
    config = type(delta.config).from_dict(checkpoint.config_for(delta.backbone_model))
    own = [f for f in type(delta.config).field_names() if f not in DeltaConfig.field_names()]
    differ = [
        f"{k}: {getattr(config, k)!r} (here {getattr(delta.config, k)!r})"
        for k in own
        if getattr(config, k) != getattr(delta.config, k)
    ]
    if differ:
        raise CheckpointError(
            f"{checkpoint.source} was trained with other settings than delta {delta.name!r}: {'; '.join(differ)}. "
            f"Load it as a new delta (AutoDeltaModel.from_finetuned) instead of swapping it in."
        )
    identity = _checkpoint_identity(checkpoint, config)
    for other in named_deltas(delta.backbone_model).values():
        if other is not delta and other.loaded_from == identity and other.attached:
            raise CheckpointError(f"{checkpoint.source} is already loaded on this backbone as delta {other.name!r}.")
    state = checkpoint.load_weights()
    before = {k: v.detach().clone() for k, v in delta.delta_state_dict().items()}
    old_config = delta.config
    try:
        delta.load_delta_state_dict(state)
        delta.config = delta.config.replace(backbone_hash=config.backbone_hash, hash_algorithm=config.hash_algorithm)
        if check_hash and checkpoint.format != PEFT:
            verify_hash(delta, checkpoint.fingerprint(), required=checkpoint.format == OPENDELTA)
    except BaseException:
        delta.config = old_config
        delta.load_delta_state_dict(before)
        raise
    delta.loaded_from = identity
    logger.info("swapped the weights of %s from %s", delta.name, checkpoint.source)


def verify_hash(delta: DeltaBase, saved: dict[str, Any] | None, *, required: bool = False) -> None:
    """Compare the model's fingerprint now with the one recorded in the delta's config at save time.

    required: the checkpoint is in this version's format, whose config.json always holds a fingerprint of
    this library's algorithm; a missing or foreign one means the config was edited, and is an error (not a
    warning), so the check cannot be switched off by editing config.json. `saved` (fingerprint.json) only
    adds per-tensor details to a mismatch message; it may be missing or damaged.
    """
    cfg = delta.config
    expected = cfg.backbone_hash
    if required and (not isinstance(expected, str) or not expected or cfg.hash_algorithm not in ALGORITHMS):
        raise HashMismatchError(
            f"This OpenDelta checkpoint cannot be verified: its config.json does not hold a fingerprint of this "
            f"version's algorithms ({', '.join(ALGORITHMS)}); found backbone_hash={expected!r}, "
            f"hash_algorithm={cfg.hash_algorithm!r}. The files were edited or "
            f"damaged: save the delta again with save_finetuned(), or pass check_hash=False to load it unverified."
        )
    if expected is None:
        logger.warning("This checkpoint stores no model fingerprint; it cannot be verified.")
        return
    if cfg.hash_algorithm is None:
        logger.warning(
            "This is an OpenDelta 0.3 checkpoint: its backbone_hash (%s) is an md5 this version "
            "cannot recompute, so the backbone cannot be verified. Make sure it is %s (%s); "
            "save_finetuned() again to store a verifiable fingerprint, or pass check_hash=False "
            "to silence this.",
            expected,
            cfg.backbone_checkpoint_name or "the same model",
            cfg.backbone_class or "same class",
        )
        return
    if cfg.hash_algorithm not in ALGORITHMS:
        logger.warning(
            "This checkpoint's fingerprint (%s) was made by another method (%s) and cannot be "
            "verified by this version; pass check_hash=False to silence this.",
            expected,
            cfg.hash_algorithm,
        )
        return
    now = delta.fingerprint() if cfg.hash_algorithm == ALGORITHM else delta.model_fingerprint()
    if now.root == expected:
        logger.info("hash check passed (%s)", expected)
        return
    detail = "no per-tensor record was saved"
    if saved and saved.get("root") == expected:
        detail = Fingerprint(root=expected, tensors=saved.get("tensors", {})).diff(now)
    raise HashMismatchError(
        f"The model after loading does not match the one the delta was trained with: {detail}. "
        f"Check that the backbone ({cfg.backbone_class}, {cfg.backbone_checkpoint_name}) "
        f"is the same checkpoint, dtype and version; pass check_hash=False to load anyway."
    )


def _transformers_version() -> str | None:
    try:
        import transformers

        return transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None


provide("save_delta", save_delta)
provide("push_delta", push_delta)
provide("load_delta", load_delta)
provide("load_weights", load_weights)
