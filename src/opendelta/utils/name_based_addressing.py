"""OpenDelta 0.3's `opendelta.utils.name_based_addressing`: its module-name tests (an entry matches a name it
ends, at a dot boundary; entries written `[r]<regex>` match as a regex ending the name)."""

from __future__ import annotations

import re


def superstring_in(str_a: str, list_b: list[str]) -> bool:
    """Some string of `list_b` contains `str_a`."""
    return any(str_a in b for b in list_b)


def is_child_key(str_a: str, list_b: list[str]) -> bool:
    """`str_a` is one of `list_b` or lies inside one of them (`a.b.c` is a child key of `a.b`)."""
    return any(str_a == b or str_a.startswith(b + ".") for b in list_b)


def endswith_in_normal(str_a: str, list_b: list[str]) -> bool:
    """`str_a` ends with one of `list_b` at a dot boundary."""
    return any(str_a == b or str_a.endswith("." + b) for b in list_b)


def endswith_in_regex(str_a: str, list_b: list[str]) -> bool:
    """A regex of `list_b` matches a dot-bounded tail of `str_a` (first match of each)."""
    for pattern in list_b:
        found = re.search(pattern, str_a)
        if found is not None and found.end() == len(str_a):
            start = found.start()
            if start == 0 or str_a[start - 1] == ".":
                return True
    return False


def endswith_in(str_a: str, list_b: list[str]) -> bool:
    regex = [b[3:] for b in list_b if b.startswith("[r]")]
    return endswith_in_regex(str_a, regex) or endswith_in_normal(str_a, [b for b in list_b if not b.startswith("[r]")])
