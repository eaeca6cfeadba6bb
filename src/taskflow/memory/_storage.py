"""`MemoryStorage`: where the memory backend keeps its tasks, queues and events.

It implements the `Storage` contract (records, outcomes, progress, events, cleanup) and holds
every `TaskState` and `QueueState` of the backend, so several `MemoryBroker`s built on one
storage share their queues. It also offers the memory backend's internal surface, the few
public methods `MemoryBroker` changes that state through: `tasks`, `queues` and `queue` to look
states up, `dedup_owner` and `new_task` to create one, `finish` and `notify_end` to end one,
`has_links`, `link_targets`, `linked_to` and `pop_linked` for the tasks linked to it (flows),
`watch` and `unwatch` for the workers waiting for work, `count_finished` for stats.

What does not live here: the message path (`MemoryBroker`), leases and key-value records
(`MemoryCoordination`), the shapes of the states themselves (``_state.py``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from .._message import (
    Checkpoint,
    ErrorInfo,
    Event,
    EventKind,
    FailedAttempt,
    ProgressUpdate,
    TaskMessage,
    TaskOutcome,
    TaskRecord,
    TaskStatus,
    encode_message,
)
from ..abc import Storage
from ._state import QueueState, TaskState, WorkWatcher

__all__ = ["MemoryStorage"]

_RUNNING = TaskStatus.RUNNING
_FAILED = TaskStatus.FAILED
_WAITING = TaskStatus.WAITING


class MemoryStorage(Storage):
    """Task records and events in this process's memory; the memory backend's state.

    Nothing survives the process, and other processes cannot see it
    (`shared_across_processes` is False). The data outlives a `close`, like a server's: a
    closed memory backend opens again (on any event loop) with everything it held.
    """

    shared_across_processes = False
    scheme = "memory"

    def __init__(self) -> None:
        self._queues: dict[str, QueueState] = {}
        self._events_maxlen = 100_000
        self._errors_maxlen = 10_000
        super().__init__()
        self._tasks: dict[str, TaskState] = {}
        self._dedup: dict[tuple[str, str], TaskState] = {}
        #: Flow id -> its tasks, by id (`flow_tasks`).
        self._flows: dict[str, dict[str, TaskState]] = {}
        #: Task id -> the tasks whose `outcome_to` is that task (its join, its hedge copies).
        self._linked: dict[str, list[TaskState]] = {}
        self._watchers: dict[str, WorkWatcher] = {}

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

    @property
    def errors_maxlen(self) -> int:
        """Failed attempts kept per queue's error log; setting it re-caps the existing logs."""
        return self._errors_maxlen

    @errors_maxlen.setter
    def errors_maxlen(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"errors_maxlen={value!r} must be an integer >= 1")
        self._errors_maxlen = value
        for queue in self._queues.values():
            queue.errors = deque(queue.errors, maxlen=value)

    # -- lifecycle: only what belongs to the event loop goes ---------------------------------

    async def _close(self) -> None:
        """Cancel pending `follow_events` waits, like result waiters; forget the watchers."""
        for queue in self._queues.values():
            for fut in queue.event_futures:
                fut.cancel()
        self._forget_loop_state()

    def _abandon(self) -> None:
        self._forget_loop_state()

    def _forget_loop_state(self) -> None:
        """Drop what belongs to the event loop the storage was open on: pending event waits,
        and the workers watching queues (they ran on that loop)."""
        for queue in self._queues.values():
            queue.event_futures = []
            queue.watchers = []
        self._watchers = {}

    def local_workers(self, queue: str) -> int:
        """Workers watching `queue` right now (only they can run its tasks)."""
        state = self._queues.get(queue)
        return 0 if state is None else len(state.watchers)

    # -- the internal surface for MemoryBroker -------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskState]:
        """Every task's state, by id (read-only: `new_task` adds, `cleanup` removes)."""
        return self._tasks

    @property
    def queues(self) -> Mapping[str, QueueState]:
        """Every queue's state that exists yet, by name (`queue` makes one)."""
        return self._queues

    def queue(self, name: str) -> QueueState:
        """The state of queue `name`, made on first use."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = QueueState(name, self._events_maxlen, self.errors_maxlen)
        return queue

    def dedup_owner(self, queue: str, key: str, now: float) -> TaskState | None:
        """The task that still owns dedup `key` in `queue` at `now`, if any: a live one, or one
        that ended less than its ``dedup_ttl_s`` ago."""
        task = self._dedup.get((queue, key))
        if task is None:
            return None
        if not task.ended:
            return task
        ttl = task.msg.dedup_ttl_s
        if ttl is not None and task.finished_at is not None and task.finished_at + ttl > now:
            return task
        return None

    def new_task(self, msg: TaskMessage) -> TaskState:
        """Record a new task (QUEUED, in no heap yet). Its dedup key follows it, unless a live
        task holds that key (a requeue is not deduplicated, but must not steal a live key)."""
        task = TaskState(msg, msg.id, encode_message(msg))
        self._tasks[msg.id] = task
        if msg.flow_id is not None:
            self._flows.setdefault(msg.flow_id, {})[msg.id] = task
        if msg.outcome_to is not None:
            self._linked.setdefault(msg.outcome_to, []).append(task)
        key = msg.dedup_key
        if key is not None:
            holder = self._dedup.get((msg.queue, key))
            if holder is None or holder.ended:
                self._dedup[(msg.queue, key)] = task
        return task

    def finish(
        self,
        queue: QueueState,
        task: TaskState,
        status: TaskStatus,
        now: float,
        *,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        result_expires_at: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Make `task` (of `queue`) terminal with `status`: record how it ended, list it as a
        dead letter if FAILED, emit the event (its detail: `detail`, else the error's type)
        and wake its result waiters. The tasks linked to it are the caller's (``_flows.py``)."""
        if task.status is _WAITING:
            del queue.held[task.id]
            task.pending = None
        task.status = status
        task.ended = True
        task.qseq = 0  # a lapsed task waiting for re-delivery must not be delivered
        task.finished_at = now
        task.result = result
        task.error = error
        task.result_expires_at = result_expires_at
        if status is _FAILED:
            queue.dead[task.id] = task
        if detail is None and error is not None:
            detail = error.type
        queue.emit(task, EventKind(status.value), now, detail)
        self.notify_end(task, now)

    @property
    def link_targets(self) -> Mapping[str, list[TaskState]]:
        """Task id -> the tasks whose `outcome_to` is that task (read-only; `has_links`)."""
        return self._linked

    def has_links(self, task: TaskState) -> bool:
        """Whether the end of `task` may reach other tasks: it has children, an `outcome_to`
        task, or tasks whose `outcome_to` it is."""
        msg = task.msg
        return bool(msg.children) or msg.outcome_to is not None or task.id in self._linked

    def linked_to(self, task_id: str) -> list[TaskState]:
        """The tasks whose `outcome_to` is `task_id`, in enqueue order."""
        return self._linked.get(task_id, [])

    def pop_linked(self, task_id: str) -> list[TaskState]:
        """`linked_to`, forgotten: the task `task_id` ended, so its links are used up."""
        return self._linked.pop(task_id, [])

    def notify_end(self, task: TaskState, now: float) -> None:
        """Wake the result waiters of `task`, which just ended, with its outcome."""
        if task.id in self.waiters:
            self.waiters.wake(task.id, task.outcome(now))

    def watch(self, worker_id: str, queues: Iterable[str], callback: Callable[[], None]) -> None:
        """Call `callback` whenever a change wakes the watchers of one of `queues`."""
        self.unwatch(worker_id)
        watcher = self._watchers[worker_id] = WorkWatcher(callback)
        for name in queues:
            if name not in watcher.queues:
                watcher.queues.add(name)
                self.queue(name).watchers.append(watcher)

    def unwatch(self, worker_id: str) -> None:
        """Forget the watcher `worker_id` (it no longer counts in `local_workers`)."""
        watcher = self._watchers.pop(worker_id, None)
        if watcher is None:
            return
        for name in watcher.queues:
            state = self._queues.get(name)
            if state is not None and watcher in state.watchers:
                state.watchers.remove(watcher)

    def count_finished(self, queue: str, since: float, until: float) -> int:
        """How many tasks of `queue` reached a terminal state in ``(since, until]``."""
        return sum(
            1
            for task in self._tasks.values()
            if task.ended
            and task.msg.queue == queue
            and task.finished_at is not None
            and since < task.finished_at <= until
        )

    # -- records -------------------------------------------------------------------------------

    async def _get_many(self, task_ids: Sequence[str], now: float) -> list[TaskRecord | None]:
        tasks = self._tasks
        out: list[TaskRecord | None] = []
        for task_id in task_ids:
            task = tasks.get(task_id)
            out.append(None if task is None else task.record(now))
        return out

    async def _get_outcomes(self, task_ids: Sequence[str], now: float) -> list[TaskOutcome | None]:
        tasks = self._tasks
        out: list[TaskOutcome | None] = []
        for task_id in task_ids:
            task = tasks.get(task_id)
            out.append(None if task is None else task.outcome(now))
        return out

    def _outcome_at_hand(self, task_id: str, now: float) -> TaskOutcome | None:
        task = self._tasks.get(task_id)
        return None if task is None or not task.ended else task.outcome(now)

    async def _report(self, updates: Sequence[ProgressUpdate], now: float) -> list[bool]:
        out: list[bool] = []
        for update in updates:
            task = self._tasks.get(update.task_id)
            if task is None or task.status is not _RUNNING or task.token != update.token:
                out.append(False)
                continue
            queue = self.queue(task.msg.queue)
            progress = update.progress
            if progress is not None:
                task.progress = progress
                total = "?" if progress.total is None else str(progress.total)
                queue.emit(task, EventKind.PROGRESS, now, f"{progress.done}/{total}")
            if update.yields:
                if task.yields is None:
                    task.yields = []
                for value in update.yields:
                    task.yields.append(value)
                    queue.emit(task, EventKind.YIELDED, now, str(len(task.yields) - 1))
            out.append(True)
        return out

    # -- checkpoints ---------------------------------------------------------------------------

    async def _save_checkpoints(self, entries: Sequence[Checkpoint], now: float) -> list[bool]:
        out: list[bool] = []
        for entry in entries:
            task = self._tasks.get(entry.task_id)
            if task is None or task.status is not _RUNNING or task.token != entry.token:
                out.append(False)
                continue
            if task.checkpoints is None:
                task.checkpoints = {}
            task.checkpoints[entry.name] = entry.value
            out.append(True)
        return out

    async def _flow_tasks(self, flow_id: str, now: float) -> list[TaskRecord]:
        members = self._flows.get(flow_id)
        if not members:
            return []
        ordered = sorted(members.values(), key=lambda t: (t.msg.created_at, t.id))
        return [task.record(now) for task in ordered]

    def _forget_links(self, task: TaskState) -> None:
        """Drop the cleaned-up `task` from the flow index and the links."""
        msg = task.msg
        if msg.flow_id is not None:
            members = self._flows.get(msg.flow_id)
            if members is not None:
                members.pop(task.id, None)
                if not members:
                    del self._flows[msg.flow_id]
        self._linked.pop(task.id, None)
        target = msg.outcome_to
        linked = None if target is None else self._linked.get(target)
        if target is not None and linked is not None:
            linked[:] = [t for t in linked if t is not task]
            if not linked:
                del self._linked[target]

    async def _checkpoints(self, task_id: str) -> dict[str, bytes]:
        task = self._tasks.get(task_id)
        return {} if task is None or task.checkpoints is None else dict(task.checkpoints)

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
        window = itertools.islice(events, start, start + limit)
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
                flow_id=flow_id,
            )
            for seq, task_id, kind, at, attempt, order_id, detail, name, flow_id in window
        ]

    async def _errors(
        self, since: float | None, name: str | None, queues: list[str] | None, limit: int
    ) -> list[FailedAttempt]:
        names = self._queues if queues is None else queues
        chosen = [
            entry
            for queue in (self._queues.get(n) for n in names)
            if queue is not None
            for entry in queue.errors
            if (since is None or entry.at >= since) and (name is None or entry.name == name)
        ]
        chosen.sort(key=lambda e: e.at, reverse=True)
        return chosen[:limit]

    async def _latest_cursor(self, queue: str) -> str | None:
        state = self._queues.get(queue)
        return str(state.event_seq) if state is not None and state.event_seq else None

    async def _wait_events(self, queue: str, after: str | None) -> None:
        state = self.queue(queue)
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
            task
            for task in self._tasks.values()
            if task.ended
            and task.result_expires_at is not None
            and task.result_expires_at + keep_s <= now
        ]
        for task in doomed:
            del self._tasks[task.id]
            self._forget_links(task)
            queue = self._queues.get(task.msg.queue)
            if queue is not None:
                queue.dead.pop(task.id, None)
        for key, owner in list(self._dedup.items()):
            if owner.id not in self._tasks or (
                owner.ended and self.dedup_owner(key[0], key[1], now) is None
            ):
                del self._dedup[key]
        return len(doomed)
