"""OpenDelta 0.3's `opendelta.delta_configs` import path: `BaseDeltaConfig` is this version's `DeltaConfig`."""

from __future__ import annotations

import transformers

from ._logging import logger
from .config import DeltaConfig as BaseDeltaConfig

CONFIG_NAME = FULL_CONFIGURATION_FILE = "config.json"
transformers_version = transformers.__version__
checked_package_versions = ["transformers_version", "opendelta_version"]

__all__ = ["BaseDeltaConfig", "CONFIG_NAME", "FULL_CONFIGURATION_FILE", "logger"]
