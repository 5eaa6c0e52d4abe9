"""``python -m scdl`` == the ``scdl`` console command."""

import sys

from scdl.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
