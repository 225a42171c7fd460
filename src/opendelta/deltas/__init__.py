"""Built-in delta types: importing a module registers its type."""

from . import lora  # noqa: F401
from . import adapter  # noqa: F401
from . import prefix  # noqa: F401
from . import low_rank_adapter  # noqa: F401
from . import compacter  # noqa: F401
from . import parallel_adapter  # noqa: F401
from . import bitfit  # noqa: F401
from . import ia3  # noqa: F401
from . import soft_prompt  # noqa: F401
