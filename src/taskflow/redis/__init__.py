"""The Redis backend: `RedisBroker`, `RedisStorage`, `RedisCoordination` on ``redis.asyncio``.

`from_url` builds them from ``redis://``, ``rediss://`` or ``redis+cluster://host:port``
(``rediss+cluster://`` for TLS). Every state change is one Lua script (``lua/``), run with
EVALSHA, one call per queue per batch; the script also appends the event to the queue's capped
stream and publishes the notification, so there is never a round trip per task for either.
Every key of an app's queue starts with ``<prefix>:<app>:{<queue>}:`` (the app's name
namespaces its keys and channels; the queue is the hash tag, so a queue's keys share one slot of
a Redis Cluster). The data layout and its reasons are in ``docs/internals/redis.md``.

The package, by job: ``_client.py`` (URLs and the redis-py client), ``_routing.py`` (keys, and
the queue of each task id), ``_codec.py`` (script arguments and replies), ``_storage.py``
(`RedisStorage`: records, events, the listener's messages), ``_early.py`` (outcomes pushed
before anyone waited), ``_broker.py`` (`RedisBroker`: the message path), ``_coordination.py``
(`RedisCoordination`: leases and key-value records), ``_artifacts.py``
(`RedisArtifactStore`: artifact bytes in chunks), ``_scripts.py`` and ``lua/`` (the Lua
scripts), ``_lane.py`` (the pipelined connection of script calls), ``_listener.py`` (the shared
pub/sub listener), ``_redispy.py`` (every use of redis-py's private parts). This module is only
the public front: the three classes and `from_url`.
"""

from __future__ import annotations

from typing import Any

from .._backends import DEFAULT_APP, missing_driver

try:
    import redis.asyncio  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_driver("taskflow.redis") from exc

from ._artifacts import RedisArtifactStore as RedisArtifactStore
from ._broker import RedisBroker as RedisBroker
from ._client import parse_url
from ._coordination import RedisCoordination as RedisCoordination
from ._storage import RedisStorage as RedisStorage

__all__ = ["RedisArtifactStore", "RedisBroker", "RedisCoordination", "RedisStorage", "from_url"]


def from_url(url: str, *, app: str = DEFAULT_APP, **options: Any) -> RedisBroker:
    """A `RedisBroker` (with its `RedisStorage`) for a Redis URL.

    Accepts ``redis://host:port/db``, ``rediss://...`` (TLS), and ``redis+cluster://host:port``
    / ``rediss+cluster://...`` for a Redis Cluster (any node's address; ``cluster=True`` does
    the same for a plain URL). `app` is the app's name: every key and channel starts with
    ``<prefix>:<app>:``, so apps with different names share nothing. Options: ``prefix``
    (default ``"taskflow"``; also accepted in the URL as ``?prefix=staging``), and anything
    ``redis.asyncio.Redis.from_url`` accepts.

    Raises:
        ConfigError: the URL's scheme is not one of these, or `app` cannot name an app.
    """
    clean_url, prefix, cluster = parse_url(url, options)
    storage = RedisStorage(clean_url, prefix=prefix, app=app, cluster=cluster, **options)
    return RedisBroker(storage)
