"""`python -m opendelta ...` runs the `opendelta` command."""

import sys

from .app.cli import main

if __name__ == "__main__":
    sys.exit(main())
