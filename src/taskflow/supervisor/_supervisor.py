"""`Supervisor`: takes orders, plans them into jobs, and (as the elected leader) runs due jobs.

Client side (any process, leader or not): `submit`, `status`, `events`, `wait`, `cancel`,
`amend`. They read and write the stored records directly, and bump a change counter the leader
watches, so a client never needs to reach the leader.

Leader side (`run`, usually hosted by every worker process through `attach`): a candidate takes
the lease ``taskflow:supervisor`` and renews it on a timer of the app's clock; if renewing fails
it steps down at once, and when its process dies the lease lapses and another candidate takes
over. The leader scans at start-up, at every `tick`, when a planned job becomes due (local
midnight of its day, or at once for `Plan.at_once`), and when the change counter moves; for
each due or still-running job it runs a `TaskManager`, and after every job change it rolls the
order up (counts, failure policy, final state) and, once final, sends the notifier task exactly
once (a derived task id plus the order's ``notified`` flag).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec

from .._aio import first_of
from .._exceptions import InvalidArguments, OrderError, OrderNotFound, UnknownTaskError
from .._message import TaskStatus
from ._manager import TaskManager, unit_task_id
from ._model import (
    Counts,
    JobRecord,
    JobState,
    JobStatus,
    Order,
    OrderEvent,
    OrderRecord,
    OrderReport,
    OrderState,
    OrderStatus,
    UnitFailure,
    UnitRecord,
    UnitState,
    summarize,
)
from ._plan import DayQuota, Plan, amended_quotas, day_start, local_date, plan_days, spread_times
from ._store import OrderStore

if TYPE_CHECKING:
    from .._app import QueueTasks
    from .._context import WorkerState
    from .._task import TaskFunc

__all__ = ["Supervisor"]

logger = logging.getLogger("taskflow.supervisor")

LEASE_NAME: Final = "taskflow:supervisor"


def _seconds(value: dt.timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


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
        self.tick_s = _seconds(tick)
        self.lease_ttl_s = _seconds(lease_ttl)
        self.poll_s = _seconds(poll)
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._store: OrderStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = anyio.Event()
        self._wake_leader = anyio.Event()
        self._locks: dict[str, anyio.Lock] = {}
        self._running_jobs: set[tuple[str, str]] = set()
        self._seen_changes = -1
        self._leader_token: int | None = None
        #: False makes `run` leave the lease to lapse when cancelled (tests simulate a crash).
        self.release_on_exit = True

    # -- public: hosting -------------------------------------------------------------------

    def attach(self) -> None:
        """Host a candidate in every worker process of the app (`QueueTasks.worker_service`)."""
        self.app.worker_service(self.run)

    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the lease."""
        return self._leader_token is not None

    async def run(self, app: QueueTasks | None = None, state: WorkerState | None = None) -> None:
        """Be a candidate forever: lead while holding the lease, stand by otherwise.

        The signature fits `QueueTasks.worker_service`; call it directly (in a task group) to
        host a candidate without a worker. Cancel it to stop; the lease is released then.
        """
        await self._here()
        clock = self.app.clock
        coordination = self.app.coordination
        while True:
            try:
                token = await coordination.acquire_lease(
                    LEASE_NAME, self.owner, ttl_s=self.lease_ttl_s, now=clock.time()
                )
                if token is not None:
                    await self._lead_while_holding(token)
                    continue
            except Exception:
                # A backend outage must not end the candidacy: stand by and try again.
                logger.exception("supervisor %s: error while leading or standing by", self.owner)
            await clock.sleep(self.lease_ttl_s / 3)

    async def _lead_while_holding(self, token: int) -> None:
        logger.info("supervisor %s leads (token %d)", self.owner, token)
        self._leader_token = token
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_lease, token, tg.cancel_scope)
                await self._lead(tg)
        finally:
            self._leader_token = None
            self._running_jobs.clear()
            if self.release_on_exit:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await self.app.coordination.release_lease(LEASE_NAME, self.owner, token)
                    except Exception:
                        logger.warning("could not release the supervisor lease", exc_info=True)

    async def _keep_lease(self, token: int, scope: anyio.CancelScope) -> None:
        clock = self.app.clock
        while True:
            await clock.sleep(self.lease_ttl_s / 3)
            try:
                ok = await self.app.coordination.renew_lease(
                    LEASE_NAME, self.owner, token, ttl_s=self.lease_ttl_s, now=clock.time()
                )
            except Exception:
                logger.exception("renewing the supervisor lease failed; stepping down")
                ok = False
            if not ok:
                logger.warning("supervisor %s lost the lease; stepping down", self.owner)
                scope.cancel()
                return

    async def _lead(self, tg: anyio.abc.TaskGroup) -> None:
        clock = self.app.clock
        while True:
            self._wake_leader = anyio.Event()
            # Read before scanning: a change made during the scan is then seen as a change.
            self._seen_changes = await self.store.changes()
            next_due = await self._scan(tg)
            wake_at = clock.time() + self.tick_s
            if next_due is not None:
                wake_at = min(wake_at, next_due)
            await first_of(
                clock.sleep(wake_at - clock.time()),
                self._wake_leader.wait(),
                self._watch_changes(),
            )

    async def _watch_changes(self) -> None:
        """Return once the change counter moved (orders changed by another process)."""
        while True:
            await self.app.clock.sleep(self.poll_s)
            if await self.store.changes() != self._seen_changes:
                return

    async def _scan(self, tg: anyio.abc.TaskGroup) -> float | None:
        """Start managers for due and running jobs, roll every active order up; return the
        earliest due time of a planned job."""
        now = self.app.clock.time()
        next_due: float | None = None
        for order_id in await self.store.active_ids():
            await self._rollup(order_id)
            order = await self.store.order(order_id)
            if order is None:
                await self.store.deactivate(order_id)
                continue
            if order.state.final:
                continue
            stopping = order.cancel_requested or order.halted
            for key, (job, _) in (await self.store.jobs(order_id)).items():
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
        manager = TaskManager(self.app, self.store, order, key, self._rollup)
        try:
            await manager.run()
        except Exception:
            logger.exception("order %s: the manager of job %s failed; retrying", order.id, key)
            await self.app.clock.sleep(self.poll_s)
        finally:
            self._running_jobs.discard((order.id, key))
        self._poke()

    # -- roll-up, failure policy, notification ---------------------------------------------

    async def _rollup(self, order_id: str) -> None:
        lock = self._locks.setdefault(order_id, anyio.Lock())
        async with lock:
            await self._rollup_locked(order_id)
        self._signal()

    async def _rollup_locked(self, order_id: str) -> None:
        order = await self.store.order(order_id)
        if order is None or (order.state.final and order.notified):
            return
        jobs = await self._jobs(order_id)
        if not order.state.final:
            order = await self._apply_policy(order, jobs)
            if order.cancel_requested or order.halted:
                await self._cancel_planned(order_id, jobs)
                jobs = await self._jobs(order_id)
            order = await self._update_state(order, jobs)
        if order.state.final and not order.notified:
            await self._notify(order, jobs)

    async def _jobs(self, order_id: str) -> list[JobRecord]:
        return [job for job, _ in (await self.store.jobs(order_id)).values()]

    async def _apply_policy(self, order: OrderRecord, jobs: list[JobRecord]) -> OrderRecord:
        policy = order.order.failure_policy
        failures = _failures(jobs)
        if order.halted or order.cancel_requested or not policy.stops_at(len(failures)):
            return order
        reason = (
            f"{len(failures)} unit(s) failed ({policy.describe()}); first: {failures[0].reason}"
        )

        def halt(record: OrderRecord) -> bool:
            if record.halted or record.state.final:
                return False
            record.halted, record.reason = True, reason
            return True

        updated = await self.store.update_order(order.id, halt)
        assert updated is not None
        logger.warning("order %s: stopping the rest: %s", order.id, reason)
        await self._log(order.id, "halted", detail=reason)
        await self._cancel_live_tasks(jobs)
        return updated

    async def _cancel_live_tasks(self, jobs: list[JobRecord]) -> None:
        ids = [u.task_id for job in jobs for u in job.units if u.status is UnitState.QUEUED]
        if ids:
            await self.app.broker.cancel(ids, now=self.app.clock.time())

    async def _cancel_planned(self, order_id: str, jobs: list[JobRecord]) -> None:
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

    async def _update_state(self, order: OrderRecord, jobs: list[JobRecord]) -> OrderRecord:
        live = [j for j in jobs if j.state is not JobState.DROPPED]
        started = any(j.state is not JobState.PLANNED for j in live)
        if all(j.state.final for j in live):
            state = self._final_state(order, jobs)
        elif started:
            state = OrderState.RUNNING
        else:
            return order
        now = self.app.clock.time()
        reason = self._final_reason(order, jobs, state)

        def set_state(record: OrderRecord) -> bool:
            if record.state == state or record.state.final:
                return False
            record.state = state
            if state is OrderState.RUNNING:
                record.started_at = now
            else:
                record.finished_at, record.reason = now, reason
            return True

        updated = await self.store.update_order(order.id, set_state)
        assert updated is not None
        if updated.state.final and updated.state != order.state:
            logger.info("order %s %s: %s", order.id, updated.state.value, reason)
        return updated

    def _final_state(self, order: OrderRecord, jobs: list[JobRecord]) -> OrderState:
        if order.cancel_requested:
            return OrderState.CANCELLED
        failed = len(_failures(jobs))
        if order.halted or failed > order.order.failure_policy.tolerated:
            return OrderState.FAILED
        return OrderState.SUCCEEDED

    def _final_reason(self, order: OrderRecord, jobs: list[JobRecord], state: OrderState) -> str:
        if order.reason:
            return order.reason
        failures = _failures(jobs)
        if state is OrderState.FAILED and failures:
            return f"{len(failures)} unit(s) failed; first: {failures[0].reason}"
        if state is OrderState.CANCELLED:
            return "cancelled by request"
        return summarize(order.order.total, _stored_counts(jobs), failures)

    async def _notify(self, order: OrderRecord, jobs: list[JobRecord]) -> None:
        report = _report(order, jobs)
        if self.notifier is not None:
            await self.app.add_task(
                self.notifier,
                args=(msgspec.to_builtins(report),),
                task_id=f"{order.id}.notify",
                order_id=order.id,
                headers={"idempotency_key": f"order:{order.id}:notify"},
            )

        def mark(record: OrderRecord) -> bool:
            if record.notified:
                return False
            record.notified = True
            return True

        await self.store.update_order(order.id, mark)
        await self._log(order.id, "finished", detail=f"{order.state.value}: {report.summary}")
        await self.store.deactivate(order.id)
        logger.info("order %s finished (%s); client notified", order.id, order.state.value)

    async def _log(self, order_id: str, kind: str, *, detail: str | None = None) -> None:
        event = OrderEvent(
            cursor="", order_id=order_id, kind=kind, at=self.app.clock.time(), detail=detail
        )
        await self.store.append(event)
        self._signal()

    async def _here(self) -> None:
        """Open the app on the running loop if it is not (a lazy open, as a send does), and
        make this process's wake-up events the running loop's: an app closes with its loop and
        opens again on the next, and an event waited on under one loop cannot be waited on
        under another."""
        await self.app.lifecycle.ensure_open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._changed = anyio.Event()
            self._wake_leader = anyio.Event()

    def _signal(self) -> None:
        """Wake this process's `events` / `wait` callers."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _poke(self) -> None:
        """Make this process's leader (if it is one) scan now."""
        self._wake_leader.set()

    @property
    def store(self) -> OrderStore:
        """The orders' records (in the app's coordination key-value space)."""
        if self._store is None:
            self._store = OrderStore(self.app.coordination)
        return self._store

    # -- public: the client side -----------------------------------------------------------

    async def submit(self, order: Order) -> str:
        """Store `order` and its plan; return its id at once. The leader runs it when due.

        Raises:
            UnknownTaskError: the order's task is not registered on this app.
            OrderError: the plan cannot carry the total, or the order's arguments do not fit
                its task's signature (the message says why).
        """
        await self._here()
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
        jobs = _build_jobs(order_id, order.plan, quotas, first_index=0, now=now)
        if await self.store.create(record, jobs):
            logger.info(
                "order %s submitted: %d units in %d job(s)", order_id, order.total, len(jobs)
            )
            await self._log(order_id, "submitted", detail=f"{order.total} units, {len(jobs)} jobs")
            await self.store.bump_changes()
            self._poke()
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
            try:
                check(tuple(order.args), order.unit_kwargs(index))
            except InvalidArguments as exc:
                raise OrderError(f"order's unit {index} cannot call its task: {exc}") from None

    async def status(self, order_id: str) -> OrderStatus:
        """The order's state, counts, per-job status and failure reasons.

        Raises:
            OrderNotFound: no such order.
        """
        await self._here()
        order = await self._order(order_id)
        jobs = await self._jobs(order_id)
        live = await self._live_statuses(jobs)
        job_statuses = [_job_status(job, live) for job in jobs if job.state is not JobState.DROPPED]
        counts = Counts()
        for job_status in job_statuses:
            counts.add(job_status.counts)
        return OrderStatus(
            order_id=order_id,
            state=order.state,
            total=order.order.total,
            counts=counts,
            jobs=job_statuses,
            failures=_failures(jobs),
            reason=order.reason,
            notified=order.notified,
            label=order.order.label,
        )

    async def _order(self, order_id: str) -> OrderRecord:
        order = await self.store.order(order_id)
        if order is None:
            raise OrderNotFound(f"no order {order_id!r} in this app's storage")
        return order

    async def _live_statuses(self, jobs: list[JobRecord]) -> dict[str, TaskStatus]:
        ids = [u.task_id for j in jobs for u in j.units if u.status is UnitState.QUEUED]
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
        await self._here()
        await self._order(order_id)
        cursor = after
        while True:
            changed = self._changed
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
        await self._here()
        while True:
            changed = self._changed
            order = await self._order(order_id)
            if order.state.final and order.notified:
                return await self.status(order_id)
            await first_of(changed.wait(), self.app.clock.sleep(self.poll_s))

    async def cancel(self, order_id: str) -> OrderStatus:
        """Cancel the order: queued and running tasks are cancelled now, future days never
        start. The order ends ``cancelled`` (and its notifier runs) once its tasks have stopped.

        Raises:
            OrderNotFound: no such order.
        """
        await self._here()
        await self._order(order_id)

        def request(record: OrderRecord) -> bool:
            if record.cancel_requested or record.state.final:
                return False
            record.cancel_requested = True
            return True

        order = await self.store.update_order(order_id, request)
        if order is not None and not order.state.final:
            await self._log(order_id, "cancel_requested")
            jobs = await self._jobs(order_id)
            await self._cancel_planned(order_id, jobs)
            await self._cancel_live_tasks(await self._jobs(order_id))
            await self.store.bump_changes()
            self._poke()
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
        await self._here()
        for _ in range(5):
            if await self._try_amend(order_id, quotas or {}, end, total):
                await self.store.bump_changes()
                self._poke()
                return await self.status(order_id)
        raise OrderError(f"order {order_id!r} kept changing while being amended; try again")

    async def _try_amend(
        self,
        order_id: str,
        quotas: Mapping[dt.date, int],
        end: dt.date | None,
        total: int | None,
    ) -> bool:
        order = await self._order(order_id)
        plan = order.order.plan
        if order.state.final or order.cancel_requested or order.halted:
            raise OrderError(f"order {order_id!r} is {order.state.value}; it cannot be amended")
        if plan.kind == "at_once":
            raise OrderError("an order planned at once has no future days to amend")
        stored = await self.store.jobs(order_id)
        started = [
            j for j, _ in stored.values() if j.state not in (JobState.PLANNED, JobState.DROPPED)
        ]
        unstarted = {j.day: (j, v) for j, v in stored.values() if j.state is JobState.PLANNED}
        dropped = {j.day: v for j, v in stored.values() if j.state is JobState.DROPPED}
        last_started = max((j.day for j in started), default=None)
        for day in quotas:
            if last_started is not None and day <= last_started:
                raise OrderError(f"day {day} has already started; only later days can be amended")
        new_total = order.order.total if total is None else total
        used = sum(len(j.units) for j in started)
        if new_total < used:
            raise OrderError(
                f"{used} units of order {order_id!r} have already started; the total cannot go "
                f"below that (asked: {new_total})"
            )
        if end is not None and any(day > end for day in quotas):
            raise OrderError(f"quotas name days after the new end {end}; drop them or move end")
        days = _amended_days(last_started, set(unstarted), end)
        try:
            new_quotas = amended_quotas(days, new_total - used, dict(quotas))
        except ValueError as exc:
            raise OrderError(str(exc)) from None
        first_index = max((u.index for j in started for u in j.units), default=-1) + 1
        now = self.app.clock.time()
        new_jobs = {j.day: j for j in _build_jobs(order_id, plan, new_quotas, first_index, now)}
        for day, job in new_jobs.items():
            version = unstarted[day][1] if day in unstarted else dropped.get(day, 0)
            if not await self.store.put_job(job, expect_version=version):
                return False
        for day, (job, version) in unstarted.items():
            if day not in new_jobs:
                job.state, job.reason = JobState.DROPPED, "removed by an amendment"
                if not await self.store.put_job(job, expect_version=version):
                    return False
        new_plan = Plan.quotas_per_day(
            {q.day: q.count for q in _all_quotas(started, new_quotas)},
            window=(plan.window_start, plan.window_end),
            tz=plan.tz,
            spacing=plan.spacing,
        )

        def apply(record: OrderRecord) -> bool:
            spec = msgspec.structs.replace(record.order, total=new_total, plan=new_plan)
            record.order = spec
            record.amendments += 1
            return True

        await self.store.update_order(order_id, apply)
        detail = f"total {new_total}; " + ", ".join(f"{q.day}: {q.count}" for q in new_quotas)
        await self._log(order_id, "amended", detail=detail)
        return True


# -- helpers -------------------------------------------------------------------------------


def _build_jobs(
    order_id: str, plan: Plan, quotas: list[DayQuota], first_index: int, now: float
) -> list[JobRecord]:
    """Job records with their units' stored times, unit indexes counting from `first_index`."""
    jobs: list[JobRecord] = []
    index = first_index
    for quota in quotas:
        if plan.kind == "at_once":
            times, due = [now] * quota.count, now
        else:
            times = spread_times(plan, quota.day, quota.count, seed=order_id)
            due = day_start(plan, quota.day)
        units = [UnitRecord(index=index + i, at=at) for i, at in enumerate(times)]
        index += quota.count
        key = quota.day.isoformat()
        jobs.append(JobRecord(order_id=order_id, key=key, day=quota.day, due_at=due, units=units))
    return jobs


def _amended_days(
    last_started: dt.date | None, unstarted: set[dt.date], end: dt.date | None
) -> list[dt.date]:
    """The days an amendment may plan units on: the days not started yet, and with a new
    `end`, every day after the last started one up to it (and none after it)."""
    days = set(unstarted)
    if end is not None:
        if last_started is not None:
            first = last_started + dt.timedelta(days=1)
        else:
            first = min(unstarted, default=end)
        days.update(first + dt.timedelta(days=i) for i in range((end - first).days + 1))
        days = {d for d in days if d <= end}
    return sorted(days)


def _all_quotas(started: list[JobRecord], planned: list[DayQuota]) -> list[DayQuota]:
    return [DayQuota(j.day, len(j.units)) for j in started] + planned


def _stored_counts(jobs: list[JobRecord]) -> Counts:
    counts = Counts()
    for job in jobs:
        if job.state is not JobState.DROPPED:
            counts.add(_unit_counts(job.units, {}))
    return counts


_LIVE_STATE: Final = {
    TaskStatus.RUNNING: "running",
    TaskStatus.DONE: "done",
    TaskStatus.FAILED: "failed",
    TaskStatus.EXPIRED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


def _unit_counts(units: list[UnitRecord], live: Mapping[str, TaskStatus]) -> Counts:
    """Count units by their stored state; a unit whose task is in the broker is counted by
    its task's current status (`live`), which may be ahead of the job record."""
    counts = Counts()
    for unit in units:
        if unit.status is UnitState.QUEUED:
            task_status = live.get(unit.task_id)
            field = "queued" if task_status is None else _LIVE_STATE.get(task_status, "queued")
        else:
            field = unit.status.value
        setattr(counts, field, getattr(counts, field) + 1)
    return counts


def _job_status(job: JobRecord, live: Mapping[str, TaskStatus]) -> JobStatus:
    reasons = list(dict.fromkeys(u.reason for u in job.units if u.status is UnitState.FAILED))
    return JobStatus(
        key=job.key,
        day=job.day,
        state=job.state,
        counts=_unit_counts(job.units, live),
        reasons=[r for r in reasons if r],
    )


def _failures(jobs: list[JobRecord]) -> list[UnitFailure]:
    return [
        UnitFailure(
            index=u.index,
            task_id=u.task_id or unit_task_id(job.order_id, u.index),
            job=job.key,
            reason=u.reason or "failed",
        )
        for job in jobs
        for u in job.units
        if u.status is UnitState.FAILED
    ]


def _report(order: OrderRecord, jobs: list[JobRecord]) -> OrderReport:
    counts = _stored_counts(jobs)
    failures = _failures(jobs)
    return OrderReport(
        order_id=order.id,
        label=order.order.label,
        state=order.state,
        succeeded=order.state is OrderState.SUCCEEDED,
        total=order.order.total,
        counts=counts,
        failures=failures,
        reason=order.reason,
        summary=summarize(order.order.total, counts, failures),
        days={
            j.key: f"{j.state.value}: {_unit_counts(j.units, {}).done}/{len(j.units)} done"
            for j in jobs
            if j.state is not JobState.DROPPED
        },
    )
