"""The in-memory backend: `MemoryBroker`, `MemoryStorage` and `MemoryCoordination`.

The reference implementation of the three contracts of `taskflow.abc`: everything lives in
dicts, heaps and deques of one process, on the event loop thread, so each change is one atomic
step. It is the embedded default (no server needed) and the reference the Redis and PostgreSQL
backends are measured against by the conformance suite in ``tests/conformance``.

Each app has a store of its own: `from_url` (``memory://``, or the default of `QueueTasks`)
makes a new one per call, so apps never share tasks here whatever their names, and nothing
needs a namespace. Apps that should share one store share one `MemoryBroker` object.

The package, by job: ``_state.py`` (the per-task and per-queue states and their heaps),
``_storage.py`` (`MemoryStorage`: records, events, and the internal surface the broker uses),
``_broker.py`` (`MemoryBroker`: the message path), ``_coordination.py`` (`MemoryCoordination`:
leases and key-value records).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .._backends import DEFAULT_APP, check_app_name
from ._broker import MemoryBroker as MemoryBroker
from ._coordination import MemoryCoordination as MemoryCoordination
from ._storage import MemoryStorage as MemoryStorage

__all__ = ["MemoryBroker", "MemoryCoordination", "MemoryStorage", "from_url"]


def from_url(url: str, *, app: str = DEFAULT_APP) -> MemoryBroker:
    """Build a fresh memory backend from a ``memory://`` URL (any name after it is ignored).

    Every call makes a new, empty store, so it is the app's own whatever its name (`app` is
    only checked, for the same rule as on the other backends).

    Raises:
        ConfigError: `app` cannot name an app.
        ValueError: the URL's scheme is not ``memory``.
    """
    check_app_name(app)
    scheme = urlsplit(url).scheme
    if scheme != "memory":
        raise ValueError(
            f"taskflow.memory.from_url({url!r}): expected a 'memory://' URL, got scheme "
            f"{scheme!r}; use taskflow.redis for redis:// and taskflow.postgres for postgresql://"
        )
    return MemoryBroker()
