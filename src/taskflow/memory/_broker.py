"""`MemoryBroker`: the memory backend's message path, over the states `MemoryStorage` keeps.

Enqueue, claim under a lease, renew, complete, cancel, wake idle workers, dead letters, stats
and purge, each one synchronous step on the event loop thread (no await inside a change, so
each is atomic). It changes the backend's state through `MemoryStorage`'s public methods and
the `TaskState` / `QueueState` objects they return, never through the storage's private parts.

What does not live here: retry policy and backoff (the worker decides and reports an
`Outcome`), expiry of tasks before they start (the worker reports ``EXPIRED``), reading
records and events (`MemoryStorage`), leases and key-value records (`MemoryCoordination`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from .._message import (
    LEASE_EXPIRED,
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    EventKind,
    Lease,
    LeaseState,
    Outcome,
    OutcomeKind,
    QueueStats,
    TaskMessage,
    TaskRecord,
    TaskStatus,
)
from ..abc import Broker
from ._coordination import MemoryCoordination
from ._flows import hold, hold_for_join, link_new, settle
from ._state import QueueState, TaskState
from ._storage import MemoryStorage

__all__ = ["MemoryBroker"]

logger = logging.getLogger("taskflow.memory")

_QUEUED: Final = TaskStatus.QUEUED
_SCHEDULED: Final = TaskStatus.SCHEDULED
_RUNNING: Final = TaskStatus.RUNNING
_RETRYING: Final = TaskStatus.RETRYING
_DONE: Final = TaskStatus.DONE
_FAILED: Final = TaskStatus.FAILED
_CANCELLED: Final = TaskStatus.CANCELLED

_TERMINAL_BY_OUTCOME: Final = {
    OutcomeKind.DONE: _DONE,
    OutcomeKind.FAILED: _FAILED,
    OutcomeKind.CANCELLED: _CANCELLED,
    OutcomeKind.EXPIRED: TaskStatus.EXPIRED,
}
_OUTCOME_DONE: Final = OutcomeKind.DONE
_EV_QUEUED: Final = EventKind.QUEUED
_EV_RUNNING: Final = EventKind.RUNNING
_EV_DONE: Final = EventKind.DONE


class MemoryBroker(Broker):
    """The message path of the memory backend: enqueue, claim, extend, complete, cancel.

    Args:
        storage: the `MemoryStorage` to keep tasks in; a new one if omitted. Brokers sharing a
            storage share their queues (handy in tests).
        coordination: the `MemoryCoordination` to keep leases and key-value records in; a new
            one if omitted.
    """

    storage: MemoryStorage
    coordination: MemoryCoordination

    def __init__(
        self,
        storage: MemoryStorage | None = None,
        *,
        coordination: MemoryCoordination | None = None,
    ) -> None:
        super().__init__(
            MemoryStorage() if storage is None else storage,
            MemoryCoordination() if coordination is None else coordination,
        )

    # -- the message path --------------------------------------------------------------------------

    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        storage = self.storage
        tasks = storage.tasks
        touched: list[QueueState] = []
        queue: QueueState | None = None
        results: list[EnqueueResult] = []
        slow: list[TaskState] = []
        for msg in messages:
            task_id = msg.id
            if task_id in tasks:
                results.append(EnqueueResult(task_id, False))
                continue
            key = msg.dedup_key
            if key is not None:
                owner = storage.dedup_owner(msg.queue, key, now)
                if owner is not None:
                    results.append(EnqueueResult(owner.id, False))
                    continue
            task = storage.new_task(msg)
            if queue is None or queue.name != msg.queue:
                queue = storage.queue(msg.queue)
                if queue not in touched:
                    touched.append(queue)
            eta = msg.eta
            if (eta is None or eta <= now) and not msg.waits_for and msg.outcome_to is None:
                # The common case, inlined: queued and due now (see `_add_new`).
                task.qseq = task.first_seq = seq = next(queue.seq)
                heapq.heappush(queue.ready, (-msg.priority, now if eta is None else eta, seq, task))
                queue.event_seq = n = queue.event_seq + 1
                queue.events.append(
                    (n, task_id, _EV_QUEUED, now, 0, msg.order_id, None, msg.name, msg.flow_id)
                )
            else:
                self._add_new(queue, task, now)
                slow.append(task)
            results.append(EnqueueResult(task_id, True))
        # Links apply once the whole batch is stored (a target may come later in it).
        for task in slow:
            link_new(storage, task, now, self.result_ttl_s)
        for queue in touched:
            queue.wake_followers()
            queue.wake_watchers()
        return results

    @staticmethod
    def _add_new(queue: QueueState, task: TaskState, now: float) -> None:
        """Make a new task claimable (QUEUED), or SCHEDULED until its eta, or WAITING for its
        parents."""
        eta = task.msg.eta
        if task.msg.waits_for:
            hold(queue, task, now)
        elif eta is not None and eta > now:
            task.status = _SCHEDULED
            queue.make_pending(task, eta, now)
            queue.emit(task, EventKind.SCHEDULED, now)
        else:
            queue.make_pending(task, now if eta is None else eta, now)
            queue.emit(task, EventKind.QUEUED, now)

    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        lease_expires_at = now + lease_s
        out: list[Delivery] = []
        for name in queues:
            if len(out) >= limit:
                break
            queue = self.storage.queues.get(name)
            if queue is None:
                continue
            queue.promote_due(now)
            self._recover_lapsed(queue, now)
            ready = queue.ready
            leases = queue.leases
            events = queue.events
            while ready and len(out) < limit:
                _, _, seq, task = heapq.heappop(ready)
                if task.qseq != seq:
                    continue  # cancelled, or taken back by its old worker
                if task.cancel_requested:
                    # A lapsed task whose cancel was requested: end it instead of running it.
                    self._end(queue, task, _CANCELLED, now)
                    continue
                task.qseq = 0
                task.status = _RUNNING
                task.attempts = attempt = task.attempts + 1
                task.token = token = task.token + 1
                if token > 1:  # a new attempt starts with no progress or yields of the last one
                    task.progress = None
                    task.yields = None
                task.started_at = now
                task.worker_id = worker_id
                task.lease_expires_at = lease_expires_at
                heapq.heappush(leases, (lease_expires_at, seq, task, token))  # `hold_lease`
                n_events = queue.event_seq + 1
                queue.event_seq = n_events
                msg = task.msg
                events.append(
                    (
                        n_events,
                        task.id,
                        _EV_RUNNING,
                        now,
                        attempt,
                        msg.order_id,
                        None,
                        msg.name,
                        msg.flow_id,
                    )
                )
                out.append(Delivery(task.id, token, attempt, task.data, lease_expires_at))
            queue.wake_followers()
            queue.trim_leases()
        return out

    def _recover_lapsed(self, queue: QueueState, now: float) -> None:
        """Make tasks whose lease lapsed claimable again, or end them if they cannot run again."""
        while True:
            expires = queue.earliest_lease()
            if expires is None or expires > now:
                return
            task = queue.pop_earliest_lease()
            # Rare (a worker died or stalled), so worth a log line per task.
            if task.cancel_requested:
                logger.info("task %s: lease lapsed after a cancel request; cancelled", task.id)
                self._end(queue, task, _CANCELLED, now)
            elif task.attempts >= task.msg.retries + 1:
                logger.warning(
                    "task %s (queue %s): lease of worker %s lapsed with no attempt left; "
                    "dead-lettered as LeaseExpired",
                    task.id,
                    queue.name,
                    task.worker_id,
                )
                self._end(queue, task, _FAILED, now, error=LEASE_EXPIRED)
            else:
                # Still RUNNING under its old token until claimed: a late outcome or renewal
                # from the old worker is accepted (and takes the entry back) until then.
                logger.info(
                    "task %s (queue %s): lease of worker %s lapsed; it will be re-delivered",
                    task.id,
                    queue.name,
                    task.worker_id,
                )
                queue.redeliver(task, expires)

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        tasks = self.storage.tasks
        expires_at = now + lease_s
        out: list[LeaseState] = []
        for lease in leases:
            task = tasks.get(lease.task_id)
            if task is None or task.status is not _RUNNING or task.token != lease.token:
                out.append(LeaseState.LOST)
                continue
            task.lease_expires_at = expires_at
            if task.qseq:
                # Its lease had lapsed and it waited for re-delivery: the old owner is back.
                task.qseq = 0
                self.storage.queue(task.msg.queue).hold_lease(task, expires_at)
            out.append(LeaseState.CANCEL if task.cancel_requested else LeaseState.OK)
        return out

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        storage = self.storage
        tasks = storage.tasks
        waiters = storage.waiters
        linked = storage.link_targets
        touched: list[QueueState] = []
        queue: QueueState | None = None
        out: list[bool] = []
        for outcome in outcomes:
            task = tasks.get(outcome.task_id)
            if task is None or task.status is not _RUNNING or task.token != outcome.token:
                out.append(False)
                continue
            msg = task.msg
            if queue is None or queue.name != msg.queue:
                queue = storage.queue(msg.queue)
                if queue not in touched:
                    touched.append(queue)
            kind = outcome.kind
            if kind is _OUTCOME_DONE:
                # The common case, inlined: `MemoryStorage.finish` for DONE.
                task.status = _DONE
                task.ended = True
                task.qseq = 0  # a lapsed task waiting for re-delivery must not be delivered
                task.finished_at = now
                task.result = outcome.result if msg.store_result else None
                task.error = outcome.error
                task.result_expires_at = outcome.result_expires_at
                queue.event_seq = n = queue.event_seq + 1
                queue.events.append(
                    (
                        n,
                        task.id,
                        _EV_DONE,
                        now,
                        task.attempts,
                        msg.order_id,
                        None,
                        msg.name,
                        msg.flow_id,
                    )
                )
                if task.id in waiters:
                    waiters.wake(task.id, task.outcome(now))
                # `MemoryStorage.has_links`, inlined.
                if msg.children or msg.outcome_to is not None or task.id in linked:
                    settle(storage, task, now, self.result_ttl_s, by_run=True)
            else:
                self._apply(queue, task, outcome, now)
            out.append(True)
        for queue in touched:
            queue.wake_followers()
        return out

    def _apply(self, queue: QueueState, task: TaskState, outcome: Outcome, now: float) -> None:
        """Apply an accepted outcome other than DONE to the running `task` of `queue`."""
        kind = outcome.kind
        storage = self.storage
        if kind is OutcomeKind.RETRY or kind is OutcomeKind.RELEASE:
            _log_error(queue, task, outcome, now)
            self._reschedule(queue, task, outcome, now)
            queue.wake_watchers()
        elif kind is OutcomeKind.WAIT and task.cancel_requested:
            self._end(queue, task, _CANCELLED, now)  # the request wins over waiting for a join
        elif kind is OutcomeKind.WAIT:
            hold_for_join(storage, queue, task, now)
        else:
            _log_error(queue, task, outcome, now)
            storage.finish(
                queue,
                task,
                _TERMINAL_BY_OUTCOME[kind],
                now,
                result=outcome.result if task.msg.store_result else None,
                error=outcome.error,
                result_expires_at=outcome.result_expires_at,
            )
            if storage.has_links(task):
                settle(storage, task, now, self.result_ttl_s, by_run=True)

    @staticmethod
    def _reschedule(queue: QueueState, task: TaskState, outcome: Outcome, now: float) -> None:
        """Apply a RETRY (attempt spent) or RELEASE (attempt refunded) outcome."""
        due = now if outcome.retry_at is None else outcome.retry_at
        task.worker_id = None
        if outcome.kind is OutcomeKind.RETRY:
            task.status = _RETRYING
            task.error = outcome.error
            queue.make_pending(task, due, now)
            detail = None if outcome.error is None else outcome.error.type
            queue.emit(task, EventKind.RETRYING, now, detail)
        else:
            # The attempt is refunded: the task reads as one that has not run, with no progress
            # or yields of the interrupted attempt (a retry keeps them until the next claim).
            task.attempts -= 1
            task.progress = None
            task.yields = None
            task.status = _SCHEDULED if due > now else _QUEUED
            queue.make_pending(task, due, now)
            detail = None if outcome.error is None else outcome.error.type  # why, if it says
            queue.emit(task, EventKind.RELEASED, now, detail)

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        storage = self.storage
        out: list[CancelResult] = []
        for task_id in task_ids:
            task = storage.tasks.get(task_id)
            if task is None:
                out.append(CancelResult.NOT_FOUND)
            elif task.ended:
                out.append(CancelResult.ALREADY_TERMINAL)
            elif task.status is _RUNNING:
                if not task.cancel_requested:
                    task.cancel_requested = True
                    storage.queue(task.msg.queue).emit(task, EventKind.CANCEL_REQUESTED, now)
                out.append(CancelResult.REQUESTED)
            else:
                self._end(storage.queue(task.msg.queue), task, _CANCELLED, now)
                out.append(CancelResult.CANCELLED)
        return out

    def _end(
        self,
        queue: QueueState,
        task: TaskState,
        status: TaskStatus,
        now: float,
        *,
        error: ErrorInfo | None = None,
    ) -> None:
        """End `task` by the backend's own decision (a cancel, a lapsed lease), its result kept
        for the result TTL, and apply its end to the tasks linked to it."""
        self.storage.finish(
            queue, task, status, now, error=error, result_expires_at=now + self.result_ttl_s
        )
        if self.storage.has_links(task):
            settle(self.storage, task, now, self.result_ttl_s, by_run=False)

    async def _wake(self, task_ids: list[str], now: float) -> None:
        storage = self.storage
        woken: list[QueueState] = []
        for task_id in task_ids:
            task = storage.tasks.get(task_id)
            if task is None:
                continue
            queue = storage.queue(task.msg.queue)
            if queue.wake(task, now) and queue not in woken:
                woken.append(queue)
        for queue in woken:
            queue.wake_watchers()

    # -- waiting for work ----------------------------------------------------------------------

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        best: float | None = None
        for name in queues:
            queue = self.storage.queues.get(name)
            if queue is None:
                continue
            if queue.has_ready():
                return now
            for when in (queue.earliest_scheduled(), queue.earliest_lease()):
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def _watch_work(self, queues: list[str], worker_id: str, callback: Callable[[], None]) -> None:
        # Every change that makes work claimable calls the queue's watchers directly.
        self.storage.watch(worker_id, queues, callback)

    async def _unwatch_work(self, queues: list[str], worker_id: str, now: float) -> None:
        self.storage.unwatch(worker_id)

    # -- dead letters and inspection -------------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        state = self.storage.queues.get(queue)
        if state is None or limit <= 0:
            return []
        newest_first = itertools.islice(reversed(state.dead.values()), offset, offset + limit)
        return [task.record(0.0) for task in newest_first]

    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        if len(task_ids) != len(new_ids):
            raise ValueError(
                f"requeue_dead got {len(task_ids)} task id(s) but {len(new_ids)} new id(s); "
                "pass one new id per dead letter (broker.new_task_id(queue))"
            )
        storage = self.storage
        touched: set[QueueState] = set()
        out: list[str | None] = []
        for old_id, new_id in zip(task_ids, new_ids, strict=True):
            old = storage.tasks.get(old_id)
            queue = None if old is None else storage.queues.get(old.msg.queue)
            if old is None or queue is None or old_id not in queue.dead or new_id in storage.tasks:
                out.append(None)
                continue
            msg = msgspec.structs.replace(
                old.msg, id=new_id, requeued_from=old_id, eta=None, created_at=now, waits_for=[]
            )
            task = storage.new_task(msg)  # not deduplicated: an operator's decision
            del queue.dead[old_id]
            queue.emit(old, EventKind.REQUEUED, now, new_id)
            self._add_new(queue, task, now)
            touched.add(queue)
            out.append(new_id)
        for queue in touched:
            queue.wake_watchers()
        return out

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        return [self._queue_stats(name, now) for name in queues]

    def _queue_stats(self, name: str, now: float) -> QueueStats:
        queue = self.storage.queues.get(name)
        if queue is None:
            return QueueStats(queue=name)
        queued, scheduled, running = queue.counts(now)
        return QueueStats(
            queue=name,
            queued=queued,
            scheduled=scheduled,
            running=running,
            dead=len(queue.dead),
            waiting=len(queue.held),
            finished_last_minute=self.storage.count_finished(name, now - 60.0, now),
        )

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        state = self.storage.queues.get(queue)
        if state is None:
            return 0
        # Every task of the queue is purged first, then the ends reach the linked tasks: a
        # waiting child of a purged parent in this queue is purged too, not ended by its policy.
        doomed = [t for t in state.waiting() if t.status is not _RUNNING and not t.ended]
        doomed += state.held.values()  # lapsed ones, waiting for re-delivery, still run
        storage = self.storage
        for task in doomed:
            storage.finish(
                state, task, _CANCELLED, now, error=error, result_expires_at=now + self.result_ttl_s
            )
        for task in doomed:
            if storage.has_links(task):
                settle(storage, task, now, self.result_ttl_s, by_run=False)
        return len(doomed)


def _log_error(queue: QueueState, task: TaskState, outcome: Outcome, now: float) -> None:
    """Add a failed attempt to the queue's error log: a RETRY or FAILED outcome with an error,
    before the task's worker is forgotten."""
    kind = outcome.kind
    if outcome.error is not None and (kind is OutcomeKind.RETRY or kind is OutcomeKind.FAILED):
        queue.log_failure(task, outcome.error, now, retried=kind is OutcomeKind.RETRY)
