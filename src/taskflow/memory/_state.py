"""The memory backend's data: one `TaskState` per task and one `QueueState` per queue.

Everything lives in dicts, heaps and deques of one process, on the event loop thread: no locks
and no awaits inside a state change, so each change is one atomic step. For speed (about 5 us
of backend time per task):

* one mutable `TaskState` per task holds its state; `TaskRecord`, `TaskOutcome` and `Event`
  structs are built only when someone reads them;
* per queue (`QueueState`): a *ready* heap ordered by (-priority, due time, sequence), a
  *scheduled* heap ordered by due time, a *lease* heap ordered by lease expiry, the dead
  letters, the event deque (capped, holding plain tuples) and the workers watching the queue;
* heap entries are never removed in place: an entry is valid only while its sequence number
  is the task's current ``qseq`` (ready/scheduled) or its token the task's current token
  (leases). Stale entries are skipped when they surface and compacted when they pile up.

What does not live here: which changes happen when (`MemoryBroker`, the message path) and
where the states are kept and looked up (`MemoryStorage`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec

from .._message import (
    ErrorInfo,
    EventKind,
    FailedAttempt,
    Progress,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
)

__all__ = ["EventTuple", "QueueState", "TaskState", "WorkWatcher", "wake_all"]

_RUNNING: Final = TaskStatus.RUNNING

#: Heaps holding stale entries are compacted when they grow past this and twice their live size.
COMPACT_MIN: Final = 1024

#: An event as kept: (seq, task_id, kind, at, attempt, order_id, detail, task name, flow id).
EventTuple = tuple[int, str, EventKind, float, int, "str | None", "str | None", str, "str | None"]


class TaskState(msgspec.Struct, gc=False):
    """The mutable state of one task; `TaskRecord` and `TaskOutcome` are built from it on demand.

    A `msgspec.Struct` with ``gc=False``: as fast to build and update as a ``__slots__`` class,
    and invisible to the cyclic garbage collector, which otherwise rescans every live task on
    each full collection. That is safe because a task state never takes part in a reference
    cycle (it refers only to its message, bytes, strings and small structs).
    """

    msg: TaskMessage
    id: str
    #: The encoded message, as claims deliver it.
    data: bytes
    status: TaskStatus = TaskStatus.QUEUED
    ended: bool = False
    attempts: int = 0
    token: int = 0
    #: Sequence number of the task's valid ready/scheduled heap entry; 0: none.
    qseq: int = 0
    #: Its sequence number when it was first made pending: its place in enqueue order, which
    #: `QueueState.wake` gives back to it.
    first_seq: int = 0
    #: When its pending entry (`qseq`) becomes due; at or before now: it is claimable.
    due_at: float = 0.0
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    lease_expires_at: float = 0.0
    result: bytes | None = None
    error: ErrorInfo | None = None
    progress: Progress | None = None
    yields: list[bytes] | None = None
    result_expires_at: float | None = None
    worker_id: str | None = None
    #: Named checkpoint values (`Storage.save_checkpoints`): kept across claims, gone with
    #: the task.
    checkpoints: dict[str, bytes] | None = None
    #: While it waits for its parents (WAITING, `TaskMessage.waits_for`): the parents whose
    #: end has not reached it yet; None otherwise. A set, so a parent's end counts once.
    pending: set[str] | None = None

    def outcome(self, now: float) -> TaskOutcome:
        """How the task ended so far, as seen at `now` (result hidden once expired)."""
        expires = self.result_expires_at
        expired = expires is not None and expires <= now
        return TaskOutcome(
            id=self.id,
            status=self.status,
            result=None if expired else self.result,
            error=self.error,
            result_expires_at=expires,
            result_expired=expired,
        )

    def record(self, now: float) -> TaskRecord:
        """The task's `TaskRecord` as seen at `now` (result hidden once expired)."""
        msg = self.msg
        expires = self.result_expires_at
        expired = expires is not None and expires <= now
        # Fields that are usually set go in the call; the rest only when they differ from the
        # default (building a struct from 25 keyword arguments costs about twice as much).
        record = TaskRecord(
            id=self.id,
            name=msg.name,
            queue=msg.queue,
            status=self.status,
            attempts=self.attempts,
            retries=msg.retries,
            created_at=msg.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=None if expired else self.result,
            result_expires_at=expires,
            token=self.token,
            worker_id=self.worker_id,
        )
        if expired:
            record.result_expired = True
        self._add_run_extras(record)
        _add_message_extras(record, msg)
        return record

    def _add_run_extras(self, record: TaskRecord) -> None:
        """Set on `record` the run's fields that differ from their defaults."""
        if self.error is not None:
            record.error = self.error
        if self.progress is not None:
            record.progress = self.progress
        if self.yields:
            record.yields = list(self.yields)
        if self.cancel_requested:
            record.cancel_requested = True


def _add_message_extras(record: TaskRecord, msg: TaskMessage) -> None:
    """Set on `record` the message's fields that differ from their defaults."""
    record.payload = msg.payload
    if msg.priority:
        record.priority = msg.priority
    if msg.eta is not None:
        record.eta = msg.eta
    if msg.parent_id is not None:
        record.parent_id = msg.parent_id
    if msg.order_id is not None:
        record.order_id = msg.order_id
    if msg.requeued_from is not None:
        record.requeued_from = msg.requeued_from
    if msg.dedup_key is not None:
        record.dedup_key = msg.dedup_key
    if not msg.store_result:
        record.store_result = False
    _add_flow_extras(record, msg)


def _add_flow_extras(record: TaskRecord, msg: TaskMessage) -> None:
    """Set on `record` the message's flow fields that differ from their defaults."""
    if msg.flow_id is not None:
        record.flow_id = msg.flow_id
    if msg.node is not None:
        record.node = msg.node
    if msg.waits_for:
        record.waits_for = list(msg.waits_for)
    if msg.outcome_to is not None:
        record.outcome_to = msg.outcome_to
    if msg.copy:
        record.copy = True


def wake_all(futures: list[asyncio.Future[None]]) -> None:
    """Resolve every pending future of `futures` and empty the list."""
    for fut in futures:
        if not fut.done():
            fut.set_result(None)
    futures.clear()


class WorkWatcher:
    """A worker watching for work (`MemoryBroker.watch_work`): its callback and its queues."""

    __slots__ = ("callback", "queues")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.queues: set[str] = set()


class QueueState:
    """Everything one queue holds: its heaps, dead letters, events and watching workers."""

    __slots__ = (
        "dead",
        "errors",
        "event_futures",
        "event_seq",
        "events",
        "held",
        "leases",
        "leases_limit",
        "name",
        "ready",
        "scheduled",
        "scheduled_limit",
        "seq",
        "watchers",
    )

    def __init__(self, name: str, events_maxlen: int, errors_maxlen: int = 10_000) -> None:
        self.name = name
        #: (-priority, due, seq, task): claimable now.
        self.ready: list[tuple[int, float, int, TaskState]] = []
        #: (due, seq, task): claimable once due.
        self.scheduled: list[tuple[float, int, TaskState]] = []
        self.scheduled_limit = COMPACT_MIN
        #: (lease expiry when pushed, seq, task, token): running tasks, by lease expiry.
        self.leases: list[tuple[float, int, TaskState, int]] = []
        self.leases_limit = COMPACT_MIN
        #: Numbers heap entries: a task's entry is valid while it is the task's ``qseq``.
        self.seq = itertools.count(1)
        #: The WAITING tasks (for their parents, or for their join), by id.
        self.held: dict[str, TaskState] = {}
        #: Dead letters in the order they died.
        self.dead: dict[str, TaskState] = {}
        self.events: deque[EventTuple] = deque(maxlen=events_maxlen)
        #: The error log: failed attempts, oldest first, capped.
        self.errors: deque[FailedAttempt] = deque(maxlen=errors_maxlen)
        self.event_seq = 0
        self.event_futures: list[asyncio.Future[None]] = []
        self.watchers: list[WorkWatcher] = []

    # -- events and wake-ups ---------------------------------------------------------------

    def emit(self, task: TaskState, kind: EventKind, at: float, detail: str | None = None) -> None:
        """Append one event of `task` to the stream and wake its followers."""
        self.event_seq += 1
        msg = task.msg
        self.events.append(
            (
                self.event_seq,
                task.id,
                kind,
                at,
                task.attempts,
                msg.order_id,
                detail,
                msg.name,
                msg.flow_id,
            )
        )
        self.wake_followers()

    def log_failure(self, task: TaskState, error: ErrorInfo, at: float, *, retried: bool) -> None:
        """Add a failed attempt of `task` (still claimed by its worker) to the error log."""
        self.errors.append(
            FailedAttempt(
                at=at,
                task_id=task.id,
                name=task.msg.name,
                queue=self.name,
                attempt=task.attempts,
                worker_id=task.worker_id,
                error=error,
                retried=retried,
            )
        )

    def wake_followers(self) -> None:
        """Wake every `follow_events` reader waiting for this queue's next event."""
        if self.event_futures:
            wake_all(self.event_futures)

    def wake_watchers(self) -> None:
        """Tell every worker watching this queue that work may be there."""
        for watcher in self.watchers:
            watcher.callback()

    # -- the heaps -------------------------------------------------------------------------

    def make_pending(self, task: TaskState, due: float, now: float) -> None:
        """Put `task` in the ready heap (due) or the scheduled heap (not yet due)."""
        seq = next(self.seq)
        task.qseq = seq
        task.due_at = due
        if not task.first_seq:
            task.first_seq = seq
        if due > now:
            heapq.heappush(self.scheduled, (due, seq, task))
            if len(self.scheduled) > self.scheduled_limit:
                self._compact_scheduled()
        else:
            heapq.heappush(self.ready, (-task.msg.priority, due, seq, task))

    def hold_lease(self, task: TaskState, expires_at: float) -> None:
        """File the running `task`'s lease (by expiry) under its current token."""
        heapq.heappush(self.leases, (expires_at, next(self.seq), task, task.token))
        self.trim_leases()

    def trim_leases(self) -> None:
        """Compact the lease heap if stale entries piled up (after pushing to it directly)."""
        if len(self.leases) > self.leases_limit:
            self._compact_leases()

    def redeliver(self, task: TaskState, due: float) -> None:
        """Make a task whose lease lapsed claimable again (it stays RUNNING until claimed)."""
        seq = next(self.seq)
        task.qseq = seq
        heapq.heappush(self.ready, (-task.msg.priority, due, seq, task))

    def wake(self, task: TaskState, now: float) -> bool:
        """Make the pending, not yet due `task` claimable now, in its first place of the ready
        order (priority, first due time, enqueue order); False if it is not such a task."""
        if task.ended or task.status is _RUNNING or not task.qseq or task.due_at <= now:
            return False  # claimable already, running, or ended
        msg = task.msg
        first_due = msg.created_at if msg.eta is None else msg.eta
        # Once claimed, its first entry has left the heaps, so its first sequence number is free
        # to mark its valid entry again (the scheduled entry goes stale). One never claimed (an
        # eta not reached) still has that entry scheduled: it takes a new number.
        seq = task.first_seq if task.qseq != task.first_seq else next(self.seq)
        task.qseq = seq
        task.due_at = now
        if task.status is TaskStatus.SCHEDULED:
            task.status = TaskStatus.QUEUED
        heapq.heappush(self.ready, (-msg.priority, min(first_due, now), seq, task))
        return True

    def promote_due(self, now: float) -> None:
        """Move scheduled and retrying messages whose time has come to the ready heap."""
        scheduled = self.scheduled
        ready = self.ready
        while scheduled and scheduled[0][0] <= now:
            due, seq, task = heapq.heappop(scheduled)
            if task.qseq == seq:
                heapq.heappush(ready, (-task.msg.priority, due, seq, task))

    def has_ready(self) -> bool:
        """Whether the ready heap holds a live entry (stale ones on top are dropped)."""
        ready = self.ready
        while ready:
            if ready[0][3].qseq == ready[0][2]:
                return True
            heapq.heappop(ready)
        return False

    def earliest_scheduled(self) -> float | None:
        """The due time of the earliest live scheduled entry (stale ones on top are dropped)."""
        scheduled = self.scheduled
        while scheduled:
            due, seq, task = scheduled[0]
            if task.qseq == seq:
                return due
            heapq.heappop(scheduled)
        return None

    def earliest_lease(self) -> float | None:
        """Expiry of the earliest live lease; drops stale entries and re-files extended ones."""
        leases = self.leases
        while leases:
            expires, seq, task, token = leases[0]
            if task.status is not _RUNNING or task.token != token or task.qseq:
                heapq.heappop(leases)
            elif task.lease_expires_at != expires:
                heapq.heapreplace(leases, (task.lease_expires_at, seq, task, token))
            else:
                return expires
        return None

    def pop_earliest_lease(self) -> TaskState:
        """Take the entry `earliest_lease` just returned the expiry of."""
        return heapq.heappop(self.leases)[2]

    def counts(self, now: float) -> tuple[int, int, int]:
        """How many of the queue's tasks are queued (due), scheduled (not yet due) and running
        (a task whose lease lapsed, waiting to be re-delivered, counts as running)."""
        queued = scheduled = running = 0
        for _, _, seq, task in self.ready:
            if task.qseq == seq:
                if task.status is _RUNNING:
                    running += 1  # lapsed, waiting for re-delivery
                else:
                    queued += 1
        for due, seq, task in self.scheduled:
            if task.qseq == seq:
                if due <= now:
                    queued += 1
                else:
                    scheduled += 1
        for _, _, task, token in self.leases:
            if task.status is _RUNNING and task.token == token and not task.qseq:
                running += 1
        return queued, scheduled, running

    def waiting(self) -> list[TaskState]:
        """The tasks with a live ready or scheduled entry (queued, scheduled, retrying, or
        lapsed and waiting to be re-delivered)."""
        tasks = [task for _, _, seq, task in self.ready if task.qseq == seq]
        tasks += [task for _, seq, task in self.scheduled if task.qseq == seq]
        return tasks

    def _compact_scheduled(self) -> None:
        self.scheduled = [entry for entry in self.scheduled if entry[2].qseq == entry[1]]
        heapq.heapify(self.scheduled)
        self.scheduled_limit = max(COMPACT_MIN, 2 * len(self.scheduled))

    def _compact_leases(self) -> None:
        self.leases = [
            entry
            for entry in self.leases
            if entry[2].status is _RUNNING and entry[2].token == entry[3] and not entry[2].qseq
        ]
        heapq.heapify(self.leases)
        self.leases_limit = max(COMPACT_MIN, 2 * len(self.leases))
