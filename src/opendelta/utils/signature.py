"""OpenDelta 0.3's `opendelta.utils.signature`: a function's argument names."""

from __future__ import annotations

import inspect
from collections import namedtuple
from collections.abc import Callable
from typing import Any

Signature = namedtuple("Signature", ["args", "defaults", "varargs", "keywords"])


def signature(f: Callable[..., Any]) -> Signature:
    """Positional-or-keyword names, their defaults (None when there are none), the *args and **kwargs names."""
    params = list(inspect.signature(f).parameters.values())
    named = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    star = [p.name for p in params if p.kind == p.VAR_POSITIONAL]
    starstar = [p.name for p in params if p.kind == p.VAR_KEYWORD]
    defaults = [p.default for p in named if p.default is not p.empty] or None
    return Signature([p.name for p in named], defaults, star[0] if star else None, starstar[0] if starstar else None)


def get_arg_names(f: Callable[..., Any]) -> list[str]:
    args = signature(f).args
    return args[1:] if args and args[0] == "self" else args


def get_arg_names_inside_func(func: Callable[..., Any]) -> tuple[str, ...]:
    names = func.__code__.co_varnames[: func.__code__.co_argcount]
    return names[1:] if names and names[0] == "self" else names
