"""Orders end to end under a fake clock: a two-week order on every backend kind, and on the
memory backend cancel, amend, the failure policy, leader failover, and the event stream.

Time is a `FakeClock`: a test jumps to the next local midnight (the leader materializes that
day's job: its tasks appear in the broker, scheduled within the day's window), then past the
window's end (the worker runs them), and waits for the order's own events. While it waits for
an event that has not come yet, it nudges the clock by a couple of seconds so retries (backoff)
and lease renewals move on; on a real server the wait also covers its round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskflow import QueueTasks, TaskContext
from taskflow.abc import Broker
from taskflow.memory import MemoryBroker
from taskflow.supervisor import (
    FailurePolicy,
    JobState,
    Order,
    OrderEvent,
    OrderReport,
    OrderState,
    OrderStatus,
    Plan,
    Supervisor,
    day_bounds,
    unit_idempotency_key,
    unit_task_id,
)
from taskflow.supervisor._plan import day_start
from taskflow.testing import FakeClock

MOSCOW = "Europe/Moscow"
WINDOW = (dt.time(9), dt.time(21))
FIRST_DAY = dt.date(2026, 12, 1)
START = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC).timestamp()


def _backend_kinds() -> list[str]:
    """Every kind the ``tests/plugins/backend_*.py`` plugins provide (as the conformance suite)."""
    kinds: list[str] = []
    for path in sorted((Path(__file__).parents[1] / "plugins").glob("backend_*.py")):
        module = importlib.import_module(f"tests.plugins.{path.stem}")
        kinds.extend(getattr(module, "BACKEND_KINDS", ()))
    return kinds


@pytest.fixture(params=_backend_kinds())
async def any_broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """An open, empty broker of each backend kind in turn."""
    factory: Callable[[], AsyncContextManager[Broker]] = request.getfixturevalue(
        f"backend_factory_{request.param}"
    )
    async with factory() as broker:
        yield broker


@pytest.fixture
async def memory_broker() -> AsyncIterator[Broker]:
    async with MemoryBroker() as broker:
        yield broker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


class Shop:
    """The seed's client: buys an article per unit; tells the client when the order ends."""

    def __init__(
        self,
        broker: Broker,
        clock: FakeClock,
        *,
        fail_units: frozenset[int] = frozenset(),
        block_units: frozenset[int] = frozenset(),
        attach: bool = True,
        owner: str | None = None,
    ) -> None:
        self.clock = clock
        self.app = QueueTasks("shop", broker=broker, clock=clock)
        self.runs: list[tuple[int, str, int]] = []
        self.reports: list[OrderReport] = []
        self.notified = anyio.Event()
        self.blocked = anyio.Event()

        @self.app.task(name="shop.buy")
        async def buy(ctx: TaskContext, article: str, unit: int) -> str:
            self.runs.append((unit, ctx.idempotency_key, ctx.attempt))
            if unit in block_units:
                self.blocked.set()
                await anyio.sleep_forever()
            if unit in fail_units:
                raise ValueError(f"article {article} is out of stock")
            return f"bought {article}"

        @self.app.task(name="shop.order_finished")
        async def order_finished(report: dict[str, Any]) -> None:
            self.reports.append(OrderReport.from_payload(report))
            self.notified.set()

        self.supervisor = Supervisor(
            self.app,
            notifier=order_finished,
            lease_ttl=dt.timedelta(hours=2),
            poll=dt.timedelta(seconds=1),
            owner=owner,
        )
        if attach:
            self.supervisor.attach()

    def order(self, total: int, plan: Plan, **options: Any) -> Order:
        options.setdefault("retries", 2)
        options.setdefault("retry_backoff_s", 1.0)
        return Order(
            task="shop.buy", args=["A-1234"], unit_kwarg="unit", total=total, plan=plan, **options
        )

    def units_run(self) -> set[int]:
        return {unit for unit, _, _ in self.runs}

    async def next_event(
        self,
        order_id: str,
        wanted: Callable[[OrderEvent], bool],
        *,
        after: str | None = None,
        supervisor: Supervisor | None = None,
    ) -> OrderEvent:
        """The first event after `after` that `wanted` accepts; nudges the clock meanwhile."""
        supervisor = supervisor or self.supervisor
        cursor = after
        with anyio.fail_after(30):
            while True:
                with anyio.move_on_after(0.3) as quiet:
                    events = supervisor.events(order_id, after=cursor)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            cursor = event.cursor
                            if wanted(event):
                                return event
                    raise AssertionError(f"order {order_id} finished before the awaited event")
                if quiet.cancelled_caught:
                    await self.clock.advance(2)

    async def run_day(
        self, order_id: str, day: dt.date, plan: Plan, after: str | None
    ) -> tuple[str, str]:
        """Jump to `day`'s midnight, wait until its tasks are queued, jump past its window and
        wait until its job finished. Returns the cursors of both events."""
        key = day.isoformat()
        await self.clock.set(max(self.clock.time(), day_start(plan, day) + 1))
        queued = await self.next_event(
            order_id,
            lambda e: e.kind in ("job_queued", "job_finished") and e.job == key,
            after=after,
        )
        await self.clock.set(max(self.clock.time(), day_bounds(plan, day)[1] + 60))
        finished = await self.next_event(
            order_id, lambda e: e.kind == "job_finished" and e.job == key, after=after
        )
        return queued.cursor, finished.cursor


def _plan(days: int, per_day: int | None = None) -> Plan:
    last = FIRST_DAY + dt.timedelta(days=days - 1)
    return Plan.spread(FIRST_DAY, last, per_day=per_day, window=WINDOW, tz=MOSCOW)


def _days(plan: Plan) -> list[dt.date]:
    return plan.days()


async def test_two_week_order_runs_each_day_rolls_up_and_notifies_once(
    any_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(any_broker, clock, fail_units=frozenset({23}))
    plan = _plan(14, per_day=10)
    app, supervisor = shop.app, shop.supervisor
    queue = app.config.default_queue
    async with app.running(concurrency=4):
        order_id = await supervisor.submit(shop.order(140, plan, label="buy A-1234"))
        status = await supervisor.status(order_id)
        assert (status.state, status.counts.planned) == (OrderState.PLANNED, 140)
        cursor: str | None = None
        for n, day in enumerate(_days(plan), start=1):
            key = day.isoformat()
            await clock.set(day_start(plan, day) + 1)
            queued = await shop.next_event(
                order_id, lambda e, k=key: e.kind == "job_queued" and e.job == k, after=cursor
            )
            # Only today's units are in the broker, scheduled within today's Moscow window.
            [stats] = await app.broker.stats([queue], now=clock.time())
            assert stats.scheduled == 10
            window = day_bounds(plan, day)
            job = next(j for j in (await supervisor.status(order_id)).jobs if j.key == key)
            assert (job.state, job.counts.queued) == (JobState.RUNNING, 10)
            for unit in range(10 * (n - 1), 10 * n):
                record = await app.get(unit_task_id(order_id, unit))
                assert record is not None and record.order_id == order_id
                assert record.eta is not None and window[0] <= record.eta < window[1]
            await clock.set(window[1] + 60)
            finished = await shop.next_event(
                order_id,
                lambda e, k=key: e.kind == "job_finished" and e.job == k,
                after=queued.cursor,
            )
            cursor = finished.cursor
            status = await supervisor.status(order_id)
            assert status.counts.done + status.counts.failed == 10 * n
            assert status.counts.planned == 140 - 10 * n
            assert shop.units_run() == set(range(10 * n))
        final = await shop.next_event(order_id, lambda e: e.kind == "finished", after=cursor)
        with anyio.fail_after(10):
            await shop.notified.wait()
        status = await supervisor.status(order_id)

    assert final.detail is not None and final.detail.startswith("failed")
    assert status.state is OrderState.FAILED and status.notified
    assert (status.counts.done, status.counts.failed) == (139, 1)
    assert status.jobs[2].state is JobState.FAILED and "out of stock" in status.jobs[2].reasons[0]
    [report] = shop.reports
    assert not report.succeeded and report.state is OrderState.FAILED
    assert report.failures[0].index == 23 and "out of stock" in report.failures[0].reason
    assert report.summary == "139 of 140 done, 1 failed: ValueError: article A-1234 is out of stock"
    # Every unit ran once, except the failing one: 1 + 2 retries, one stable idempotency key.
    attempts = {unit: [a for u, _, a in shop.runs if u == unit] for unit in range(140)}
    assert all(attempts[u] == [1] for u in range(140) if u != 23)
    assert attempts[23] == [1, 2, 3]
    assert {key for u, key, _ in shop.runs if u == 23} == {unit_idempotency_key(order_id, 23)}


async def test_cancel_mid_order_cascades_to_queued_running_and_future_units(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock, block_units=frozenset({4}))
    plan = _plan(5, per_day=4)
    app, supervisor = shop.app, shop.supervisor
    async with app.running(concurrency=4):
        order_id = await supervisor.submit(shop.order(20, plan))
        _, cursor = await shop.run_day(order_id, FIRST_DAY, plan, None)
        day2 = FIRST_DAY + dt.timedelta(days=1)
        await clock.set(day_start(plan, day2) + 1)
        await shop.next_event(order_id, lambda e: e.kind == "job_queued", after=cursor)
        first_of_day2 = await app.get(unit_task_id(order_id, 4))
        assert first_of_day2 is not None and first_of_day2.eta is not None
        await clock.set(first_of_day2.eta)  # unit 4 runs (and blocks); 5-7 are scheduled
        with anyio.fail_after(10):
            await shop.blocked.wait()
        status = await supervisor.cancel(order_id)
        assert status.counts.cancelled >= 12  # days 3-5 at once
        final = await shop.next_event(order_id, lambda e: e.kind == "finished", after=cursor)
        with anyio.fail_after(10):
            await shop.notified.wait()
        status = await supervisor.status(order_id)
        [stats] = await app.broker.stats([app.config.default_queue], now=clock.time())

    assert final.detail is not None and final.detail.startswith("cancelled")
    assert status.state is OrderState.CANCELLED
    assert (status.counts.done, status.counts.cancelled) == (4, 16)
    assert (stats.queued, stats.scheduled, stats.running) == (0, 0, 0)
    assert max(shop.units_run()) <= 7  # nothing of days 3-5 ever ran
    assert [r.state for r in shop.reports] == [OrderState.CANCELLED]


async def test_amend_changes_future_quotas_and_total_only_when_asked(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock)
    plan = _plan(5, per_day=4)
    app, supervisor = shop.app, shop.supervisor
    day = [FIRST_DAY + dt.timedelta(days=i) for i in range(7)]
    async with app.running(concurrency=4):
        order_id = await supervisor.submit(shop.order(20, plan))
        _, cursor = await shop.run_day(order_id, day[0], plan, None)

        status = await supervisor.amend(order_id, quotas={day[2]: 1})
        per_day = {j.day: j.counts.total for j in status.jobs}
        assert status.total == 20
        assert per_day == {day[0]: 4, day[1]: 5, day[2]: 1, day[3]: 5, day[4]: 5}

        status = await supervisor.amend(order_id, end=day[6], total=26)
        per_day = {j.day: j.counts.total for j in status.jobs}
        assert status.total == 26 and sum(per_day.values()) == 26
        assert per_day[day[0]] == 4 and set(per_day) == set(day)

        for d in day[1:]:
            _, cursor = await shop.run_day(order_id, d, plan, cursor)
        await shop.next_event(order_id, lambda e: e.kind == "finished", after=cursor)
        with anyio.fail_after(10):
            await shop.notified.wait()
        status = await supervisor.status(order_id)

    assert status.state is OrderState.SUCCEEDED
    assert status.counts.done == 26 and shop.units_run() == set(range(26))
    assert len(shop.runs) == 26
    assert [r.counts.done for r in shop.reports] == [26]


async def test_stop_policy_cancels_the_rest_after_the_first_failed_unit(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock, fail_units=frozenset({1}))
    plan = _plan(3, per_day=3)
    async with shop.app.running(concurrency=1):
        order_id = await shop.supervisor.submit(
            shop.order(9, plan, retries=0, failure_policy=FailurePolicy.stop())
        )
        await shop.clock.set(day_start(plan, FIRST_DAY) + 1)
        await shop.next_event(order_id, lambda e: e.kind == "job_queued")
        await shop.clock.set(day_bounds(plan, FIRST_DAY)[1])
        final = await shop.next_event(order_id, lambda e: e.kind == "finished")
        with anyio.fail_after(10):
            await shop.notified.wait()
        status = await shop.supervisor.status(order_id)

    assert final.detail is not None and final.detail.startswith("failed")
    assert status.state is OrderState.FAILED
    assert status.reason is not None and "stop at the first failure" in status.reason
    assert status.counts.failed == 1 and status.counts.cancelled >= 6
    assert shop.units_run() <= {0, 1, 2}
    [report] = shop.reports
    assert "out of stock" in report.failures[0].reason


async def test_threshold_policy_tolerates_failures_up_to_its_limit(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock, fail_units=frozenset({0, 2}))
    plan = Plan.at_once(tz=MOSCOW)
    async with shop.app.running(concurrency=2):
        order_id = await shop.supervisor.submit(
            shop.order(6, plan, retries=0, failure_policy=FailurePolicy.threshold(2))
        )
        with anyio.fail_after(10):
            status = await shop.supervisor.wait(order_id)

    assert status.state is OrderState.SUCCEEDED
    assert (status.counts.done, status.counts.failed) == (4, 2)
    assert status.summary.startswith("4 of 6 done, 2 failed")


async def test_leader_failover_continues_the_order_without_rerunning_units(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock, attach=False, owner="first")
    plan = _plan(4, per_day=3)
    first = shop.supervisor
    first.release_on_exit = False  # a dead process does not release its lease
    second = Supervisor(
        shop.app, notifier="shop.order_finished", lease_ttl=dt.timedelta(hours=2), owner="second"
    )
    async with shop.app.running(concurrency=4), anyio.create_task_group() as tg:
        first_scope = anyio.CancelScope()

        async def host_first() -> None:
            with first_scope:
                await first.run()

        tg.start_soon(host_first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second.run)
        await anyio.wait_all_tasks_blocked()
        assert first.is_leader and not second.is_leader

        order_id = await second.submit(shop.order(12, plan))  # a client in another "process"
        _, cursor = await shop.run_day(order_id, FIRST_DAY, plan, None)
        first_scope.cancel()  # the leader's process dies; its lease lapses in 2 h

        for day in plan.days()[1:]:
            _, cursor = await shop.run_day(order_id, day, plan, cursor)
        assert second.is_leader and not first.is_leader
        await shop.next_event(order_id, lambda e: e.kind == "finished", after=cursor)
        with anyio.fail_after(10):
            await shop.notified.wait()
        status = await second.status(order_id)
        tg.cancel_scope.cancel()

    assert status.state is OrderState.SUCCEEDED and status.counts.done == 12
    assert sorted(u for u, _, _ in shop.runs) == list(range(12))  # none twice, none skipped
    assert len(shop.reports) == 1


async def test_materializing_a_job_twice_creates_no_task_twice(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock, attach=False)
    plan = Plan.at_once()
    async with shop.app:
        order_id = await shop.supervisor.submit(shop.order(5, plan))
        order = await shop.supervisor.store.order(order_id)
        assert order is not None
        key = next(iter(await shop.supervisor.store.jobs(order_id)))
        manager = TaskManagerProbe(shop, order, key)
        job = await manager.materialize_from_scratch()
        again = await manager.materialize_from_scratch()
        [stats] = await shop.app.broker.stats([shop.app.config.default_queue], now=clock.time())

    assert [u.task_id for u in job.units] == [unit_task_id(order_id, i) for i in range(5)]
    assert [u.task_id for u in again.units] == [u.task_id for u in job.units]
    assert stats.queued == 5


class TaskManagerProbe:
    """Drives a TaskManager's materialize step on a job record reset to planned, as a new
    leader would after a crash between the enqueue and the record update."""

    def __init__(self, shop: Shop, order: Any, key: str) -> None:
        from taskflow.supervisor import TaskManager

        async def ignore(order_id: str) -> None:
            return None

        self.shop = shop
        self.manager = TaskManager(shop.app, shop.supervisor.store, order, key, ignore)

    async def materialize_from_scratch(self) -> Any:
        from taskflow.supervisor._model import UnitState

        store = self.shop.supervisor.store
        job = await store.update_job(self.manager.order.id, self.manager.job_key, _reset_units)
        assert job is not None and all(u.status is UnitState.PLANNED for u in job.units)
        return await self.manager._materialize(job)


def _reset_units(job: Any) -> bool:
    from taskflow.supervisor._model import UnitState

    for unit in job.units:
        unit.status, unit.task_id = UnitState.PLANNED, ""
    return True


async def test_events_resume_from_a_cursor_and_end_after_finished(
    memory_broker: Broker, clock: FakeClock
) -> None:
    shop = Shop(memory_broker, clock)
    async with shop.app.running(concurrency=2):
        order_id = await shop.supervisor.submit(shop.order(3, Plan.at_once()))
        await shop.next_event(order_id, lambda e: e.kind == "finished")
        everything = [e async for e in shop.supervisor.events(order_id)]
        middle = everything[2].cursor
        rest = [e async for e in shop.supervisor.events(order_id, after=middle)]

    kinds = [e.kind for e in everything]
    assert kinds[0] == "submitted" and kinds[-1] == "finished"
    assert kinds.count("unit_done") == 3 and "job_started" in kinds and "job_queued" in kinds
    assert rest == everything[3:]


async def test_submit_with_a_chosen_id_is_idempotent_and_unknown_tasks_are_refused(
    memory_broker: Broker, clock: FakeClock
) -> None:
    from taskflow import UnknownTaskError

    shop = Shop(memory_broker, clock, attach=False)
    async with shop.app:
        order = shop.order(3, Plan.at_once(), order_id="client-42")
        assert await shop.supervisor.submit(order) == "client-42"
        assert await shop.supervisor.submit(order) == "client-42"
        status = await shop.supervisor.status("client-42")
        with pytest.raises(UnknownTaskError, match="not registered"):
            await shop.supervisor.submit(Order(task="nope", total=1, plan=Plan.at_once()))

    assert status.total == 3 and len(status.jobs) == 1


async def test_an_order_whose_units_cannot_call_their_task_is_refused_at_submit(
    clock: FakeClock,
) -> None:
    from taskflow.supervisor import OrderError

    app = QueueTasks("args", clock=clock)

    @app.task(name="args.greet")
    async def greet(greeting: str, *, n: int) -> None:
        pass

    supervisor = Supervisor(app)
    async with app:
        missing = Order(task=greet.name, total=2, plan=Plan.at_once(), unit_kwarg="n")
        with pytest.raises(OrderError, match=r"unit 0 .*greeting"):
            await supervisor.submit(missing)
        one_bad_unit = Order(
            task=greet.name,
            total=3,
            plan=Plan.at_once(),
            args=["hi"],
            per_unit_kwargs={2: {"nmae": "typo"}},
            unit_kwarg="n",
        )
        with pytest.raises(OrderError, match=r"unit 2 .*nmae"):
            await supervisor.submit(one_bad_unit)
        assert await app.coordination.kv_list("taskflow:orders") == {}


def test_a_module_level_supervisor_serves_one_event_loop_after_another() -> None:
    """Like its app, a Supervisor made at import is used by several event loops in turn
    (scripts, each test's loop): the app opens on each, and waiting works on each."""
    app = QueueTasks("loops")

    @app.task(name="loops.noop")
    async def noop() -> None:
        pass

    supervisor = Supervisor(app)
    supervisor.attach()
    order = Order(task=noop.name, total=2, plan=Plan.at_once())

    async def run_it() -> str:
        async with app.running(concurrency=2):
            order_id = await supervisor.submit(order)
            with anyio.fail_after(10):
                await supervisor.wait(order_id)
        return order_id

    async def read_it(order_id: str) -> OrderStatus:
        with anyio.fail_after(10):
            await supervisor.wait(order_id)  # no `async with app`: opened by this call
            return await supervisor.status(order_id)

    order_id = asyncio.run(run_it())
    status = asyncio.run(read_it(order_id))
    assert status.state is OrderState.SUCCEEDED and status.counts.done == 2


async def test_unit_arguments_fixed_per_unit_and_index(clock: FakeClock) -> None:
    app = QueueTasks("args", clock=clock)
    seen: dict[int, tuple[str, str]] = {}

    @app.task(name="args.greet")
    async def greet(greeting: str, *, name: str = "world", n: int) -> None:
        seen[n] = (greeting, name)

    supervisor = Supervisor(app)
    supervisor.attach()
    order = Order(
        task=greet.name,
        total=3,
        plan=Plan.at_once(),
        args=["hello"],
        kwargs={"name": "all"},
        per_unit_kwargs={1: {"name": "one"}},
        unit_kwarg="n",
    )
    async with app.running(concurrency=3):
        order_id = await supervisor.submit(order)
        with anyio.fail_after(10):
            status = await supervisor.wait(order_id)

    assert status.state is OrderState.SUCCEEDED
    assert seen == {0: ("hello", "all"), 1: ("hello", "one"), 2: ("hello", "all")}


async def test_stored_unit_times_are_the_planned_ones(
    memory_broker: Broker, clock: FakeClock
) -> None:
    from taskflow.supervisor._plan import spread_times

    shop = Shop(memory_broker, clock, attach=False)
    plan = _plan(3)
    async with shop.app:
        order_id = await shop.supervisor.submit(shop.order(8, plan))
        jobs = await shop.supervisor.store.jobs(order_id)

    counts = [2, 3, 3]  # 8 over 3 days: the larger shares spaced out (even_split)
    for (job, _), day, count in zip(jobs.values(), plan.days(), counts, strict=True):
        assert job.day == day and job.state is JobState.PLANNED
        assert [u.at for u in job.units] == spread_times(plan, day, count, seed=order_id)
    indexes = [u.index for job, _ in jobs.values() for u in job.units]
    assert indexes == list(range(8))


async def test_amendments_that_cannot_be_carried_out_change_nothing(
    memory_broker: Broker, clock: FakeClock
) -> None:
    from taskflow.supervisor import OrderError, OrderNotFound

    shop = Shop(memory_broker, clock)
    plan = _plan(3, per_day=2)
    day = plan.days()
    async with shop.app.running(concurrency=2):
        order_id = await shop.supervisor.submit(shop.order(6, plan))
        await shop.run_day(order_id, day[0], plan, None)
        before = await shop.supervisor.status(order_id)
        with pytest.raises(OrderError, match="already started"):
            await shop.supervisor.amend(order_id, total=1)
        with pytest.raises(OrderError, match="already started"):
            await shop.supervisor.amend(order_id, quotas={day[0]: 5})
        with pytest.raises(OrderError, match="exceed"):
            await shop.supervisor.amend(order_id, quotas={day[1]: 9})
        with pytest.raises(OrderError, match="no day to run on"):
            await shop.supervisor.amend(order_id, end=day[0])
        with pytest.raises(OrderNotFound):
            await shop.supervisor.amend("no-such-order", total=3)
        after = await shop.supervisor.status(order_id)

    assert after == before
