"""``python -m benchmarks``: run the suite (see `benchmarks.runner`, docs/benchmarks.md)."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
