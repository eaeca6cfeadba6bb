"""The storage's SQL: task records, progress, checkpoints, the event stream, the error log, cleanup.

What lives here: the statements of `PostgresStorage` and `StorageStatements`, which formats
them for one schema once. The report is one statement like the broker's batched calls: it
updates the rows of the attempts whose token is current, appends their events and notifies
``e:`` in one atomic step. What does not live here: the message path's statements
(``_sql_broker.py``), the coordination's (``_sql_coordination.py``), the tables
(``_schema.py``).
"""

from __future__ import annotations

from typing import Final

from ._codec import TASK_RECORD_COLUMNS
from ._schema import TERMINAL_STATES_SQL

__all__ = ["StorageStatements"]

_REPORT: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::text[])
        WITH ORDINALITY AS i(id, token, progress, detail, ord)
), ys AS (
    SELECT y.owner, array_agg(y.value ORDER BY y.k) AS vals, count(*)::int AS n
    FROM unnest($5::bytea[], $6::int8[]) WITH ORDINALITY AS y(value, owner, k)
    GROUP BY y.owner
), upd AS (
    UPDATE {s}.tasks t SET
        progress = coalesce(i.progress, t.progress),
        yields = t.yields || coalesce(ys.vals, '{{}}'::bytea[])
    FROM input i LEFT JOIN ys ON ys.owner = i.ord
    WHERE t.id = i.id AND t.token = i.token AND t.status = 'running'
    RETURNING i.ord, t.id, t.name, t.queue, t.attempts, t.order_id, t.flow_id,
              i.progress IS NOT NULL AS has_progress, i.detail, coalesce(ys.n, 0) AS n_yields,
              cardinality(t.yields) AS n_total
), ev AS (
    INSERT INTO {s}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
    SELECT queue, id, 'progress', $7::float8, attempts, order_id, detail, name, flow_id
    FROM upd WHERE has_progress
    UNION ALL
    SELECT queue, id, 'yielded', $7::float8, attempts, order_id,
           (upd.n_total - upd.n_yields + k - 1)::text, name, flow_id
    FROM upd, generate_series(1, upd.n_yields) AS k
)
SELECT i.ord, u.ord IS NOT NULL AS ok,
       (SELECT {s}.notify($8, 'e:', array_agg(DISTINCT queue)) FROM upd) AS n
FROM input i LEFT JOIN upd u ON u.ord = i.ord
ORDER BY i.ord
"""

# Rows of attempts whose token is current are locked (FOR SHARE) while their checkpoints are
# written, so a claim committing meanwhile makes the check read its new token and refuse. Of
# several entries for one name the last is kept (one row may not be updated twice).
_SAVE_CHECKPOINTS: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::bytea[])
        WITH ORDINALITY AS i(id, token, name, value, ord)
), ok AS (
    SELECT i.ord, i.id, i.name, i.value FROM input i JOIN {s}.tasks t ON t.id = i.id
    WHERE t.token = i.token AND t.status = 'running'
    FOR SHARE OF t
), ins AS (
    INSERT INTO {s}.checkpoints (task_id, name, value)
    SELECT DISTINCT ON (id, name) id, name, value FROM ok ORDER BY id, name, ord DESC
    ON CONFLICT (task_id, name) DO UPDATE SET value = excluded.value
)
SELECT i.ord, ok.ord IS NOT NULL AS ok FROM input i LEFT JOIN ok ON ok.ord = i.ord ORDER BY i.ord
"""

_CHECKPOINTS: Final = "SELECT name, value FROM {s}.checkpoints WHERE task_id = $1"

_FLOW_TASKS: Final = f"""
SELECT {TASK_RECORD_COLUMNS} FROM {{s}}.tasks WHERE flow_id = $1 ORDER BY created_at, id
"""

_GET_MANY: Final = f"SELECT {TASK_RECORD_COLUMNS} FROM {{s}}.tasks WHERE id = ANY($1::text[])"

# An event's id is taken when it is inserted but the event is seen when its transaction
# commits, so ids are not seen in order (``_V13_EVENT_XACTS``). Events are read in
# (transaction, id) order: first those of transactions older than every transaction still in
# progress (the snapshot's xmin: that part of the order is final, nothing can appear in it
# later), after the cursor's position; then, so a reader sees what was just committed, the
# committed events of younger transactions, which the cursor lists one by one until its
# position passes them (`_codec.EventCursor`). $4 is the ids the cursor lists, $6 whether it
# may list more. One statement, so both parts read one snapshot.
_SAFE: Final = "xact < pg_snapshot_xmin(pg_current_snapshot())"
_EVENT_COLUMNS: Final = (
    "id, xact, task_id, queue, kind, at, attempt, order_id, detail, name, flow_id"
)

_READ_EVENTS: Final = f"""
SELECT id, xact::text AS xact, task_id, queue, kind, at, attempt, order_id, detail, name, flow_id,
       final
FROM (
    (SELECT {_EVENT_COLUMNS}, true AS final FROM {{s}}.events
     WHERE queue = $1 AND (xact, id) > ($2::text::xid8, $3::int8) AND {_SAFE}
       AND NOT id = ANY ($4::int8[])
     ORDER BY xact, id LIMIT $5)
    UNION ALL
    (SELECT {_EVENT_COLUMNS}, false AS final FROM {{s}}.events
     WHERE $6 AND queue = $1 AND (xact, id) > ($2::text::xid8, $3::int8) AND NOT {_SAFE}
       AND NOT id = ANY ($4::int8[])
     ORDER BY xact, id LIMIT $5)
) AS e
ORDER BY final DESC, e.xact, e.id
"""

_LATEST_EVENTS: Final = f"""
SELECT xact::text AS xact, id, final FROM (
    (SELECT xact, id, true AS final FROM {{s}}.events WHERE queue = $1 AND {_SAFE}
     ORDER BY xact DESC, id DESC LIMIT 1)
    UNION ALL
    (SELECT xact, id, false AS final FROM {{s}}.events
     WHERE queue = $1 AND NOT {_SAFE} ORDER BY xact, id LIMIT $2)
) AS e
ORDER BY final DESC, e.xact, e.id
"""

# A cursor of the form events had before they recorded their transaction (an id alone).
_EVENT_XACT: Final = "SELECT xact::text FROM {s}.events WHERE id = $1"

_CLEANUP_TASKS: Final = f"""
WITH doomed AS (
    SELECT id FROM {{s}}.tasks
    WHERE result_expires_at <= $1 AND status IN {TERMINAL_STATES_SQL}
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {{s}}.tasks t USING doomed d WHERE t.id = d.id
"""

_EVENT_QUEUES: Final = """
WITH RECURSIVE q AS (
    (SELECT queue FROM {s}.events ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT e.queue FROM {s}.events e WHERE e.queue > q.queue ORDER BY e.queue LIMIT 1)
    FROM q WHERE q.queue IS NOT NULL
)
SELECT queue FROM q WHERE queue IS NOT NULL
"""

_TRIM_EVENTS: Final = """
DELETE FROM {s}.events
WHERE queue = $1 AND id <= (
    SELECT id FROM {s}.events WHERE queue = $1 ORDER BY id DESC OFFSET $2 LIMIT 1
)
"""

# The error log (written by the broker's complete): newest first, filtered, capped by
# `trim_errors` to about `errors_maxlen` rows per queue.
_READ_ERRORS: Final = """
SELECT at, task_id, name, queue, attempt, worker_id, error, retried FROM {s}.errors
WHERE ($1::float8 IS NULL OR at >= $1) AND ($2::text IS NULL OR name = $2)
  AND ($3::text[] IS NULL OR queue = ANY ($3))
ORDER BY at DESC, seq DESC LIMIT $4
"""
_TRIM_ERRORS: Final = """
DELETE FROM {s}.errors
WHERE queue = $1 AND seq <= (
    SELECT seq FROM {s}.errors WHERE queue = $1 ORDER BY seq DESC OFFSET $2 LIMIT 1
)
"""
_ERROR_QUEUES: Final = "SELECT DISTINCT queue FROM {s}.errors"


class StorageStatements:
    """Every statement of the storage, formatted for one (quoted) schema."""

    def __init__(self, quoted_schema: str) -> None:
        s = quoted_schema
        self.report = _REPORT.format(s=s)
        self.save_checkpoints = _SAVE_CHECKPOINTS.format(s=s)
        self.checkpoints = _CHECKPOINTS.format(s=s)
        self.flow_tasks = _FLOW_TASKS.format(s=s)
        self.get_many = _GET_MANY.format(s=s)
        self.read_events = _READ_EVENTS.format(s=s)
        self.latest_events = _LATEST_EVENTS.format(s=s)
        self.event_xact = _EVENT_XACT.format(s=s)
        self.cleanup_tasks = _CLEANUP_TASKS.format(s=s)
        self.event_queues = _EVENT_QUEUES.format(s=s)
        self.trim_events = _TRIM_EVENTS.format(s=s)
        self.read_errors = _READ_ERRORS.format(s=s)
        self.trim_errors = _TRIM_ERRORS.format(s=s)
        self.error_queues = _ERROR_QUEUES.format(s=s)
