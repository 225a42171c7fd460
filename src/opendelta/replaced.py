"""Placeholders for OpenDelta 0.3 names this version does not reproduce: importing them works (so a 0.3 script
gets as far as it can), and any use raises LegacyAPIError naming the replacement."""

from __future__ import annotations

from typing import Any, NoReturn

from .errors import LegacyAPIError


class Replaced:
    """Stands where OpenDelta 0.3 had `name`; calling it, reading an attribute or indexing it raises."""

    def __init__(self, name: str, instead: str) -> None:
        self._name, self._instead = name, instead

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise LegacyAPIError(f"`{self._name}` (OpenDelta 0.3) is not part of this version: {self._instead}")

    __call__ = __getitem__ = __iter__ = __len__ = __contains__ = _fail

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # introspection (copy, pickle, pytest) sees a plain object
            raise AttributeError(attr)
        self._fail()

    def __repr__(self) -> str:
        return f"<OpenDelta 0.3's {self._name}, replaced: {self._instead}>"


def replaced_names(module: str, names: dict[str, str]) -> dict[str, Replaced]:
    """`{name: Replaced}` for a legacy module's namespace (`globals().update(...)`)."""
    return {name: Replaced(f"{module}.{name}", instead) for name, instead in names.items()}


# what to use instead, shared by the 0.3 import paths
STRUCTURES = (
    "common structure names are built in: write them in `modified_modules` (README, 'Any backbone: common "
    "structure names and defaults'); `opendelta.Visualization(model).structure_graph()` shows a model's names"
)
PICKER = "`interactive_modify=True` opens this version's module picker (README, 'Pick the modules on a web page')"
DELTA_CENTER = (
    "DeltaCenter no longer exists: share deltas on the Hugging Face Hub (`delta.push_to_hub(repo_id)`, "
    "`AutoDeltaModel.from_finetuned('user/repo', backbone_model=model)`)"
)
CUSTOM_DELTA = (
    "write a delta type as a `DeltaBase` subclass with `build_site` and `@register_delta` "
    "(README, 'Adding a delta type')"
)
LAYERS = (
    "the delta's layers are built by its delta class (reach them with `delta.delta_modules()`); to write a new "
    "kind of layer, see README 'Adding a delta type'"
)
DISTRIBUTED = (
    "deltas are hooks that survive replication: wrap the model in DDP / FSDP as usual (README, 'Training with "
    "Trainer / accelerate / torchrun / FSDP / DeepSpeed')"
)
FINGERPRINT = "checkpoints carry `fingerprint.json` (`delta.fingerprint()`; `check_hash=False` skips the check)"
BACKEND = "only PyTorch modules are supported (drop `backend`; `backend='bmt'` is not available)"
