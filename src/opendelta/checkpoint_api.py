"""The checkpoint methods of DeltaBase: save, push, load, hot-swap. They are implemented in `persistence` (a
higher layer, registered with `providers`); this mixin gives DeltaBase their typed, documented signatures."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .compat import check_load_keywords, check_save_keywords
from .providers import provider

if TYPE_CHECKING:  # pragma: no cover
    from .base import DeltaBase


class CheckpointMethods:
    """Mixed into DeltaBase."""

    def save_finetuned(
        self,
        save_directory: str | os.PathLike | None = None,
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
        **legacy: Any,
    ) -> Path:
        """Save the delta into `save_directory`, atomically, with a model card; optionally push it to the Hub.

        format: "opendelta" writes config.json, delta_model.safetensors and fingerprint.json; "peft" writes a
            PEFT adapter (adapter_config.json + adapter_model.safetensors; types with a PEFT counterpart)
            that `PeftModel.from_pretrained` loads.
        Only the delta (and the modules left unfrozen by `freeze_module`) is written, whatever
        `set_state_dict` did. A README.md model card is written (Hub front matter with `card_data`, usage,
        parameter counts, `results`); a README.md already there that this library did not write is kept
        unless `overwrite_card=True`. push_to_hub: upload the folder to `repo_id` (default: the folder
        name, in your namespace), created if needed (`private`). Returns the folder. OpenDelta 0.3's keywords
        (`finetuned_delta_path`, `save_config`, `push_to_dc`, ...) work or raise naming the replacement.
        """
        save_directory, legacy_card, legacy_results = check_save_keywords(save_directory, legacy)
        if legacy_card:
            tags = [*legacy_card.pop("tags", []), *(card_data or {}).get("tags", [])]
            card_data = {**legacy_card, **(card_data or {}), **({"tags": tags} if tags else {})}
        if legacy_results:
            results = {**legacy_results, **(results or {})}
        return provider("save_delta")(
            self,
            save_directory,
            format=format,
            push_to_hub=push_to_hub,
            repo_id=repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            card_data=card_data,
            results=results,
            overwrite_card=overwrite_card,
        )

    def push_to_hub(
        self,
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
        """Save the delta (with a freshly generated model card) and upload it to the Hub repo `repo_id`.

        The repo is created if needed. To publish a hand-written README.md, put it in a folder, call
        `save_finetuned(folder, push_to_hub=True, repo_id=...)` instead. Returns huggingface_hub's CommitInfo.
        """
        return provider("push_delta")(
            self,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            format=format,
            card_data=card_data,
            results=results,
            revision=revision,
            create_pr=create_pr,
        )

    def load_weights(
        self, source: str | os.PathLike | Mapping[str, torch.Tensor], check_hash: bool = True, **kwargs: Any
    ) -> None:
        """Hot-swap: copy another checkpoint's tensors (a folder, a Hub id, or a state dict with this delta's
        keys) into this attached delta, in place. Shapes and the type's settings must match; nothing is
        re-attached, and a compiled model keeps its code (parameters are graph inputs). A checkpoint with a
        fingerprint is verified (`check_hash`); on any failure the delta keeps its previous values."""
        provider("load_weights")(self, source, check_hash, kwargs)

    @classmethod
    def from_finetuned(
        cls, finetuned_delta_path: str | os.PathLike, backbone_model: nn.Module, check_hash: bool = True, **kwargs: Any
    ) -> DeltaBase:
        """Attach a saved delta to `backbone_model`, load its weights and verify the model fingerprint.

        finetuned_delta_path: a checkpoint folder (ours, OpenDelta 0.3, or a PEFT adapter) or a Hub repo id
            `Org/name`, fetched through the Hugging Face cache (`HF_HUB_OFFLINE=1` is honoured).
        kwargs: `name` (the delta's name on the backbone, see `from_config`); the Hub options `revision`,
            `cache_dir`, `force_download`, `local_files_only`, `token`; any other keyword overrides a config key.
        Loading a checkpoint that is already loaded on this backbone is a CheckpointError.
        On any failure (bad checkpoint, key mismatch, hash mismatch) the backbone is left as it was.
        """
        return provider("load_delta")(
            cls, finetuned_delta_path, backbone_model, check_hash, check_load_keywords(kwargs)
        )
