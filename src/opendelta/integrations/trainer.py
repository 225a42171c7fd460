"""The transformers `Trainer` with a delta: one callback, and every checkpoint is a delta folder.

    from opendelta.integrations.trainer import OpenDeltaCallback
    trainer = Trainer(model=model, args=args, ..., callbacks=[OpenDeltaCallback(delta)])

From then on `model.save_pretrained(dir)` (what the Trainer's checkpoints and `trainer.save_model()` call) writes a
delta checkpoint (`config.json` with the delta config, `delta_model.safetensors`, `fingerprint.json`, a model card)
that `AutoDeltaModel.from_finetuned` loads hash-checked, plus the trainable tensors as `model.safetensors`, which
the Trainer reads back for `resume_from_checkpoint` and `load_best_model_at_end` (the frozen backbone never
changes, so that restores the model exactly). The Trainer's "missing keys" warning, which would list every frozen
backbone weight at each reload, is dropped when every missing key is a frozen one.

Without the callback, `freeze_module(..., set_state_dict=True)` still makes `save_pretrained` safe: it writes the
complete model plus the delta's files (`delta_config.json`, ...), loadable either way (see `opendelta.model_save`).
"""

from __future__ import annotations

import ast
import logging
from typing import Any

from transformers import TrainerCallback

from ..base import DeltaBase

_MISSING = "There were missing keys in the checkpoint model loaded: "
_TRAINER_LOGGER = "transformers.trainer"


class _FrozenMissingKeys(logging.Filter):
    """Drops the Trainer's missing-keys warning when every missing key is a frozen (never trained) tensor."""

    def __init__(self, delta: DeltaBase) -> None:
        super().__init__()
        self.delta = delta

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(_MISSING) or not self.delta.attached:
            return True
        try:
            keys = ast.literal_eval(message[len(_MISSING) :].strip().rstrip("."))
        except (ValueError, SyntaxError):
            return True
        saved = set(self.delta.delta_state_dict())
        trainable = {n for n, p in self.delta.backbone_model.named_parameters() if p.requires_grad}
        return any(k in saved or k in trainable for k in keys)


class OpenDeltaCallback(TrainerCallback):
    """Make every Trainer checkpoint and `save_model()` output a delta checkpoint of `delta` (see the module doc).

    Call `delta.freeze_module(...)` first (what trains must be the delta and the modules named in `exclude`: a
    checkpoint would otherwise lose a trained weight, and saving raises `DeltaStateError` instead).
    """

    def __init__(self, delta: DeltaBase) -> None:
        if not isinstance(delta, DeltaBase):
            raise TypeError(f"OpenDeltaCallback needs the delta object (a DeltaBase), got {type(delta).__name__}.")
        self.delta = delta
        delta.set_save_mode("delta")
        self._log_filter = _FrozenMissingKeys(delta)
        logging.getLogger(_TRAINER_LOGGER).addFilter(self._log_filter)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is not None and model is not self.delta.backbone_model:
            inner = getattr(model, "module", model)
            if inner is not self.delta.backbone_model:
                logging.getLogger("opendelta").warning(
                    "OpenDeltaCallback: the Trainer's model is not the backbone this delta is attached to; its "
                    "checkpoints will not be delta checkpoints."
                )

    def close(self) -> None:
        """Stop filtering the Trainer's log (the save mode stays until the delta is detached or merged)."""
        logging.getLogger(_TRAINER_LOGGER).removeFilter(self._log_filter)
