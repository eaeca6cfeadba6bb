"""The backend contracts: `Broker` (moving messages) and `Storage` (what is known about tasks).

A backend module (`taskflow.memory`, `taskflow.redis`, `taskflow.postgres`) implements both on one
server, because storing an outcome, checking its fencing token and acking its message are **one
atomic backend call** (`Broker.complete`). The base classes here own what every backend shares:
the lifecycle (open/close, reopening on any event loop, `abandon` for a loop that ended, clear
errors for misuse), counters, logging, and the registry of result waiters that push
notifications resolve. Backends implement the ``_hooks``.

Rules every backend follows (the conformance suite in ``tests/conformance`` checks each one):

* **Time comes in.** Every call that needs "now" takes it as ``now`` (seconds since the epoch,
  from the caller's clock seam). A backend never reads its own clock for due times, leases or
  TTLs, so the whole suite runs under a fake clock, real servers included.
* **Batches.** Every call takes and returns a batch, in order: one round trip for many messages.
* **Fencing.** Each claim hands out a token strictly greater than any earlier token of that task.
  `complete`, `extend` and `report` with a stale token are refused and change nothing.
* **One terminal outcome.** done, failed, cancelled and expired are terminal. The first terminal
  write wins, is never overwritten, and a cancel racing a completion is decided by who writes
  first. A message claimed again after its outcome was stored is acked without being delivered.
* **At-least-once.** A claimed message is acked only by `complete`. A lease that lapses (its
  worker died) makes the message claimable again with a higher token; if that claim would exceed
  ``retries + 1`` attempts, the task is dead-lettered instead, with an error of type
  ``"LeaseExpired"``.
* **Events.** Every state change appends an `Event` to the task's queue stream, in the same
  atomic step as the change. Its cursor resumes reading right after it; `LATEST` starts after
  the newest event instead.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

from ._exceptions import BackendUnavailable, LifecycleError, TaskNotFound
from ._ids import new_task_id, queue_code
from ._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Event,
    Lease,
    LeaseInfo,
    LeaseState,
    Outcome,
    ProgressUpdate,
    QueueStats,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    Versioned,
)

__all__ = ["LATEST", "Broker", "Storage"]

LATEST: Final = "$"
"""The event cursor "now": `Storage.follow_events` given ``after=LATEST`` starts after the
queue's newest event when its iteration starts, so it yields only what happens from then on
instead of replaying the stream (`Storage.read_events` returns nothing for it). Every event it
yields has a real cursor, to resume from without losing an event. ``"$"``, as Redis's
``XREAD`` spells "only new entries"; no backend's cursor can take that value."""


_Read = TaskRecord | TaskOutcome
"""What a waiter reads: the whole record (`Storage.wait`) or how the task ended
(`Storage.wait_outcome`)."""
_Pushed = _Read | Callable[[_Read], _Read] | None
"""What a waiter is woken with: the terminal record, a function that makes it from what the
waiter read last (a push carrying only what the terminal write changed), or None (read
again)."""

logger = logging.getLogger("taskflow.backend")

#: Most queue codes a broker remembers (`Broker.new_task_id`); past that it starts over.
_QUEUE_CODES_MAX = 10_000


class _Lifecycle:
    """open/close bookkeeping shared by Broker and Storage: new -> open -> closed -> open ...

    A closed backend opens again (an app reopens its backend on each event loop it is used
    from). `abandon` lets go of one whose event loop has ended without awaiting anything.
    """

    _state: str = "new"

    def _check_open(self) -> None:
        if self._state != "open":
            what = type(self).__name__
            closed = " (it was closed)" if self._state == "closed" else ""
            raise LifecycleError(
                f"{what} is not open{closed}: use it through an app (`async with app:`, or any "
                f"call that needs it opens the app), or call `await {what.lower()}.open()` first"
            )

    @property
    def is_open(self) -> bool:
        """True between `open()` and `close()` (or `abandon()`)."""
        return self._state == "open"

    async def open(self) -> None:
        """Connect; defined by `Storage` and `Broker`."""
        raise NotImplementedError

    async def close(self) -> None:
        """Disconnect; defined by `Storage` and `Broker`."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Storage(_Lifecycle, ABC):
    """What is known about tasks: records, results, progress, events, and coordination.

    Subclasses implement the ``_hooks``. The base class resolves result waiters: a backend calls
    `_notify_terminal` whenever it learns that a task reached a terminal state (directly, or from
    its push channel: pub/sub, LISTEN/NOTIFY), and `wait` does the rest.
    """

    #: True if broker and storage can be shared by several OS processes (False for memory).
    shared_across_processes: bool = True
    #: URL scheme(s) of this backend, for messages.
    scheme: str = ""
    #: True if a read costs less than registering a waiter (in-process backends): `wait` then
    #: reads once before registering, so an already finished task costs no waiter at all.
    cheap_reads: bool = False
    #: True if `_get_many` itself coalesces the reads of one loop turn (then waiters call it
    #: directly instead of batching their reads here first).
    coalesces_reads: bool = False

    def __init__(self) -> None:
        self._waiters: dict[str, list[asyncio.Future[_Pushed]]] = {}
        self._read_batch: dict[str, list[asyncio.Future[TaskRecord | None]]] | None = None
        self._flushers: set[asyncio.Task[None]] = set()
        #: Approximate number of events kept per queue (set from `GlobalConfig.events_maxlen`).
        self.events_maxlen: int = 100_000

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (and create the schema) if needed; a closed storage opens again, on any event
        loop. Raises `LifecycleError` if already open."""
        if self._state == "open":
            raise LifecycleError(f"{type(self).__name__} is already open")
        self._forget_waiters()
        await self._open()
        self._state = "open"
        logger.debug("%s opened", type(self).__name__)

    async def close(self) -> None:
        """Disconnect; pending waiters are woken with nothing. Closing twice is a no-op."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        for futures in self._waiters.values():
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        self._waiters.clear()
        await self._close()
        logger.debug("%s closed", type(self).__name__)

    def abandon(self) -> None:
        """Let go of a storage whose event loop has ended: mark it closed and drop its
        connections and loop-bound state (waiters, pending reads) without awaiting anything,
        since nothing can run on a loop that no longer runs (the garbage collector closes the
        sockets). `open()` may follow, on another loop. A no-op unless open."""
        if self._state != "open":
            return
        self._state = "closed"
        self._forget_waiters()
        self._abandon()
        logger.debug("%s abandoned with its event loop", type(self).__name__)

    def _forget_waiters(self) -> None:
        # Futures and tasks of a loop that ended are dropped, never touched: cancelling one
        # would schedule its callbacks on that loop.
        self._waiters = {}
        self._read_batch = None
        self._flushers = set()

    async def _open(self) -> None:
        """Hook: connect. Default: nothing."""

    async def _close(self) -> None:
        """Hook: disconnect. Default: nothing."""

    def _abandon(self) -> None:
        """Hook: drop the connections and every object bound to the event loop that ended,
        without awaiting (see `abandon`); `_open` must then work on a new loop. Default:
        nothing."""

    def describe(self) -> str:
        """Where this storage keeps its tasks, for logs and messages: the server's URL with any
        password masked, and what scopes it there (a key prefix, a schema)."""
        return f"{self.scheme}://"

    # -- records ---------------------------------------------------------------------------

    async def get(self, task_id: str, *, now: float) -> TaskRecord | None:
        """Return the task's record, or None if the id is unknown.

        After the result TTL the record is still returned, with ``result_expired=True`` and no
        result.
        """
        self._check_open()
        return (await self._get_many([task_id], now))[0]

    async def get_many(self, task_ids: Sequence[str], *, now: float) -> list[TaskRecord | None]:
        """`get` for many ids in one round trip, in order."""
        self._check_open()
        return await self._get_many(task_ids, now)

    async def report(self, updates: Sequence[ProgressUpdate], *, now: float) -> list[bool]:
        """Store progress and yielded values of running tasks; per update, False if its token is
        stale or the task is no longer running (nothing is written then)."""
        self._check_open()
        if not updates:
            return []
        return await self._report(updates, now)

    async def wait(self, task_id: str, *, timeout: float | None, now: float) -> TaskRecord:
        """Wait until the task is terminal and return its record; push-notified, never polled.

        The waiter is registered *before* the stored state is read, so a task finishing in
        between is not missed.

        Raises:
            TaskNotFound: the id is unknown.
            TimeoutError: (builtin) not terminal within `timeout` seconds.
        """
        got = await self._wait(task_id, timeout, now, self._read_one)
        assert isinstance(got, TaskRecord)
        return got

    async def wait_outcome(self, task_id: str, *, timeout: float | None, now: float) -> TaskOutcome:
        """`wait` for how the task ended only (what `AsyncResult.result` needs): backends may
        read less than the whole record. Same guarantees and errors as `wait`."""
        got = await self._wait(task_id, timeout, now, self._read_outcome)
        return got if isinstance(got, TaskOutcome) else TaskOutcome.of(got)

    async def _wait(
        self,
        task_id: str,
        timeout: float | None,
        now: float,
        read: Callable[[str, float], Awaitable[_Read | None]],
    ) -> _Read:
        self._check_open()
        if self.cheap_reads:
            # Most results are awaited after the task ended: skip the waiter when a read is
            # cheaper than registering one. The read below, after registering, closes the race.
            record = await read(task_id, now)
            if record is not None and record.status.terminal:
                return record
        await self._ensure_listening()
        loop = asyncio.get_running_loop()
        futures = self._waiters.setdefault(task_id, [])
        fut: asyncio.Future[_Pushed] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    fut = loop.create_future()
                    futures.append(fut)
                    got = await read(task_id, now)
                    if got is None:
                        raise TaskNotFound(task_id)
                    if got.status.terminal:
                        return got
                    pushed = await fut
                    if callable(pushed):  # the outcome only: apply it to what was just read
                        pushed = pushed(got)
                    if pushed is not None and pushed.status.terminal:
                        return pushed
                    # A bare wake-up (or a non-terminal record): read again, keep waiting.
                    futures.remove(fut)
        finally:
            if fut is not None and fut in futures:
                futures.remove(fut)
            if not futures and self._waiters.get(task_id) is futures:
                del self._waiters[task_id]

    async def _read_outcome(self, task_id: str, now: float) -> TaskOutcome | None:
        """How one task ended so far: `_get_outcomes` if the backend coalesces its reads (or
        reads cheaply), else the outcome part of a coalesced `_read_one`."""
        if self.cheap_reads or self.coalesces_reads:
            return (await self._get_outcomes([task_id], now))[0]
        record = await self._read_one(task_id, now)
        return None if record is None else TaskOutcome.of(record)

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        """Hook: each task's `TaskOutcome` or None (as `_get_many`, which it calls by
        default); backends override it to read less."""
        records = await self._get_many(task_ids, now)
        return [None if r is None else TaskOutcome.of(r) for r in records]

    async def _read_one(self, task_id: str, now: float) -> TaskRecord | None:
        """One record, read together with every other waiter's read of this loop turn.

        Many results awaited at once (``gather``) cost one `_get_many` round trip per loop
        turn instead of one each. In-process backends (`cheap_reads`) read directly.
        """
        if self.cheap_reads or self.coalesces_reads:
            return (await self._get_many([task_id], now))[0]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TaskRecord | None] = loop.create_future()
        batch = self._read_batch
        if batch is None:
            batch = self._read_batch = {}
            flusher = loop.create_task(self._flush_reads(batch, now))
            self._flushers.add(flusher)  # a reference, so the task is not collected mid-way
            flusher.add_done_callback(self._flushers.discard)
        batch.setdefault(task_id, []).append(fut)
        return await fut

    async def _flush_reads(
        self, batch: dict[str, list[asyncio.Future[TaskRecord | None]]], now: float
    ) -> None:
        await asyncio.sleep(0)  # let this turn's other readers join the batch
        if self._read_batch is batch:
            self._read_batch = None
        ids = list(batch)
        try:
            records = await self._get_many(ids, now)
        except BaseException as exc:
            for futures in batch.values():
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(
                            exc
                            if isinstance(exc, Exception)
                            else LifecycleError("the storage was closed while a read was in flight")
                        )
            if not isinstance(exc, Exception):
                raise
            return
        for task_id, record in zip(ids, records, strict=True):
            for fut in batch[task_id]:
                if not fut.done():
                    fut.set_result(record)

    def _notify_terminal(self, task_id: str, record: _Pushed = None) -> None:
        """For backends: wake the waiters of `task_id` with its terminal `record` if at hand, or
        with a function that makes it from the record the waiter read last (a push carrying only
        what the terminal write changed), or with None (the waiter then reads it again)."""
        futures = self._waiters.get(task_id)
        if futures:
            for fut in futures:
                if not fut.done():
                    fut.set_result(record)

    def _has_waiters(self, task_id: str) -> bool:
        return task_id in self._waiters

    def local_workers(self, queue: str) -> int | None:
        """How many workers claim from `queue` right now, for a backend whose tasks only
        workers of this process can run (`shared_across_processes` False); None where workers
        elsewhere may run them (the default). `result()` uses it to say that no worker is
        running, rather than to keep waiting."""
        return None

    async def _ensure_listening(self) -> None:
        """Hook: make sure this process's one shared notification listener runs."""

    @abstractmethod
    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        """Return each task's record or None; hide the result once `result_expires_at <= now`."""

    @abstractmethod
    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        """Apply progress/yields of RUNNING tasks whose token matches; emit PROGRESS/YIELDED
        events. Return per update whether it was applied."""

    # -- events ----------------------------------------------------------------------------

    async def read_events(
        self, queue: str, *, after: str | None = None, limit: int = 1000
    ) -> list[Event]:
        """Read a queue's events in order, starting right after cursor `after` (None: the
        oldest kept; `LATEST`: none, nothing is newer than the newest). The stream is capped
        (`GlobalConfig.events_maxlen`); a cursor older than the oldest kept event resumes at
        the oldest kept event.

        Raises:
            ValueError: `after` is not a cursor of this backend.
        """
        self._check_open()
        if after == LATEST:
            return []
        return await self._read_events(queue, after, limit)

    async def follow_events(
        self, queue: str, *, after: str | None = None, batch: int = 1000
    ) -> AsyncIterator[Event]:
        """Yield a queue's events as they happen, forever, resuming after cursor `after`
        (None: from the oldest kept; `LATEST`: only events after the newest one when the
        iteration starts). Push-driven; reads up to `batch` events at a time.

        Raises:
            ValueError: `after` is not a cursor of this backend.
        """
        self._check_open()
        cursor = await self._latest_cursor(queue) if after == LATEST else after
        while True:
            events = await self._read_events(queue, cursor, batch)
            for event in events:
                cursor = event.cursor
                yield event
            if not events:
                await self._wait_events(queue, cursor)

    @abstractmethod
    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        """Return up to `limit` events of `queue` after cursor `after`, oldest first."""

    @abstractmethod
    async def _wait_events(self, queue: str, after: str | None) -> None:
        """Return when events after cursor `after` may exist (push; spurious returns allowed)."""

    @abstractmethod
    async def _latest_cursor(self, queue: str) -> str | None:
        """The cursor of `queue`'s newest event, or None if it has none (what `LATEST`
        stands for): reading after it returns only events appended later."""

    # -- maintenance -----------------------------------------------------------------------

    async def cleanup(self, *, now: float, keep_s: float) -> int:
        """Delete records whose result expired more than `keep_s` seconds before `now`, and
        dedup keys past their TTL. Returns how many records were deleted."""
        self._check_open()
        return await self._cleanup(now, keep_s)

    @abstractmethod
    async def _cleanup(self, now: float, keep_s: float) -> int:
        """See `cleanup`."""

    # -- coordination: leases (leader election, named locks) --------------------------------

    async def acquire_lease(self, name: str, owner: str, *, ttl_s: float, now: float) -> int | None:
        """Take the named lease for `owner` until ``now + ttl_s``, if it is free, lapsed, or
        already `owner`'s. Returns its fencing token (a new, higher one when ownership changes),
        or None if someone else holds it."""
        self._check_open()
        return await self._acquire_lease(name, owner, ttl_s, now)

    async def renew_lease(
        self, name: str, owner: str, token: int, *, ttl_s: float, now: float
    ) -> bool:
        """Extend a held lease; False if it lapsed and was taken, or the token is stale."""
        self._check_open()
        return await self._renew_lease(name, owner, token, ttl_s, now)

    async def release_lease(self, name: str, owner: str, token: int) -> bool:
        """Give a held lease up at once; False if it was not held with that token."""
        self._check_open()
        return await self._release_lease(name, owner, token)

    async def get_lease(self, name: str, *, now: float) -> LeaseInfo | None:
        """Who holds the named lease now (None if free or lapsed)."""
        self._check_open()
        return await self._get_lease(name, now)

    @abstractmethod
    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        """See `acquire_lease`."""

    @abstractmethod
    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        """See `renew_lease`."""

    @abstractmethod
    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        """See `release_lease`."""

    @abstractmethod
    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        """See `get_lease`."""

    # -- durable key-value records (orders and their plans) ----------------------------------

    async def kv_get(self, namespace: str, key: str) -> Versioned | None:
        """Read one record of the small durable key-value space."""
        self._check_open()
        return await self._kv_get(namespace, key)

    async def kv_set(
        self, namespace: str, key: str, value: bytes, *, expect_version: int | None = None
    ) -> int | None:
        """Write a record. With `expect_version` (0: must not exist yet) it is a
        compare-and-set. Returns the new version, or None if the expectation failed."""
        self._check_open()
        return await self._kv_set(namespace, key, value, expect_version)

    async def kv_list(self, namespace: str) -> dict[str, Versioned]:
        """Every record of a namespace."""
        self._check_open()
        return await self._kv_list(namespace)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Delete a record; False if it did not exist."""
        self._check_open()
        return await self._kv_delete(namespace, key)

    @abstractmethod
    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        """See `kv_get`."""

    @abstractmethod
    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        """See `kv_set`. Versions start at 1 and grow by 1 per write."""

    @abstractmethod
    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        """See `kv_list`."""

    @abstractmethod
    async def _kv_delete(self, namespace: str, key: str) -> bool:
        """See `kv_delete`."""


class Broker(_Lifecycle, ABC):
    """Moves messages: enqueue, claim under a lease, renew, complete, cancel, dead letters.

    A broker is bound to the `Storage` of the same server (`self.storage`); opening and closing
    the broker opens and closes that storage too. Subclasses implement the ``_hooks``.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        #: Result TTL for terminal states the backend decides by itself (a queued task
        #: cancelled, a lapsed task dead-lettered); set from `GlobalConfig.result_ttl_s`.
        self.result_ttl_s: float = 86_400.0
        #: Per queue: the code its task ids end with (see `new_task_id`).
        self._queue_codes: dict[str, str] = {}
        self.counters: dict[str, int] = {
            "enqueued": 0,
            "claimed": 0,
            "completed": 0,
            "refused": 0,
        }

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the storage (if not open yet) and the broker; a closed broker opens again, on
        any event loop. Raises `LifecycleError` if already open."""
        if self._state == "open":
            raise LifecycleError(f"{type(self).__name__} is already open")
        if not self.storage.is_open:
            await self.storage.open()
        await self._open()
        self._state = "open"

    async def close(self) -> None:
        """Close the broker and its storage. Closing twice is a no-op."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        await self._close()
        await self.storage.close()

    def abandon(self) -> None:
        """`Storage.abandon` for the broker and its storage: let go of them without awaiting,
        because the event loop they were opened on has ended. A no-op unless open."""
        if self._state != "open":
            return
        self._state = "closed"
        self._abandon()
        self.storage.abandon()

    async def _open(self) -> None:
        """Hook: connect. Default: nothing."""

    async def _close(self) -> None:
        """Hook: disconnect. Default: nothing."""

    def _abandon(self) -> None:
        """Hook: drop what is bound to the ended event loop, without awaiting (see
        `Storage.abandon`). Default: nothing."""

    # -- the message path ------------------------------------------------------------------

    async def enqueue(
        self, messages: Sequence[TaskMessage], *, now: float, connection: Any = None
    ) -> list[EnqueueResult]:
        """Store each message's record (queued, or scheduled if its eta is after `now`) and make
        it claimable, in one round trip.

        `connection` is a backend-specific transaction handle (PostgreSQL: an asyncpg connection
        inside the caller's transaction, so the tasks exist only if it commits). Backends that
        cannot enlist in a caller's transaction raise `BackendUnavailable` when it is given.

        Dedup: a message whose `dedup_key` (scoped to its queue) belongs to a live task, or to
        one that ended less than its `dedup_ttl_s` ago, is not added; its result names the
        existing task. The same holds for a message whose `id` already exists.
        """
        self._check_open()
        if not messages:
            return []
        if connection is not None:
            results = await self._enqueue_in(connection, messages, now)
        else:
            results = await self._enqueue(messages, now)
        self.counters["enqueued"] += len(messages)
        return results

    async def claim(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease_s: float,
        now: float,
        worker_id: str,
    ) -> list[Delivery]:
        """Claim up to `limit` due messages from `queues` under a lease until `now + lease_s`.

        Order: higher priority first, then FIFO (by due time, then enqueue order) within a
        priority; across queues, in the order given. Scheduled and retrying messages whose time
        has come (due at or before `now`), and messages whose lease lapsed at or before `now`,
        are claimable. Each claim marks
        the task running, increments its attempts and fencing token, clears the progress and
        yielded values of an earlier attempt, and emits a RUNNING event.
        """
        self._check_open()
        deliveries = await self._claim(queues, limit, lease_s, now, worker_id)
        self.counters["claimed"] += len(deliveries)
        return deliveries

    async def extend(
        self, leases: Sequence[Lease], *, lease_s: float, now: float
    ) -> list[LeaseState]:
        """Renew leases (until `now + lease_s`) in one call; per lease: OK, LOST or CANCEL."""
        self._check_open()
        if not leases:
            return []
        return await self._extend(leases, lease_s, now)

    async def complete(self, outcomes: Sequence[Outcome], *, now: float) -> list[bool]:
        """Store each outcome and ack its message, atomically per outcome, in one round trip.

        An outcome is refused (False, nothing written) if its token is not the task's current
        token or the task is already terminal. Terminal outcomes wake result waiters. A RETRY is
        only sent while the attempt is at most the message's `retries` (the worker sends FAILED
        once they are spent), so attempts never exceed ``retries + 1``. A RELEASE refunds the
        attempt and drops its progress and yielded values (the task reads as one that has not
        run); a RETRY keeps them next to its error until the next claim clears them.
        """
        self._check_open()
        if not outcomes:
            return []
        accepted = await self._complete(outcomes, now)
        n_ok = sum(accepted)
        self.counters["completed"] += n_ok
        self.counters["refused"] += len(accepted) - n_ok
        if n_ok != len(accepted):
            logger.info(
                "refused %d stale outcome(s): their lease was taken over or the task had ended",
                len(accepted) - n_ok,
            )
        return accepted

    async def cancel(self, task_ids: Sequence[str], *, now: float) -> list[CancelResult]:
        """Cancel tasks: queued/scheduled/retrying ones at once (terminal CANCELLED), running
        ones by request (their worker sees CANCEL on its next `extend`)."""
        self._check_open()
        if not task_ids:
            return []
        return await self._cancel(task_ids, now)

    async def next_due(self, queues: Sequence[str], *, now: float) -> float | None:
        """The earliest time at which something in `queues` becomes claimable (a scheduled or
        retrying message, or a lease lapsing), or None if nothing is pending. A value at or
        before `now` means something is claimable already."""
        self._check_open()
        return await self._next_due(queues, now)

    async def wait_for_work(self, queues: Sequence[str], *, worker_id: str) -> None:
        """Return when work may be claimable in `queues`: at once if a message was enqueued or
        released there after `worker_id`'s last `claim` began, else when one is. Push-driven;
        spurious returns are allowed. The worker bounds this wait with `next_due`."""
        self._check_open()
        await self._wait_for_work(queues, worker_id)

    def watch_work(
        self, queues: Sequence[str], *, worker_id: str, callback: Callable[[], None]
    ) -> bool:
        """Optional: call `callback()` (on the event loop thread, no awaiting) whenever work
        may have become claimable in `queues` for `worker_id`, from now on. Returns False if
        the backend cannot (the default): the worker then uses `wait_for_work`. Saves a task
        and a loop turn or two per wake-up where the push arrives as a function call (the
        memory backend's enqueue, the Redis listener's message). A backend that subscribes
        asynchronously must make `next_due` wait for the subscription before it reads, so no
        wake-up falls between the two.
        """
        return False

    async def unwatch_work(self, queues: Sequence[str], *, worker_id: str, now: float) -> None:
        """Optional: end `watch_work` for `worker_id` (its worker stopped claiming). A backend
        that hands work to idle workers directly gives back, here, whatever it handed this one
        that no claim has returned yet. Default: nothing."""

    # -- dead letters and inspection -------------------------------------------------------

    async def dead_letters(
        self, queue: str, *, limit: int = 100, offset: int = 0
    ) -> list[TaskRecord]:
        """Dead-lettered (failed) tasks of a queue, newest first."""
        self._check_open()
        return await self._dead_letters(queue, limit, offset)

    async def requeue_dead(
        self, task_ids: Sequence[str], *, now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        """Requeue dead letters as new tasks (ids from `new_ids`) linked to the old ones by
        `requeued_from`, with fresh attempts. Per id: the new task id, or None if the task is
        not dead-lettered. The old record stays FAILED but leaves the dead-letter list (a second
        requeue of it returns None); the new task is not deduplicated."""
        self._check_open()
        return await self._requeue_dead(task_ids, now, new_ids)

    async def stats(self, queues: Sequence[str], *, now: float) -> list[QueueStats]:
        """Counts per queue: queued (due), scheduled (not yet due), running, dead, and how many
        tasks reached a terminal state in the minute before `now` (see `QueueStats`)."""
        self._check_open()
        return await self._stats(queues, now)

    async def purge(self, queue: str, *, now: float) -> int:
        """Drop every task of `queue` that waits to run: queued, scheduled, and retrying (waiting
        for its next attempt). Returns how many were dropped.

        A dropped task ends as if cancelled before it started: its status is CANCELLED with an
        error of type ``"Purged"``, a CANCELLED event is emitted, its result waiters wake
        (`TaskCancelled`), and its record stays readable until the result TTL (``now`` +
        `result_ttl_s`), like any finished task. Running tasks are not touched (a task whose
        lease lapsed and that waits to be re-delivered counts as running): `cancel` stops
        those. Dead letters stay listed. A task enqueued while the purge runs may be dropped
        or kept.
        """
        self._check_open()
        error = ErrorInfo(
            "Purged",
            f"purged from queue {queue!r} before it ran (Broker.purge, `taskflow purge`)",
        )
        purged = await self._purge(queue, error, now)
        if purged:
            logger.info("purged %d waiting task(s) from queue %r", purged, queue)
        return purged

    def new_task_id(self, queue: str) -> str:
        """A fresh, globally unique task id for a message of `queue`.

        Every backend makes ids of one shape (``taskflow._ids``): 30 lowercase base32
        characters, safe in URLs and shells, sorting by creation time, ending with a code of
        the queue that a backend may route by (`_queue_code`).
        """
        return new_task_id(self._queue_codes.get(queue) or self._code_for(queue))

    def _code_for(self, queue: str) -> str:
        """The code of `queue` (`_queue_code`), remembered (bounded) for the next ids."""
        if len(self._queue_codes) >= _QUEUE_CODES_MAX:
            self._queue_codes.clear()
        code = self._queue_codes[queue] = self._queue_code(queue)
        return code

    def _queue_code(self, queue: str) -> str:
        """Hook: the code the ids of `queue` end with, computed once per queue (a backend may
        check the queue's name here). Default: `taskflow._ids.queue_code`."""
        return queue_code(queue)

    # -- hooks -----------------------------------------------------------------------------

    async def _enqueue_in(
        self, connection: Any, messages: Sequence[TaskMessage], now: float
    ) -> list[EnqueueResult]:
        """Hook: enqueue inside the caller's transaction `connection`. Default: unsupported."""
        raise BackendUnavailable(
            f"{type(self).__name__} cannot enqueue inside a caller's transaction "
            "(options(connection=...)); that needs the PostgreSQL backend"
        )

    @abstractmethod
    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        """See `enqueue`."""

    @abstractmethod
    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        """See `claim`. Also dead-letters lapsed tasks that have no attempt left."""

    @abstractmethod
    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        """See `extend`."""

    @abstractmethod
    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        """See `complete`. Must call ``self.storage._notify_terminal`` (locally or through the
        backend's push channel) for every accepted terminal outcome."""

    @abstractmethod
    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        """See `cancel`. Tasks cancelled at once wake their result waiters."""

    @abstractmethod
    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        """See `next_due`."""

    @abstractmethod
    async def _wait_for_work(self, queues: Sequence[str], worker_id: str) -> None:
        """See `wait_for_work`."""

    @abstractmethod
    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        """See `dead_letters`."""

    @abstractmethod
    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        """See `requeue_dead`."""

    @abstractmethod
    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        """See `stats`."""

    @abstractmethod
    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        """See `purge`: end each waiting task of `queue` CANCELLED with `error` (result expiry
        ``now + result_ttl_s``) and wake its result waiters, as `_cancel` does."""
