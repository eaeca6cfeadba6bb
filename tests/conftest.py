"""Suite-wide pytest setup: Hypothesis profiles and the discovery of backend plugins.

Hypothesis: profile ``ci`` (no deadline, 50 examples, slow data allowed) when the ``CI``
environment variable is set, else ``dev`` (no deadline, 100 examples); ``HYPOTHESIS_PROFILE``
picks one explicitly.

Backend plugins: every ``tests/plugins/backend_*.py`` is loaded as a pytest plugin, found at
import time, so a new backend's fixtures are picked up without editing this file.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

PLUGINS_DIR = Path(__file__).parent / "plugins"


def discover_backend_plugins(directory: Path = PLUGINS_DIR) -> list[str]:
    """Module names of the backend plugins in `directory`, sorted: ``tests.plugins.backend_*``."""
    return [f"tests.plugins.{path.stem}" for path in sorted(directory.glob("backend_*.py"))]


pytest_plugins = discover_backend_plugins()
