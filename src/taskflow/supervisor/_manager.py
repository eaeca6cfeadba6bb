"""`TaskManager`: runs one due job. Turns its units into tasks, follows their outcomes, reports.

The Supervisor starts one per due job (and again, for a job still running, when a new leader
takes over). Each step is safe to repeat:

1. **start**: the job goes planned -> running (compare-and-set; a second manager sees it
   running and carries on from the record).
2. **materialize**: every unit still ``planned`` becomes a task whose id is derived from the
   order id and the unit's index, so enqueueing it again (a crash between the enqueue and the
   record update) names the existing task instead of creating one. Units get the order's
   retries, ``order_id`` and an ``idempotency_key`` header, and an ``eta`` at their stored time
   within the day's window. Only this day's units are enqueued: future days stay plan rows.
3. **follow**: a push-notified `Storage.wait` per unit (no polling; at most 32 at once,
   earliest planned first, so a day of thousands of units does not open thousands of
   requests at once); each outcome is copied
   into the job record (so it outlives the result TTL) and reported to the Supervisor, which
   rolls it up. A dead-lettered task is one failed unit, whatever its retries were.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._exceptions import TaskNotFound, UnknownTaskError
from .._message import TaskRecord, TaskStatus
from .._options import TaskOptions
from .._task import PreparedTask
from ._model import JobRecord, JobState, OrderEvent, OrderRecord, UnitRecord, UnitState
from ._store import OrderStore

if TYPE_CHECKING:
    from .._app import QueueTasks

__all__ = ["TaskManager", "unit_idempotency_key", "unit_task_id"]

logger = logging.getLogger("taskflow.supervisor")

# Bounded so that one job never asks a backend for more connections at once than a default
# client pool holds (redis-py: 100): tasks are enqueued 50 at a time, and at most 32 units are
# waited on at once, earliest first (the others' outcomes are picked up as slots free).
_ENQUEUE_BATCH: Final = 50
_MAX_WAITERS: Final = 32

JobChanged = Callable[[str], Awaitable[None]]


def unit_task_id(order_id: str, index: int) -> str:
    """The task id of unit `index` of an order: the same every time it is derived."""
    return f"{order_id}.u{index}"


def unit_idempotency_key(order_id: str, index: int) -> str:
    """The unit's ``ctx.idempotency_key``: stable across attempts and re-materializations."""
    return f"order:{order_id}:unit:{index}"


class TaskManager:
    """Runs one job of an order: materialize its units as tasks, follow them, report.

    Args:
        app: The app whose broker and storage hold the tasks.
        store: The orders' records.
        order: The order (as read when the job became due).
        job_key: Which job.
        on_change: Called with the order id after every change of the job (the Supervisor's
            roll-up).
    """

    def __init__(
        self,
        app: QueueTasks,
        store: OrderStore,
        order: OrderRecord,
        job_key: str,
        on_change: JobChanged,
    ) -> None:
        self.app = app
        self.store = store
        self.order = order
        self.job_key = job_key
        self._on_change = on_change
        # Outcomes are written in batches, one batch at a time (group commit): while a write
        # is in flight, outcomes that arrive queue up and go together in the next one.
        self._pending: list[tuple[int, TaskRecord | None]] = []
        self._writing = False

    async def run(self) -> None:
        """Run the job to its end (returns at once if it already ended)."""
        job = await self._start()
        if job is None or job.state.final:
            return
        job = await self._materialize(job)
        await self._cancel_if_halted(job)
        await self._follow(job)

    # -- start -----------------------------------------------------------------------------

    async def _start(self) -> JobRecord | None:
        now = self.app.clock.time()
        started = False

        def mark_running(job: JobRecord) -> bool:
            nonlocal started
            if job.state is not JobState.PLANNED:
                return False
            job.state = JobState.RUNNING
            job.started_at = now
            started = True
            return True

        job = await self.store.update_job(self.order.id, self.job_key, mark_running)
        if started and job is not None:
            logger.info(
                "order %s: job %s started (%d units)", self.order.id, job.key, len(job.units)
            )
            await self._log("job_started", detail=f"{len(job.units)} units")
            await self._on_change(self.order.id)
        return job

    # -- materialize -----------------------------------------------------------------------

    async def _materialize(self, job: JobRecord) -> JobRecord:
        pending = [u for u in job.units if u.status is UnitState.PLANNED]
        for first in range(0, len(pending), _ENQUEUE_BATCH):
            batch = pending[first : first + _ENQUEUE_BATCH]
            await self.app.add_tasks([self._prepare(unit) for unit in batch])
            indexes = {u.index for u in batch}

            def mark_queued(record: JobRecord, indexes: set[int] = indexes) -> bool:
                changed = False
                for unit in record.units:
                    if unit.index in indexes and unit.status is UnitState.PLANNED:
                        unit.status = UnitState.QUEUED
                        unit.task_id = unit_task_id(self.order.id, unit.index)
                        changed = True
                return changed

            updated = await self.store.update_job(self.order.id, self.job_key, mark_queued)
            if updated is not None:
                job = updated
        if pending:
            await self._log("job_queued", detail=f"{len(pending)} tasks")
            logger.debug(
                "order %s: job %s: %d tasks enqueued", self.order.id, job.key, len(pending)
            )
            await self._on_change(self.order.id)
        return job

    def _prepare(self, unit: UnitRecord) -> PreparedTask[Any]:
        spec = self.order.order
        definition = self.app.tasks.get(spec.task)
        if definition is None:
            raise UnknownTaskError(
                f"order {self.order.id} runs task {spec.task!r}, which is not registered on "
                f"app {self.app.name!r} in this process; register it on every app that hosts "
                "a Supervisor"
            )
        kwargs = spec.unit_kwargs(unit.index)
        options: dict[str, Any] = {
            "task_id": unit_task_id(self.order.id, unit.index),
            "order_id": self.order.id,
            "headers": {"idempotency_key": unit_idempotency_key(self.order.id, unit.index)},
            "retries": spec.retries,
            "priority": spec.priority,
            "eta": unit.at if unit.at > self.app.clock.time() else None,
        }
        if spec.queue is not None:
            options["queue"] = spec.queue
        if spec.retry_backoff_s is not None:
            options["retry_backoff"] = spec.retry_backoff_s
        return PreparedTask(definition, tuple(spec.args), kwargs, TaskOptions(**options))

    async def _cancel_if_halted(self, job: JobRecord) -> None:
        # A cancel (or a stop by the failure policy) racing this enqueue: it set the flag before
        # cancelling tasks, we enqueued before reading the flag, so one of us sees the other.
        order = await self.store.order(self.order.id)
        if order is not None and (order.cancel_requested or order.halted):
            ids = [u.task_id for u in job.units if u.status is UnitState.QUEUED]
            if ids:
                await self.app.broker.cancel(ids, now=self.app.clock.time())

    # -- follow ----------------------------------------------------------------------------

    async def _follow(self, job: JobRecord) -> None:
        live = [u for u in job.units if u.status is UnitState.QUEUED]
        if not live:
            await self._record_outcomes([])
            return
        todo = iter(sorted(live, key=lambda u: (u.at, u.index)))
        async with anyio.create_task_group() as tg:
            for _ in range(min(_MAX_WAITERS, len(live))):
                tg.start_soon(self._follow_some, todo)

    async def _follow_some(self, todo: Iterator[UnitRecord]) -> None:
        """One waiter slot: follow units from the shared `todo` until none is left."""
        for unit in todo:
            await self._follow_unit(unit.index, unit.task_id)

    async def _follow_unit(self, index: int, task_id: str) -> None:
        storage = self.app.storage
        record: TaskRecord | None = None
        try:
            await storage.wait(task_id, timeout=None, now=self.app.clock.time())
        except TaskNotFound:
            pass
        else:  # ended: its whole record (attempts, error) says how
            record = await storage.get(task_id, now=self.app.clock.time())
        self._pending.append((index, record))
        await self._flush()

    async def _flush(self) -> None:
        """Write the queued outcomes, unless another unit's task is writing (it will)."""
        while self._pending and not self._writing:
            self._writing = True
            try:
                batch, self._pending = self._pending, []
                await self._record_outcomes(batch)
            finally:
                self._writing = False

    async def _record_outcomes(self, outcomes: Sequence[tuple[int, TaskRecord | None]]) -> None:
        now = self.app.clock.time()
        newly: list[UnitRecord] = []
        finished = False

        def apply(job: JobRecord) -> bool:
            nonlocal finished
            newly.clear()
            by_index = {u.index: u for u in job.units}
            for index, record in outcomes:
                unit = by_index.get(index)
                if unit is None or unit.status.final:
                    continue
                unit.status, unit.reason = _unit_outcome(record)
                unit.attempts = 0 if record is None else record.attempts
                unit.finished_at = now
                newly.append(unit)
            finished = job.state is JobState.RUNNING and all(u.status.final for u in job.units)
            if finished:
                job.state = _job_outcome(job.units)
                job.finished_at = now
            return bool(newly) or finished

        job = await self.store.update_job(self.order.id, self.job_key, apply)
        for unit in newly:
            await self._log(f"unit_{unit.status.value}", unit=unit.index, detail=unit.reason)
        if finished and job is not None:
            logger.info("order %s: job %s %s", self.order.id, job.key, job.state.value)
            await self._log("job_finished", detail=job.state.value)
        if newly or finished:
            await self._on_change(self.order.id)

    async def _log(self, kind: str, *, unit: int | None = None, detail: str | None = None) -> None:
        event = OrderEvent(
            cursor="",
            order_id=self.order.id,
            kind=kind,
            at=self.app.clock.time(),
            job=self.job_key,
            unit=unit,
            detail=detail,
        )
        await self.store.append(event)


def _unit_outcome(record: TaskRecord | None) -> tuple[UnitState, str | None]:
    """A unit's state and reason from its task's terminal record."""
    if record is None:
        return UnitState.FAILED, "TaskNotFound: the unit's task record is gone"
    if record.status is TaskStatus.DONE:
        return UnitState.DONE, None
    if record.status is TaskStatus.CANCELLED:
        return UnitState.CANCELLED, "cancelled"
    if record.status is TaskStatus.EXPIRED:
        return UnitState.FAILED, "expired before it started"
    error = record.error
    reason = f"{error.type}: {error.message}" if error is not None else "failed"
    return UnitState.FAILED, reason


def _job_outcome(units: Sequence[UnitRecord]) -> JobState:
    """A finished job's state: failed if a unit failed, cancelled if one was, else done."""
    states = {u.status for u in units}
    if UnitState.FAILED in states:
        return JobState.FAILED
    if UnitState.CANCELLED in states:
        return JobState.CANCELLED
    return JobState.DONE
