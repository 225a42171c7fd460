"""The package logger."""

import logging

logger = logging.getLogger("opendelta")
