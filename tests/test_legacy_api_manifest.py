"""Every public name of OpenDelta 0.3.2's package (tests/fixtures/legacy03/api/manifest.json, listed from its
source by list_api.py) resolves here: it either works as in 0.3 (a callable accepting 0.3's parameter names) or,
used, raises LegacyAPIError naming the replacement."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest

from opendelta import DeltaConfig, LegacyAPIError
from opendelta.replaced import Replaced

MANIFEST = json.loads((Path(__file__).parent / "fixtures" / "legacy03" / "api" / "manifest.json").read_text())
ENTRIES = MANIFEST["entries"]


def resolve(name: str):
    """The object at dotted `name`: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


def _accepts(fn, params: list[str]) -> list[str]:
    """The 0.3 parameter names `fn` does not take (a config class: its settings and the keys it ignores)."""
    wanted = [p for p in params if p not in ("self", "cls") and not p.startswith("*")]
    if inspect.isclass(fn) and issubclass(fn, DeltaConfig):
        return [p for p in wanted if p not in {*fn.field_names(), *fn.ignored_keys}]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    taken = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in taken.values()):
        return []
    return [p for p in wanted if p not in taken]


def _check(entry: dict) -> str:
    """'works' or 'replaced' for one entry; fails the test otherwise."""
    try:
        obj = resolve(entry["name"])
    except LegacyAPIError as e:  # an attribute of a replaced class
        assert "not part of this version" in str(e)
        return "replaced"
    if isinstance(obj, Replaced):
        with pytest.raises(LegacyAPIError, match=r"not part of this version: \S"):
            obj()
        return "replaced"
    if entry["kind"] in ("function", "method", "class") and entry.get("params"):
        config = inspect.isclass(obj) and issubclass(obj, DeltaConfig)
        target = obj.__init__ if inspect.isclass(obj) and not config else obj
        missing = _accepts(target, entry["params"])
        assert not missing, f"{entry['name']} does not take 0.3's parameter(s) {missing}"
    if entry["kind"] in ("function", "method", "class"):
        assert callable(obj), entry["name"]
    return "works"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_name_resolves_and_works_or_names_its_replacement(entry):
    _check(entry)


def test_coverage_is_reported():
    """All names resolve; how many work as in 0.3 and how many are replaced (printed with -s)."""
    counts = {"works": 0, "replaced": 0}
    for entry in ENTRIES:
        counts[_check(entry)] += 1
    total = len(ENTRIES)
    print(f"OpenDelta 0.3.2 API: {total}/{total} names resolve; {counts['works']} work, {counts['replaced']} replaced")
    assert counts["works"] + counts["replaced"] == total
