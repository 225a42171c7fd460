"""Built-in delta types: importing a module registers its type."""

from . import lora  # noqa: F401
