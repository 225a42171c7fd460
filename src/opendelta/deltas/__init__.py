"""Built-in delta types: importing a module registers its type."""

from . import (
    adapter,  # noqa: F401
    bitfit,  # noqa: F401
    compacter,  # noqa: F401
    ia3,  # noqa: F401
    lora,  # noqa: F401
    low_rank_adapter,  # noqa: F401
    parallel_adapter,  # noqa: F401
    prefix,  # noqa: F401
    soft_prompt,  # noqa: F401
)
