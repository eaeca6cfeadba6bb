"""The in-memory backend: `MemoryBroker` and `MemoryStorage`, the reference implementation.

Everything lives in dicts, heaps and deques of one process, on the event loop thread: no locks,
no awaits inside a state change, so each hook is one atomic step. It is the embedded default
(no server needed) and the reference the Redis and PostgreSQL backends are measured against by
the conformance suite in ``tests/conformance``.

What lives here and how it is shaped (for speed: about 5 us of backend time per task):

* one mutable `_Slot` per task (``__slots__``) holds its state; `TaskRecord` and `Event`
  structs are built only when someone reads them;
* per queue (`_Queue`): a *ready* heap ordered by (-priority, due time, sequence), a
  *scheduled* heap ordered by due time, a *lease* heap ordered by lease expiry, the event
  deque (capped, holding plain tuples) and the workers watching the queue;
* heap entries are never removed in place: an entry is valid only while its sequence number
  is the slot's current ``qseq`` (ready/scheduled) or its token the slot's current token
  (leases). Stale entries are skipped when they surface and compacted when they pile up.

Each app has a store of its own: `from_url` (``memory://``, or the default of `QueueTasks`)
makes a new one per call, so apps never share tasks here whatever their names, and nothing
needs a namespace. Apps that should share one store share one `MemoryBroker` object.

What does not live here: retry policy and backoff (the worker decides and reports an
`Outcome`), expiry of tasks before they start (the worker reports ``EXPIRED``), and anything
that must be shared between OS processes (`MemoryStorage.shared_across_processes` is False).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

import msgspec

from ._backends import DEFAULT_APP, check_app_name
from ._message import (
    CancelResult,
    Delivery,
    EnqueueResult,
    ErrorInfo,
    Event,
    EventKind,
    Lease,
    LeaseInfo,
    LeaseState,
    Outcome,
    OutcomeKind,
    Progress,
    ProgressUpdate,
    QueueStats,
    TaskMessage,
    TaskRecord,
    TaskStatus,
    Versioned,
    encode_message,
)
from .abc import Broker, Storage

__all__ = ["MemoryBroker", "MemoryStorage", "from_url"]

logger = logging.getLogger("taskflow.memory")

_QUEUED = TaskStatus.QUEUED
_SCHEDULED = TaskStatus.SCHEDULED
_RUNNING = TaskStatus.RUNNING
_RETRYING = TaskStatus.RETRYING
_DONE = TaskStatus.DONE
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_EXPIRED = TaskStatus.EXPIRED

_TERMINAL_BY_OUTCOME = {
    OutcomeKind.DONE: (_DONE, EventKind.DONE),
    OutcomeKind.FAILED: (_FAILED, EventKind.FAILED),
    OutcomeKind.CANCELLED: (_CANCELLED, EventKind.CANCELLED),
    OutcomeKind.EXPIRED: (_EXPIRED, EventKind.EXPIRED),
}

_OUTCOME_DONE = OutcomeKind.DONE
_EV_QUEUED = EventKind.QUEUED
_EV_RUNNING = EventKind.RUNNING
_EV_DONE = EventKind.DONE

#: Heaps holding stale entries are compacted when they grow past this and twice their live size.
_COMPACT_MIN = 1024

_LEASE_EXPIRED_MESSAGE = (
    "the lease lapsed with no attempt left: the worker stopped renewing it (it probably died, "
    "or its event loop was blocked for longer than the lease)"
)

# Internal event tuple: (seq, task_id, kind, at, attempt, order_id, detail, task name).
_EventTuple = tuple[int, str, EventKind, float, int, "str | None", "str | None", str]


class _Slot(msgspec.Struct, gc=False):
    """The mutable state of one task; `TaskRecord` is built from it on demand.

    A `msgspec.Struct` with ``gc=False``: as fast to build and update as a ``__slots__`` class,
    and invisible to the cyclic garbage collector, which otherwise rescans every live task on
    each full collection. That is safe because a slot never takes part in a reference cycle
    (it refers only to its message, bytes, strings and small structs).
    """

    msg: TaskMessage
    id: str
    data: bytes
    status: TaskStatus = _QUEUED
    ended: bool = False
    attempts: int = 0
    token: int = 0
    #: Sequence number of the slot's valid ready/scheduled heap entry; 0: none.
    qseq: int = 0
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


def _wake_all(futures: list[asyncio.Future[None]]) -> None:
    """Resolve every pending future of `futures` and empty the list."""
    for fut in futures:
        if not fut.done():
            fut.set_result(None)
    futures.clear()


class _Worker:
    """The sticky "work may be there" flag of one worker id, and its pending waits."""

    __slots__ = ("callback", "flag", "futures", "queues")

    def __init__(self) -> None:
        # A worker that never claimed may have missed anything: its first wait returns at once.
        self.flag = True
        self.futures: list[asyncio.Future[None]] = []
        self.queues: set[str] = set()
        self.callback: Callable[[], None] | None = None

    def wake(self) -> None:
        self.flag = True
        if self.callback is not None:
            self.callback()
        if self.futures:
            _wake_all(self.futures)


class _Queue:
    """Everything one queue holds: its heaps, its dead letters, its events and its watchers."""

    __slots__ = (
        "dead",
        "event_futures",
        "event_seq",
        "events",
        "leases",
        "leases_limit",
        "name",
        "ready",
        "scheduled",
        "scheduled_limit",
        "watchers",
    )

    def __init__(self, name: str, events_maxlen: int) -> None:
        self.name = name
        #: (-priority, due, seq, slot): claimable now.
        self.ready: list[tuple[int, float, int, _Slot]] = []
        #: (due, seq, slot): claimable once due.
        self.scheduled: list[tuple[float, int, _Slot]] = []
        self.scheduled_limit = _COMPACT_MIN
        #: (lease expiry when pushed, seq, slot, token): running tasks, by lease expiry.
        self.leases: list[tuple[float, int, _Slot, int]] = []
        self.leases_limit = _COMPACT_MIN
        #: Dead letters in the order they died.
        self.dead: dict[str, _Slot] = {}
        self.events: deque[_EventTuple] = deque(maxlen=events_maxlen)
        self.event_seq = 0
        self.event_futures: list[asyncio.Future[None]] = []
        self.watchers: list[_Worker] = []

    def wake_watchers(self) -> None:
        """Tell every worker watching this queue that work may be there."""
        for worker in self.watchers:
            worker.wake()

    def wake_followers(self) -> None:
        """Wake every `follow_events` reader waiting for this queue's next event."""
        if self.event_futures:
            _wake_all(self.event_futures)


class _NamedLease:
    """A coordination lease; kept after release so the next token is still higher."""

    __slots__ = ("expires_at", "owner", "token")

    def __init__(self) -> None:
        self.owner: str | None = None
        self.token = 0
        self.expires_at = 0.0


class MemoryStorage(Storage):
    """Task records, events, key-value records and leases, in this process's memory.

    All state of the memory backend lives here, so several `MemoryBroker`s built on one
    storage share their queues. Nothing survives the process, and other processes cannot see
    it (`shared_across_processes` is False).
    """

    shared_across_processes = False
    cheap_reads = True
    scheme = "memory"

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._events_maxlen = 100_000
        super().__init__()
        self._tasks: dict[str, _Slot] = {}
        self._dedup: dict[tuple[str, str], _Slot] = {}
        self._workers: dict[str, _Worker] = {}
        self._kv: dict[str, dict[str, Versioned]] = {}
        self._named_leases: dict[str, _NamedLease] = {}
        self._seq = itertools.count(1)

    def describe(self) -> str:
        return "memory:// (inside this process)"

    @property
    def events_maxlen(self) -> int:
        """Events kept per queue; setting it re-caps the existing streams."""
        return self._events_maxlen

    @events_maxlen.setter
    def events_maxlen(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"events_maxlen={value!r} must be an integer >= 1")
        self._events_maxlen = value
        for queue in self._queues.values():
            queue.events = deque(queue.events, maxlen=value)

    async def _close(self) -> None:
        """Cancel pending `follow_events` and `wait_for_work` waits, like result waiters.

        The data stays: tasks, events, dead letters, key-value records and leases live as long
        as this object, like a server's, so a closed memory backend opens again (on any event
        loop) with everything it held. Only what belongs to the event loop goes.
        """
        for queue in self._queues.values():
            for fut in queue.event_futures:
                fut.cancel()
        for worker in self._workers.values():
            for work_fut in worker.futures:
                work_fut.cancel()
        self._forget_loop_state()

    def _abandon(self) -> None:
        self._forget_loop_state()

    def _forget_loop_state(self) -> None:
        """Drop what belongs to the event loop the storage was open on: pending event and work
        waits, and the workers watching queues (they ran on that loop)."""
        for queue in self._queues.values():
            queue.event_futures = []
            queue.watchers = []
        self._workers = {}

    def local_workers(self, queue: str) -> int:
        """Workers watching `queue` right now (only they can run its tasks)."""
        state = self._queues.get(queue)
        return 0 if state is None else len(state.watchers)

    def _drop_worker(self, worker_id: str) -> None:
        """Forget a worker that stopped claiming; its pending waits return."""
        worker = self._workers.pop(worker_id, None)
        if worker is None:
            return
        for name in worker.queues:
            state = self._queues.get(name)
            if state is not None and worker in state.watchers:
                state.watchers.remove(worker)
        _wake_all(worker.futures)

    # -- internal helpers used by MemoryBroker -----------------------------------------------

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name, self._events_maxlen)
        return queue

    def _emit(
        self,
        queue: _Queue,
        slot: _Slot,
        kind: EventKind,
        at: float,
        detail: str | None = None,
    ) -> None:
        """Append one event to the queue's stream and wake its followers."""
        queue.event_seq += 1
        msg = slot.msg
        queue.events.append(
            (queue.event_seq, slot.id, kind, at, slot.attempts, msg.order_id, detail, msg.name)
        )
        queue.wake_followers()

    def _record(self, slot: _Slot, now: float) -> TaskRecord:
        """Build the `TaskRecord` of `slot` as seen at `now` (result hidden once expired)."""
        msg = slot.msg
        expires = slot.result_expires_at
        expired = expires is not None and expires <= now
        # Fields that are usually set go in the call; the rest only when they differ from the
        # default (building a struct from 25 keyword arguments costs about twice as much).
        record = TaskRecord(
            id=slot.id,
            name=msg.name,
            queue=msg.queue,
            status=slot.status,
            attempts=slot.attempts,
            retries=msg.retries,
            created_at=msg.created_at,
            started_at=slot.started_at,
            finished_at=slot.finished_at,
            result=None if expired else slot.result,
            result_expires_at=expires,
            token=slot.token,
            worker_id=slot.worker_id,
        )
        if expired:
            record.result_expired = True
        if slot.error is not None:
            record.error = slot.error
        if slot.progress is not None:
            record.progress = slot.progress
        if slot.yields:
            record.yields = list(slot.yields)
        if slot.cancel_requested:
            record.cancel_requested = True
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
        return record

    def _dedup_owner(self, queue: str, key: str, now: float) -> _Slot | None:
        """The task that still owns dedup `key` in `queue`, if any."""
        slot = self._dedup.get((queue, key))
        if slot is None:
            return None
        if not slot.ended:
            return slot
        ttl = slot.msg.dedup_ttl_s
        if ttl is not None and slot.finished_at is not None and slot.finished_at + ttl > now:
            return slot
        return None

    # -- records -------------------------------------------------------------------------------

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        tasks = self._tasks
        out: list[TaskRecord | None] = []
        for task_id in task_ids:
            slot = tasks.get(task_id)
            out.append(None if slot is None else self._record(slot, now))
        return out

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        out: list[bool] = []
        for update in updates:
            slot = self._tasks.get(update.task_id)
            if slot is None or slot.status is not _RUNNING or slot.token != update.token:
                out.append(False)
                continue
            queue = self._queue(slot.msg.queue)
            progress = update.progress
            if progress is not None:
                slot.progress = progress
                total = "?" if progress.total is None else str(progress.total)
                self._emit(queue, slot, EventKind.PROGRESS, now, f"{progress.done}/{total}")
            if update.yields:
                if slot.yields is None:
                    slot.yields = []
                for value in update.yields:
                    slot.yields.append(value)
                    self._emit(queue, slot, EventKind.YIELDED, now, str(len(slot.yields) - 1))
            out.append(True)
        return out

    # -- events --------------------------------------------------------------------------------

    @staticmethod
    def _cursor_seq(after: str | None) -> int:
        if after is None:
            return 0
        try:
            return int(after)
        except ValueError:
            raise ValueError(
                f"event cursor {after!r} is not a memory-backend cursor (a decimal number); "
                "pass the `cursor` of an Event read from this storage, None (the oldest kept) "
                "or taskflow.abc.LATEST (only what comes next)"
            ) from None

    async def _read_events(self, queue: str, after: str | None, limit: int) -> list[Event]:
        state = self._queues.get(queue)
        if state is None or not state.events or limit <= 0:
            return []
        events = state.events
        start = max(0, self._cursor_seq(after) - events[0][0] + 1)
        return [
            Event(
                cursor=str(seq),
                task_id=task_id,
                queue=queue,
                kind=kind,
                at=at,
                attempt=attempt,
                order_id=order_id,
                detail=detail,
                name=name,
            )
            for seq, task_id, kind, at, attempt, order_id, detail, name in itertools.islice(
                events, start, start + limit
            )
        ]

    async def _latest_cursor(self, queue: str) -> str | None:
        state = self._queues.get(queue)
        return str(state.event_seq) if state is not None and state.event_seq else None

    async def _wait_events(self, queue: str, after: str | None) -> None:
        state = self._queue(queue)
        if state.events and state.event_seq > self._cursor_seq(after):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.event_futures.append(fut)
        try:
            await fut
        finally:
            if fut in state.event_futures:
                state.event_futures.remove(fut)

    # -- maintenance ---------------------------------------------------------------------------

    async def _cleanup(self, now: float, keep_s: float) -> int:
        doomed = [
            slot
            for slot in self._tasks.values()
            if slot.ended
            and slot.result_expires_at is not None
            and slot.result_expires_at + keep_s <= now
        ]
        for slot in doomed:
            del self._tasks[slot.id]
            queue = self._queues.get(slot.msg.queue)
            if queue is not None:
                queue.dead.pop(slot.id, None)
        for key, owner in list(self._dedup.items()):
            if owner.id not in self._tasks or (
                owner.ended and self._dedup_owner(key[0], key[1], now) is None
            ):
                del self._dedup[key]
        return len(doomed)

    # -- coordination: leases ------------------------------------------------------------------

    async def _acquire_lease(self, name: str, owner: str, ttl_s: float, now: float) -> int | None:
        lease = self._named_leases.get(name)
        if lease is None:
            lease = self._named_leases[name] = _NamedLease()
        held = lease.owner is not None and lease.expires_at > now
        if held and lease.owner != owner:
            return None
        if not held:
            # Ownership changes (or is re-taken after a lapse): a new, higher token.
            lease.token += 1
            lease.owner = owner
        lease.expires_at = now + ttl_s
        return lease.token

    async def _renew_lease(
        self, name: str, owner: str, token: int, ttl_s: float, now: float
    ) -> bool:
        lease = self._named_leases.get(name)
        if lease is None or lease.owner != owner or lease.token != token:
            return False
        lease.expires_at = now + ttl_s
        return True

    async def _release_lease(self, name: str, owner: str, token: int) -> bool:
        lease = self._named_leases.get(name)
        if lease is None or lease.owner != owner or lease.token != token:
            return False
        lease.owner = None
        lease.expires_at = 0.0
        return True

    async def _get_lease(self, name: str, now: float) -> LeaseInfo | None:
        lease = self._named_leases.get(name)
        if lease is None or lease.owner is None or lease.expires_at <= now:
            return None
        return LeaseInfo(
            name=name, owner=lease.owner, token=lease.token, expires_at=lease.expires_at
        )

    # -- durable key-value records -------------------------------------------------------------

    async def _kv_get(self, namespace: str, key: str) -> Versioned | None:
        return self._kv.get(namespace, {}).get(key)

    async def _kv_set(
        self, namespace: str, key: str, value: bytes, expect_version: int | None
    ) -> int | None:
        space = self._kv.setdefault(namespace, {})
        current = space.get(key)
        current_version = 0 if current is None else current.version
        if expect_version is not None and expect_version != current_version:
            return None
        space[key] = Versioned(value=bytes(value), version=current_version + 1)
        return current_version + 1

    async def _kv_list(self, namespace: str) -> dict[str, Versioned]:
        return dict(self._kv.get(namespace, {}))

    async def _kv_delete(self, namespace: str, key: str) -> bool:
        space = self._kv.get(namespace)
        if space is None or key not in space:
            return False
        del space[key]
        if not space:
            del self._kv[namespace]
        return True


class MemoryBroker(Broker):
    """The message path of the memory backend: enqueue, claim, extend, complete, cancel.

    Args:
        storage: the `MemoryStorage` to keep state in; a new one if omitted. Brokers sharing a
            storage share their queues (handy in tests).
    """

    storage: MemoryStorage

    def __init__(self, storage: MemoryStorage | None = None) -> None:
        super().__init__(MemoryStorage() if storage is None else storage)

    # -- placing messages in the heaps -----------------------------------------------------------

    def _make_pending(self, queue: _Queue, slot: _Slot, due: float, now: float) -> None:
        """Put `slot` in the ready heap (due) or the scheduled heap (not yet due)."""
        seq = next(self.storage._seq)
        slot.qseq = seq
        if due > now:
            heapq.heappush(queue.scheduled, (due, seq, slot))
            if len(queue.scheduled) > queue.scheduled_limit:
                self._compact_scheduled(queue)
        else:
            heapq.heappush(queue.ready, (-slot.msg.priority, due, seq, slot))

    @staticmethod
    def _compact_scheduled(queue: _Queue) -> None:
        queue.scheduled = [entry for entry in queue.scheduled if entry[2].qseq == entry[1]]
        heapq.heapify(queue.scheduled)
        queue.scheduled_limit = max(_COMPACT_MIN, 2 * len(queue.scheduled))

    @staticmethod
    def _compact_leases(queue: _Queue) -> None:
        queue.leases = [
            entry
            for entry in queue.leases
            if entry[2].status is _RUNNING and entry[2].token == entry[3] and not entry[2].qseq
        ]
        heapq.heapify(queue.leases)
        queue.leases_limit = max(_COMPACT_MIN, 2 * len(queue.leases))

    @staticmethod
    def _promote_due(queue: _Queue, now: float) -> None:
        """Move scheduled and retrying messages whose time has come to the ready heap."""
        scheduled = queue.scheduled
        ready = queue.ready
        while scheduled and scheduled[0][0] <= now:
            due, seq, slot = heapq.heappop(scheduled)
            if slot.qseq == seq:
                heapq.heappush(ready, (-slot.msg.priority, due, seq, slot))

    @staticmethod
    def _earliest_lease(queue: _Queue) -> float | None:
        """Expiry of the earliest live lease; drops stale entries and re-files extended ones."""
        leases = queue.leases
        while leases:
            expires, seq, slot, token = leases[0]
            if slot.status is not _RUNNING or slot.token != token or slot.qseq:
                heapq.heappop(leases)
            elif slot.lease_expires_at != expires:
                heapq.heapreplace(leases, (slot.lease_expires_at, seq, slot, token))
            else:
                return expires
        return None

    @staticmethod
    def _earliest_ready(queue: _Queue) -> bool:
        """Whether the ready heap holds a live entry (stale ones on top are dropped)."""
        ready = queue.ready
        while ready:
            if ready[0][3].qseq == ready[0][2]:
                return True
            heapq.heappop(ready)
        return False

    @staticmethod
    def _earliest_scheduled(queue: _Queue) -> float | None:
        scheduled = queue.scheduled
        while scheduled:
            due, seq, slot = scheduled[0]
            if slot.qseq == seq:
                return due
            heapq.heappop(scheduled)
        return None

    # -- terminal transitions ----------------------------------------------------------------------

    def _finish(
        self,
        queue: _Queue,
        slot: _Slot,
        status: TaskStatus,
        kind: EventKind,
        now: float,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        result_expires_at: float | None = None,
    ) -> None:
        """Make `slot` terminal, record the event, and wake its result waiters."""
        slot.status = status
        slot.ended = True
        slot.qseq = 0
        slot.finished_at = now
        slot.result = result
        slot.error = error
        slot.result_expires_at = result_expires_at
        if status is _FAILED:
            queue.dead[slot.id] = slot
        storage = self.storage
        storage._emit(queue, slot, kind, now, None if error is None else error.type)
        if storage._has_waiters(slot.id):
            storage._notify_terminal(slot.id, storage._record(slot, now))

    def _recover_lapsed(self, queue: _Queue, now: float) -> None:
        """Make tasks whose lease lapsed claimable again, or end them if they cannot run again."""
        while True:
            expires = self._earliest_lease(queue)
            if expires is None or expires > now:
                return
            slot = heapq.heappop(queue.leases)[2]
            # Rare (a worker died or stalled), so worth a log line per task.
            if slot.cancel_requested:
                logger.info("task %s: lease lapsed after a cancel request; cancelled", slot.id)
                self._finish(
                    queue,
                    slot,
                    _CANCELLED,
                    EventKind.CANCELLED,
                    now,
                    result_expires_at=now + self.result_ttl_s,
                )
            elif slot.attempts >= slot.msg.retries + 1:
                logger.warning(
                    "task %s (queue %s): lease of worker %s lapsed with no attempt left; "
                    "dead-lettered as LeaseExpired",
                    slot.id,
                    queue.name,
                    slot.worker_id,
                )
                self._finish(
                    queue,
                    slot,
                    _FAILED,
                    EventKind.FAILED,
                    now,
                    error=ErrorInfo("LeaseExpired", _LEASE_EXPIRED_MESSAGE),
                    result_expires_at=now + self.result_ttl_s,
                )
            else:
                # Still RUNNING under its old token until claimed: a late outcome or renewal
                # from the old worker is accepted (and takes the entry back) until then.
                logger.info(
                    "task %s (queue %s): lease of worker %s lapsed; it will be re-delivered",
                    slot.id,
                    queue.name,
                    slot.worker_id,
                )
                seq = next(self.storage._seq)
                slot.qseq = seq
                heapq.heappush(queue.ready, (-slot.msg.priority, expires, seq, slot))

    # -- the message path --------------------------------------------------------------------------

    async def _enqueue(self, messages: Sequence[TaskMessage], now: float) -> list[EnqueueResult]:
        storage = self.storage
        tasks = storage._tasks
        seqs = storage._seq
        touched: list[_Queue] = []
        queue: _Queue | None = None
        results: list[EnqueueResult] = []
        for msg in messages:
            task_id = msg.id
            if task_id in tasks:
                results.append(EnqueueResult(task_id, False))
                continue
            key = msg.dedup_key
            if key is not None:
                owner = storage._dedup_owner(msg.queue, key, now)
                if owner is not None:
                    results.append(EnqueueResult(owner.id, False))
                    continue
                storage._dedup[(msg.queue, key)] = slot = _Slot(msg, task_id, encode_message(msg))
            else:
                slot = _Slot(msg, task_id, encode_message(msg))
            tasks[task_id] = slot
            if queue is None or queue.name != msg.queue:
                queue = storage._queue(msg.queue)
                if queue not in touched:
                    touched.append(queue)
            eta = msg.eta
            if eta is None or eta <= now:
                # The common case, inlined: queued and due now (see `_add_new`).
                slot.qseq = seq = next(seqs)
                heapq.heappush(queue.ready, (-msg.priority, now if eta is None else eta, seq, slot))
                queue.event_seq = n = queue.event_seq + 1
                queue.events.append((n, task_id, _EV_QUEUED, now, 0, msg.order_id, None, msg.name))
            else:
                self._add_new(queue, slot, now)
            results.append(EnqueueResult(task_id, True))
        for queue in touched:
            queue.wake_followers()
            queue.wake_watchers()
        return results

    def _add_new(self, queue: _Queue, slot: _Slot, now: float) -> None:
        eta = slot.msg.eta
        if eta is not None and eta > now:
            slot.status = _SCHEDULED
            self._make_pending(queue, slot, eta, now)
            self.storage._emit(queue, slot, EventKind.SCHEDULED, now)
        else:
            self._make_pending(queue, slot, now if eta is None else eta, now)
            self.storage._emit(queue, slot, EventKind.QUEUED, now)

    def _worker(self, worker_id: str, queues: Iterable[str]) -> _Worker:
        """The wake-up state of `worker_id`, registered as a watcher of `queues`."""
        storage = self.storage
        worker = storage._workers.get(worker_id)
        if worker is None:
            worker = storage._workers[worker_id] = _Worker()
        for name in queues:
            if name not in worker.queues:
                worker.queues.add(name)
                storage._queue(name).watchers.append(worker)
        return worker

    async def _claim(
        self, queues: Sequence[str], limit: int, lease_s: float, now: float, worker_id: str
    ) -> list[Delivery]:
        # Clear the flag first: anything enqueued from here on sets it again (no lost wakeup).
        self._worker(worker_id, queues).flag = False
        storage = self.storage
        lease_expires_at = now + lease_s
        out: list[Delivery] = []
        for name in queues:
            if len(out) >= limit:
                break
            queue = storage._queues.get(name)
            if queue is None:
                continue
            self._promote_due(queue, now)
            self._recover_lapsed(queue, now)
            ready = queue.ready
            leases = queue.leases
            events = queue.events
            while ready and len(out) < limit:
                _, _, seq, slot = heapq.heappop(ready)
                if slot.qseq != seq:
                    continue  # cancelled, or taken back by its old worker
                if slot.cancel_requested:
                    # A lapsed task whose cancel was requested: end it instead of running it.
                    self._finish(
                        queue,
                        slot,
                        _CANCELLED,
                        EventKind.CANCELLED,
                        now,
                        result_expires_at=now + self.result_ttl_s,
                    )
                    continue
                slot.qseq = 0
                slot.status = _RUNNING
                slot.attempts = attempt = slot.attempts + 1
                slot.token = token = slot.token + 1
                if token > 1:  # a new attempt starts with no progress or yields of the last one
                    slot.progress = None
                    slot.yields = None
                slot.started_at = now
                slot.worker_id = worker_id
                slot.lease_expires_at = lease_expires_at
                heapq.heappush(leases, (lease_expires_at, seq, slot, token))
                n_events = queue.event_seq + 1
                queue.event_seq = n_events
                msg = slot.msg
                events.append(
                    (n_events, slot.id, _EV_RUNNING, now, attempt, msg.order_id, None, msg.name)
                )
                out.append(Delivery(slot.id, token, attempt, slot.data, lease_expires_at))
            queue.wake_followers()
            if len(leases) > queue.leases_limit:
                self._compact_leases(queue)
        return out

    async def _extend(
        self, leases: Sequence[Lease], lease_s: float, now: float
    ) -> list[LeaseState]:
        tasks = self.storage._tasks
        expires_at = now + lease_s
        out: list[LeaseState] = []
        for lease in leases:
            slot = tasks.get(lease.task_id)
            if slot is None or slot.status is not _RUNNING or slot.token != lease.token:
                out.append(LeaseState.LOST)
                continue
            slot.lease_expires_at = expires_at
            if slot.qseq:
                # Its lease had lapsed and it waited for re-delivery: the old owner is back.
                slot.qseq = 0
                queue = self.storage._queue(slot.msg.queue)
                heapq.heappush(
                    queue.leases, (expires_at, next(self.storage._seq), slot, slot.token)
                )
            out.append(LeaseState.CANCEL if slot.cancel_requested else LeaseState.OK)
        return out

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        storage = self.storage
        tasks = storage._tasks
        has_waiters = storage._has_waiters
        touched: list[_Queue] = []
        queue: _Queue | None = None
        out: list[bool] = []
        for outcome in outcomes:
            slot = tasks.get(outcome.task_id)
            if slot is None or slot.status is not _RUNNING or slot.token != outcome.token:
                out.append(False)
                continue
            msg = slot.msg
            if queue is None or queue.name != msg.queue:
                queue = storage._queue(msg.queue)
                if queue not in touched:
                    touched.append(queue)
            kind = outcome.kind
            if kind is _OUTCOME_DONE:
                # The common case, inlined: `_finish` for DONE.
                slot.status = _DONE
                slot.ended = True
                slot.qseq = 0  # a lapsed task waiting for re-delivery must not be delivered
                slot.finished_at = now
                slot.result = outcome.result if msg.store_result else None
                slot.error = outcome.error
                slot.result_expires_at = outcome.result_expires_at
                queue.event_seq = n = queue.event_seq + 1
                queue.events.append(
                    (n, slot.id, _EV_DONE, now, slot.attempts, msg.order_id, None, msg.name)
                )
                if has_waiters(slot.id):
                    storage._notify_terminal(slot.id, storage._record(slot, now))
            elif kind is OutcomeKind.RETRY or kind is OutcomeKind.RELEASE:
                self._reschedule(queue, slot, outcome, now)
                queue.wake_watchers()
            else:
                status, event_kind = _TERMINAL_BY_OUTCOME[kind]
                self._finish(
                    queue,
                    slot,
                    status,
                    event_kind,
                    now,
                    result=outcome.result if msg.store_result else None,
                    error=outcome.error,
                    result_expires_at=outcome.result_expires_at,
                )
            out.append(True)
        for queue in touched:
            queue.wake_followers()
        return out

    def _reschedule(self, queue: _Queue, slot: _Slot, outcome: Outcome, now: float) -> None:
        """Apply a RETRY (attempt spent) or RELEASE (attempt refunded) outcome."""
        due = now if outcome.retry_at is None else outcome.retry_at
        slot.worker_id = None
        if outcome.kind is OutcomeKind.RETRY:
            slot.status = _RETRYING
            slot.error = outcome.error
            self._make_pending(queue, slot, due, now)
            detail = None if outcome.error is None else outcome.error.type
            self.storage._emit(queue, slot, EventKind.RETRYING, now, detail)
        else:
            # The attempt is refunded: the task reads as one that has not run, with no progress
            # or yields of the interrupted attempt (a retry keeps them until the next claim).
            slot.attempts -= 1
            slot.progress = None
            slot.yields = None
            slot.status = _SCHEDULED if due > now else _QUEUED
            self._make_pending(queue, slot, due, now)
            self.storage._emit(queue, slot, EventKind.RELEASED, now)

    async def _cancel(self, task_ids: Sequence[str], now: float) -> list[CancelResult]:
        storage = self.storage
        out: list[CancelResult] = []
        for task_id in task_ids:
            slot = storage._tasks.get(task_id)
            if slot is None:
                out.append(CancelResult.NOT_FOUND)
            elif slot.ended:
                out.append(CancelResult.ALREADY_TERMINAL)
            elif slot.status is _RUNNING:
                if not slot.cancel_requested:
                    slot.cancel_requested = True
                    queue = storage._queue(slot.msg.queue)
                    storage._emit(queue, slot, EventKind.CANCEL_REQUESTED, now)
                out.append(CancelResult.REQUESTED)
            else:
                queue = storage._queue(slot.msg.queue)
                self._finish(
                    queue,
                    slot,
                    _CANCELLED,
                    EventKind.CANCELLED,
                    now,
                    result_expires_at=now + self.result_ttl_s,
                )
                out.append(CancelResult.CANCELLED)
        return out

    async def _next_due(self, queues: Sequence[str], now: float) -> float | None:
        best: float | None = None
        for name in queues:
            queue = self.storage._queues.get(name)
            if queue is None:
                continue
            if self._earliest_ready(queue):
                return now
            for when in (self._earliest_scheduled(queue), self._earliest_lease(queue)):
                if when is not None and (best is None or when < best):
                    best = when
        return best

    def watch_work(
        self, queues: Sequence[str], *, worker_id: str, callback: Callable[[], None]
    ) -> bool:
        self._worker(worker_id, queues).callback = callback
        return True

    async def unwatch_work(self, queues: Sequence[str], *, worker_id: str, now: float) -> None:
        """Forget the stopped worker `worker_id` (it no longer counts in `local_workers`)."""
        self.storage._drop_worker(worker_id)

    async def _wait_for_work(self, queues: Sequence[str], worker_id: str) -> None:
        worker = self._worker(worker_id, queues)
        if worker.flag:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        worker.futures.append(fut)
        try:
            await fut
        finally:
            if fut in worker.futures:
                worker.futures.remove(fut)

    # -- dead letters and inspection -------------------------------------------------------------

    async def _dead_letters(self, queue: str, limit: int, offset: int) -> list[TaskRecord]:
        state = self.storage._queues.get(queue)
        if state is None or limit <= 0:
            return []
        newest_first = itertools.islice(reversed(state.dead.values()), offset, offset + limit)
        return [self.storage._record(slot, 0.0) for slot in newest_first]

    async def _requeue_dead(
        self, task_ids: Sequence[str], now: float, new_ids: Sequence[str]
    ) -> list[str | None]:
        if len(task_ids) != len(new_ids):
            raise ValueError(
                f"requeue_dead got {len(task_ids)} task id(s) but {len(new_ids)} new id(s); "
                "pass one new id per dead letter (broker.new_task_id(queue))"
            )
        storage = self.storage
        touched: set[_Queue] = set()
        out: list[str | None] = []
        for old_id, new_id in zip(task_ids, new_ids, strict=True):
            old = storage._tasks.get(old_id)
            queue = None if old is None else storage._queues.get(old.msg.queue)
            if old is None or queue is None or old_id not in queue.dead or new_id in storage._tasks:
                out.append(None)
                continue
            msg = msgspec.structs.replace(
                old.msg, id=new_id, requeued_from=old_id, eta=None, created_at=now
            )
            slot = _Slot(msg, msg.id, encode_message(msg))
            storage._tasks[new_id] = slot
            key = msg.dedup_key
            holder = None if key is None else storage._dedup.get((msg.queue, key))
            if key is not None and (holder is None or holder.ended):
                # The key follows the new task, unless a live task holds it now (a requeue is
                # an operator's decision and is not deduplicated, but must not steal the key).
                storage._dedup[(msg.queue, key)] = slot
            del queue.dead[old_id]
            storage._emit(queue, old, EventKind.REQUEUED, now, new_id)
            self._add_new(queue, slot, now)
            touched.add(queue)
            out.append(new_id)
        for queue in touched:
            queue.wake_watchers()
        return out

    async def _stats(self, queues: Sequence[str], now: float) -> list[QueueStats]:
        return [self._queue_stats(name, now) for name in queues]

    def _queue_stats(self, name: str, now: float) -> QueueStats:
        queue = self.storage._queues.get(name)
        if queue is None:
            return QueueStats(queue=name)
        queued = scheduled = running = 0
        for _, _, seq, slot in queue.ready:
            if slot.qseq == seq:
                if slot.status is _RUNNING:
                    running += 1  # lapsed, waiting for re-delivery
                else:
                    queued += 1
        for due, seq, slot in queue.scheduled:
            if slot.qseq == seq:
                if due <= now:
                    queued += 1
                else:
                    scheduled += 1
        for _, _, slot, token in queue.leases:
            if slot.status is _RUNNING and slot.token == token and not slot.qseq:
                running += 1
        since = now - 60.0
        finished = sum(
            1
            for slot in self.storage._tasks.values()
            if slot.ended
            and slot.msg.queue == name
            and slot.finished_at is not None
            and since < slot.finished_at <= now
        )
        return QueueStats(
            queue=name,
            queued=queued,
            scheduled=scheduled,
            running=running,
            dead=len(queue.dead),
            finished_last_minute=finished,
        )

    async def _purge(self, queue: str, error: ErrorInfo, now: float) -> int:
        state = self.storage._queues.get(queue)
        if state is None:
            return 0
        waiting = [slot for _, _, seq, slot in state.ready if slot.qseq == seq]
        waiting += [slot for _, seq, slot in state.scheduled if slot.qseq == seq]
        purged = 0
        for slot in waiting:
            if slot.status is _RUNNING or slot.ended:
                continue  # lapsed, waiting for re-delivery: still running
            self._finish(
                state,
                slot,
                _CANCELLED,
                EventKind.CANCELLED,
                now,
                error=error,
                result_expires_at=now + self.result_ttl_s,
            )
            purged += 1
        return purged


def from_url(url: str, *, app: str = DEFAULT_APP) -> MemoryBroker:
    """Build a fresh memory backend from a ``memory://`` URL (any name after it is ignored).

    Every call makes a new, empty store, so it is the app's own whatever its name (`app` is
    only checked, for the same rule as on the other backends).

    Raises:
        ConfigError: `app` cannot name an app.
        ValueError: the URL's scheme is not ``memory``.
    """
    check_app_name(app)
    scheme = urlsplit(url).scheme
    if scheme != "memory":
        raise ValueError(
            f"taskflow.memory.from_url({url!r}): expected a 'memory://' URL, got scheme "
            f"{scheme!r}; use taskflow.redis for redis:// and taskflow.postgres for postgresql://"
        )
    return MemoryBroker()
