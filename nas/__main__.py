"""``python -m nas``: the ``nas`` command, also what ``torchrun ... -m nas`` starts per rank."""

import sys

from nas.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
