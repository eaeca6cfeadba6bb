"""The `Broker` contract: moving messages (enqueue, claim under a lease, renew, complete, cancel).

A broker is the handle of one backend on one server: it carries that server's `Storage`
(``broker.storage``) and `Coordination` (``broker.coordination``) and opens and closes them with
itself, because storing an outcome, checking its fencing token and acking its message are **one
atomic backend call** (`Broker.complete`). The base class owns counters, logging and task ids;
backends implement the ``_hooks``. What does not live here: reading what is known about tasks
(`Storage`) and leases or key-value records (`Coordination`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import BackendUnavailable
from .._ids import new_task_id, queue_code
from .._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Lease,
    LeaseState,
    Outcome,
    QueueStats,
    TaskMessage,
    TaskRecord,
)
from ._artifacts import ArtifactStore
from ._coordination import Coordination
from ._lifecycle import Lifecycle
from ._storage import Storage

__all__ = ["Broker"]

logger = logging.getLogger("taskflow.backend")

#: Most queue codes a broker remembers (`Broker.new_task_id`); past that it starts over.
_QUEUE_CODES_MAX = 10_000


class Broker(Lifecycle, ABC):
    """Moves messages: enqueue, claim under a lease, renew, complete, cancel, dead letters.

    A broker is bound to the `Storage` and the `Coordination` of the same server
    (`self.storage`, `self.coordination`): opening the broker opens them first (those not open
    yet), closing it closes them after it. Subclasses implement the ``_hooks``.
    """

    def __init__(self, storage: Storage, coordination: Coordination) -> None:
        self.storage = storage
        """The `Storage` of the same server (opened and closed with the broker)."""
        self.coordination = coordination
        """The `Coordination` of the same server (opened and closed with the broker)."""
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

    # -- lifecycle: the storage and the coordination open first and close last ------------

    async def _opening(self) -> None:
        if not self.storage.is_open:
            await self.storage.open()
        if not self.coordination.is_open:
            await self.coordination.open()
        await self._open()

    async def _closing(self) -> None:
        await self._close()
        await self.coordination.close()
        await self.storage.close()

    def _abandoning(self) -> None:
        self._abandon()
        self.coordination.abandon()
        self.storage.abandon()

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

        Flows (see ``docs/flows.md``): a message with `waits_for` is stored WAITING (event
        WAITING) and becomes claimable only through `complete` (or `cancel`) of its parents.
        The backend stores every message of the call before any of them can be claimed, so a
        parent cannot end before its children are stored; callers put all of a graph (or a
        fan-out's shards and join) in one call: a `waits_for` id whose task was stored by an
        earlier call does not name the child in its `children`, so its end never reaches the
        child (which waits until cancelled). A message with `copy` set emits a HEDGED event
        (detail: its id) on its `outcome_to` task. A message whose `outcome_to` task has
        already ended is stored and at once cancelled with a `SUPERSEDED` error (event
        CANCELLED, detail ``"lost to <id>"``), so no live task points at an ended one; links
        are applied once every message of the call is stored. Every message keeps its
        `flow_id`, `node`,
        `waits_for`, `outcome_to` and `copy` on its record, and `Storage.flow_tasks` finds it
        by its `flow_id`.
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
        run); a RETRY keeps them next to its error until the next claim clears them. A WAIT
        makes the task WAITING (lease dropped, attempt spent) until its join ends; a WAIT from
        a run whose cancel was requested ends the task CANCELLED instead (result TTL
        `result_ttl_s`; its join is then superseded, as below), so the request is not lost.

        **How a task's end reaches the tasks linked to it**, in the same atomic call that stores
        the end (on Redis, for a child in another queue's slot, see ``docs/internals/redis.md``),
        and again for each task ended this way (a cascade):

        - each of its `children` that is still WAITING counts it as ended. If it ended DONE,
          or the child's `after_failure` is RUN, the child becomes claimable once every one of
          its `waits_for` has ended (QUEUED, or SCHEDULED if its eta is later than `now`;
          event QUEUED or SCHEDULED, detail ``"ready"``). Otherwise the child ends at once
          without running: FAILED with an `UPSTREAM_FAILED` error (policy FAIL; listed as a dead
          letter, like every FAILED task) or CANCELLED with a `SKIPPED` error (policy SKIP),
          its result waiters woken, its result kept for `result_ttl_s`. The error's message is
          ``"<node or name> (<id>) <status>: <type>: <message>"`` of the parent (without the
          part after the status when the parent ended without an error, e.g. cancelled);
          the event's detail is the error's type. A parent's end is counted once per child
          (a set of arrived parents, so delivering it twice changes nothing);
        - if its `outcome_to` task has not ended (waiting, queued, or running: a hedge race),
          that task ends the same way: same status, result and error, its result waiters
          woken, its lease void (a later outcome of its run is refused; `extend` says LOST).
          Its event carries the detail ``"outcome of <id>"``, or ``"won by copy <id>"`` when
          this task is a `copy`. A `copy` passes on only a DONE or FAILED outcome that its own
          run reported here: a copy cancelled, purged, expired, or dead-lettered by a lapsed
          last lease (its worker died) ends alone, and its primary runs on. A join (any task
          that is not a copy) passes on every end;
        - every task whose `outcome_to` is this one and that has not ended is cancelled with a
          `SUPERSEDED` error (message ``"<node or name> (<id>) ended first: <status>"``): at
          once if it is not running (event CANCELLED, detail ``"lost to <id>"``), by request
          if it is (event CANCEL_REQUESTED, detail ``"lost to <id>"``; its worker sees CANCEL
          and its outcome is stored as its run reports it).

        Ending means reaching a terminal status here, by `cancel`, `purge`, expiry or a lapsed
        last lease; each of those applies the same rules in its own call. The memory backend
        (``memory/_flows.py``) is the reference implementation.
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
        """Cancel tasks: queued/scheduled/retrying/waiting ones at once (terminal CANCELLED,
        their end reaching their linked tasks as `complete` describes), running ones by
        request (their worker sees CANCEL on its next `extend`)."""
        self._check_open()
        if not task_ids:
            return []
        return await self._cancel(task_ids, now)

    async def wake(self, task_ids: Sequence[str], *, now: float) -> None:
        """Make waiting tasks claimable now, in one round trip per batch.

        Each given task that waits to be claimed later (released, retrying or scheduled: not
        running, not terminal) becomes claimable at `now`, in the place of the ready order it
        would have had if it had never been put off: by priority, then by its first due time
        (its eta, else the time it was made), then enqueue order. Tasks that are claimable
        already, running, terminal or unknown are left as they are. Idle workers watching its
        queue hear of it as of an enqueue (`watch_work`).

        The worker wakes with it the tasks it parked because their declared locks were taken,
        once a release grants the locks to them (`Coordination.release_locks`).
        """
        self._check_open()
        if task_ids:
            await self._wake(list(dict.fromkeys(task_ids)), now)

    async def next_due(self, queues: Sequence[str], *, now: float) -> float | None:
        """The earliest time at which something in `queues` becomes claimable (a scheduled or
        retrying message, or a lease lapsing), or None if nothing is pending. A value at or
        before `now` means something is claimable already."""
        self._check_open()
        return await self._next_due(queues, now)

    def watch_work(
        self, queues: Sequence[str], *, worker_id: str, callback: Callable[[], None]
    ) -> None:
        """Call `callback()` whenever work may have become claimable in `queues`, from now on
        until `unwatch_work`: the one way a worker hears of work.

        The calls come on the event loop's thread and do not await (the callback only sets a
        flag and wakes the worker). They come for a message enqueued or requeued there, for a
        retry or release (due now or later: an idle worker sleeps until the earliest due time
        it read, and must read it again), and once for every watcher after the backend's push
        channel was down (what it sent meanwhile is lost). Spurious calls are allowed; a lost
        one is not: each such change made after the worker's `next_due` began must reach the
        callback. A backend that subscribes asynchronously therefore makes `next_due` wait for
        the subscription before it reads.

        A worker uses it with `claim` and `next_due`: it claims until the queues run dry, then
        reads `next_due` and sleeps until that time or the next callback, whichever is first.
        """
        self._check_open()
        self._watch_work(list(queues), worker_id, callback)

    async def unwatch_work(self, queues: Sequence[str], *, worker_id: str, now: float) -> None:
        """End `watch_work` for `worker_id` (its worker stopped claiming): no more calls. A
        backend that hands work to idle workers directly gives back, here, whatever it handed
        this one that no claim has returned yet."""
        self._check_open()
        await self._unwatch_work(list(queues), worker_id, now)

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
        requeue of it returns None); the new task is not deduplicated. A flow node requeued
        keeps its flow fields but not its `waits_for` (its parents ended long ago): it is
        claimable at once, like any requeued task."""
        self._check_open()
        return await self._requeue_dead(task_ids, now, new_ids)

    async def stats(self, queues: Sequence[str], *, now: float) -> list[QueueStats]:
        """Counts per queue: queued (due), scheduled (not yet due), running, dead, and how many
        tasks reached a terminal state in the minute before `now` (see `QueueStats`)."""
        self._check_open()
        return await self._stats(queues, now)

    async def purge(self, queue: str, *, now: float) -> int:
        """Drop every task of `queue` that waits to run: queued, scheduled, retrying (waiting
        for its next attempt) and waiting (for its parents or its join). Returns how many
        were dropped.

        A dropped task ends as if cancelled before it started: its status is CANCELLED with an
        error of type ``"Purged"``, a CANCELLED event is emitted, its result waiters wake
        (`TaskCancelled`), and its record stays readable until the result TTL (``now`` +
        `result_ttl_s`), like any finished task. Running tasks are not touched (a task whose
        lease lapsed and that waits to be re-delivered counts as running): `cancel` stops
        those. Dead letters stay listed. A task enqueued while the purge runs may be dropped
        or kept. Every task of the queue is dropped before their ends reach linked tasks (as
        `complete` describes), so a waiting child in the purged queue is purged too (counted),
        not ended by its policy; children in other queues follow their policy.
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

    def default_artifact_store(self) -> ArtifactStore | None:
        """The `ArtifactStore` an app uses when it is given none: one kept on this backend's own
        server (sharing its connections), so workers on several hosts need no other service.
        None (the default) means the backend keeps no artifacts itself; the app then uses a
        directory."""
        return None

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
        """See `complete`. Must wake ``self.storage.waiters`` (here, or through the backend's
        push channel) for every accepted terminal outcome."""

    @abstractmethod
    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        """See `cancel`. Tasks cancelled at once wake their result waiters."""

    @abstractmethod
    async def _wake(self, task_ids: list[str], now: float) -> None:
        """See `wake`. `task_ids` holds no duplicates."""

    @abstractmethod
    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        """See `next_due`."""

    @abstractmethod
    def _watch_work(self, queues: list[str], worker_id: str, callback: Callable[[], None]) -> None:
        """See `watch_work`. Must not await: subscribe in the background if need be, and have
        `_next_due` wait for that subscription."""

    @abstractmethod
    async def _unwatch_work(self, queues: list[str], worker_id: str, now: float) -> None:
        """See `unwatch_work`."""

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
