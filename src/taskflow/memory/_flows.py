"""Flows in the memory backend: tasks that wait, and how a task's end reaches its linked tasks.

The rules are the contract's (`Broker.enqueue`, `Broker.complete`): a message with `waits_for`
is held WAITING until its parents' ends have all reached it; a task's end is applied, in the
same synchronous step that stores it, to its `children` (ready, or ended by their
`after_failure` policy), to its `outcome_to` task (which ends the same way, first outcome wins)
and to the tasks whose `outcome_to` is this one (superseded). Each task ended this way is
settled in turn, breadth first, with a work list rather than recursion, so a chain of any
length cascades.

What does not live here: which call ends a task (`MemoryBroker`), the states and the indexes
of flows and links (`MemoryStorage`, ``_state.py``).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from .._message import (
    SKIPPED,
    SUPERSEDED,
    UPSTREAM_FAILED,
    ErrorInfo,
    EventKind,
    FailurePolicy,
    TaskStatus,
)
from ._state import QueueState, TaskState
from ._storage import MemoryStorage

__all__ = ["hold", "hold_for_join", "link_new", "settle", "upstream_error"]

_WAITING: Final = TaskStatus.WAITING
_RUNNING: Final = TaskStatus.RUNNING
_DONE: Final = TaskStatus.DONE
_FAILED: Final = TaskStatus.FAILED
_CANCELLED: Final = TaskStatus.CANCELLED
#: The ends a hedge copy passes on to its primary when its own run reports them.
_COPY_PASSES_ON: Final = frozenset({_DONE, _FAILED})


def label(task: TaskState) -> str:
    """How errors and details name a task: its node name, else its task name, then its id."""
    msg = task.msg
    return f"{msg.node or msg.name} ({task.id})"


def upstream_error(error_type: str, parent: TaskState) -> ErrorInfo:
    """The error of a child ended by `parent`'s end: ``"<parent> <status>: <type>: <message>"``
    (``"<parent> <status>"`` when the parent ended without an error, e.g. cancelled)."""
    head = f"{label(parent)} {parent.status.value}"
    error = parent.error
    return ErrorInfo(
        error_type, head if error is None else f"{head}: {error.type}: {error.message}"
    )


def hold(queue: QueueState, task: TaskState, now: float) -> None:
    """Store the new `task`, whose message waits for parents, WAITING (event WAITING)."""
    task.status = _WAITING
    task.pending = set(task.msg.waits_for)
    queue.held[task.id] = task
    queue.emit(task, EventKind.WAITING, now)


def hold_for_join(storage: MemoryStorage, queue: QueueState, task: TaskState, now: float) -> None:
    """Apply a WAIT outcome to the running `task`: WAITING, lease dropped, attempt spent, until
    a task whose `outcome_to` is this one ends (event WAITING, detail: that task's id)."""
    task.status = _WAITING
    task.qseq = 0  # a lapsed task waiting for re-delivery must not be delivered
    task.worker_id = None
    queue.held[task.id] = task
    join = next((t for t in storage.linked_to(task.id) if not t.msg.copy), None)
    queue.emit(task, EventKind.WAITING, now, None if join is None else join.id)


def link_new(storage: MemoryStorage, task: TaskState, now: float, result_ttl_s: float) -> None:
    """Apply the `outcome_to` link, if any, of a task just enqueued (after its whole batch is
    stored): a copy emits HEDGED on its primary; a task whose target has ended already is
    superseded at once (no live task ever points at an ended one)."""
    target_id = task.msg.outcome_to
    target = None if target_id is None else storage.tasks.get(target_id)
    if target is None:
        return
    if target.ended:
        _supersede(storage, task, target, now, result_ttl_s)
        settle(storage, task, now, result_ttl_s, by_run=False)
    elif task.msg.copy:
        storage.queue(target.msg.queue).emit(target, EventKind.HEDGED, now, task.id)


def settle(
    storage: MemoryStorage, ended: TaskState, now: float, result_ttl_s: float, *, by_run: bool
) -> None:
    """Apply the end of `ended` (just made terminal) to every task linked to it, and theirs in
    turn. `by_run`: the end is an outcome its run reported (`complete`), not one the backend
    decided (cancel, purge, a lapsed last lease, a cascade); only such an end of a hedge copy
    reaches its primary."""
    woken: set[QueueState] = set()
    work: deque[TaskState] = deque([ended])
    while work:
        task = work.popleft()
        _reach_children(storage, task, now, result_ttl_s, work, woken)
        if task.msg.outcome_to is not None and _passes_on(task, task is ended and by_run):
            _end_target(storage, task, now, work)
        _supersede_linked(storage, task, now, result_ttl_s, work)
    for queue in woken:
        queue.wake_watchers()


def _passes_on(task: TaskState, by_run: bool) -> bool:
    """Whether `task`'s end reaches its `outcome_to` task: always for a join; for a hedge copy
    only a DONE or FAILED its own run reported (a copy cancelled, purged or lost to a lapsed
    lease ends alone, and its primary runs on)."""
    return not task.msg.copy or (by_run and task.status in _COPY_PASSES_ON)


def _reach_children(
    storage: MemoryStorage,
    parent: TaskState,
    now: float,
    result_ttl_s: float,
    work: deque[TaskState],
    woken: set[QueueState],
) -> None:
    """Count `parent`'s end on each of its waiting children: ready on the last parent, or ended
    at once by the child's policy."""
    tasks = storage.tasks
    for child_id, _ in parent.msg.children:
        child = tasks.get(child_id)
        if child is None or child.pending is None or parent.id not in child.pending:
            continue  # gone, not waiting for parents, or this end was counted already
        policy = child.msg.after_failure
        if parent.status is _DONE or policy is FailurePolicy.RUN:
            child.pending.discard(parent.id)
            if not child.pending:
                woken.add(_make_ready(storage, child, now))
            continue
        queue = storage.queue(child.msg.queue)
        if policy is FailurePolicy.SKIP:
            error = upstream_error(SKIPPED, parent)
            storage.finish(
                queue, child, _CANCELLED, now, error=error, result_expires_at=now + result_ttl_s
            )
        else:
            error = upstream_error(UPSTREAM_FAILED, parent)
            storage.finish(
                queue, child, _FAILED, now, error=error, result_expires_at=now + result_ttl_s
            )
        work.append(child)


def _make_ready(storage: MemoryStorage, child: TaskState, now: float) -> QueueState:
    """Make the waiting `child`, whose last parent arrived, claimable (QUEUED), or SCHEDULED
    until its eta; event detail ``"ready"``. Its queue, whose workers are to be woken."""
    queue = storage.queue(child.msg.queue)
    del queue.held[child.id]
    child.pending = None
    eta = child.msg.eta
    if eta is not None and eta > now:
        child.status = TaskStatus.SCHEDULED
        queue.make_pending(child, eta, now)
        queue.emit(child, EventKind.SCHEDULED, now, "ready")
    else:
        child.status = TaskStatus.QUEUED
        queue.make_pending(child, now, now)
        queue.emit(child, EventKind.QUEUED, now, "ready")
    return queue


def _end_target(
    storage: MemoryStorage, task: TaskState, now: float, work: deque[TaskState]
) -> None:
    """End `task`'s `outcome_to` task the same way, if it has not ended (first outcome wins)."""
    target = storage.tasks.get(task.msg.outcome_to or "")
    if target is None or target.ended:
        return
    how = f"won by copy {task.id}" if task.msg.copy else f"outcome of {task.id}"
    storage.finish(
        storage.queue(target.msg.queue),
        target,
        task.status,
        now,
        result=task.result if target.msg.store_result else None,
        error=task.error,
        result_expires_at=task.result_expires_at,
        detail=how,
    )
    work.append(target)


def _supersede_linked(
    storage: MemoryStorage,
    ended: TaskState,
    now: float,
    result_ttl_s: float,
    work: deque[TaskState],
) -> None:
    """Cancel every live task whose `outcome_to` is `ended`: at once, or by request if it is
    running (its worker sees CANCEL on its next renewal)."""
    for task in storage.pop_linked(ended.id):
        if task.ended:
            continue
        if task.status is _RUNNING:
            if not task.cancel_requested:
                task.cancel_requested = True
                queue = storage.queue(task.msg.queue)
                queue.emit(task, EventKind.CANCEL_REQUESTED, now, f"lost to {ended.id}")
            continue
        _supersede(storage, task, ended, now, result_ttl_s)
        work.append(task)


def _supersede(
    storage: MemoryStorage, task: TaskState, ended: TaskState, now: float, result_ttl_s: float
) -> None:
    """End the not running `task` CANCELLED because `ended`, its `outcome_to`, ended first."""
    error = ErrorInfo(SUPERSEDED, f"{label(ended)} ended first: {ended.status.value}")
    storage.finish(
        storage.queue(task.msg.queue),
        task,
        _CANCELLED,
        now,
        error=error,
        result_expires_at=now + result_ttl_s,
        detail=f"lost to {ended.id}",
    )
