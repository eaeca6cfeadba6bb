"""The broker's SQL: one statement per batched call of the message path.

Each hot-path call (enqueue, claim, extend, complete, cancel) is a single statement built from
data-modifying CTEs: it reads its batch from parallel arrays (``unnest ... WITH ORDINALITY``,
so results come back in input order), changes the task rows, appends the event rows, and sends
its notifications (``<schema>.notify``; their payloads are described in ``_listener.py``) in
the same atomic step. A NOTIFY is delivered only on commit, so listeners never hear of a change
that did not happen.

What lives here: the statements of `PostgresBroker` and `BrokerStatements`, which formats them
for one schema once. What does not live here: the storage's statements (records, progress,
events, cleanup: ``_sql_storage.py``), the coordination's (``_sql_coordination.py``), the
tables (``_schema.py``).
"""

from __future__ import annotations

from typing import Final

from ._codec import TASK_RECORD_COLUMNS
from ._schema import LIVE_STATES_SQL, NOT_ENDED_SQL, TERMINAL_STATES_SQL

__all__ = ["PUSHED_RESULT_MAX", "BrokerStatements"]

#: A done task's result of at most this many bytes travels in its end's notification.
PUSHED_RESULT_MAX: Final = 192
_PUSHED: Final = f"status = 'done' AND coalesce(octet_length(result), 0) <= {PUSHED_RESULT_MAX}"
_WAITING: Final = "('queued', 'scheduled', 'retrying')"
#: What purge drops: what waits to run, and flow tasks waiting for their parents or join.
_PURGEABLE: Final = "('queued', 'scheduled', 'retrying', 'waiting')"
#: Dead letters: failed tasks not requeued yet.
_DEAD: Final = "status = 'failed' AND requeued_as IS NULL"

_ENQUEUE: Final = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::bytea[], $5::int4[], $6::float8[], $7::float8[],
        $8::int4[], $9::float8[], $10::text[], $11::float8[], $12::bool[], $13::text[],
        $14::text[], $15::text[], $18::text[], $19::text[], $20::text[], $21::text[],
        $22::text[], $23::text[], $24::bool[]
    ) WITH ORDINALITY AS i(id, name, queue, data, priority, eta, created_at, retries, expires_at,
                           dedup_key, dedup_ttl_s, store_result, parent_id, order_id,
                           requeued_from, flow_id, node, waits_for, children, after_failure,
                           outcome_to, is_copy, ord)
), blocked AS (
    SELECT i.ord, (
        SELECT t.id FROM {{s}}.tasks t
        WHERE t.queue = i.queue AND t.dedup_key = i.dedup_key
          AND (t.status IN {NOT_ENDED_SQL} OR t.dedup_until > $16)
        ORDER BY t.seq DESC LIMIT 1
    ) AS by_id
    FROM input i WHERE i.dedup_key IS NOT NULL AND i.requeued_from IS NULL
), ins AS (
    INSERT INTO {{s}}.tasks (
        id, name, queue, status, priority, due_at, data, created_at, eta, retries, expires_at,
        dedup_key, dedup_ttl_s, store_result, parent_id, order_id, requeued_from, flow_id, node,
        waits_for, children, after_failure, outcome_to, is_copy, flow_links)
    SELECT i.id, i.name, i.queue,
           CASE WHEN i.waits_for IS NOT NULL THEN 'waiting'
                WHEN i.eta > $16 THEN 'scheduled' ELSE 'queued' END,
           i.priority, coalesce(i.eta, $16), i.data, i.created_at, i.eta, i.retries,
           i.expires_at, i.dedup_key, i.dedup_ttl_s, i.store_result, i.parent_id, i.order_id,
           i.requeued_from, i.flow_id, i.node,
           CASE WHEN i.waits_for IS NOT NULL
                THEN ARRAY(SELECT jsonb_array_elements_text(i.waits_for::jsonb)) END,
           CASE WHEN i.children IS NOT NULL
                THEN ARRAY(SELECT jsonb_array_elements_text(i.children::jsonb)) END,
           i.after_failure, i.outcome_to, coalesce(i.is_copy, false),
           i.children IS NOT NULL OR i.outcome_to IS NOT NULL
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM blocked b WHERE b.ord = i.ord AND b.by_id IS NOT NULL)
    ORDER BY i.ord
    ON CONFLICT DO NOTHING
    RETURNING id, name, queue, status, order_id, flow_id, waits_for
), waits AS (  -- a waiting task's parents, one row each (see flow_reach_children)
    INSERT INTO {{s}}.flow_waits (child, parent)
    SELECT DISTINCT ins.id, w.parent FROM ins, unnest(ins.waits_for) AS w(parent)
    WHERE ins.status = 'waiting'
), ev AS (
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, name, flow_id)
    SELECT queue, id, status, $16, 0, order_id, name, flow_id FROM ins
)
SELECT i.id, (ins.id IS NOT NULL) AS created, b.by_id,
       (SELECT {{s}}.notify($17, 'w:', array_agg(DISTINCT queue)) FROM ins
        WHERE status <> 'waiting') AS notified
FROM input i
LEFT JOIN ins ON ins.id = i.id
LEFT JOIN blocked b ON b.ord = i.ord
ORDER BY i.ord
"""

# Which task now stands for a message that was not inserted: the one with its id, else the
# live one holding its dedup key.
_ENQUEUE_CONFLICTS: Final = f"""
SELECT i.ord, coalesce(
    (SELECT t.id FROM {{s}}.tasks t WHERE t.id = i.id),
    (SELECT t.id FROM {{s}}.tasks t
     WHERE t.queue = i.queue AND t.dedup_key = i.dedup_key
       AND t.status IN {NOT_ENDED_SQL} LIMIT 1)
) AS existing
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS i(id, queue, dedup_key, ord)
ORDER BY i.ord
"""


# Give back what claims whose reply never arrived took (queues and claim ids, pairwise): the
# worker never saw those rows, so each goes back to wait as a release would (due now, its
# attempt refunded, a `released` event), unless its cancel was requested: then only its lease
# lapses now, and the next claim cancels it. Rows a later claim or outcome moved on are left
# alone (they are no longer running under that claim id), so giving back twice is harmless.
# `_give_back_ctes(now, queues, ids)` is the part both statements below share: CTEs `back`
# (the rows given back) and `back_ev` (their events).
def _give_back_ctes(now: str, queues: str, ids: str) -> str:
    return f"""back AS (
    UPDATE {{s}}.tasks t SET
        status = CASE WHEN t.cancel_requested THEN t.status ELSE 'queued' END,
        attempts = CASE WHEN t.cancel_requested THEN t.attempts
                        ELSE greatest(t.attempts - 1, 0) END,
        due_at = {now},
        progress = NULL,
        yields = ARRAY[]::bytea[],
        worker_id = CASE WHEN t.cancel_requested THEN t.worker_id END,
        claim_id = NULL
    FROM unnest({queues}::text[], {ids}::text[]) AS l(queue, claim_id)
    WHERE t.queue = l.queue AND t.claim_id = l.claim_id AND t.status = 'running'
    RETURNING t.id, t.name, t.queue, t.status, t.attempts, t.order_id, t.flow_id
), back_ev AS (
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
    SELECT queue, id, 'released', {now}, attempts, order_id, 'claim reply lost', name, flow_id
    FROM back WHERE status = 'queued'
)"""


# What a give-back reports: the queues of the rows it requeued (one item per row), and the
# work it announces (``w:``, every queue it touched) and the events (``e:``).
def _give_back_report(channel: str) -> str:
    return f"""(SELECT array_agg(queue) FROM back WHERE status = 'queued') AS released,
       (SELECT {{s}}.notify({channel}, 'w:', array_agg(DISTINCT queue)) FROM back) AS b1,
       (SELECT {{s}}.notify({channel}, 'e:', array_agg(DISTINCT queue)) FROM back
        WHERE status = 'queued') AS b2"""


# Claim from one queue: due waiting rows, and running rows whose lease lapsed, each marked with
# this claim's id ($9). After a lost claim, its variant `_CLAIM_GIVING_BACK` first gives back
# the rows of lost claims ($10 queues, $11 claim ids: see `_give_back_ctes`; the next claim
# takes them); the usual claim does without that part (it costs ~0.1 ms a claim). A lapsed row with
# no attempt left is dead-lettered (LeaseExpired), one whose cancel was requested is cancelled.
# Every row returned also carries `next_due`, the queue's next due time after this claim (what
# `next_due` would read next; an empty claim returns one row with only that): the earliest due
# time of the live rows it did not take, as they were before it, and the leases it handed out;
# after a full claim, now (the worker claims again at once, so it is not worth the scan).
_CLAIM_PARTS: Final = f"""
WITH {{give_back}}cand AS (
    SELECT id, priority, due_at AS old_due, seq,
           CASE WHEN status <> 'running' THEN 'running'
                WHEN cancel_requested THEN 'cancelled'
                WHEN attempts >= retries + 1 THEN 'failed'
                ELSE 'running' END AS verdict
    FROM {{s}}.tasks
    WHERE queue = $1 AND status IN {LIVE_STATES_SQL} AND due_at <= $2
      {{not_given_back}}
    ORDER BY priority DESC, due_at, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE {{s}}.tasks t SET
        status = c.verdict,
        attempts = t.attempts + (c.verdict = 'running')::int,
        token = t.token + (c.verdict = 'running')::int,
        due_at = CASE WHEN c.verdict = 'running' THEN $4 ELSE t.due_at END,
        started_at = CASE WHEN c.verdict = 'running' THEN $2 ELSE t.started_at END,
        progress = CASE WHEN c.verdict = 'running' THEN NULL ELSE t.progress END,
        yields = CASE WHEN c.verdict = 'running' THEN ARRAY[]::bytea[] ELSE t.yields END,
        worker_id = CASE WHEN c.verdict = 'running' THEN $5 ELSE t.worker_id END,
        claim_id = CASE WHEN c.verdict = 'running' THEN $9 ELSE t.claim_id END,
        finished_at = CASE WHEN c.verdict = 'running' THEN NULL ELSE $2 END,
        error = CASE WHEN c.verdict = 'failed' THEN $6 ELSE t.error END,
        result_expires_at = CASE WHEN c.verdict = 'running' THEN NULL
                                 ELSE $2::float8 + $7::float8 END,
        dedup_until = CASE WHEN c.verdict <> 'running' THEN $2 + t.dedup_ttl_s END
    FROM cand c
    WHERE t.id = c.id
    RETURNING t.id, t.name, t.queue, t.status, t.token, t.attempts, t.data, t.order_id,
              t.flow_id, c.priority, c.old_due, c.seq
), ev AS (
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
    SELECT queue, id, status, $2, attempts, order_id,
           CASE WHEN status = 'failed' THEN 'LeaseExpired' END, name, flow_id
    FROM upd
), later AS (
    SELECT CASE WHEN (SELECT count(*) FROM upd) >= $3 THEN $2  -- full: more may be due now
        ELSE least(
            (SELECT min(t.due_at) FROM {{s}}.tasks t
             WHERE t.queue = $1 AND t.status IN {LIVE_STATES_SQL}
               AND t.id <> ALL (ARRAY(SELECT id FROM upd))),
            (SELECT $4::float8 FROM upd WHERE status = 'running' LIMIT 1))
        END AS next_due
)
SELECT u.id, u.status, u.token, u.attempts, u.data, l.next_due,
       (SELECT {{s}}.notify($8, 't:', array_agg(id)) FROM upd WHERE status <> 'running') AS n1,
       (SELECT {{s}}.notify($8, 'e:', array_agg(DISTINCT queue)) FROM upd) AS n2,
       {{give_back_report}}
FROM later l LEFT JOIN upd u ON true
ORDER BY u.priority DESC, u.old_due, u.seq
"""
_CLAIM: Final = _CLAIM_PARTS.format(
    s="{s}", give_back="", not_given_back="", give_back_report="NULL::text[] AS released"
)
_CLAIM_GIVING_BACK: Final = _CLAIM_PARTS.format(
    s="{s}",
    give_back=_give_back_ctes("$2", "$10", "$11") + ", ",
    not_given_back="AND id NOT IN (SELECT id FROM back)  -- one update per row and statement",
    give_back_report=_give_back_report("$8"),
)

_GIVE_BACK: Final = f"""
WITH {_give_back_ctes("$3", "$1", "$2")}
SELECT {_give_back_report("$4")}
"""

_EXTEND: Final = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS i(id, token, ord)
), upd AS (
    UPDATE {s}.tasks t SET due_at = $3
    FROM input i
    WHERE t.id = i.id AND t.token = i.token AND t.status = 'running'
    RETURNING i.ord, t.cancel_requested
)
SELECT i.ord, u.ord IS NOT NULL AS ok, coalesce(u.cancel_requested, false) AS cancel
FROM input i LEFT JOIN upd u ON u.ord = i.ord
ORDER BY i.ord
"""

# Every row put back to wait (a retry, a release) is announced as work, due now or later: an idle
# worker's timer was set from the due times it read before, so it must read them again. A done
# task with a small result is announced with it (``d:`` items ``<result expiry>;<base64
# result>;<id>``), so its waiters need not read it; other ends are announced by id (``t:``).
_COMPLETE: Final = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::int8[], $3::text[], $4::bytea[], $5::bytea[], $6::float8[],
        $7::float8[], $8::text[]
    ) WITH ORDINALITY AS i(id, token, kind, result, error, retry_at, result_expires_at, detail,
                           ord)
), prev AS (  -- the claiming worker of a failed attempt, before a retry forgets it (the
              -- same snapshot as upd); no read at all for a batch without one
    SELECT t.id, t.worker_id FROM {{s}}.tasks t
    WHERE t.id IN (SELECT id FROM input WHERE kind IN ('retry', 'failed') AND error IS NOT NULL)
), upd AS (
    UPDATE {{s}}.tasks t SET
        status = CASE i.kind
            WHEN 'retry' THEN 'retrying'
            -- a WAIT from a run whose cancel was requested: the request wins
            WHEN 'wait' THEN CASE WHEN t.cancel_requested THEN 'cancelled' ELSE 'waiting' END
            WHEN 'release' THEN
                CASE WHEN coalesce(i.retry_at, $9) > $9 THEN 'scheduled' ELSE 'queued' END
            ELSE i.kind END,
        attempts = CASE WHEN i.kind = 'release' THEN greatest(t.attempts - 1, 0)
                        ELSE t.attempts END,
        due_at = CASE WHEN i.kind IN ('retry', 'release') THEN coalesce(i.retry_at, $9)
                      ELSE t.due_at END,
        result = CASE WHEN i.kind = 'done' AND t.store_result THEN i.result ELSE t.result END,
        error = CASE WHEN i.kind = 'release' THEN t.error ELSE i.error END,
        -- a release refunds the attempt: none of its progress or yields stay behind
        progress = CASE WHEN i.kind = 'release' THEN NULL ELSE t.progress END,
        yields = CASE WHEN i.kind = 'release' THEN ARRAY[]::bytea[] ELSE t.yields END,
        finished_at = CASE WHEN i.kind IN ('retry', 'release') THEN NULL
                           WHEN i.kind = 'wait' AND NOT t.cancel_requested THEN NULL
                           ELSE $9 END,
        result_expires_at = CASE WHEN i.kind IN ('retry', 'release') THEN NULL
                                 WHEN i.kind = 'wait' AND NOT t.cancel_requested THEN NULL
                                 WHEN i.kind = 'wait' THEN $9::float8 + $11::float8
                                 ELSE i.result_expires_at END,
        worker_id = CASE WHEN i.kind IN ('retry', 'release') THEN NULL
                         WHEN i.kind = 'wait' AND NOT t.cancel_requested THEN NULL
                         ELSE t.worker_id END,
        dedup_until = CASE WHEN i.kind IN ('retry', 'release') THEN NULL
                           WHEN i.kind = 'wait' AND NOT t.cancel_requested THEN NULL
                           ELSE $9 + t.dedup_ttl_s END
    FROM input i
    WHERE t.id = i.id AND t.token = i.token AND t.status = 'running'
      -- a flow task ended by an earlier outcome of the batch (its copy's, its join's): the
      -- first outcome wins, as if the batch were completed one outcome at a time
      -- (looked for only for a row with links, through the outcome_to index: a task pointing
      -- at it whose outcome comes earlier in the batch; the batch's arrays are read by
      -- position, not from a CTE: a CTE read here, rechecked after a lock wait, returned the
      -- row twice)
      AND (NOT t.flow_links OR NOT EXISTS (
          SELECT 1 FROM {{s}}.tasks o, LATERAL (SELECT array_position($1, o.id) AS k) AS e
          WHERE o.outcome_to = t.id AND o.status = 'running' AND e.k < i.ord
            AND o.token = $2[e.k] AND $3[e.k] IN ('done', 'failed', 'cancelled', 'expired')))
    RETURNING i.ord, t.id, t.name, t.queue, t.status, t.due_at, t.attempts, t.order_id, i.kind,
              i.detail, t.result, t.result_expires_at, t.flow_id
), ev AS (  -- a WAIT's detail is its join: the task whose outcome goes to it
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
    SELECT u.queue, u.id,
           CASE u.kind WHEN 'retry' THEN 'retrying' WHEN 'release' THEN 'released'
                       WHEN 'wait' THEN u.status ELSE u.kind END,
           $9, u.attempts, u.order_id,
           CASE WHEN u.status = 'waiting' THEN (
               SELECT j.id FROM {{s}}.tasks j WHERE j.outcome_to = u.id AND NOT j.is_copy
               ORDER BY j.seq LIMIT 1) ELSE u.detail END,
           u.name, u.flow_id
    FROM upd u
), errs AS (  -- the error log: each failed attempt (a retry or a failure with an error)
    INSERT INTO {{s}}.errors (queue, at, task_id, name, attempt, worker_id, error, retried)
    SELECT u.queue, $9, u.id, u.name, u.attempts, p.worker_id, i.error, u.kind = 'retry'
    FROM upd u JOIN input i ON i.ord = u.ord LEFT JOIN prev p ON p.id = u.id
    WHERE u.kind IN ('retry', 'failed') AND i.error IS NOT NULL
)
SELECT i.ord, u.ord IS NOT NULL AS ok, u.status, u.queue,
       (SELECT {{s}}.notify($10, 'd:', array_agg(
            coalesce(result_expires_at::text, '') || ';'
            || coalesce(translate(encode(result, 'base64'), E'\\n', ''), '') || ';' || id))
        FROM upd WHERE {_PUSHED}) AS n0,
       (SELECT {{s}}.notify($10, 't:', array_agg(id)) FROM upd
        WHERE status IN {TERMINAL_STATES_SQL} AND NOT ({_PUSHED})) AS n1,
       (SELECT {{s}}.notify($10, 'w:', array_agg(DISTINCT queue)) FROM upd
        WHERE status IN {_WAITING}) AS n2,
       (SELECT {{s}}.notify($10, 'e:', array_agg(DISTINCT queue)) FROM upd) AS n3
FROM input i LEFT JOIN upd u ON u.ord = i.ord
ORDER BY i.ord
"""

# Wake: waiting rows not due yet become due now, at their first due time (their eta, else when
# they were made; never later than now) so that they sort where they first did; a released row
# reads 'queued' again. Announced as work, as a release is.
_WAKE: Final = f"""
WITH upd AS (
    UPDATE {{s}}.tasks t SET
        due_at = least(coalesce(t.eta, t.created_at), $2),
        status = CASE WHEN t.status = 'scheduled' THEN 'queued' ELSE t.status END
    WHERE t.id = ANY($1::text[]) AND t.status IN {_WAITING} AND t.due_at > $2
    RETURNING t.queue
)
SELECT {{s}}.notify($3, 'w:', array_agg(DISTINCT queue)) AS n, array_agg(DISTINCT queue) AS queues
FROM upd
"""

_CANCEL: Final = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[]) WITH ORDINALITY AS i(id, ord)
), upd AS (
    UPDATE {{s}}.tasks t SET
        status = CASE WHEN t.status = 'running' THEN 'running' ELSE 'cancelled' END,
        cancel_requested = true,
        finished_at = CASE WHEN t.status = 'running' THEN t.finished_at ELSE $2 END,
        result_expires_at = CASE WHEN t.status = 'running' THEN t.result_expires_at
                                 ELSE $2::float8 + $3::float8 END,
        dedup_until = CASE WHEN t.status = 'running' THEN t.dedup_until
                           ELSE $2 + t.dedup_ttl_s END
    FROM (SELECT DISTINCT id FROM input) i
    WHERE t.id = i.id AND t.status IN {NOT_ENDED_SQL}
      AND NOT (t.status = 'running' AND t.cancel_requested)
    RETURNING t.id, t.name, t.queue, t.status, t.attempts, t.order_id, t.flow_id
), ev AS (
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, name, flow_id)
    SELECT queue, id,
           CASE WHEN status = 'running' THEN 'cancel_requested' ELSE 'cancelled' END,
           $2, attempts, order_id, name, flow_id
    FROM upd
)
SELECT i.ord, u.status, u.queue,
       (SELECT x.status FROM {{s}}.tasks x WHERE x.id = i.id) AS before,
       (SELECT {{s}}.notify($4, 't:', array_agg(id)) FROM upd
        WHERE status = 'cancelled') AS n1,
       (SELECT {{s}}.notify($4, 'e:', array_agg(DISTINCT queue)) FROM upd) AS n2
FROM input i LEFT JOIN upd u ON u.id = i.id
ORDER BY i.ord
"""

# Purge: every waiting task of queue $1 ends cancelled with error $4 (its type $5 is the
# event's detail), as a cancel of a queued task would; running ones are left alone.
_PURGE: Final = f"""
WITH upd AS (
    UPDATE {{s}}.tasks t SET
        status = 'cancelled',
        cancel_requested = true,
        error = $4,
        finished_at = $2,
        result_expires_at = $2::float8 + $3::float8,
        dedup_until = $2 + t.dedup_ttl_s
    WHERE t.queue = $1 AND t.status IN {_PURGEABLE}
    RETURNING t.id, t.attempts, t.order_id, t.name, t.flow_id
), ev AS (
    INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
    SELECT $1, id, 'cancelled', $2, attempts, order_id, $5, name, flow_id FROM upd
)
SELECT (SELECT array_agg(id) FROM upd) AS ids,
       (SELECT {{s}}.notify($6, 't:', array_agg(id)) FROM upd) AS n1,
       (SELECT {{s}}.notify($6, 'e:', ARRAY[$1]) WHERE EXISTS (SELECT 1 FROM upd)) AS n2
"""

_NEXT_DUE: Final = f"""
SELECT min(due_at) FROM {{s}}.tasks
WHERE queue = ANY($1::text[]) AND status IN {LIVE_STATES_SQL}
"""

_STATS: Final = f"""
SELECT q.queue,
       count(t.id) FILTER (WHERE t.status IN {_WAITING} AND t.due_at <= $2) AS queued,
       count(t.id) FILTER (WHERE t.status IN {_WAITING} AND t.due_at > $2) AS scheduled,
       count(t.id) FILTER (WHERE t.status = 'running') AS running,
       (SELECT count(*) FROM {{s}}.tasks d WHERE d.queue = q.queue AND d.{_DEAD})
           AS dead,
       (SELECT count(*) FROM {{s}}.tasks f
        WHERE f.queue = q.queue AND f.finished_at > $2 - 60 AND f.finished_at <= $2)
           AS finished_last_minute,
       (SELECT count(*) FROM {{s}}.tasks w WHERE w.queue = q.queue AND w.status = 'waiting')
           AS waiting
FROM unnest($1::text[]) WITH ORDINALITY AS q(queue, ord)
LEFT JOIN {{s}}.tasks t ON t.queue = q.queue AND t.status IN {LIVE_STATES_SQL}
GROUP BY q.queue, q.ord
ORDER BY q.ord
"""

_DEAD_LETTERS: Final = f"""
SELECT {TASK_RECORD_COLUMNS} FROM {{s}}.tasks
WHERE queue = $1 AND {_DEAD}
ORDER BY finished_at DESC, seq DESC
LIMIT $2 OFFSET $3
"""

_LOCK_DEAD: Final = f"""
SELECT id, data FROM {{s}}.tasks
WHERE id = ANY($1::text[]) AND {_DEAD}
FOR UPDATE
"""

_EXISTING_IDS: Final = "SELECT id FROM {s}.tasks WHERE id = ANY($1::text[])"

# Requeued dead letters leave the dead-letter list and hand their dedup key to the new task.
_MARK_REQUEUED: Final = """
WITH n AS (
    SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(old_id, new_id, ord)
), upd AS (
    UPDATE {s}.tasks t SET requeued_as = n.new_id, dedup_until = NULL
    FROM n WHERE t.id = n.old_id
    RETURNING t.queue, t.id, t.name, t.attempts, t.order_id, t.flow_id, n.new_id, n.ord
)
INSERT INTO {s}.events (queue, task_id, kind, at, attempt, order_id, detail, name, flow_id)
SELECT queue, id, 'requeued', $3::float8, attempts, order_id, new_id, name, flow_id
FROM upd ORDER BY ord
"""


class BrokerStatements:
    """Every statement of the broker, formatted for one (quoted) schema."""

    def __init__(self, quoted_schema: str) -> None:
        s = quoted_schema
        self.enqueue = _ENQUEUE.format(s=s)
        self.enqueue_conflicts = _ENQUEUE_CONFLICTS.format(s=s)
        self.claim = _CLAIM.format(s=s)
        self.claim_giving_back = _CLAIM_GIVING_BACK.format(s=s)
        self.give_back = _GIVE_BACK.format(s=s)
        self.extend = _EXTEND.format(s=s)
        self.complete = _COMPLETE.format(s=s)
        self.cancel = _CANCEL.format(s=s)
        self.wake = _WAKE.format(s=s)
        self.purge = _PURGE.format(s=s)
        self.next_due = _NEXT_DUE.format(s=s)
        self.stats = _STATS.format(s=s)
        self.dead_letters = _DEAD_LETTERS.format(s=s)
        self.lock_dead = _LOCK_DEAD.format(s=s)
        self.existing_ids = _EXISTING_IDS.format(s=s)
        self.mark_requeued = _MARK_REQUEUED.format(s=s)
