"""OpenDelta 0.3's `opendelta.utils.logging`: verbosity and handlers of the package logger ("opendelta")."""

from __future__ import annotations

import logging
import sys

from .._logging import logger as _root

log_levels = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_default_handler: logging.Handler | None = None


def get_log_levels_dict() -> dict[str, int]:
    return log_levels


def get_logger(name: str | None = None, verbosity: str = "info") -> logging.Logger:
    """The logger `name` (default: the package logger) at `verbosity`; the package logger gets its stderr
    handler (0.3 scripts call `get_logger(__name__)`)."""
    enable_default_handler()
    logger = logging.getLogger(name or "opendelta")
    logger.setLevel(log_levels.get(verbosity, logging.INFO))
    return logger


def get_verbosity() -> int:
    return _root.getEffectiveLevel()


def set_verbosity(verbosity: int) -> None:
    _root.setLevel(verbosity)


def set_verbosity_info() -> None:
    set_verbosity(logging.INFO)


def set_verbosity_warning() -> None:
    set_verbosity(logging.WARNING)


def set_verbosity_debug() -> None:
    set_verbosity(logging.DEBUG)


def set_verbosity_error() -> None:
    set_verbosity(logging.ERROR)


def enable_default_handler() -> None:
    """A stderr handler on the package logger (added once)."""
    global _default_handler
    if _default_handler is None:
        _default_handler = logging.StreamHandler(sys.stderr)
        _root.addHandler(_default_handler)


def disable_default_handler() -> None:
    global _default_handler
    if _default_handler is not None:
        _root.removeHandler(_default_handler)
        _default_handler = None


def add_handler(handler: logging.Handler) -> None:
    _root.addHandler(handler)


def remove_handler(handler: logging.Handler) -> None:
    _root.removeHandler(handler)


def disable_propagation() -> None:
    _root.propagate = False


def enable_propagation() -> None:
    _root.propagate = True


def enable_explicit_format() -> None:
    """`[LEVEL|file:line] time >> message` on every handler of the package logger."""
    fmt = logging.Formatter("[%(levelname)s|%(filename)s:%(lineno)s] %(asctime)s >> %(message)s")
    for handler in _root.handlers:
        handler.setFormatter(fmt)


def reset_format() -> None:
    for handler in _root.handlers:
        handler.setFormatter(None)


def warning_advice(self: logging.Logger, *args: object, **kwargs: object) -> None:
    """`logger.warning`, silenced by the environment variable OPENDELTA_NO_ADVISORY_WARNINGS (as 0.3 did with its
    own variable name)."""
    import os

    if not os.getenv("OPENDELTA_NO_ADVISORY_WARNINGS") and not os.getenv("TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        self.warning(*args, **kwargs)
