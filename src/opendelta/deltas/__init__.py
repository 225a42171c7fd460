"""Built-in delta types: importing a module registers its type."""

from . import lora  # noqa: F401
from . import adapter  # noqa: F401
from . import prefix  # noqa: F401
from . import low_rank_adapter  # noqa: F401
