"""Exception hierarchy: every error raised on purpose by opendelta derives from OpenDeltaError."""

from __future__ import annotations


class OpenDeltaError(Exception):
    """Base class of all opendelta errors."""


class DeltaConfigError(OpenDeltaError, ValueError):
    """A delta configuration is invalid: unknown key, wrong type, or value out of range."""


class ModuleMatchError(OpenDeltaError, LookupError):
    """`modified_modules` (or another module address) does not fit the backbone."""


class UnsupportedModuleError(OpenDeltaError, TypeError):
    """A delta type cannot be attached to the kind of module it was pointed at."""


class DeltaStateError(OpenDeltaError, RuntimeError):
    """The delta model is in the wrong state for the operation (e.g. merge while detached)."""


class CheckpointError(OpenDeltaError, OSError):
    """A checkpoint is missing, malformed, or does not fit the delta it is loaded into."""


class HashMismatchError(OpenDeltaError):
    """The model fingerprint recomputed after loading differs from the one stored at save time."""


class PickerError(OpenDeltaError, RuntimeError):
    """The interactive module picker (`interactive_modify=`, `opendelta pick`) could not run."""


class PickerCancelledError(PickerError):
    """The user pressed Cancel in the module picker: nothing was chosen or attached."""


class PickerTimeoutError(PickerError, TimeoutError):
    """Nobody submitted the module picker before its timeout."""


class LegacyAPIError(OpenDeltaError, NotImplementedError):
    """An OpenDelta 0.3 name that this version does not reproduce; the message names what to use instead."""


def class_path(obj: object) -> str:
    """The qualified name of `obj`'s class (`pkg.module.Class`), as errors name the class of a module."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
