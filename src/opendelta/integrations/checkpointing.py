"""Gradient checkpointing with a frozen backbone, for models that are not transformers models.

With every backbone weight frozen, the first checkpointed block's input does not require grad, so (reentrant)
checkpointing would give the delta no gradient. transformers models handle it themselves
(`gradient_checkpointing_enable()` turns on input grads in transformers 5); for any other model:

    handle = enable_input_require_grads(model.embed)   # the module whose output enters the checkpointed blocks
    ...train...
    handle.remove()
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle


def enable_input_require_grads(module: nn.Module) -> RemovableHandle:
    """Make `module`'s output require grad (the input of the checkpointed blocks); returns the hook's handle."""

    def require_grad(mod: nn.Module, args: tuple, output: Any) -> Any:
        if hasattr(output, "requires_grad_") and output.is_floating_point():
            output.requires_grad_(True)
        return output

    return module.register_forward_hook(require_grad)
