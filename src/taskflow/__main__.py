"""``python -m taskflow``: the same as the `taskflow` command."""

import sys

from .cli import main

sys.exit(main())
