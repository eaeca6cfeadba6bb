"""Migration 12 of the PostgreSQL schema: flows (``docs/internals/postgres.md``, "Flows").

A task's links live in columns of its row (``flow_id``, ``node``, ``waits_for``, ``children``,
``after_failure``, ``outcome_to``, ``is_copy``) and, for a waiting child, in ``flow_waits``: one
row per parent that has not arrived yet (deleted when it arrives, so a parent counts once and a
join of ten thousand shards never rewrites a large row). ``flow_links`` is true on each row
whose end must reach another one: it has children or an
``outcome_to``, or another task's ``outcome_to`` names it. How an end reaches the linked tasks
(the rules of `taskflow.abc.Broker.complete`) is PL/pgSQL, run by two row triggers whose
``WHEN`` clause keeps every other row out of it:

- ``tasks_flow_ended`` (``AFTER UPDATE OF status``): a linked row reaching a terminal status, by
  any statement (complete, cancel, purge, a claim dead-lettering a lapsed lease), runs
  `flow_settle` at the end of that statement, in its transaction: the children, the
  ``outcome_to`` target and the superseded tasks, and again for each task ended that way (a
  worklist, not a recursion: ``pg_trigger_depth() = 0`` keeps the cascade's own updates from
  firing the trigger again);
- ``tasks_flow_inserted`` (``AFTER INSERT``, at the end of the enqueue statement, so once
  every message of the call is stored): a row with an ``outcome_to`` marks its target linked,
  emits ``hedged`` on it for a copy, and is superseded at once if its target ended already.

A plain task (no flow field) is never looked at: its row fails the ``WHEN`` clause, which costs
a few comparisons in the executor. Times are the caller's, as everywhere: a cascade happens at
the ended parent's ``finished_at`` (the ``now`` of the statement that ended it).

Errors are stored msgpack-encoded (`taskflow.abc.ErrorInfo`, an array of three strings);
``mp_error`` writes one and ``mp_error_text`` reads one back as ``"<type>: <message>"``.

What does not live here: the statements that move tasks (``_sql_broker.py``), the other
migrations and the upgrade procedure (``_schema.py``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIGRATION_12_FLOWS"]

_TERMINAL: Final = "('done', 'failed', 'cancelled', 'expired')"
_NOT_ENDED: Final = "('queued', 'scheduled', 'retrying', 'running', 'waiting')"

_COLUMNS: Final = f"""
ALTER TABLE {{s}}.tasks
    ADD COLUMN flow_id text,
    ADD COLUMN node text,
    ADD COLUMN waits_for text[],
    ADD COLUMN children text[],
    ADD COLUMN after_failure text,
    ADD COLUMN outcome_to text,
    ADD COLUMN is_copy boolean NOT NULL DEFAULT false,
    ADD COLUMN flow_links boolean NOT NULL DEFAULT false;
ALTER TABLE {{s}}.events ADD COLUMN flow_id text;

-- The parents each waiting child still waits for; gone with the child's row.
CREATE TABLE {{s}}.flow_waits (
    child   text NOT NULL REFERENCES {{s}}.tasks (id) ON DELETE CASCADE,
    parent  text NOT NULL,
    PRIMARY KEY (child, parent)
);

-- Storage.flow_tasks: a flow's rows, oldest first.
CREATE INDEX tasks_flow ON {{s}}.tasks (flow_id, created_at, id) WHERE flow_id IS NOT NULL;
-- The tasks whose outcome goes to a task (superseded when it ends; a WAIT's join).
CREATE INDEX tasks_outcome_to ON {{s}}.tasks (outcome_to) WHERE outcome_to IS NOT NULL;
-- QueueStats.waiting.
CREATE INDEX tasks_waiting ON {{s}}.tasks (queue) WHERE status = 'waiting';
-- A waiting task holds its dedup key as a live one does.
DROP INDEX {{s}}.tasks_dedup_live;
CREATE UNIQUE INDEX tasks_dedup_live ON {{s}}.tasks (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND requeued_from IS NULL AND status IN {_NOT_ENDED};
"""

_HELPERS: Final = """
-- The NOTIFY channel of a schema (as `taskflow.postgres.channel_name`).
CREATE FUNCTION {s}.flow_channel(p_schema text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length('taskflow_' || p_schema) > 63
                THEN 'taskflow_' || left(encode(sha256(convert_to(p_schema, 'UTF8')), 'hex'), 40)
                ELSE 'taskflow_' || p_schema END
$$;

-- A msgpack string.
CREATE FUNCTION {s}.mp_str(p text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN n < 32 THEN set_byte('\\x00'::bytea, 0, 160 + n)
                WHEN n < 256 THEN '\\xd9'::bytea || set_byte('\\x00'::bytea, 0, n)
                WHEN n < 65536 THEN '\\xda'::bytea || substring(int4send(n) FROM 3 FOR 2)
                ELSE '\\xdb'::bytea || int4send(n) END || b
    FROM (SELECT convert_to(p, 'UTF8') AS b) AS x, LATERAL (SELECT length(x.b) AS n) AS y
$$;

-- An ErrorInfo(type, message, "") as the error column holds it.
CREATE FUNCTION {s}.mp_error(p_type text, p_message text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT '\\x93'::bytea || {s}.mp_str(p_type) || {s}.mp_str(p_message) || {s}.mp_str('')
$$;

-- "<type>: <message>" of a stored error (NULL if none, or if it does not read).
CREATE FUNCTION {s}.mp_error_text(p bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    pos   integer := 1;
    parts text[] := '{{}}';
    h     integer;
    n     integer;
BEGIN
    IF p IS NULL OR get_byte(p, 0) NOT BETWEEN 146 AND 159 THEN  -- a fixarray of 2 or more
        RETURN NULL;
    END IF;
    FOR k IN 1 .. 2 LOOP
        h := get_byte(p, pos);
        IF h BETWEEN 160 AND 191 THEN
            n := h - 160; pos := pos + 1;
        ELSIF h = 217 THEN
            n := get_byte(p, pos + 1); pos := pos + 2;
        ELSIF h = 218 THEN
            n := get_byte(p, pos + 1) * 256 + get_byte(p, pos + 2); pos := pos + 3;
        ELSIF h = 219 THEN
            n := ((get_byte(p, pos + 1) * 256 + get_byte(p, pos + 2)) * 256
                  + get_byte(p, pos + 3)) * 256 + get_byte(p, pos + 4);
            pos := pos + 5;
        ELSE
            RETURN NULL;
        END IF;
        parts := parts || convert_from(substring(p FROM pos + 1 FOR n), 'UTF8');
        pos := pos + n;
    END LOOP;
    RETURN parts[1] || ': ' || parts[2];
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

-- How a task is named in the errors of the tasks its end reaches: "<node or name> (<id>)".
CREATE FUNCTION {s}.flow_who(p_id text, p_node text, p_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_node, p_name) || ' (' || p_id || ')'
$$;
"""

# Parent p_parent ended (at p_now): each of p_children still waiting for it counts it. Returns
# the linked children it ended (to settle in turn).
_REACH_CHILDREN: Final = """
CREATE FUNCTION {s}.flow_reach_children(
    p_parent text, p_children text[], p_now float8, p_chan text
) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    par     record;
    why     text;
    arrived text[];
    ended   text[];
    n1      integer;
    n2      integer;
    n3      integer;
BEGIN
    -- The children still waiting that wait for it (rows locked in id order) count it: its
    -- edge goes, so it is counted once.
    WITH locked AS (
        SELECT id FROM {s}.tasks
        WHERE id = ANY (p_children) AND status = 'waiting'
        ORDER BY id
        FOR UPDATE
    ), gone AS (
        DELETE FROM {s}.flow_waits w USING locked l
        WHERE w.child = l.id AND w.parent = p_parent
        RETURNING w.child
    )
    SELECT array_agg(child) INTO arrived FROM gone;
    IF arrived IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT id, name, node, status, error, finished_at, result_expires_at INTO par
    FROM {s}.tasks WHERE id = p_parent;
    -- The edges left are looked for from the highest parent id down: parents are claimed, so
    -- mostly end, in id order, and the edges gone (whose index entries a scan still visits
    -- until they are vacuumed) are then behind, so a join of n shards costs O(n), not O(n^2).
    IF par.status = 'done' THEN  -- the usual case: only the children with no parent left
        SELECT array_agg(a) INTO arrived FROM unnest(arrived) AS a
        WHERE NOT EXISTS (SELECT 1 FROM {s}.flow_waits w WHERE w.child = a
                          ORDER BY w.parent DESC LIMIT 1);
        IF arrived IS NULL THEN
            RETURN NULL;
        END IF;
    ELSE
        why := {s}.flow_who(par.id, par.node, par.name) || ' ' || par.status
               || coalesce(': ' || {s}.mp_error_text(par.error), '');
    END IF;
    WITH verdict AS (
        SELECT c.id, CASE
            WHEN par.status <> 'done' AND c.after_failure = 'skip' THEN 'cancelled'
            WHEN par.status <> 'done' AND c.after_failure <> 'run' THEN 'failed'
            WHEN EXISTS (SELECT 1 FROM {s}.flow_waits w WHERE w.child = c.id
                         ORDER BY w.parent DESC LIMIT 1) THEN 'waiting'
            WHEN c.eta > p_now THEN 'scheduled'
            ELSE 'queued' END AS status
        FROM {s}.tasks c WHERE c.id = ANY (arrived)
    ), upd AS (
        UPDATE {s}.tasks c SET
            status = v.status,
            due_at = CASE WHEN v.status IN ('queued', 'scheduled') THEN coalesce(c.eta, p_now)
                          ELSE c.due_at END,
            error = CASE v.status WHEN 'failed' THEN {s}.mp_error('UpstreamFailed', why)
                                  WHEN 'cancelled' THEN {s}.mp_error('Skipped', why)
                                  ELSE c.error END,
            finished_at = CASE WHEN v.status IN ('failed', 'cancelled') THEN p_now END,
            result_expires_at = CASE WHEN v.status IN ('failed', 'cancelled')
                                     THEN p_now + (par.result_expires_at - par.finished_at) END,
            dedup_until = CASE WHEN v.status IN ('failed', 'cancelled')
                               THEN p_now + c.dedup_ttl_s END
        FROM verdict v
        WHERE c.id = v.id AND v.status <> 'waiting'
        RETURNING c.id, c.name, c.queue, c.status, c.attempts, c.order_id, c.flow_id, c.flow_links
    ), ev AS (
        INSERT INTO {s}.events (queue, task_id, kind, at, attempt, order_id, detail, name,
                                  flow_id)
        SELECT queue, id, status, p_now, attempts, order_id,
               CASE status WHEN 'failed' THEN 'UpstreamFailed' WHEN 'cancelled' THEN 'Skipped'
                           ELSE 'ready' END,
               name, flow_id
        FROM upd
    )
    SELECT array_agg(id) FILTER (WHERE status IN ('failed', 'cancelled') AND flow_links),
           {s}.notify(p_chan, 't:', array_agg(id) FILTER (
               WHERE status IN ('failed', 'cancelled'))),
           {s}.notify(p_chan, 'w:', array_agg(DISTINCT queue) FILTER (
               WHERE status IN ('queued', 'scheduled'))),
           {s}.notify(p_chan, 'e:', array_agg(DISTINCT queue))
    INTO ended, n1, n2, n3
    FROM upd;
    RETURN ended;
END
$$;
"""

# Task p_id ended: its outcome_to target ends the same way if it has not ended yet (a running
# one loses its lease: its status is no longer running). Returns the target if it ended.
_ADOPT: Final = f"""
CREATE FUNCTION {{s}}.flow_adopt(p_id text, p_chan text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    src   record;
    ended text[];
    n1    integer;
    n2    integer;
BEGIN
    SELECT id, status, result, error, finished_at, result_expires_at, outcome_to, is_copy
    INTO src FROM {{s}}.tasks WHERE id = p_id;
    WITH upd AS (
        UPDATE {{s}}.tasks x SET
            status = src.status,
            result = CASE WHEN x.store_result THEN src.result END,
            error = src.error,
            finished_at = src.finished_at,
            result_expires_at = src.result_expires_at,
            dedup_until = src.finished_at + x.dedup_ttl_s
        WHERE x.id = src.outcome_to AND x.status IN {_NOT_ENDED}
        RETURNING x.id, x.name, x.queue, x.status, x.attempts, x.order_id, x.flow_id,
                  x.flow_links
    ), ev AS (
        INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name,
                                  flow_id)
        SELECT queue, id, status, src.finished_at, attempts, order_id,
               CASE WHEN src.is_copy THEN 'won by copy ' ELSE 'outcome of ' END || src.id,
               name, flow_id
        FROM upd
    )
    SELECT array_agg(id) FILTER (WHERE flow_links),
           {{s}}.notify(p_chan, 't:', array_agg(id)),
           {{s}}.notify(p_chan, 'e:', array_agg(DISTINCT queue))
    INTO ended, n1, n2
    FROM upd;
    RETURN ended;
END
$$;
"""

# Task p_id ended (at p_now): every task whose outcome_to is p_id and that has not ended is
# cancelled, at once if it is not running, by request if it is. Returns the linked ones ended.
_SUPERSEDE: Final = f"""
CREATE FUNCTION {{s}}.flow_supersede(p_id text, p_now float8, p_chan text) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    won   record;
    why   text;
    ended text[];
    n1    integer;
    n2    integer;
BEGIN
    SELECT id, name, node, status, finished_at, result_expires_at INTO won
    FROM {{s}}.tasks WHERE id = p_id;
    why := {{s}}.flow_who(won.id, won.node, won.name) || ' ended first: ' || won.status;
    WITH locked AS (
        SELECT id FROM {{s}}.tasks
        WHERE outcome_to = p_id AND status IN {_NOT_ENDED}
          AND NOT (status = 'running' AND cancel_requested)
        ORDER BY id
        FOR UPDATE
    ), upd AS (
        UPDATE {{s}}.tasks y SET
            status = CASE WHEN y.status = 'running' THEN 'running' ELSE 'cancelled' END,
            cancel_requested = true,
            error = CASE WHEN y.status = 'running' THEN y.error
                         ELSE {{s}}.mp_error('Superseded', why) END,
            finished_at = CASE WHEN y.status = 'running' THEN y.finished_at ELSE p_now END,
            result_expires_at = CASE WHEN y.status = 'running' THEN y.result_expires_at
                                     ELSE p_now + (won.result_expires_at - won.finished_at) END,
            dedup_until = CASE WHEN y.status = 'running' THEN y.dedup_until
                               ELSE p_now + y.dedup_ttl_s END
        FROM locked l
        WHERE y.id = l.id
        RETURNING y.id, y.name, y.queue, y.status, y.attempts, y.order_id, y.flow_id,
                  y.flow_links
    ), ev AS (
        INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name,
                                  flow_id)
        SELECT queue, id,
               CASE WHEN status = 'running' THEN 'cancel_requested' ELSE 'cancelled' END,
               p_now, attempts, order_id, 'lost to ' || won.id, name, flow_id
        FROM upd
    )
    SELECT array_agg(id) FILTER (WHERE status = 'cancelled' AND flow_links),
           {{s}}.notify(p_chan, 't:', array_agg(id) FILTER (WHERE status = 'cancelled')),
           {{s}}.notify(p_chan, 'e:', array_agg(DISTINCT queue))
    INTO ended, n1, n2
    FROM upd;
    RETURN ended;
END
$$;
"""

# The cascade from one ended task: a worklist of ended tasks, each reaching its children, its
# outcome_to target and the tasks superseded by it.
_SETTLE: Final = """
CREATE FUNCTION {s}.flow_settle(p_first text, p_chan text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    todo text[] := ARRAY[p_first];
    k    integer := 1;
    cur  record;
BEGIN
    WHILE k <= cardinality(todo) LOOP
            SELECT id, status, error, children, outcome_to, is_copy, finished_at INTO cur
        FROM {s}.tasks WHERE id = todo[k];
        IF cardinality(cur.children) > 0 THEN
            todo := todo || coalesce(
                {s}.flow_reach_children(cur.id, cur.children, cur.finished_at, p_chan), '{{}}');
        END IF;
        -- A join passes on every end; a hedge copy only a done or failed its own run reported
        -- (the first task of the worklist, not dead-lettered by a lapsed last lease).
        IF cur.outcome_to IS NOT NULL AND (NOT cur.is_copy OR (
                k = 1 AND cur.status IN ('done', 'failed')
                AND coalesce({s}.mp_error_text(cur.error), '') NOT LIKE 'LeaseExpired:%')) THEN
            todo := todo || coalesce({s}.flow_adopt(cur.id, p_chan), '{{}}');
        END IF;
        IF EXISTS (SELECT 1 FROM {s}.tasks WHERE outcome_to = cur.id) THEN
            todo := todo || coalesce({s}.flow_supersede(cur.id, cur.finished_at, p_chan), '{{}}');
        END IF;
        k := k + 1;
    END LOOP;
END
$$;
"""

_TRIGGERS: Final = f"""
CREATE FUNCTION {{s}}.flow_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {{s}}.flow_settle(NEW.id, {{s}}.flow_channel(TG_TABLE_SCHEMA));
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_flow_ended AFTER UPDATE OF status ON {{s}}.tasks
FOR EACH ROW
WHEN (NEW.flow_links AND OLD.status NOT IN {_TERMINAL} AND NEW.status IN {_TERMINAL}
      AND pg_trigger_depth() = 0)
EXECUTE FUNCTION {{s}}.flow_ended();

-- A new row with an outcome_to: its target is marked linked and told of a hedge copy; a target
-- that ended already supersedes the new row at once. (A waiting row's parents stored by an
-- earlier call do not name it among their children: it waits until cancelled, as the contract
-- says.)
CREATE FUNCTION {{s}}.flow_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chan   text := {{s}}.flow_channel(TG_TABLE_SCHEMA);
    now_at float8 := CASE WHEN NEW.eta IS NULL THEN NEW.due_at ELSE NEW.created_at END;
    target record;
    ended  text[] := '{{{{}}}}';
    one    text;
BEGIN
    UPDATE {{s}}.tasks SET flow_links = true WHERE id = NEW.outcome_to
    RETURNING id, name, queue, status, attempts, order_id, flow_id INTO target;
    IF FOUND AND target.status IN {_TERMINAL} THEN
        ended := coalesce({{s}}.flow_supersede(target.id, now_at, chan), '{{{{}}}}');
    ELSIF FOUND AND NEW.is_copy THEN
        INSERT INTO {{s}}.events (queue, task_id, kind, at, attempt, order_id, detail, name,
                                  flow_id)
        VALUES (target.queue, target.id, 'hedged', now_at, target.attempts, target.order_id,
                NEW.id, target.name, target.flow_id);
        PERFORM {{s}}.notify(chan, 'e:', ARRAY[target.queue]);
    END IF;
    FOREACH one IN ARRAY ended LOOP
        PERFORM {{s}}.flow_settle(one, chan);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_flow_inserted AFTER INSERT ON {{s}}.tasks
FOR EACH ROW
WHEN (NEW.outcome_to IS NOT NULL)
EXECUTE FUNCTION {{s}}.flow_inserted();
"""

#: The DDL of migration 12, with ``{s}`` for the quoted schema.
MIGRATION_12_FLOWS: Final = (
    _COLUMNS + _HELPERS + _REACH_CHILDREN + _ADOPT + _SUPERSEDE + _SETTLE + _TRIGGERS
)
