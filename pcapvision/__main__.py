"""Allow ``python -m pcapvision``."""

import sys

from pcapvision.cli import main

if __name__ == "__main__":
    sys.exit(main())
