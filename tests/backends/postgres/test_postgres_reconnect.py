"""Connection loss on PostgreSQL: after ``pg_terminate_backend`` of every connection a storage
holds (its pool and its LISTEN connection), calls succeed again, result waiters are still woken
by a task another process completes, and idle workers still hear of new work.

The "other process" is a second broker on the same schema whose sessions carry a different
``application_name``, so only the first one's connections are terminated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from taskflow.abc import TaskOutcome, TaskStatus
from taskflow.postgres import PostgresBroker, from_url
from taskflow.testing import FakeClock
from tests.conformance._helpers import claim, done, enqueue_one
from tests.plugins.backend_postgres import drop_schema, random_schema
from tests.services import postgres_dsn

pytestmark = pytest.mark.postgres


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    """Two brokers on one fresh schema: ours (to be cut off) and another process's."""
    dsn, schema = postgres_dsn(), random_schema()
    sep = "&" if "?" in dsn else "?"
    try:
        async with (
            from_url(dsn, schema=schema) as ours,
            from_url(f"{dsn}{sep}application_name=taskflow-other", schema=schema) as other,
        ):
            yield ours, other
    finally:
        await drop_schema(dsn, schema)


async def terminate_connections_of(broker: PostgresBroker) -> int:
    """pg_terminate_backend every session of `broker`'s storage; returns how many."""
    admin = await asyncpg.connect(postgres_dsn())
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            broker.pg.application_name,
        )
        return killed
    finally:
        await admin.close()


async def test_calls_succeed_after_the_pool_connections_are_terminated(
    pair: tuple[PostgresBroker, PostgresBroker], clock: FakeClock
) -> None:
    ours, _ = pair
    task_id = await enqueue_one(ours, clock)
    assert await terminate_connections_of(ours) >= 1
    record = await ours.storage.get(task_id, now=clock.time())
    assert record is not None and record.status is TaskStatus.QUEUED
    [delivery] = await claim(ours, clock)
    assert await ours.complete([done(delivery, clock)], now=clock.time()) == [True]


async def test_a_result_waiter_is_woken_after_its_listener_was_terminated(
    pair: tuple[PostgresBroker, PostgresBroker], clock: FakeClock
) -> None:
    ours, other = pair
    task_id = await enqueue_one(ours, clock)
    await ours.pg.listen()
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await ours.storage.wait(task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert task_id in ours.storage.waiters
            assert await terminate_connections_of(ours) >= 2  # the pool's and the listener
            [delivery] = await claim(other, clock)
            assert await other.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert got[0].status is TaskStatus.DONE


async def test_an_idle_worker_hears_of_new_work_after_its_listener_was_terminated(
    pair: tuple[PostgresBroker, PostgresBroker], clock: FakeClock
) -> None:
    """Its watch callback is called once when the listener is back (what was sent meanwhile
    is lost), and again for work announced afterwards."""
    ours, other = pair
    calls: list[int] = []
    woke = anyio.Event()

    def on_work() -> None:
        calls.append(ours.pg.wakeups.gaps)
        woke.set()

    ours.watch_work(["default"], worker_id="w1", callback=on_work)
    assert await claim(ours, clock, worker_id="w1") == []  # starts the listener too
    await ours.next_due(["default"], now=clock.time())
    with anyio.fail_after(20):
        assert await terminate_connections_of(ours) >= 2
        await enqueue_one(other, clock)
        await woke.wait()
    assert len(await claim(ours, clock, worker_id="w1")) == 1
    with anyio.fail_after(20):
        await ours.pg.wakeups.wait_changed(lambda: ours.pg.wakeups.gaps > 0)
        woke = anyio.Event()
        await enqueue_one(other, clock)
        await woke.wait()
    assert len(calls) >= 2  # the reconnect's call (or the first work's), then the new work's
    await ours.unwatch_work(["default"], worker_id="w1", now=clock.time())


async def test_pushes_arrive_again_once_the_listener_is_back(
    pair: tuple[PostgresBroker, PostgresBroker], clock: FakeClock
) -> None:
    """After the reconnect, a completion elsewhere wakes a new waiter by NOTIFY."""
    ours, other = pair
    await ours.pg.listen()
    listener = ours.pg.listener
    assert listener is not None
    generation = listener.generation
    assert await terminate_connections_of(ours) >= 2
    task_id = await enqueue_one(ours, clock)  # a pooled call: retried on a fresh connection
    got: list[TaskOutcome] = []

    async def waiter() -> None:
        got.append(await ours.storage.wait(task_id, timeout=None, now=clock.time()))

    with anyio.fail_after(20):
        await ours.pg.wakeups.wait_changed(lambda: listener.generation > generation)
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            [delivery] = await claim(other, clock)
            assert await other.complete([done(delivery, clock)], now=clock.time()) == [True]
    assert got[0].status is TaskStatus.DONE
