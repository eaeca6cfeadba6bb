"""The coordination's SQL: named leases with fencing tokens, reader/writer locks, versioned
key-value records.

What lives here: the statements of `PostgresCoordination` and `CoordinationStatements`, which
formats them for one schema once. A released lease keeps its token (its expiry is set to
minus infinity), so the next owner's token is higher. The locks' rules are the ``lock_batch``
function of the schema. What does not live here: the tables and functions (``_schema.py``), the
task statements (``_sql_broker.py``, ``_sql_storage.py``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["CoordinationStatements"]

_ACQUIRE_LEASE: Final = """
INSERT INTO {s}.leases AS l (name, owner, token, expires_at)
VALUES ($1, $2, 1, $3::float8 + $4::float8)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > $3 THEN l.token
                 ELSE l.token + 1 END,
    owner = EXCLUDED.owner,
    expires_at = EXCLUDED.expires_at
WHERE l.owner = EXCLUDED.owner OR l.expires_at <= $3
RETURNING token
"""

_RENEW_LEASE: Final = """
UPDATE {s}.leases SET expires_at = $4::float8 + $5::float8
WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at <> '-Infinity'::float8
"""

_RELEASE_LEASE: Final = """
UPDATE {s}.leases SET expires_at = '-Infinity'::float8
WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at <> '-Infinity'::float8
"""

_GET_LEASE: Final = (
    "SELECT owner, token, expires_at FROM {s}.leases WHERE name = $1 AND expires_at > $2"
)

_LOCK_BATCH: Final = "SELECT i, result, granted FROM {s}.lock_batch($1, $2, $3, $4, $5, $6, $7, $8)"
_LOCK_STATES: Final = """
SELECT name, owner, mode, held, token, since, expires_at FROM {s}.lock_entries
WHERE expires_at > $1 AND ($2::text[] IS NULL OR name = ANY ($2::text[]))
ORDER BY name, held DESC, token, seq
"""

_KV_GET: Final = "SELECT value, version FROM {s}.kv WHERE namespace = $1 AND key = $2"
_KV_UPSERT: Final = """
INSERT INTO {s}.kv AS k (namespace, key, value, version) VALUES ($1, $2, $3, 1)
ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, version = k.version + 1
RETURNING version
"""
_KV_CREATE: Final = """
INSERT INTO {s}.kv (namespace, key, value, version) VALUES ($1, $2, $3, 1)
ON CONFLICT (namespace, key) DO NOTHING
RETURNING version
"""
_KV_REPLACE: Final = """
UPDATE {s}.kv SET value = $3, version = version + 1
WHERE namespace = $1 AND key = $2 AND version = $4
RETURNING version
"""
_KV_LIST: Final = "SELECT key, value, version FROM {s}.kv WHERE namespace = $1"
_KV_DELETE: Final = "DELETE FROM {s}.kv WHERE namespace = $1 AND key = $2"

# The worker registry: every write and read deletes the entries lapsed at now first (but
# never one the same statement writes: a row is changed once per statement).
_REGISTER_WORKERS: Final = """
WITH lapsed AS (DELETE FROM {s}.workers WHERE expires_at <= $1 AND id <> ALL ($2::text[]))
INSERT INTO {s}.workers (id, entry, expires_at)
SELECT * FROM unnest($2::text[], $3::bytea[], $4::double precision[])
ON CONFLICT (id) DO UPDATE SET entry = EXCLUDED.entry, expires_at = EXCLUDED.expires_at
"""
_LIST_WORKERS: Final = """
WITH lapsed AS (DELETE FROM {s}.workers WHERE expires_at <= $1)
SELECT entry FROM {s}.workers WHERE expires_at > $1 ORDER BY id
"""
_UNREGISTER_WORKERS: Final = "DELETE FROM {s}.workers WHERE id = ANY ($1::text[])"


class CoordinationStatements:
    """Every statement of the coordination, formatted for one (quoted) schema."""

    def __init__(self, quoted_schema: str) -> None:
        s = quoted_schema
        self.acquire_lease = _ACQUIRE_LEASE.format(s=s)
        self.renew_lease = _RENEW_LEASE.format(s=s)
        self.release_lease = _RELEASE_LEASE.format(s=s)
        self.get_lease = _GET_LEASE.format(s=s)
        self.lock_batch = _LOCK_BATCH.format(s=s)
        self.lock_states = _LOCK_STATES.format(s=s)
        self.kv_get = _KV_GET.format(s=s)
        self.kv_upsert = _KV_UPSERT.format(s=s)
        self.kv_create = _KV_CREATE.format(s=s)
        self.kv_replace = _KV_REPLACE.format(s=s)
        self.kv_list = _KV_LIST.format(s=s)
        self.kv_delete = _KV_DELETE.format(s=s)
        self.register_workers = _REGISTER_WORKERS.format(s=s)
        self.list_workers = _LIST_WORKERS.format(s=s)
        self.unregister_workers = _UNREGISTER_WORKERS.format(s=s)
