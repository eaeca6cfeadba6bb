"""`PostgresStorage`: task records, results, progress and events in an app's PostgreSQL schema.

It implements the `Storage` contract, and owns what the backend's three parts share on one
database: the connections (`Connections`, and `run`, which retries a call on a lost connection),
the listener (one LISTEN connection, started by the first call that needs it) and what it
wakes: result waiters, by the ends it hears of, and `wakeups`, by the work and events it hears
of. The broker and the coordination reach all of it through the public surface below (`run`,
`listen`, `channel`, `wakeups`, `expect_end`, `not_sent`, `heard_end`, `count_events`), never
through private members.

What does not live here: the message path (``_broker.py``), leases and key-value records
(``_coordination.py``), the SQL (``_sql_storage.py``), reading rows (``_codec.py``), the pool
and its errors (``_client.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from .._backends import DEFAULT_APP, mask_password
from ..abc import (
    Checkpoint,
    Event,
    FailedAttempt,
    ProgressUpdate,
    ReadCoalescer,
    Storage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
)
from ._client import (
    Backoff,
    Connections,
    driver_error,
    is_transient,
    reaching,
    require_asyncpg,
)
from ._codec import (
    MAX_LISTED_EVENTS,
    Attempt,
    EventCursor,
    events_after,
    failed_attempt,
    parse_cursor,
    report_batch,
    task_record,
)
from ._listener import DONE, ENDED, EVENTS, WORK, Listener, Notification, PushedDone
from ._schema import DEFAULT_SCHEMA, app_schema, channel_name, migrate, quote_schema
from ._sql_storage import StorageStatements
from ._wakeups import Wakeups

if TYPE_CHECKING:
    import asyncpg

    from ._client import Conn

__all__ = ["PostgresStorage"]

logger = logging.getLogger("taskflow.postgres")

T = TypeVar("T")

#: How many times a pooled call is retried after a lost connection (about 15 s in all).
_CALL_RETRIES: Final = 10
#: Finished rows deleted per statement by `cleanup`.
_CLEANUP_CHUNK: Final = 10_000
#: Most tasks remembered as sent here and not heard to end (see `PostgresStorage.expect_end`).
_MAX_UNFINISHED: Final = 10_000
#: How long a follower whose cursor lists all it may waits before it looks again at events
#: held back behind a transaction still in progress (one that may end without notifying).
_HELD_RECHECK_S: Final = 0.05


class PostgresStorage(Storage):
    """Task records, results and events in PostgreSQL tables; the LISTEN connection and the pool.

    Args:
        dsn: asyncpg DSN (``postgresql://user:password@host:port/database``).
        schema: The base of the schema's name.
        app: The app's name. The tables live in the schema ``<schema>_<app>`` (created and
            migrated on `open`), `schema` below.
        min_pool_size: Connections the pool keeps open.
        max_pool_size: Most connections of the pool.
        statement_cache_size: asyncpg's prepared-statement cache per connection (0 disables it,
            needed behind pgbouncer in transaction mode).
    """

    shared_across_processes = True
    scheme = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        app: str = DEFAULT_APP,
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        statement_cache_size: int = 100,
    ) -> None:
        require_asyncpg()
        super().__init__()
        self.dsn = dsn
        self.app = app
        #: The schema of the app's tables, ``<schema>_<app>``.
        self.schema = app_schema(schema, app)
        #: The LISTEN/NOTIFY channel of the schema.
        self.channel = channel_name(self.schema)
        self.sql = StorageStatements(quote_schema(self.schema))
        #: The pool and the fresh connections (backend-internal).
        self.connections = Connections(
            dsn,
            application_name=self.application_name,
            min_pool_size=min_pool_size,
            max_pool_size=max_pool_size,
            statement_cache_size=statement_cache_size,
        )
        #: What this process heard of each queue, and the work watchers (backend-internal).
        self.wakeups = Wakeups()
        self._listener: Listener | None = None
        #: Per queue: events this process appended since it last trimmed that queue's stream.
        self._events_since_trim: dict[str, int] = {}
        #: Per queue: failed attempts this process logged since it last trimmed that queue's.
        self._errors_since_trim: dict[str, int] = {}
        #: The result waiters' reads of one loop turn, made as one statement (rows by id).
        self._row_reads: ReadCoalescer[str, asyncpg.Record | None] = ReadCoalescer(self._fetch_rows)
        self._reset_session()

    def _reset_session(self) -> None:
        """Start afresh what is bound to one open on one event loop: the wake-ups, the
        background tasks, the coalesced reads, and the tasks whose end this open's listener is
        expected to hear."""
        self.wakeups.reset()
        self._background: set[asyncio.Task[None]] = set()
        self._row_reads.forget()
        #: Tasks sent from here while the listener was up, whose end it has not heard yet
        #: (oldest first, at most `_MAX_UNFINISHED`): see `expect_end`.
        self._unfinished: dict[str, None] = {}

    @property
    def application_name(self) -> str:
        """The ``application_name`` of this storage's connections (for pg_stat_activity)."""
        return f"taskflow/{self.schema}"[:63]

    @property
    def listener(self) -> Listener | None:
        """This open's LISTEN connection (None while closed); started by `listen`."""
        return self._listener

    def describe(self) -> str:
        return f"{mask_password(self.dsn)} (schema {self.schema!r})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def _open(self) -> None:
        self._reset_session()
        async with reaching(self.dsn):
            conn = await self.connections.connect()
            try:
                await migrate(conn, self.schema)
            finally:
                await conn.close()
        await self.connections.open()
        self._listener = Listener(
            self.connections.connect,
            self.channel,
            on_notification=self._on_notification,
            on_lost=self._forget_unfinished,
            on_back=self._after_listener_gap,
        )

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        self._row_reads.close()
        if self._listener is not None:
            await self._listener.close()
        await self.connections.close()
        self._listener = None
        self.wakeups.close()

    def _abandon(self) -> None:
        # The pool and the listener of the ended loop are dropped, not closed (that needs
        # their loop); the garbage collector closes their sockets.
        self.connections.abandon()
        self._listener = None

    # -- the calls ------------------------------------------------------------------------------

    async def run(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection, retrying with backoff if the connection was lost
        (the pool replaces dead connections; a restarted server is waited for ~15 s).

        Raises:
            LifecycleError: the storage is not open.
            AuthenticationFailed: a new connection's login was refused (never retried).
            BackendUnavailable: the connection could not be got back within the retries, or
                the server refused the statement (the driver's error is its ``__cause__``).
            Exception: what `op` raised, if it is not the driver's.
        """
        backoff: Backoff | None = None
        while True:
            if not self.connections.is_open:
                self._check_open()
            try:
                return await self.connections.call(op)
            except Exception as exc:
                backoff = backoff or Backoff()
                if not is_transient(exc) or backoff.attempts >= _CALL_RETRIES or not self.is_open:
                    error = driver_error(exc, self.dsn)
                    if error is None:
                        raise
                    raise error from exc
                logger.warning(
                    "PostgreSQL call failed (%s: %s); retry %d in %.2fs",
                    type(exc).__name__,
                    exc,
                    backoff.attempts + 1,
                    backoff.delay,
                )
                await backoff.sleep()

    # -- notifications --------------------------------------------------------------------------

    async def listen(self) -> None:
        """Start this storage's LISTEN connection if it does not run yet (notifications sent
        before it listens are not heard: start it before reading what they would announce).

        Raises:
            BackendUnavailable: it could not connect (`AuthenticationFailed`: the login was
                refused).
        """
        if self._listener is not None:
            async with reaching(self.dsn):
                await self._listener.ensure_started()

    async def _ensure_listening(self) -> None:
        await self.listen()

    def _on_notification(self, note: Notification) -> None:
        kind, items = note
        if kind == DONE:
            unfinished = self._unfinished
            for item in items:
                done = PushedDone.parse(item)
                unfinished.pop(done.task_id, None)
                if done.task_id in self.waiters:
                    self.waiters.wake(done.task_id, done.outcome())
        elif kind == ENDED:
            unfinished = self._unfinished
            for task_id in items:
                unfinished.pop(task_id, None)
                self.waiters.wake(task_id)
        elif kind in (WORK, EVENTS):
            self.wakeups.announce(items, work=kind == WORK)

    def _after_listener_gap(self) -> None:
        """After the listener reconnected: wake every sleeper and every work watcher once, and
        settle the result waiters whose tasks ended while we could not hear it."""
        self.wakeups.after_gap()
        if len(self.waiters):
            task = asyncio.create_task(self._recheck_waiters())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _recheck_waiters(self) -> None:
        ids = self.waiters.task_ids()
        try:
            rows = await self.run(lambda conn: conn.fetch(self.sql.get_many, ids))
        except Exception:  # the server is still away: the next reconnect checks again
            logger.warning("could not re-read the tasks result waiters wait for", exc_info=True)
            return
        for row in rows:
            if TaskStatus(row["status"]).terminal:
                self.heard_end(row["id"])

    # -- tasks known to be unfinished -----------------------------------------------------------

    def expect_end(self, task_ids: Iterable[str]) -> None:
        """Remember tasks about to be sent from here, if the listener is up: until their end
        is heard, a result waiter's first read could only find them unfinished, so it is
        skipped (their end's notification wakes the waiter, and carries the outcome or has it
        read).

        Called before the insert is sent, so an end heard before its reply is not missed.
        """
        if self._listener is None or not self._listener.connected:
            return
        unfinished = self._unfinished
        for task_id in task_ids:
            unfinished[task_id] = None
        while len(unfinished) > _MAX_UNFINISHED:
            del unfinished[next(iter(unfinished))]

    def not_sent(self, task_ids: Iterable[str]) -> None:
        """Forget tasks `expect_end` remembered that were not inserted after all."""
        for task_id in task_ids:
            self._unfinished.pop(task_id, None)

    def heard_end(self, task_id: str) -> None:
        """`task_id` ended (this process wrote its end, or heard of it): wake its result
        waiters, which read how."""
        self._unfinished.pop(task_id, None)  # ended: a read now finds how
        self.waiters.wake(task_id)

    def _forget_unfinished(self) -> None:
        """The listener is lost: ends may go unheard, so every first read happens again."""
        self._unfinished.clear()

    # -- records --------------------------------------------------------------------------------

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        rows = await self._fetch_rows(list(task_ids))
        return [None if row is None else task_record(row, now) for row in rows]

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        """The result waiters' reads: coalesced per loop turn (a thousand results awaited at
        once cost one statement), and none for a task known to be unfinished (`expect_end`)."""
        unfinished = self._unfinished
        if all(task_id in unfinished for task_id in task_ids):
            return [TaskOutcome(id=task_id, status=TaskStatus.QUEUED) for task_id in task_ids]
        rows = await self._row_reads.read_many(task_ids)
        return [None if row is None else TaskOutcome.of(task_record(row, now)) for row in rows]

    async def _fetch_rows(self, task_ids: list[str]) -> list[asyncpg.Record | None]:
        """Each task's row, or None, in one statement."""
        rows = await self.run(lambda conn: conn.fetch(self.sql.get_many, task_ids))
        by_id = {row["id"]: row for row in rows}
        return [by_id.get(task_id) for task_id in task_ids]

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        batch = report_batch(updates)
        args = (*batch.columns, now, self.channel)
        rows = await self.run(lambda conn: conn.fetch(self.sql.report, *args))
        applied = {batch.attempts[row["ord"] - 1]: bool(row["ok"]) for row in rows}
        return [applied[Attempt(u.task_id, u.token)] for u in updates]

    # -- events ---------------------------------------------------------------------------------

    async def _save_checkpoints(self, entries: Sequence[Checkpoint], now: float) -> list[bool]:
        columns = (
            [e.task_id for e in entries],
            [e.token for e in entries],
            [e.name for e in entries],
            [e.value for e in entries],
        )
        rows = await self.run(lambda conn: conn.fetch(self.sql.save_checkpoints, *columns))
        return [bool(row["ok"]) for row in rows]

    async def _flow_tasks(self, flow_id: str, now: float) -> list[TaskRecord]:
        rows = await self.run(lambda conn: conn.fetch(self.sql.flow_tasks, flow_id))
        return [task_record(row, now) for row in rows]

    async def _checkpoints(self, task_id: str) -> dict[str, bytes]:
        rows = await self.run(lambda conn: conn.fetch(self.sql.checkpoints, task_id))
        return {row["name"]: bytes(row["value"]) for row in rows}

    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        cursor = await self._cursor(after)
        args = (queue, str(cursor.position[0]), cursor.position[1], cursor.listed_ids, limit)
        rows = await self.run(lambda conn: conn.fetch(self.sql.read_events, *args, cursor.may_list))
        room = MAX_LISTED_EVENTS - len(cursor.listed)
        kept = [row for row in rows if row["final"]]
        kept += [row for row in rows if not row["final"]][:room]
        return events_after(kept[:limit], cursor)

    async def _cursor(self, after: str | None) -> EventCursor:
        """`after` parsed; a cursor of the older form (an id alone) is placed at its event's
        transaction, or at the start if its event is gone (reading resumes at the oldest)."""
        cursor = parse_cursor(after)
        if cursor.xact_known:
            return cursor
        event_id = cursor.position[1]
        xact = await self.run(lambda conn: conn.fetchval(self.sql.event_xact, event_id))
        return EventCursor((int(xact or 0), event_id))

    async def _latest_cursor(self, queue: str) -> str | None:
        rows = await self.run(
            lambda conn: conn.fetch(self.sql.latest_events, queue, MAX_LISTED_EVENTS)
        )
        if not rows:
            return None
        places = [(int(row["xact"]), row["id"]) for row in rows]
        if rows[0]["final"]:
            return str(EventCursor(places[0], tuple(places[1:])))
        return str(EventCursor((0, 0), tuple(places)))

    async def _wait_events(self, queue: str, after: str | None) -> None:
        await self._ensure_listening()
        wakeups = self.wakeups
        seen = wakeups.event_mark(queue)
        if await self._read_events(queue, after, 1):
            return
        changed = wakeups.wait_changed(lambda: wakeups.event_mark(queue) != seen)
        if parse_cursor(after).may_list:
            await changed
            return
        # The cursor lists as many events beyond the final order as it may: the rest wait
        # until the transactions holding the order back end, which may be ones that append no
        # event and so notify nobody when they end. Look again after a while.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed, _HELD_RECHECK_S)

    # -- maintenance ----------------------------------------------------------------------------

    async def _cleanup(self, now: float, keep_s: float) -> int:
        deleted = 0
        while True:
            status = await self.run(
                lambda conn: conn.execute(self.sql.cleanup_tasks, now - keep_s, _CLEANUP_CHUNK)
            )
            count = int(status.split()[-1])
            deleted += count
            if count < _CLEANUP_CHUNK:
                break
        await self.trim_events()
        return deleted

    async def count_events(self, queues: Iterable[str]) -> None:
        """Count events just appended to `queues`; trim a queue's stream back to about
        `events_maxlen` once this process added a tenth of that since its last trim."""
        for queue in _filled(self._events_since_trim, queues, self.events_maxlen):
            try:
                await self._trim_queue_events(queue)
            except Exception:  # the change itself is stored; trimming waits for the next round
                logger.warning("could not trim the event stream of queue %r", queue, exc_info=True)

    async def count_errors(self, queues: Iterable[str]) -> None:
        """Count failed attempts just logged in `queues` (by the broker's complete); trim a
        queue's error log back to about `errors_maxlen` as `count_events` trims events."""
        for queue in _filled(self._errors_since_trim, queues, self.errors_maxlen):
            try:
                await self._trim_queue_errors(queue)
            except Exception:  # the outcome is stored; trimming waits for the next round
                logger.warning("could not trim the error log of queue %r", queue, exc_info=True)

    async def _trim_queue_errors(self, queue: str) -> None:
        await self.run(lambda conn: conn.execute(self.sql.trim_errors, queue, self.errors_maxlen))

    async def _errors(
        self, since: float | None, name: str | None, queues: list[str] | None, limit: int
    ) -> list[FailedAttempt]:
        sql = self.sql.read_errors
        rows = await self.run(lambda conn: conn.fetch(sql, since, name, queues, limit))
        return [failed_attempt(row) for row in rows]

    async def trim_events(self) -> None:
        """Keep about `events_maxlen` events and `errors_maxlen` failed attempts per queue."""
        queues = await self.run(lambda conn: conn.fetch(self.sql.event_queues))
        for row in queues:
            await self._trim_queue_events(row["queue"])
        queues = await self.run(lambda conn: conn.fetch(self.sql.error_queues))
        for row in queues:
            await self._trim_queue_errors(row["queue"])

    async def _trim_queue_events(self, queue: str) -> None:
        await self.run(lambda conn: conn.execute(self.sql.trim_events, queue, self.events_maxlen))


def _filled(counts: dict[str, int], queues: Iterable[str], maxlen: int) -> list[str]:
    """Count one append per queue named in `queues`; return the queues that reached a tenth
    of `maxlen` since their last trim (their counts start again)."""
    threshold = max(1, maxlen // 10)
    full: list[str] = []
    for queue in queues:
        counts[queue] = counts.get(queue, 0) + 1
        if counts[queue] == threshold:
            counts[queue] = 0
            full.append(queue)
    return full
