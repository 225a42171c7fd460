"""The tested environment is locked (requirements/lock.txt): every requirement of the package and of its dev / test
/ bench / demo extras has an exact version there, the package's ranges admit those versions, and in CI the
installed versions are the locked ones."""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TORCH_SPEC = re.search(r"^TORCH_SPEC \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"lock line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    extras = PYPROJECT["optional-dependencies"]
    lines = PYPROJECT["dependencies"] + [r for extra in ("dev", "test", "bench", "demo") for r in extras[extra]]
    return [Requirement(line) for line in lines]


def test_every_requirement_is_pinned_and_allowed_by_its_range():
    pins = _lock()
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name == "torch":  # installed first from TORCH_SPEC, the only place that names its version
            assert Version(TORCH_SPEC.split("==")[1]) in req.specifier
            continue
        assert name in pins, f"{req.name} is not in {LOCK.name}: run `make upgrade`"
        assert pins[name] in req.specifier, f"{req.name}=={pins[name]} is outside pyproject's {req}"
    assert "torch" not in pins


def test_the_next_major_releases_are_excluded():
    ranges = {canonicalize_name(r.name): r.specifier for r in _requirements()}
    assert Version("3.0") not in ranges["torch"]
    assert Version("6.0") not in ranges["transformers"]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="the locked environment is CI's (make install)")
def test_ci_runs_the_locked_environment():
    different = {}
    for name, version in _lock().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            different[name] = "missing"
            continue
        if installed != version:
            different[name] = f"{installed} (lock: {version})"
    torch_version = Version(metadata.version("torch")).base_version  # 2.13.0+cpu -> 2.13.0
    if torch_version != TORCH_SPEC.split("==")[1]:
        different["torch"] = f"{torch_version} (Makefile: {TORCH_SPEC})"
    assert not different, f"installed packages differ from {LOCK.name}: {different}; rebuild with `make install`"
