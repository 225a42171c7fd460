"""Module addressing: which modules of a backbone a list of names refers to.

A plain entry matches a whole dotted suffix of a module name ("q" matches "...SelfAttention.q", not
"...qq"). An entry starting with "[r]" is a regular expression that must match a whole suffix that starts
on a component boundary ("[r]layer\\.[0-5]\\.attention" matches "encoder.layer.3.attention").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping

from torch import nn

from .errors import ModuleMatchError

REGEX_PREFIX = "[r]"
DELTA_MARKER = "_opendelta_delta_layer"


def is_delta_layer(module: nn.Module) -> bool:
    # the marker is a plain attribute, so it lives in __dict__ (getattr would go through Module.__getattr__)
    return module.__dict__.get(DELTA_MARKER, False)


def _suffix_starts(name: str) -> Iterator[int]:
    yield 0
    for i, ch in enumerate(name):
        if ch == ".":
            yield i + 1


def _compile(pattern: str) -> re.Pattern[str] | None:
    if not pattern.startswith(REGEX_PREFIX):
        return None
    try:
        return re.compile(pattern[len(REGEX_PREFIX) :])
    except re.error as exc:
        raise ModuleMatchError(f"Invalid regular expression {pattern!r}: {exc}.") from None


def name_matches(name: str, pattern: str, _compiled: re.Pattern[str] | None = None) -> bool:
    """Whether the module name `name` is addressed by `pattern` (suffix or "[r]" regex)."""
    regex = _compiled if _compiled is not None else _compile(pattern)
    if regex is None:
        return name == pattern or name.endswith("." + pattern)
    return any(regex.fullmatch(name, start) for start in _suffix_starts(name))


def named_backbone_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """`named_modules()` without the root and without anything inside an attached delta layer."""
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        prefix, module = stack.pop()
        if prefix:
            yield prefix, module
        children = [
            (f"{prefix}.{n}" if prefix else n, c)
            for n, c in module._modules.items()
            if c is not None and not is_delta_layer(c)
        ]
        stack.extend(reversed(children))


def find_modules(
    model: nn.Module,
    patterns: Iterable[str],
    *,
    what: str = "modified_modules",
    aliases: Mapping[str, str] | None = None,
    common: Collection[str] = (),
) -> list[tuple[str, nn.Module]]:
    """All modules addressed by `patterns`, in model order (exclusions are the caller's: see find_targets).

    `aliases` maps raw module names to common-structure names; the entries listed in `common` are matched
    against those names instead of the raw ones. Raises ModuleMatchError naming the closest module names
    when an entry (or the whole list) matches nothing.
    """
    patterns = list(patterns)
    if not patterns:
        raise ModuleMatchError(f"`{what}` is empty: name at least one module to modify.")
    compiled = [(p, _compile(p)) for p in patterns]
    modules = list(named_backbone_modules(model))
    hits: dict[str, int] = {p: 0 for p in patterns}
    found: list[tuple[str, nn.Module]] = []
    aliases = aliases or {}
    for name, module in modules:
        alias = aliases.get(name)
        matched = [
            p
            for p, rx in compiled
            if (alias is not None and name_matches(alias, p, rx) if p in common else name_matches(name, p, rx))
        ]
        if not matched:
            continue
        for p in matched:
            hits[p] += 1
        found.append((name, module))
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        raw_missing = [p for p in missing if p not in common]
        names = [n for n, _ in modules] if raw_missing else list(aliases.values())
        raise ModuleMatchError(_no_match_message(raw_missing or missing, names, what))
    return found


def suffixes(names: Iterable[str], depth: int = 3) -> list[str]:
    """Distinct dotted suffixes (up to `depth` components) of module names, in first-seen order."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        for k in range(1, min(depth, len(parts)) + 1):
            seen.setdefault(".".join(parts[-k:]), None)
    return list(seen)


def _no_match_message(missing: list[str], names: list[str], what: str) -> str:
    candidates = [s for s in suffixes(names) if not s.isdigit()]
    lines = [f"No module of the backbone matches {', '.join(repr(m) for m in missing)} in `{what}`."]
    for m in missing:
        key = m[len(REGEX_PREFIX) :] if m.startswith(REGEX_PREFIX) else m
        close = difflib.get_close_matches(key, candidates, n=5, cutoff=0.4)
        if close:
            lines.append(f"  closest to {m!r}: {', '.join(close)}")
    examples = [n for n in names if n.count(".") <= 4][:12]
    lines.append(
        "  entries match a whole dotted suffix of a module name, or use '[r]<regex>'; "
        f"module names look like: {', '.join(examples)}"
    )
    return "\n".join(lines)


# ----- parameters by name ---------------------------------------------------------------------------------
def delta_layer_prefixes(model: nn.Module) -> set[str]:
    """Names of the delta layers attached to `model`."""
    return {name for name, m in model.named_modules() if name and is_delta_layer(m)}


def inside_any(name: str, prefixes: set[str]) -> bool:
    """Whether the parameter / module `name` lies inside one of the modules named in `prefixes`."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in prefixes for i in range(1, len(parts)))


def _owned_by(param_name: str, pattern: str) -> bool:
    """Whether `param_name` lies under a module addressed by `pattern` at any depth."""
    parts = param_name.split(".")
    return any(name_matches(".".join(parts[:i]), pattern) for i in range(1, len(parts)))


def parameters_under(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of `model`'s parameters, outside delta layers, addressed by `patterns` (a parameter's own name
    or a module above it)."""
    if not patterns:
        return []
    prefixes = delta_layer_prefixes(model)
    return [
        pname
        for pname, _ in model.named_parameters()
        if not inside_any(pname, prefixes) and any(name_matches(pname, p) or _owned_by(pname, p) for p in patterns)
    ]
