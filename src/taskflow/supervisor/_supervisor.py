"""`Supervisor`: takes orders, plans them into jobs, and (as the elected leader) runs due jobs.

Client side (any process, leader or not), here: `submit`, `status`, `events`, `wait`, `cancel`,
`amend`. They read and write the stored records directly, and bump a change counter the leader
watches, so a client never needs to reach the leader.

Leader side (`run`, usually hosted by every worker process through `attach`): `_leader.py`.
What both sides share in one process (the records, the wake-ups, the event log) is the
`OrderBook` (`_book.py`); what the records add up to is `_status.py`; planning jobs and
amendments is `_amend.py`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .._aio import first_of
from .._exceptions import InvalidArguments, OrderError, UnknownTaskError
from .._message import TaskStatus, encode_value
from .._options import duration_s
from ._amend import StoredJobs, build_jobs, plan_amendment
from ._book import OrderBook
from ._leader import Leader
from ._model import JobRecord, JobState, Order, OrderEvent, OrderRecord, OrderStatus
from ._plan import local_date, plan_days
from ._status import live_task_ids, order_status
from ._store import OrderStore

if TYPE_CHECKING:
    from .._app import QueueTasks
    from .._context import WorkerState
    from .._task import TaskFunc

__all__ = ["Supervisor"]

logger = logging.getLogger("taskflow.supervisor")


def _seconds(name: str, value: dt.timedelta | float) -> float:
    """A duration argument as seconds > 0.

    Raises:
        ValueError: `value` is not a positive number of seconds or a `timedelta`.
    """
    seconds = duration_s(value, positive=True)
    if seconds is None:
        raise ValueError(f"{name} must be seconds > 0 (a number or a timedelta), got {value!r}")
    return seconds


class Supervisor:
    """Splits orders into jobs, runs the due ones as the elected leader, reports back.

    ```python
    supervisor = Supervisor(app, notifier=order_finished)   # a registered task
    supervisor.attach()                                     # every worker hosts a candidate
    order_id = await supervisor.submit(Order(task=buy.name, total=140, plan=Plan.spread(...)))
    print((await supervisor.status(order_id)).summary)
    ```

    Args:
        app: The app; its tasks, broker, storage and clock are used.
        notifier: A registered task (or its name) called once per finished order with the
            `OrderReport` as a dict (``OrderReport.from_payload`` types it).
        tick: How often the leader scans even when nothing woke it (default: a day).
        lease_ttl: The leader lease's time to live; it is renewed every third of it, and a
            dead leader is replaced within about this long.
        poll: How often a leader checks the change counter for orders submitted, cancelled or
            amended by other processes, and how often `events`/`wait` re-read stored records
            written by another process (same-process changes wake them at once).
        owner: This candidate's name in the lease (default: host pid and a random suffix).

    Raises:
        ValueError: `tick`, `lease_ttl` or `poll` is not a positive duration.
    """

    def __init__(
        self,
        app: QueueTasks,
        *,
        notifier: TaskFunc[Any, Any] | str | None = None,
        tick: dt.timedelta | float = dt.timedelta(days=1),
        lease_ttl: dt.timedelta | float = dt.timedelta(seconds=30),
        poll: dt.timedelta | float = dt.timedelta(seconds=1),
        owner: str | None = None,
    ) -> None:
        self.app = app
        self.notifier = notifier if notifier is None or isinstance(notifier, str) else notifier.name
        self.tick_s = _seconds("tick", tick)
        self.lease_ttl_s = _seconds("lease_ttl", lease_ttl)
        self.poll_s = _seconds("poll", poll)
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._book = OrderBook(app)
        self._leader = Leader(
            self._book,
            owner=self.owner,
            notifier=self.notifier,
            tick_s=self.tick_s,
            lease_ttl_s=self.lease_ttl_s,
            poll_s=self.poll_s,
        )

    # -- public: hosting -------------------------------------------------------------------

    def attach(self) -> None:
        """Host a candidate in every worker process of the app (`QueueTasks.worker_service`)."""
        self.app.worker_service(self.run)

    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the lease."""
        return self._leader.token is not None

    @property
    def release_on_exit(self) -> bool:
        """False makes `run` leave the lease to lapse when cancelled (tests simulate a crash)."""
        return self._leader.release_on_exit

    @release_on_exit.setter
    def release_on_exit(self, value: bool) -> None:
        self._leader.release_on_exit = value

    async def run(self, app: QueueTasks | None = None, state: WorkerState | None = None) -> None:
        """Be a candidate forever: lead while holding the lease, stand by otherwise.

        The signature fits `QueueTasks.worker_service`; call it directly (in a task group) to
        host a candidate without a worker. Cancel it to stop; the lease is released then.
        """
        await self._leader.run()

    @property
    def store(self) -> OrderStore:
        """The orders' records (in the app's coordination key-value space)."""
        return self._book.store

    # -- public: the client side -----------------------------------------------------------

    async def submit(self, order: Order) -> str:
        """Store `order` and its plan; return its id at once. The leader runs it when due.

        Raises:
            UnknownTaskError: the order's task is not registered on this app.
            OrderError: the plan cannot carry the total, or the order's arguments do not fit
                its task's signature or cannot be stored (the message says why).
        """
        await self._book.here()
        self._check_task(order.task)
        self._check_arguments(order)
        try:
            order.plan.check(order.total)
        except ValueError as exc:
            raise OrderError(str(exc)) from None
        order_id = order.order_id or f"ord-{os.urandom(8).hex()}"
        if "{" in order_id or "}" in order_id:
            raise OrderError(f"order id {order_id!r} must not contain braces")
        now = self.app.clock.time()
        record = OrderRecord(id=order_id, order=order, created_at=now)
        today = local_date(order.plan, now)
        quotas = plan_days(order.plan, order.total, today)
        jobs = build_jobs(order_id, order.plan, quotas, first_index=0, now=now)
        if await self.store.create(record, jobs):
            logger.info(
                "order %s submitted: %d units in %d job(s)", order_id, order.total, len(jobs)
            )
            await self._book.log(
                order_id, "submitted", detail=f"{order.total} units, {len(jobs)} jobs"
            )
            await self.store.bump_changes()
            self._book.poke()
        return order_id

    def _check_task(self, name: str) -> None:
        if name not in self.app.tasks:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            raise UnknownTaskError(
                f"order task {name!r} is not registered on app {self.app.name!r} (registered: "
                f"{known}); pass Order(task=my_task.name) for a task of this app"
            )

    def _check_arguments(self, order: Order) -> None:
        """Bind the arguments of every distinct unit call now, so an order whose units could
        never run is refused at submit, not failed unit by unit weeks later."""
        check = self.app.tasks[order.task].check_arguments
        for index in {0, *order.per_unit_kwargs}:
            args, kwargs = tuple(order.args), order.unit_kwargs(index)
            try:
                check(args, kwargs)
            except InvalidArguments as exc:
                raise OrderError(f"order's unit {index} cannot call its task: {exc}") from None
            try:
                encode_value([args, kwargs])
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                raise OrderError(
                    f"order's unit {index} has arguments that cannot be stored ({exc}): use "
                    "values msgpack can carry (str, int, float, bool, None, bytes, lists, dicts)"
                ) from None

    async def status(self, order_id: str) -> OrderStatus:
        """The order's state, counts, per-job status and failure reasons.

        Raises:
            OrderNotFound: no such order.
        """
        await self._book.here()
        order = await self._book.order(order_id)
        jobs = await self._book.jobs(order_id)
        return order_status(order, jobs, await self._live_statuses(jobs))

    async def _live_statuses(self, jobs: list[JobRecord]) -> dict[str, TaskStatus]:
        ids = live_task_ids(jobs)
        if not ids:
            return {}
        records = await self.app.storage.get_many(ids, now=self.app.clock.time())
        return {r.id: r.status for r in records if r is not None}

    async def events(self, order_id: str, *, after: str | None = None) -> AsyncIterator[OrderEvent]:
        """Yield the order's events as they happen, resuming after cursor `after`; ends after
        the ``finished`` event.

        Raises:
            OrderNotFound: no such order.
        """
        await self._book.here()
        await self._book.order(order_id)
        cursor = after
        while True:
            changed = self._book.changed
            batch = await self.store.events(order_id, cursor)
            for event in batch:
                cursor = event.cursor
                yield event
                if event.kind == "finished":
                    return
            if not batch:
                await first_of(changed.wait(), self.app.clock.sleep(self.poll_s))

    async def wait(self, order_id: str) -> OrderStatus:
        """Wait until the order is final and its client notified; return its status.

        Bound it with `anyio.fail_after` (real time) or drive a fake clock meanwhile.
        """
        await self._book.here()
        while True:
            changed = self._book.changed
            order = await self._book.order(order_id)
            if order.state.final and order.notified:
                return await self.status(order_id)
            await first_of(changed.wait(), self.app.clock.sleep(self.poll_s))

    async def cancel(self, order_id: str) -> OrderStatus:
        """Cancel the order: queued and running tasks are cancelled now, future days never
        start. The order ends ``cancelled`` (and its notifier runs) once its tasks have stopped.

        Raises:
            OrderNotFound: no such order.
        """
        await self._book.here()
        await self._book.order(order_id)

        def request(record: OrderRecord) -> bool:
            if record.cancel_requested or record.state.final:
                return False
            record.cancel_requested = True
            return True

        order = await self.store.update_order(order_id, request)
        if order is not None and not order.state.final:
            await self._book.log(order_id, "cancel_requested")
            book = self._book
            await book.cancel_planned(order_id, await book.jobs(order_id))
            await book.cancel_live_tasks(await book.jobs(order_id))
            await self.store.bump_changes()
            self._book.poke()
        return await self.status(order_id)

    async def amend(
        self,
        order_id: str,
        *,
        quotas: Mapping[dt.date, int] | None = None,
        end: dt.date | None = None,
        total: int | None = None,
    ) -> OrderStatus:
        """Change what has not started: the quotas of future days, the last day, the total.

        Days already started keep their units. The units not yet started (the total minus the
        started days' units) are re-planned over the days not yet started up to `end`
        (default: the plan's last day): days in `quotas` get those counts, the others share
        the rest evenly. The total changes only if `total` is given.

        Raises:
            OrderNotFound: no such order.
            OrderError: the order is final or runs at once, or the numbers do not fit.
        """
        await self._book.here()
        for _ in range(5):
            if await self._try_amend(order_id, quotas or {}, end, total):
                await self.store.bump_changes()
                self._book.poke()
                return await self.status(order_id)
        raise OrderError(f"order {order_id!r} kept changing while being amended; try again")

    async def _try_amend(
        self,
        order_id: str,
        quotas: Mapping[dt.date, int],
        end: dt.date | None,
        total: int | None,
    ) -> bool:
        """One attempt at an amendment; False if a record changed meanwhile (try again)."""
        order = await self._book.order(order_id)
        stored = StoredJobs.of(await self.store.jobs(order_id))
        amendment = plan_amendment(order, stored, quotas, end, total, self.app.clock.time())
        for day, job in amendment.jobs.items():
            if not await self.store.put_job(job, expect_version=stored.version(day)):
                return False
        for job, version in amendment.dropped:
            job.state, job.reason = JobState.DROPPED, "removed by an amendment"
            if not await self.store.put_job(job, expect_version=version):
                return False

        def apply(record: OrderRecord) -> bool:
            record.order = msgspec.structs.replace(
                record.order, total=amendment.total, plan=amendment.plan
            )
            record.amendments += 1
            return True

        await self.store.update_order(order_id, apply)
        await self._book.log(order_id, "amended", detail=amendment.describe())
        return True
