"""``python -m concurrentd``: the command line (see _cli, or ``python -m concurrentd --help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
