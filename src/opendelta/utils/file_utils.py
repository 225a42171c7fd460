"""OpenDelta 0.3's `opendelta.utils.file_utils` constants."""

import os

default_cache_path = os.path.join(os.path.expanduser("~"), ".cache", "delta_center") + os.sep
WEIGHTS_NAME = "pytorch_model.bin"
