"""`OrderBook`: what the client side and the leader side of a `Supervisor` share in one process.

The app, the stored records (`OrderStore`), the two wake-ups of this process (``changed`` for
`events` / `wait` callers, the leader's ``wake_leader``), the order's event log, and the two
ways an order is stopped (its planned jobs cancelled, its live tasks cancelled). What does not
live here: the client calls (`_supervisor.py`) and leading (`_leader.py`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import anyio

from .._exceptions import OrderNotFound
from ._model import JobRecord, JobState, OrderEvent, OrderRecord, UnitState
from ._store import OrderStore

if TYPE_CHECKING:
    from .._app import QueueTasks

__all__ = ["OrderBook"]


class OrderBook:
    """The orders of one app as one process sees them (see the module docstring).

    Attributes:
        app: The app whose coordination space holds the orders.
        changed: Set when an order changed in this process (a fresh event after each).
        wake_leader: Set to make this process's leader scan now.
    """

    def __init__(self, app: QueueTasks) -> None:
        self.app = app
        self._store: OrderStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.changed = anyio.Event()
        self.wake_leader = anyio.Event()

    @property
    def store(self) -> OrderStore:
        """The orders' records (in the app's coordination key-value space)."""
        if self._store is None:
            self._store = OrderStore(self.app.coordination)
        return self._store

    async def here(self) -> None:
        """Open the app on the running loop if it is not (a lazy open, as a send does), and
        make this process's wake-up events the running loop's: an app closes with its loop and
        opens again on the next, and an event waited on under one loop cannot be waited on
        under another."""
        await self.app.lifecycle.ensure_open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self.changed = anyio.Event()
            self.wake_leader = anyio.Event()

    def signal(self) -> None:
        """Wake this process's `events` / `wait` callers."""
        changed, self.changed = self.changed, anyio.Event()
        changed.set()

    def poke(self) -> None:
        """Make this process's leader (if it is one) scan now."""
        self.wake_leader.set()

    async def order(self, order_id: str) -> OrderRecord:
        """The stored order.

        Raises:
            OrderNotFound: no such order.
        """
        order = await self.store.order(order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id!r} in this app's storage")
        return order

    async def jobs(self, order_id: str) -> list[JobRecord]:
        """The order's stored jobs."""
        return [job for job, _ in (await self.store.jobs(order_id)).values()]

    async def log(self, order_id: str, kind: str, *, detail: str | None = None) -> None:
        """Append an event to the order's log and wake this process's readers."""
        event = OrderEvent(
            cursor="", order_id=order_id, kind=kind, at=self.app.clock.time(), detail=detail
        )
        await self.store.append(event)
        self.signal()

    async def cancel_live_tasks(self, jobs: list[JobRecord]) -> None:
        """Cancel the tasks of the jobs' units that are queued or running."""
        ids = [u.task_id for job in jobs for u in job.units if u.status is UnitState.QUEUED]
        if ids:
            await self.app.broker.cancel(ids, now=self.app.clock.time())

    async def cancel_planned(self, order_id: str, jobs: list[JobRecord]) -> None:
        """Mark the jobs not started yet cancelled (their units never start)."""
        now = self.app.clock.time()

        def cancel(job: JobRecord) -> bool:
            if job.state is not JobState.PLANNED:
                return False
            job.state, job.finished_at, job.reason = JobState.CANCELLED, now, "order stopped"
            for unit in job.units:
                unit.status, unit.reason = UnitState.CANCELLED, "cancelled before its day"
            return True

        for job in jobs:
            if job.state is JobState.PLANNED:
                await self.store.update_job(order_id, job.key, cancel)
