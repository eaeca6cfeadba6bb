"""The PostgreSQL backend on asyncpg: `PostgresBroker`, `PostgresStorage`, `PostgresCoordination`.

```python
broker = taskflow.postgres.from_url("postgresql://user:pw@host/db?schema=jobs", app="shop")
```

Each app has a schema of its own, ``<schema>_<app name>`` (``jobs_shop`` above; the base
defaults to ``taskflow``), so apps with different names on one database share nothing: tables,
NOTIFY channel (named after the schema) and migrations are per app. One row per task in
``<schema>.tasks`` holds both the message and what is known about it. A claim is one statement
that locks due rows with ``FOR UPDATE SKIP LOCKED``, recovers lapsed leases (dead-lettering
those whose attempts are spent) and hands out a higher fencing token; a batch of outcomes is
one statement that checks every token, stores the outcomes, appends the events and sends one
NOTIFY per kind. Workers and result waiters sleep on LISTEN/NOTIFY through one listening
connection per storage, which reconnects with backoff: a ``w:`` notification calls the work
watchers of its queues (`Broker.watch_work`), the end of a task wakes its result waiters, and
the end of a done task with a small result carries it, so its waiters read nothing. Pooled
calls retry on a lost connection, and the pool grows beside them, one connection at a time.
``enqueue(..., connection=conn)`` writes inside the caller's own transaction (the outbox
pattern): the task exists, and workers hear of it, only if it commits. Times always come from
the caller (``now``), never from the server's clock.

This module is the public front: `from_url`, `upgrade`, the three classes, and the two names
of things in the database (`app_schema`, `channel_name`). The package, by job:

* ``_storage.py``: `PostgresStorage` (records, progress, events; the connections, the listener
  and what it wakes, shared with the other two);
* ``_broker.py``: `PostgresBroker` (the message path);
* ``_coordination.py``: `PostgresCoordination` (leases, key-value records);
* ``_artifacts.py``: `PostgresArtifactStore` (artifact bytes in 1 MiB rows);
* ``_client.py``: the driver, the DSN, the pool and its errors; ``_growth.py``: the pool's
  growth beside the calls;
* ``_listener.py``: the LISTEN connection and its payloads; ``_wakeups.py``: the work watchers
  and what was heard per queue;
* ``_codec.py``: rows to structs, batches to statement arguments;
* ``_schema.py``: names, tables, migrations; ``_sql_broker.py``, ``_sql_storage.py``,
  ``_sql_coordination.py``, ``_sql_artifacts.py``: the statements of each part.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from .._backends import DEFAULT_APP
from ._artifacts import PostgresArtifactStore as PostgresArtifactStore
from ._broker import PostgresBroker as PostgresBroker
from ._client import connect, reaching, require_asyncpg, split_dsn
from ._coordination import PostgresCoordination as PostgresCoordination
from ._schema import DEFAULT_SCHEMA, migrate
from ._schema import app_schema as app_schema
from ._schema import channel_name as channel_name
from ._storage import PostgresStorage as PostgresStorage

__all__ = [
    "PostgresArtifactStore",
    "PostgresBroker",
    "PostgresCoordination",
    "PostgresStorage",
    "app_schema",
    "channel_name",
    "from_url",
    "upgrade",
]

#: The options `from_url` passes on to `PostgresStorage`, besides ``schema``.
_STORAGE_OPTIONS: Final = frozenset({"min_pool_size", "max_pool_size", "statement_cache_size"})


def from_url(url: str, *, app: str = DEFAULT_APP, **options: Any) -> PostgresBroker:
    """A `PostgresBroker` (with its `PostgresStorage`) for a ``postgresql://`` URL.

    Args:
        url: ``postgresql://`` or ``postgres://`` DSN; a ``?schema=`` parameter picks the base
            of the schema name.
        app: The app's name; its tables live in the schema ``<schema>_<app>``.
        **options: ``schema`` (default ``"taskflow"``), ``min_pool_size`` (1),
            ``max_pool_size`` (10), ``statement_cache_size`` (asyncpg's; 0 behind pgbouncer
            in transaction mode).

    Raises:
        BackendUnavailable: asyncpg is not installed.
        ConfigError: `app` cannot name an app, or the schema name would be too long.
        ValueError: the URL is not a PostgreSQL URL, or an option is unknown.
    """
    require_asyncpg()
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"taskflow.postgres.from_url({url!r}): the scheme must be postgresql:// or postgres://"
        )
    dsn, schema_in_url = split_dsn(url)
    schema = options.pop("schema", None) or schema_in_url or DEFAULT_SCHEMA
    unknown = set(options) - _STORAGE_OPTIONS
    if unknown:
        raise ValueError(
            f"taskflow.postgres.from_url: unknown option(s) {sorted(unknown)}; "
            f"known: schema, {', '.join(sorted(_STORAGE_OPTIONS))}"
        )
    return PostgresBroker(PostgresStorage(dsn, schema=schema, app=app, **options))


async def upgrade(
    dsn: str,
    schema: str = DEFAULT_SCHEMA,
    *,
    app: str = DEFAULT_APP,
    target: int | None = None,
) -> int:
    """Create or migrate the tables of app `app` (schema ``<schema>_<app>``) by hand (deploy
    scripts, a CLI); a broker also does it when it opens.

    Idempotent and safe to run while workers start (an advisory lock serializes upgraders).
    `target` stops at an older version (for tests of in-place upgrades). Returns the version
    the schema is at afterwards.

    Raises:
        BackendUnavailable: asyncpg is not installed, the server cannot be reached, or it
            refused a statement of the upgrade (a missing privilege, say).
        AuthenticationFailed: the server refused the login.
        ConfigError: `app` cannot name an app, or the schema name would be too long.
    """
    require_asyncpg()
    dsn, schema_in_url = split_dsn(dsn)
    name = app_schema(schema_in_url or schema, app)
    conn = await connect(dsn)
    try:
        async with reaching(dsn):
            return await migrate(conn, name, target=target)
    finally:
        await conn.close()
