"""The PostgreSQL backend's schema: names, tables, versioned migrations under an advisory lock.

Every table of an app lives in its own schema, ``<schema>_<app name>`` (`app_schema`; the base
is ``taskflow`` unless ``?schema=`` says otherwise; the tests use one base per run), so apps
with different names on one database never see each other's tasks; its NOTIFY channel is named
after it (`channel_name`). `migrate` creates the schema if needed and applies the migrations it
lacks, in order, in one transaction that holds a transaction-scoped advisory lock derived from
the schema name, so any number of workers starting at once upgrade it exactly once. Each
applied version is a row of ``<schema>.schema_version``. Migrations are append-only: a released
one is never edited; a change is a new migration.

What lives here: the names, the DDL, the task states as SQL lists, and the upgrade procedure.
What does not live here: the statements that move tasks (``_sql_*.py``) and the connections
(``_client.py``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Final

from .._backends import check_app_name
from .._exceptions import ConfigError
from ._schema_flows import MIGRATION_12_FLOWS

if TYPE_CHECKING:
    from ._client import Conn

__all__ = [
    "DEFAULT_SCHEMA",
    "LATEST_VERSION",
    "LIVE_STATES_SQL",
    "MIGRATIONS",
    "NOT_ENDED_SQL",
    "TERMINAL_STATES_SQL",
    "app_schema",
    "channel_name",
    "current_version",
    "migrate",
    "quote_schema",
]

logger = logging.getLogger("taskflow.postgres")

_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
#: PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1).
_MAX_NAME: Final = 63

#: The base of an app's schema name when neither the URL nor the options give one.
DEFAULT_SCHEMA: Final = "taskflow"

#: Live (not terminal) task states; the claim-path indexes cover only these rows, so millions of
#: finished rows never slow a claim down.
LIVE_STATES_SQL: Final = "('queued', 'scheduled', 'retrying', 'running')"
#: Terminal task states.
TERMINAL_STATES_SQL: Final = "('done', 'failed', 'cancelled', 'expired')"
#: States of a task that has not ended: the live ones and ``waiting`` (a flow node waiting for
#: its parents, or a task waiting for its join), which no claim reads.
NOT_ENDED_SQL: Final = "('queued', 'scheduled', 'retrying', 'running', 'waiting')"

_V1_TABLES: Final = """
CREATE TABLE {s}.tasks (
    id                text PRIMARY KEY,
    seq               bigint GENERATED ALWAYS AS IDENTITY,
    name              text NOT NULL,
    queue             text NOT NULL,
    status            text NOT NULL,
    priority          integer NOT NULL DEFAULT 0,
    -- when the row is next claimable: its eta or enqueue time; a retry's time; for a running
    -- task, when its lease lapses
    due_at            double precision NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    retries           integer NOT NULL DEFAULT 0,
    token             bigint NOT NULL DEFAULT 0,
    data              bytea NOT NULL,
    created_at        double precision NOT NULL,
    eta               double precision,
    expires_at        double precision,
    started_at        double precision,
    finished_at       double precision,
    result            bytea,
    error             bytea,
    progress          bytea,
    yields            bytea[] NOT NULL DEFAULT '{{}}',
    parent_id         text,
    order_id          text,
    requeued_from     text,
    requeued_as       text,
    dedup_key         text,
    dedup_ttl_s       double precision,
    dedup_until       double precision,
    store_result      boolean NOT NULL DEFAULT true,
    cancel_requested  boolean NOT NULL DEFAULT false,
    result_expires_at double precision,
    worker_id         text
);

CREATE TABLE {s}.events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue     text NOT NULL,
    task_id   text NOT NULL,
    kind      text NOT NULL,
    at        double precision NOT NULL,
    attempt   integer NOT NULL DEFAULT 0,
    order_id  text,
    detail    text
);
CREATE INDEX events_queue_id ON {s}.events (queue, id);

CREATE TABLE {s}.leases (
    name        text PRIMARY KEY,
    owner       text NOT NULL,
    token       bigint NOT NULL,
    expires_at  double precision NOT NULL
);

CREATE TABLE {s}.kv (
    namespace  text NOT NULL,
    key        text NOT NULL,
    value      bytea NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- One NOTIFY per kind and statement: items joined by commas, split so that no payload
-- exceeds PostgreSQL's 8000-byte limit. Returns how many notifications were sent.
CREATE FUNCTION {s}.notify(channel text, kind text, items text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    chunk text := '';
    item  text;
    sent  integer := 0;
BEGIN
    IF items IS NULL THEN
        RETURN 0;
    END IF;
    FOREACH item IN ARRAY items LOOP
        IF length(chunk) + length(item) > 7000 THEN
            PERFORM pg_notify(channel, kind || chunk);
            sent := sent + 1;
            chunk := '';
        END IF;
        chunk := chunk || ',' || item;
    END LOOP;
    IF chunk <> '' THEN
        PERFORM pg_notify(channel, kind || chunk);
        sent := sent + 1;
    END IF;
    RETURN sent;
END
$$;
"""

_V2_INDEXES: Final = f"""
-- The claim: due live rows of a queue in priority, due time, enqueue order.
CREATE INDEX tasks_claim ON {{s}}.tasks (queue, priority DESC, due_at, seq)
    WHERE status IN {LIVE_STATES_SQL};
-- next_due: the earliest pending due time of a queue.
CREATE INDEX tasks_due ON {{s}}.tasks (queue, due_at) WHERE status IN {LIVE_STATES_SQL};
-- Dedup: one live task per (queue, dedup key); ended ones are found for their dedup TTL.
CREATE UNIQUE INDEX tasks_dedup_live ON {{s}}.tasks (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN {LIVE_STATES_SQL};
CREATE INDEX tasks_dedup_any ON {{s}}.tasks (queue, dedup_key) WHERE dedup_key IS NOT NULL;
-- Dead letters, newest first; cleanup of expired results.
CREATE INDEX tasks_dead ON {{s}}.tasks (queue, finished_at DESC)
    WHERE status = 'failed' AND requeued_as IS NULL;
CREATE INDEX tasks_expiry ON {{s}}.tasks (result_expires_at)
    WHERE result_expires_at IS NOT NULL;
"""

# A requeued dead letter is an operator's decision: it is inserted even while a live task holds
# its dedup key, so requeued copies stay out of the unique index (producers are still checked
# against every live row with the key).
_V3_DEDUP_REQUEUED: Final = f"""
DROP INDEX {{s}}.tasks_dedup_live;
CREATE UNIQUE INDEX tasks_dedup_live ON {{s}}.tasks (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND requeued_from IS NULL AND status IN {LIVE_STATES_SQL};
"""

# Events name their task. A constant default makes this a catalog-only change (no rewrite of
# the events table); rows from before it read as "" (`Event.name`'s default).
_V4_EVENT_NAMES: Final = """
ALTER TABLE {s}.events ADD COLUMN name text NOT NULL DEFAULT '';
"""

# `QueueStats.finished_last_minute`: terminal rows of a queue by finish time (finished_at is
# set only on terminal rows, so claims and retries never touch this index).
_V5_FINISHED: Final = """
CREATE INDEX tasks_finished ON {s}.tasks (queue, finished_at) WHERE finished_at IS NOT NULL;
"""

# Each claim statement names its rows with an id of its own, so a claim whose reply was lost
# (the connection dropped after the server committed it) can be given back by that id. No
# default: a catalog-only change, and no index (the give-back reads a queue's live rows only).
_V6_CLAIM_IDS: Final = """
ALTER TABLE {s}.tasks ADD COLUMN claim_id text;
"""

# Reader/writer locks: a row per lock name (its last fencing token and queue counter, kept after
# it empties, so tokens only grow) and a row per holder or waiter. Every call is one statement,
# `lock_batch`: it locks the rows of the batch's names in name order (no deadlock between
# batches), drops lapsed entries and grants what that frees (`lock_settle`), then does its op
# per entry. The rules are those of taskflow/abc/_coordination.py.
_V7_LOCKS: Final = """
CREATE TABLE {s}.locks (
    name   text PRIMARY KEY,
    token  bigint NOT NULL DEFAULT 0,
    seq    bigint NOT NULL DEFAULT 0
);

CREATE TABLE {s}.lock_entries (
    name        text NOT NULL,
    owner       text NOT NULL,
    mode        text NOT NULL,             -- 'S' shared, 'X' exclusive
    held        boolean NOT NULL,          -- a holder, else a waiter
    token       bigint,                    -- holders: their fencing token
    seq         bigint,                    -- waiters: their place in the queue
    since       double precision,          -- waiters: when they queued
    expires_at  double precision NOT NULL,
    PRIMARY KEY (name, owner)
);
CREATE INDEX lock_entries_queue ON {s}.lock_entries (name, seq) WHERE NOT held;

-- Drop the lock's lapsed entries, then grant the head of its queue what is free: the head
-- exclusive waiter alone, or the run of shared waiters. Returns the owners granted.
CREATE FUNCTION {s}.lock_settle(p_name text, p_now float8, p_exp float8) RETURNS SETOF text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    w       record;
    holders integer;
    x_held  boolean;
    tok     bigint;
BEGIN
    DELETE FROM {s}.lock_entries WHERE name = p_name AND expires_at <= p_now;
    FOR w IN SELECT owner, mode FROM {s}.lock_entries
             WHERE name = p_name AND NOT held ORDER BY seq LOOP
        SELECT count(*), coalesce(bool_or(mode = 'X'), false) INTO holders, x_held
        FROM {s}.lock_entries WHERE name = p_name AND held;
        EXIT WHEN w.mode = 'X' AND holders > 0;
        EXIT WHEN w.mode = 'S' AND x_held;
        UPDATE {s}.locks SET token = token + 1 WHERE name = p_name RETURNING token INTO tok;
        UPDATE {s}.lock_entries
        SET held = true, token = tok, seq = NULL, since = NULL, expires_at = p_exp
        WHERE name = p_name AND owner = w.owner;
        RETURN NEXT w.owner;
        EXIT WHEN w.mode = 'X';
    END LOOP;
END
$$;

-- One request on a settled lock: the token if granted (or already held), else NULL (queued
-- with p_wait; a queued owner keeps its place and refreshes its expiry).
CREATE FUNCTION {s}.lock_request(
    p_name text, p_owner text, p_mode text, p_wait boolean, p_now float8, p_exp float8
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    e    record;
    free boolean;
    tok  bigint;
BEGIN
    SELECT held, token INTO e FROM {s}.lock_entries WHERE name = p_name AND owner = p_owner;
    IF FOUND THEN
        UPDATE {s}.lock_entries SET expires_at = p_exp WHERE name = p_name AND owner = p_owner;
        RETURN CASE WHEN e.held THEN e.token END;
    END IF;
    IF p_mode = 'S' THEN  -- no exclusive holder, and no exclusive waiter anywhere in the queue
        free := NOT EXISTS (SELECT 1 FROM {s}.lock_entries WHERE name = p_name AND mode = 'X');
    ELSE  -- no holder and no waiter
        free := NOT EXISTS (SELECT 1 FROM {s}.lock_entries WHERE name = p_name);
    END IF;
    IF free THEN
        UPDATE {s}.locks SET token = token + 1 WHERE name = p_name RETURNING token INTO tok;
        INSERT INTO {s}.lock_entries (name, owner, mode, held, token, expires_at)
        VALUES (p_name, p_owner, p_mode, true, tok, p_exp);
        RETURN tok;
    END IF;
    IF p_wait THEN
        UPDATE {s}.locks SET seq = seq + 1 WHERE name = p_name RETURNING seq INTO tok;
        INSERT INTO {s}.lock_entries (name, owner, mode, held, seq, since, expires_at)
        VALUES (p_name, p_owner, p_mode, false, tok, p_now, p_exp);
    END IF;
    RETURN NULL;
END
$$;

-- A batch of one op ('acquire', 'renew', 'release', 'withdraw'), entries in order. Rows:
-- (i, result) per entry for acquire (token or NULL) and renew (1 or 0); (NULL, NULL, owner)
-- per owner granted by the call.
CREATE FUNCTION {s}.lock_batch(
    p_op text, p_names text[], p_owners text[], p_modes text[], p_waits boolean[],
    p_tokens bigint[], p_now float8, p_exp float8
) RETURNS TABLE (i integer, result bigint, granted text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n text;
    k integer;
BEGIN
    IF p_op = 'acquire' THEN
        INSERT INTO {s}.locks (name)
        SELECT DISTINCT u FROM unnest(p_names) AS u ORDER BY 1
        ON CONFLICT (name) DO NOTHING;
    END IF;
    PERFORM 1 FROM {s}.locks WHERE name = ANY (p_names) ORDER BY name FOR UPDATE;
    FOR n IN SELECT DISTINCT u FROM unnest(p_names) AS u ORDER BY 1 LOOP
        RETURN QUERY SELECT NULL::integer, NULL::bigint, g
        FROM {s}.lock_settle(n, p_now, p_exp) AS g;
    END LOOP;
    FOR k IN 1 .. coalesce(array_length(p_names, 1), 0) LOOP
        IF p_op = 'acquire' THEN
            RETURN QUERY SELECT k, {s}.lock_request(
                p_names[k], p_owners[k], p_modes[k], p_waits[k], p_now, p_exp), NULL::text;
        ELSIF p_op = 'renew' THEN
            UPDATE {s}.lock_entries SET expires_at = p_exp
            WHERE name = p_names[k] AND owner = p_owners[k] AND held AND token = p_tokens[k];
            RETURN QUERY SELECT k, CASE WHEN FOUND THEN 1::bigint ELSE 0::bigint END, NULL::text;
        ELSE
            IF p_op = 'release' THEN
                DELETE FROM {s}.lock_entries
                WHERE name = p_names[k] AND owner = p_owners[k] AND held AND token = p_tokens[k];
            ELSE  -- withdraw: a request granted since it queued is given back too
                DELETE FROM {s}.lock_entries WHERE name = p_names[k] AND owner = p_owners[k];
            END IF;
            IF FOUND THEN
                RETURN QUERY SELECT NULL::integer, NULL::bigint, g
                FROM {s}.lock_settle(p_names[k], p_now, p_exp) AS g;
            END IF;
        END IF;
    END LOOP;
END
$$;
"""

# Artifact bytes (`PostgresArtifactStore`): one row per upload (staged until committed), its
# chunks of 1 MiB, and per artifact the head naming its visible upload. Chunks go with their
# upload (ON DELETE CASCADE), so dropping a replaced or abandoned upload is one DELETE.
_V8_ARTIFACTS: Final = """
CREATE TABLE {s}.artifact_uploads (
    id          text PRIMARY KEY,
    task_id     text NOT NULL,
    name        text NOT NULL,
    started_at  double precision NOT NULL,
    committed   boolean NOT NULL DEFAULT false
);
CREATE INDEX artifact_uploads_key ON {s}.artifact_uploads (task_id, name);
CREATE INDEX artifact_uploads_staged ON {s}.artifact_uploads (started_at) WHERE NOT committed;

CREATE TABLE {s}.artifact_chunks (
    upload_id  text NOT NULL REFERENCES {s}.artifact_uploads (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (upload_id, seq)
);

CREATE TABLE {s}.artifacts (
    task_id    text NOT NULL,
    name       text NOT NULL,
    upload_id  text NOT NULL REFERENCES {s}.artifact_uploads (id),
    size       bigint NOT NULL,
    sha256     text NOT NULL,
    PRIMARY KEY (task_id, name)
);
"""

# Named checkpoint values of a task's runs (`Storage.save_checkpoints`): rows of their own, so a
# claim (which rewrites the task's row) never touches them, deleted with the task's row.
_V9_CHECKPOINTS: Final = """
CREATE TABLE {s}.checkpoints (
    task_id  text NOT NULL REFERENCES {s}.tasks (id) ON DELETE CASCADE,
    name     text NOT NULL,
    value    bytea NOT NULL,
    PRIMARY KEY (task_id, name)
);
"""

_V10_LOCK_BATCH: Final = """
-- Is an exclusive entry there? (asked by every shared request, beside many shared holders)
CREATE INDEX IF NOT EXISTS lock_entries_exclusive ON {s}.lock_entries (name) WHERE mode = 'X';

-- A batch of one op ('acquire', 'renew', 'release', 'withdraw'), entries in order. Rows:
-- (i, result) per entry for acquire (token or NULL) and renew (1 or 0); (NULL, NULL, owner)
-- per owner granted by the call.
CREATE OR REPLACE FUNCTION {s}.lock_batch(
    p_op text, p_names text[], p_owners text[], p_modes text[], p_waits boolean[],
    p_tokens bigint[], p_now float8, p_exp float8
) RETURNS TABLE (i integer, result bigint, granted text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n text;
    k integer;
BEGIN
    IF p_op = 'acquire' THEN
        INSERT INTO {s}.locks (name)
        SELECT DISTINCT u FROM unnest(p_names) AS u ORDER BY 1
        ON CONFLICT (name) DO NOTHING;
    END IF;
    PERFORM 1 FROM {s}.locks WHERE name = ANY (p_names) ORDER BY name FOR UPDATE;
    FOR n IN SELECT DISTINCT u FROM unnest(p_names) AS u ORDER BY 1 LOOP
        RETURN QUERY SELECT NULL::integer, NULL::bigint, g
        FROM {s}.lock_settle(n, p_now, p_exp) AS g;
    END LOOP;
    FOR k IN 1 .. coalesce(array_length(p_names, 1), 0) LOOP
        IF p_op IN ('release', 'withdraw') THEN
            -- Delete them all first, then settle each lock once (below): a settle per entry
            -- would look at every entry of the lock once per entry of the batch.
            IF p_op = 'release' THEN
                DELETE FROM {s}.lock_entries
                WHERE name = p_names[k] AND owner = p_owners[k] AND held AND token = p_tokens[k];
            ELSE  -- withdraw: a request granted since it queued is given back too
                DELETE FROM {s}.lock_entries WHERE name = p_names[k] AND owner = p_owners[k];
            END IF;
        ELSIF p_op = 'acquire' THEN
            RETURN QUERY SELECT k, {s}.lock_request(
                p_names[k], p_owners[k], p_modes[k], p_waits[k], p_now, p_exp), NULL::text;
        ELSIF p_op = 'renew' THEN
            UPDATE {s}.lock_entries SET expires_at = p_exp
            WHERE name = p_names[k] AND owner = p_owners[k] AND held AND token = p_tokens[k];
            RETURN QUERY SELECT k, CASE WHEN FOUND THEN 1::bigint ELSE 0::bigint END, NULL::text;
        END IF;
    END LOOP;
    IF p_op IN ('release', 'withdraw') THEN
        FOR n IN SELECT DISTINCT u FROM unnest(p_names) AS u ORDER BY 1 LOOP
            RETURN QUERY SELECT NULL::integer, NULL::bigint, g
            FROM {s}.lock_settle(n, p_now, p_exp) AS g;
        END LOOP;
    END IF;
END
$$;
"""

_V11_WORKERS_ERRORS: Final = """
CREATE TABLE {s}.workers (
    id         text PRIMARY KEY,
    entry      bytea NOT NULL,
    expires_at double precision NOT NULL
);
CREATE TABLE {s}.errors (
    seq       bigserial PRIMARY KEY,
    queue     text NOT NULL,
    at        double precision NOT NULL,
    task_id   text NOT NULL,
    name      text NOT NULL,
    attempt   integer NOT NULL,
    worker_id text,
    error     bytea NOT NULL,
    retried   boolean NOT NULL
);
CREATE INDEX errors_by_queue ON {s}.errors (queue, seq);
CREATE INDEX errors_by_time ON {s}.errors (at);
"""

_V12_FLOWS: Final = MIGRATION_12_FLOWS

# An event's id is taken when it is inserted, but the event is seen when its transaction
# commits, so ids are not seen in order: a reader that went past a later id would never see an
# earlier one committed after it. Each event therefore records its transaction; readers take
# only events of transactions older than every one still in progress, in (transaction, id)
# order, which is then final (`_sql_storage.py`, ``_READ_EVENTS``).
_V13_EVENT_XACTS: Final = """
ALTER TABLE {s}.events ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX events_queue_xact ON {s}.events (queue, xact, id);
DROP INDEX {s}.events_queue_id;
"""

#: (version, description, DDL with ``{s}`` for the quoted schema), in order. Append only.
MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (1, "tables: tasks, events, leases, kv; the notify helper", _V1_TABLES),
    (
        2,
        "indexes of the claim path (partial, live rows only), dedup, dead letters, cleanup",
        _V2_INDEXES,
    ),
    (3, "requeued copies stay out of the unique live dedup index", _V3_DEDUP_REQUEUED),
    (4, "events carry their task's name", _V4_EVENT_NAMES),
    (5, "index of finished tasks by queue and finish time (stats)", _V5_FINISHED),
    (6, "running tasks name the claim that took them (a lost claim is given back)", _V6_CLAIM_IDS),
    (7, "reader/writer locks: locks, lock_entries; lock_batch and its helpers", _V7_LOCKS),
    (8, "artifact bytes: uploads, their chunks, and the visible upload of each", _V8_ARTIFACTS),
    (9, "checkpoints of tasks' runs, deleted with their task", _V9_CHECKPOINTS),
    (
        10,
        "locks: a release batch settles each lock once; an index of exclusive lock entries",
        _V10_LOCK_BATCH,
    ),
    (
        11,
        "the worker registry (workers) and the error log of failed attempts (errors)",
        _V11_WORKERS_ERRORS,
    ),
    (
        12,
        "flows: waiting tasks, parents, children and outcome links; their end applied by a trigger",
        _V12_FLOWS,
    ),
    (13, "events record their transaction, read in commit-safe order", _V13_EVENT_XACTS),
)
LATEST_VERSION: Final = MIGRATIONS[-1][0]


def quote_schema(schema: str) -> str:
    """Return `schema` as a quoted SQL identifier, after checking it is a plain name.

    Raises:
        ValueError: the name is not letters, digits, underscores and hyphens (at most 63,
            starting with a letter or an underscore).
    """
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"PostgreSQL schema name {schema!r} is not allowed: use letters, digits, "
            "underscores and hyphens, at most 63 characters, starting with a letter or an "
            "underscore (e.g. 'taskflow')"
        )
    return f'"{schema}"'


def app_schema(schema: str, app: str) -> str:
    """The schema of app `app`'s tables: ``<schema>_<app>`` (``taskflow_billing``).

    Raises:
        ConfigError: `app` cannot name an app, or the two make a name longer than PostgreSQL's
            63 characters.
        ValueError: `schema` is not a plain name (see `quote_schema`).
    """
    check_app_name(app)
    quote_schema(schema)
    name = f"{schema}_{app}"
    if len(name) > _MAX_NAME:
        raise ConfigError(
            f"schema {schema!r} and app name {app!r} make the schema name {name!r}, "
            f"{len(name)} characters; PostgreSQL names are at most {_MAX_NAME}: use a shorter "
            "?schema= or app name"
        )
    return name


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema (channels are database-wide, so it names it)."""
    name = f"taskflow_{schema}"
    if len(name) > _MAX_NAME:
        name = "taskflow_" + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return name


def _lock_key(schema: str) -> int:
    """A signed 64-bit advisory-lock key that belongs to this schema's migrations."""
    digest = hashlib.sha256(f"taskflow.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def current_version(conn: Conn, schema: str) -> int:
    """The schema's applied version (0 if the schema or its version table does not exist)."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_schema(schema)}.schema_version"
    )
    if not exists:
        return 0
    version = await conn.fetchval(
        f"SELECT coalesce(max(version), 0) FROM {quote_schema(schema)}.schema_version"
    )
    return int(version)


async def migrate(conn: Conn, schema: str, *, target: int | None = None) -> int:
    """Create `schema` if needed and apply the missing migrations up to `target` (default: all).

    Safe to call from many processes at once: the work happens in one transaction holding an
    advisory lock keyed by the schema name, and each migration is applied exactly once.
    Returns the version the schema is at afterwards.
    """
    goal = LATEST_VERSION if target is None else target
    if await current_version(conn, schema) >= goal:
        return await current_version(conn, schema)
    s = quote_schema(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.schema_version ("
            " version integer PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await current_version(conn, schema)
        for number, description, ddl in MIGRATIONS:
            if version < number <= goal:
                await conn.execute(ddl.format(s=s))
                await conn.execute(
                    f"INSERT INTO {s}.schema_version (version, description) VALUES ($1, $2)",
                    number,
                    description,
                )
                logger.info("schema %s: applied migration %d (%s)", schema, number, description)
                version = number
    if version > LATEST_VERSION:
        logger.warning(
            "schema %s is at version %d, newer than this taskflow knows (%d): upgrade taskflow",
            schema,
            version,
            LATEST_VERSION,
        )
    return version
