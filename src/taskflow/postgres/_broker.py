"""`PostgresBroker`: the message path through an app schema's ``tasks`` table.

Enqueue (also inside the caller's transaction), claim with ``FOR UPDATE SKIP LOCKED``, renew,
complete (a batch of outcomes, each fenced by its token, in one statement), cancel, the next due
time, waking idle workers, dead letters, stats and purge. Every statement runs through the
storage's public surface (`PostgresStorage.run`, `expect_end`, `heard_end`, `count_events`,
`wakeups`, ...), never through its private members.

What does not live here: the statements (``_sql_broker.py``), turning batches into their
arguments and rows into records (``_codec.py``), reading records and events (``_storage.py``),
leases and key-value records (``_coordination.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from .._exceptions import BackendUnavailable
from ..abc import (
    Broker,
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    QueueStats,
    TaskMessage,
    TaskRecord,
    TaskStatus,
)
from ._artifacts import PostgresArtifactStore
from ._client import is_transient, reaching
from ._codec import (
    LEASE_EXPIRED,
    complete_columns,
    encode_error,
    enqueue_columns,
    flow_columns,
    message_or_none,
    queue_stats,
    task_record,
)
from ._coordination import PostgresCoordination
from ._schema import quote_schema
from ._sql_broker import BrokerStatements
from ._storage import PostgresStorage
from ._wakeups import Mark

if TYPE_CHECKING:
    import asyncpg

    from ._client import Conn

__all__ = ["PostgresBroker"]

logger = logging.getLogger("taskflow.postgres")

#: The outcomes whose error goes to the error log (the complete statement's ``errs``).
_LOGGED = (OutcomeKind.RETRY, OutcomeKind.FAILED)

#: How long a closing broker tries to give back claims whose reply was lost.
_GIVE_BACK_ON_CLOSE_S = 2.0


class _DueAfterClaim(NamedTuple):
    """A queue's next due time as its last claim read it, and what had been heard of the queue
    when that claim began."""

    mark: Mark
    due: float | None


class _LostClaim(NamedTuple):
    """A claim statement that raised instead of replying (a dropped connection, a cancelled
    call): the server may have committed it, handing its tasks to nobody. Its rows carry
    `claim_id`; the broker gives them back before its next claim, or when it closes."""

    queue: str
    claim_id: str
    #: The claim's `now`.
    at: float


class PostgresBroker(Broker):
    """Moves messages through ``<schema>.tasks``: SKIP LOCKED claims, fenced batched completes.

    Args:
        storage: The `PostgresStorage` of the same database (opened with the broker).
    """

    storage: PostgresStorage
    coordination: PostgresCoordination

    def __init__(self, storage: PostgresStorage) -> None:
        super().__init__(storage, PostgresCoordination(storage))
        #: The broker's `PostgresStorage` (``storage``, by a short name).
        self.pg = storage
        self.sql = BrokerStatements(quote_schema(storage.schema))
        #: Per queue: the next due time the last claim there read. `next_due` answers from it,
        #: with no round trip, while nothing was announced since and this process changed
        #: nothing. What others change unannounced cannot make it late: they end or extend
        #: leases (the answer is early: one idle claim), or claim tasks that were pending when
        #: it was read (so already counted in it) or announced since (so it is read again).
        self._due_after_claim: dict[str, _DueAfterClaim] = {}
        #: Claims of this broker that raised instead of replying, until given back.
        self._lost_claims: set[_LostClaim] = set()

    async def _open(self) -> None:
        # A new open may have missed notifications: its workers start from a fresh look.
        self._due_after_claim = {}

    def default_artifact_store(self) -> PostgresArtifactStore:
        """A `PostgresArtifactStore` on this broker's pool: artifacts in 1 MiB rows of the app
        schema's tables. Open it after the broker, close it before."""
        return PostgresArtifactStore(self.pg)

    async def _close(self) -> None:
        # A claim cut short by its own worker's stop is given back now, not after its lease;
        # briefly (a close must not wait out a server that is away), before the pool closes.
        lost = self._lost_claims
        if not lost:
            return
        at = max(claim.at for claim in lost)
        try:
            await asyncio.wait_for(
                self.pg.run(lambda conn: self._give_back_lost_claims(conn, at)),
                _GIVE_BACK_ON_CLOSE_S,
            )
        except Exception as exc:
            logger.warning(
                "could not give back %d lost claim(s) on close (%s: %s); their tasks run again "
                "when their lease lapses",
                len(lost),
                type(exc).__name__,
                exc,
            )

    # -- enqueue --------------------------------------------------------------------------------

    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        pg = self.pg
        pg.expect_end(m.id for m in messages)
        try:
            results = await pg.run(lambda conn: self._insert(conn, messages, now))
        except BaseException:
            pg.not_sent(m.id for m in messages)
            raise
        pg.not_sent(m.id for m, r in zip(messages, results, strict=True) if not r.created)
        made = [m for m, r in zip(messages, results, strict=True) if r.created]
        if made:
            # Workers of this process hear of it at once, without waiting for the NOTIFY (a
            # waiting flow task is no work yet: its parents' ends announce it).
            work = {m.queue for m in made if not m.waits_for}
            if work:
                pg.wakeups.announce(sorted(work), work=True)
            await pg.count_events(m.queue for m in made)
        return results

    async def _enqueue_in(
        self, connection: Any, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        if not hasattr(connection, "fetch") or not hasattr(connection, "transaction"):
            raise BackendUnavailable(
                f"options(connection=...) needs an asyncpg connection (inside your transaction), "
                f"not {type(connection).__name__}: `async with conn.transaction(): "
                "await task.options(connection=conn).add_task(...)`"
            )
        async with reaching(self.pg.dsn):  # the caller's connection: its driver's errors too
            return await self._insert(connection, messages, now)

    async def _insert(
        self, conn: Conn, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        """Insert a batch (one statement; a second one only for messages that collided)."""
        rows = await conn.fetch(
            self.sql.enqueue,
            *enqueue_columns(messages),
            now,
            self.pg.channel,
            *flow_columns(messages),
        )
        results: list[EnqueueResult | None] = []
        seen: set[str] = set()
        unresolved: list[int] = []
        for index, row in enumerate(rows):
            task_id = row["id"]
            if row["created"] and task_id not in seen:
                results.append(EnqueueResult(task_id, True))
            elif row["by_id"] is not None:
                results.append(EnqueueResult(row["by_id"], False))
            else:
                results.append(None)
                unresolved.append(index)
            seen.add(task_id)
        if unresolved:
            await self._resolve_conflicts(conn, messages, unresolved, results)
        return [r for r in results if r is not None]

    async def _resolve_conflicts(
        self,
        conn: Conn,
        messages: Sequence[TaskMessage],
        unresolved: list[int],
        results: list[EnqueueResult | None],
    ) -> None:
        picked = [messages[i] for i in unresolved]
        rows = await conn.fetch(
            self.sql.enqueue_conflicts,
            [m.id for m in picked],
            [m.queue for m in picked],
            [m.dedup_key for m in picked],
        )
        for index, row in zip(unresolved, rows, strict=True):
            results[index] = EnqueueResult(row["existing"] or messages[index].id, False)

    # -- claim, extend, complete ----------------------------------------------------------------

    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        await self.pg.listen()
        wakeups = self.pg.wakeups
        seen = {q: wakeups.work_mark(q) for q in queues}
        deliveries: list[Delivery] = []
        lease_until = now + lease_s
        for queue in dict.fromkeys(queues):
            room = limit - len(deliveries)
            if room <= 0:
                break
            claimed, due = await self._claim_queue(queue, room, lease_until, now, worker_id)
            deliveries += claimed
            self._due_after_claim[queue] = _DueAfterClaim(seen[queue], due)
        return deliveries

    async def _claim_queue(
        self, queue: str, limit: int, lease_until: float, now: float, worker_id: str
    ) -> tuple[list[Delivery], float | None]:
        """One claim statement on one queue; settles the lapsed tasks it dead-lettered.

        Returns the deliveries and the queue's next due time after the claim."""
        pg = self.pg

        async def claim_once(conn: Conn) -> list[asyncpg.Record]:
            lost = list(self._lost_claims)  # given back by the same statement
            claim_id = os.urandom(8).hex()
            args = [queue, now, limit, lease_until, worker_id, LEASE_EXPIRED, self.result_ttl_s]
            args += [pg.channel, claim_id]
            statement = self.sql.claim
            if lost:
                statement = self.sql.claim_giving_back
                args += [[claim.queue for claim in lost], [claim.claim_id for claim in lost]]
            try:
                rows = await conn.fetch(statement, *args)
            except BaseException as exc:
                if _may_have_committed(exc):
                    # Given back by this broker's next claim (`pg.run` makes it at once after
                    # a lost connection) or when it closes.
                    self._lost_claims.add(_LostClaim(queue, claim_id, now))
                raise
            self._lost_claims.difference_update(lost)
            return rows

        rows = await pg.run(claim_once)
        await self._settle_give_back(rows[0])
        deliveries: list[Delivery] = []
        taken = 0
        for row in rows:
            if row["id"] is None:  # an empty claim: the row carries only the next due time
                continue
            taken += 1
            if row["status"] == "running":
                deliveries.append(
                    Delivery(row["id"], row["token"], row["attempts"], row["data"], lease_until)
                )
            else:
                pg.heard_end(row["id"])
        await pg.count_events([queue] * taken)
        due = rows[0]["next_due"]
        return deliveries, None if due is None else float(due)

    async def _give_back_lost_claims(self, conn: Conn, now: float) -> None:
        """Give back the tasks of the claims whose reply never arrived (see `_LostClaim`), in a
        statement of its own (a claim does it in its own statement)."""
        lost = list(self._lost_claims)
        if not lost:
            return
        row = await conn.fetchrow(
            self.sql.give_back,
            [claim.queue for claim in lost],
            [claim.claim_id for claim in lost],
            now,
            self.pg.channel,
        )
        self._lost_claims.difference_update(lost)
        if row is not None:
            await self._settle_give_back(row)

    async def _settle_give_back(self, row: asyncpg.Record) -> None:
        """Tell this process of the tasks a give-back queued again (`row["released"]`, one
        queue per task): its workers and its event count."""
        released: list[str] = row["released"] or []
        if not released:
            return
        logger.warning(
            "gave back %d task(s) whose claim reply was lost (queues %s); they are queued "
            "again with their attempt refunded",
            len(released),
            ", ".join(sorted(set(released))),
        )
        self._due_after_claim.clear()
        self.pg.wakeups.announce(sorted(set(released)), work=True)
        await self.pg.count_events(released)

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        self._due_after_claim.clear()
        unique = list(dict.fromkeys(leases))
        args = ([lease.task_id for lease in unique], [lease.token for lease in unique])
        rows = await self.pg.run(lambda conn: conn.fetch(self.sql.extend, *args, now + lease_s))
        state = {
            lease: _lease_state(row["ok"], row["cancel"])
            for lease, row in zip(unique, rows, strict=True)
        }
        return [state[lease] for lease in leases]

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        pg = self.pg
        args = (*complete_columns(outcomes), now, pg.channel, self.result_ttl_s)
        rows = await pg.run(lambda conn: conn.fetch(self.sql.complete, *args))
        self._due_after_claim.clear()
        accepted: list[bool] = []
        for outcome, row in zip(outcomes, rows, strict=True):
            accepted.append(bool(row["ok"]))
            if row["ok"] and TaskStatus(row["status"]).terminal:
                pg.heard_end(outcome.task_id)  # local waiters: no need to hear it
        await pg.count_events(row["queue"] for row in rows if row["ok"])
        await pg.count_errors(
            row["queue"]
            for outcome, row in zip(outcomes, rows, strict=True)
            if row["ok"] and outcome.error is not None and outcome.kind in _LOGGED
        )
        return accepted

    # -- cancel ---------------------------------------------------------------------------------

    async def _wake(self, task_ids: list[str], now: float) -> None:
        pg = self.pg
        row = await pg.run(lambda conn: conn.fetchrow(self.sql.wake, task_ids, now, pg.channel))
        if row is not None and row["queues"]:
            self._due_after_claim.clear()
            pg.wakeups.announce(sorted(row["queues"]), work=True)  # this process's workers now

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        pg = self.pg
        ids = list(task_ids)
        rows = await pg.run(
            lambda conn: conn.fetch(self.sql.cancel, ids, now, self.result_ttl_s, pg.channel)
        )
        self._due_after_claim.clear()
        results: list[CancelResult] = []
        for task_id, row in zip(ids, rows, strict=True):
            if row["status"] == "cancelled":
                results.append(CancelResult.CANCELLED)
                pg.heard_end(task_id)
            elif row["status"] == "running" or row["before"] == "running":
                results.append(CancelResult.REQUESTED)  # now, or by an earlier request
            elif row["before"] is not None:
                results.append(CancelResult.ALREADY_TERMINAL)
            else:
                results.append(CancelResult.NOT_FOUND)
        await pg.count_events(row["queue"] for row in rows if row["queue"] is not None)
        return results

    # -- waiting for work -----------------------------------------------------------------------

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        pg = self.pg
        await pg.listen()  # anything announced after this read is heard
        wakeups = pg.wakeups
        known = [self._due_after_claim.get(q) for q in queues]
        if all(
            k is not None and k.mark == wakeups.work_mark(q)
            for q, k in zip(queues, known, strict=True)
        ):
            return min((k.due for k in known if k is not None and k.due is not None), default=None)
        names = list(queues)
        due = await pg.run(lambda conn: conn.fetchval(self.sql.next_due, names))
        return None if due is None else float(due)

    def _watch_work(self, queues: list[str], worker_id: str, callback: Callable[[], None]) -> None:
        # The listener calls it on each `w:` of these queues, a local enqueue at once, and a
        # listener gap once; `_claim` and `_next_due` start the listener before they read.
        self.pg.wakeups.watch(worker_id, queues, callback)

    async def _unwatch_work(self, queues: list[str], worker_id: str, now: float) -> None:
        self.pg.wakeups.unwatch(worker_id)

    # -- dead letters and inspection ------------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        rows = await self.pg.run(
            lambda conn: conn.fetch(self.sql.dead_letters, queue, limit, offset)
        )
        # Dead letters are listed with their error even after the result TTL.
        return [task_record(row, float("-inf")) for row in rows]

    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        if len(task_ids) != len(new_ids):
            raise ValueError(
                f"requeue_dead got {len(task_ids)} task id(s) but {len(new_ids)} new id(s); "
                "pass one new id per dead letter (broker.new_task_id(queue))"
            )

        async def op(conn: Conn) -> tuple[list[str | None], list[str]]:
            async with conn.transaction():
                return await self._requeue_locked(conn, task_ids, now, new_ids)

        results, queues = await self.pg.run(op)
        if queues:
            self.pg.wakeups.announce(sorted(set(queues)), work=True)
            await self.pg.count_events(queues * 2)
        return results

    async def _requeue_locked(
        self, conn: Conn, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> tuple[list[str | None], list[str]]:
        """Requeue under row locks; returns the new ids (or None) and the queues touched."""
        rows = await conn.fetch(self.sql.lock_dead, list(task_ids))
        dead = {row["id"]: row for row in rows}
        taken = {row["id"] for row in await conn.fetch(self.sql.existing_ids, list(new_ids))}
        messages: list[TaskMessage] = []
        out: list[str | None] = []
        for old_id, new_id in zip(task_ids, new_ids, strict=True):
            row = dead.pop(old_id, None)  # a dead letter is requeued once
            message = message_or_none(row["data"]) if row is not None else None
            if message is None or new_id in taken:
                out.append(None)
                continue
            taken.add(new_id)
            # A flow node keeps its flow fields, not its parents: they ended long ago.
            messages.append(
                msgspec.structs.replace(
                    message, id=new_id, requeued_from=old_id, eta=None, created_at=now, waits_for=[]
                )
            )
            out.append(new_id)
        if not messages:
            return out, []
        # Requeued messages skip dedup (an operator's decision), so each is inserted.
        inserted = await self._insert(conn, messages, now)
        made = [m for m, r in zip(messages, inserted, strict=True) if r.created]
        await conn.execute(
            self.sql.mark_requeued, [m.requeued_from for m in made], [m.id for m in made], now
        )
        created = {m.id for m in made}
        return [i if i in created else None for i in out], [m.queue for m in made]

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        names = list(queues)
        rows = await self.pg.run(lambda conn: conn.fetch(self.sql.stats, names, now))
        return [queue_stats(row) for row in rows]

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        pg = self.pg
        args = (queue, now, self.result_ttl_s, encode_error(error), error.type, pg.channel)
        row = await pg.run(lambda conn: conn.fetchrow(self.sql.purge, *args))
        ids: list[str] = [] if row is None or row["ids"] is None else list(row["ids"])
        for task_id in ids:
            pg.heard_end(task_id)
        if ids:
            await pg.count_events([queue] * len(ids))
        return len(ids)


def _may_have_committed(exc: BaseException) -> bool:
    """Whether a statement that raised `exc` may still have been committed by the server: its
    connection was lost or it was cancelled, rather than refused by the server (which rolls
    the statement back)."""
    return not isinstance(exc, Exception) or is_transient(exc)


def _lease_state(renewed: bool, cancel_requested: bool) -> LeaseState:
    """What `extend` says of one lease."""
    if not renewed:
        return LeaseState.LOST
    return LeaseState.CANCEL if cancel_requested else LeaseState.OK
