"""``python -m vaultwatch.cli``: the same entry point as the ``vaultwatch`` console script."""

import sys

from . import main

sys.exit(main())
