"""`Leader`: the leader side of a `Supervisor`: candidacy, scanning for due jobs, and rolling
orders up (counts, failure policy, final state, the notifier sent once).

A candidate campaigns for the role ``taskflow:supervisor`` with ``app.leadership`` (the public
leader election, ``_leadership.py``), which renews it on the app's clock; when the role is lost
(`LeadershipLost`) it steps down and campaigns again, and when its process dies the role lapses
and another candidate takes over. The leader scans at start-up, at every `tick`, when a planned
job becomes due, and when the change counter moves; for each due or still-running job it runs a
`TaskManager`, and after every job change it rolls the order up and, once final, sends the
notifier task exactly once (a derived task id plus the order's ``notified`` flag).

What does not live here: the client calls (`_supervisor.py`) and running one job's units
(`_manager.py`).
"""

from __future__ import annotations

import logging
from typing import Final

import anyio
import anyio.abc
import msgspec

from .._aio import first_of
from .._exceptions import LeadershipLost
from .._leadership import Leadership
from .._rollup import summarize
from ._book import OrderBook
from ._manager import TaskManager
from ._model import JobRecord, JobState, OrderRecord, OrderState
from ._status import failures, report, stored_counts

__all__ = ["LEASE_NAME", "Leader"]

logger = logging.getLogger("taskflow.supervisor")

LEASE_NAME: Final = "taskflow:supervisor"


class Leader:
    """One process's candidacy, and what it does while it leads.

    Args:
        book: The orders as this process sees them.
        owner: This candidate's name in the lease.
        notifier: The task sent once per finished order, or None.
        tick_s: How often the leader scans even when nothing woke it.
        lease_ttl_s: The role's lease (renewed every third of it).
        poll_s: How often the leader checks the change counter.

    Attributes:
        release_on_exit: False leaves the lease to lapse when cancelled (tests simulate a
            crash).
    """

    def __init__(
        self,
        book: OrderBook,
        *,
        owner: str,
        notifier: str | None,
        tick_s: float,
        lease_ttl_s: float,
        poll_s: float,
    ) -> None:
        self._book = book
        self._owner = owner
        self._notifier = notifier
        self._tick_s = tick_s
        self._lease_ttl_s = lease_ttl_s
        self._poll_s = poll_s
        self._locks: dict[str, anyio.Lock] = {}
        self._running_jobs: set[tuple[str, str]] = set()
        self._seen_changes = -1
        self.token: int | None = None
        self.release_on_exit = True

    async def run(self) -> None:
        """Be a candidate forever: lead while holding the role, stand by otherwise."""
        await self._book.here()
        app = self._book.app
        while True:
            term = app.leadership(LEASE_NAME, ttl=self._lease_ttl_s, owner=self._owner)
            try:
                async with term:
                    await self._lead_while_holding(term)
            except LeadershipLost as exc:
                logger.warning("supervisor %s stepped down: %s", self._owner, exc)
            except Exception:
                # A backend outage must not end the candidacy: stand by and try again.
                logger.exception("supervisor %s: error while leading or standing by", self._owner)
                await app.clock.sleep(self._lease_ttl_s / 3)

    async def _lead_while_holding(self, term: Leadership) -> None:
        logger.info("supervisor %s leads (token %d)", self._owner, term.token)
        self.token = term.token
        try:
            async with anyio.create_task_group() as tg:
                await self._lead(tg)
        finally:
            self.token = None
            self._running_jobs.clear()
            term.release_on_exit = self.release_on_exit

    async def _lead(self, tg: anyio.abc.TaskGroup) -> None:
        book = self._book
        clock = book.app.clock
        while True:
            book.wake_leader = anyio.Event()
            # Read before scanning: a change made during the scan is then seen as a change.
            self._seen_changes = await book.store.changes()
            next_due = await self._scan(tg)
            wake_at = clock.time() + self._tick_s
            if next_due is not None:
                wake_at = min(wake_at, next_due)
            await first_of(
                clock.sleep(wake_at - clock.time()),
                book.wake_leader.wait(),
                self._watch_changes(),
            )

    async def _watch_changes(self) -> None:
        """Return once the change counter moved (orders changed by another process)."""
        book = self._book
        while True:
            await book.app.clock.sleep(self._poll_s)
            if await book.store.changes() != self._seen_changes:
                return

    async def _scan(self, tg: anyio.abc.TaskGroup) -> float | None:
        """Start managers for due and running jobs, roll every active order up; return the
        earliest due time of a planned job."""
        store = self._book.store
        now = self._book.app.clock.time()
        next_due: float | None = None
        for order_id in await store.active_ids():
            await self.rollup(order_id)
            order = await store.order(order_id)
            if order is None:
                await store.deactivate(order_id)
                continue
            if order.state.final:
                continue
            stopping = order.cancel_requested or order.halted
            for key, (job, _) in (await store.jobs(order_id)).items():
                # A running job is followed even when stopping: its cancelled tasks end it.
                if job.state is JobState.RUNNING or (
                    job.state is JobState.PLANNED and job.due_at <= now and not stopping
                ):
                    self._start_manager(tg, order, key)
                elif job.state is JobState.PLANNED and not stopping:
                    next_due = job.due_at if next_due is None else min(next_due, job.due_at)
        return next_due

    def _start_manager(self, tg: anyio.abc.TaskGroup, order: OrderRecord, key: str) -> None:
        if (order.id, key) in self._running_jobs:
            return
        self._running_jobs.add((order.id, key))
        tg.start_soon(self._run_manager, order, key)

    async def _run_manager(self, order: OrderRecord, key: str) -> None:
        book = self._book
        manager = TaskManager(book.app, book.store, order, key, self.rollup)
        try:
            await manager.run()
        except Exception:
            logger.exception("order %s: the manager of job %s failed; retrying", order.id, key)
            await book.app.clock.sleep(self._poll_s)
        finally:
            self._running_jobs.discard((order.id, key))
        book.poke()

    # -- roll-up, failure policy, notification ---------------------------------------------

    async def rollup(self, order_id: str) -> None:
        """Bring the order's state up to date with its jobs; notify once it is final."""
        lock = self._locks.setdefault(order_id, anyio.Lock())
        async with lock:
            await self._rollup_locked(order_id)
        self._book.signal()

    async def _rollup_locked(self, order_id: str) -> None:
        book = self._book
        order = await book.store.order(order_id)
        if order is None or (order.state.final and order.notified):
            return
        jobs = await book.jobs(order_id)
        if not order.state.final:
            order = await self._apply_policy(order, jobs)
            if order.cancel_requested or order.halted:
                await book.cancel_planned(order_id, jobs)
                jobs = await book.jobs(order_id)
            order = await self._update_state(order, jobs)
        if order.state.final and not order.notified:
            await self._notify(order, jobs)

    async def _apply_policy(self, order: OrderRecord, jobs: list[JobRecord]) -> OrderRecord:
        policy = order.order.failure_policy
        failed = failures(jobs)
        if order.halted or order.cancel_requested or not policy.stops_at(len(failed)):
            return order
        reason = f"{len(failed)} unit(s) failed ({policy.describe()}); first: {failed[0].reason}"

        def halt(record: OrderRecord) -> bool:
            if record.halted or record.state.final:
                return False
            record.halted, record.reason = True, reason
            return True

        book = self._book
        updated = await book.store.update_order(order.id, halt)
        assert updated is not None
        logger.warning("order %s: stopping the rest: %s", order.id, reason)
        await book.log(order.id, "halted", detail=reason)
        await book.cancel_live_tasks(jobs)
        return updated

    async def _update_state(self, order: OrderRecord, jobs: list[JobRecord]) -> OrderRecord:
        live = [j for j in jobs if j.state is not JobState.DROPPED]
        started = any(j.state is not JobState.PLANNED for j in live)
        if all(j.state.final for j in live):
            state = _final_state(order, jobs)
        elif started:
            state = OrderState.RUNNING
        else:
            return order
        now = self._book.app.clock.time()
        reason = _final_reason(order, jobs, state)

        def set_state(record: OrderRecord) -> bool:
            if record.state == state or record.state.final:
                return False
            record.state = state
            if state is OrderState.RUNNING:
                record.started_at = now
            else:
                record.finished_at, record.reason = now, reason
            return True

        updated = await self._book.store.update_order(order.id, set_state)
        assert updated is not None
        if updated.state.final and updated.state != order.state:
            logger.info("order %s %s: %s", order.id, updated.state.value, reason)
        return updated

    async def _notify(self, order: OrderRecord, jobs: list[JobRecord]) -> None:
        book = self._book
        final = report(order, jobs)
        if self._notifier is not None:
            await book.app.add_task(
                self._notifier,
                args=(msgspec.to_builtins(final),),
                task_id=f"{order.id}.notify",
                order_id=order.id,
                headers={"idempotency_key": f"order:{order.id}:notify"},
            )

        def mark(record: OrderRecord) -> bool:
            if record.notified:
                return False
            record.notified = True
            return True

        await book.store.update_order(order.id, mark)
        await book.log(order.id, "finished", detail=f"{order.state.value}: {final.summary}")
        await book.store.deactivate(order.id)
        logger.info("order %s finished (%s); client notified", order.id, order.state.value)


def _final_state(order: OrderRecord, jobs: list[JobRecord]) -> OrderState:
    if order.cancel_requested:
        return OrderState.CANCELLED
    if order.halted or len(failures(jobs)) > order.order.failure_policy.tolerated:
        return OrderState.FAILED
    return OrderState.SUCCEEDED


def _final_reason(order: OrderRecord, jobs: list[JobRecord], state: OrderState) -> str:
    if order.reason:
        return order.reason
    failed = failures(jobs)
    if state is OrderState.FAILED and failed:
        return f"{len(failed)} unit(s) failed; first: {failed[0].reason}"
    if state is OrderState.CANCELLED:
        return "cancelled by request"
    return summarize(order.order.total, stored_counts(jobs), [f.reason for f in failed])
